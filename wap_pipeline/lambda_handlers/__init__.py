"""AWS Lambda entry points (``make lambda-package`` builds their deployment zip)."""
