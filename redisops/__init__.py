"""Run-time operations for redis-platform, shared by the GKE deployment and the local twin."""

__version__ = "0.1.0"
