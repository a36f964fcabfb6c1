"""One partition per landing batch; the landing sensor adds them."""

from dagster import DynamicPartitionsDefinition

landing_batches = DynamicPartitionsDefinition(name="landing_batches")
