"""Thin layer over PyIceberg: catalog loading, table schemas, Write-Audit-Publish operations."""
