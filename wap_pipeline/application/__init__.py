"""The steps of the pipeline, without Dagster: each takes the ports it needs and returns or yields
outcomes, which the assets translate into check results, materializations and failures."""
