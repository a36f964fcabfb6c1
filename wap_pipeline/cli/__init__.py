"""Command-line entry points: ``wap-pipeline`` (operations) and, later, ``data-patcher`` (support)."""
