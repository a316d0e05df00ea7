"""Audience delivery: change records, the retry policy, output types, and the per-connection runner."""
