"""Command-line entry points: ``wap-pipeline`` (operations) and ``data-patcher`` (support)."""

import warnings

from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

# Dagster flags beta / preview APIs we use on purpose (partitioned check specs); not for operators.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
