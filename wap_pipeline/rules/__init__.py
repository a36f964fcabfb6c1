"""Domain logic as plain functions: no Dagster, no AWS. Every engine and the CLI reuse these."""
