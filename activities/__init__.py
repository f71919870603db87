"""Temporal activities: one class per outside system, its client passed in."""
