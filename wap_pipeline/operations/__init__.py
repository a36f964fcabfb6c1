"""Operator actions (quarantine, breaker reset, re-drive), each recorded in the audit log.

Both CLIs call these functions, so an action is done -- and recorded -- one way only.
"""
