"""Backups: RDB snapshots with manifests, verification, restore into any topology."""
