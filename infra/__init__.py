"""The Pulumi program of redis-platform: `pulumi up -s dev|prod` (see infra/__main__.py)."""
