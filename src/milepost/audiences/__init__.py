"""Audience evaluation: journey trees as one dataflow, real-time membership, timers, full calculation."""
