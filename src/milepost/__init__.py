"""Milepost: self-hosted journey orchestration on real-time audiences."""

__version__ = "0.1.0"
