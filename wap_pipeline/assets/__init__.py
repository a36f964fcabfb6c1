"""The three table layers as Dagster assets."""
