"""Temporal workflows: deterministic, no I/O; everything outside goes through activities."""
