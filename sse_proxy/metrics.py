"""Prometheus metrics of the proxy (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

CLIENTS = Gauge("sse_clients", "Connected SSE clients per stream", ["stream"], registry=REGISTRY)
DELIVERED = Counter(
    "sse_events_delivered",
    "Events queued to clients (one per client per event)",
    ["stream"],
    registry=REGISTRY,
)
CUTOFFS = Counter(
    "sse_slow_client_cutoffs", "Clients cut off for falling behind", ["stream"], registry=REGISTRY
)
READER_LAG = Gauge(
    "sse_reader_lag_seconds",
    "Age of the newest entry a reader delivered",
    ["stream"],
    registry=REGISTRY,
)
READERS = Gauge(
    "sse_stream_readers", "Active stream readers (one Redis connection each)", registry=REGISTRY
)
REDIS_ERRORS = Counter(
    "sse_redis_errors", "Redis errors by operation", ["operation"], registry=REGISTRY
)
AUTH_FAILURES = Counter(
    "sse_auth_failures", "Refused requests by reason", ["reason"], registry=REGISTRY
)
REQUESTS = Counter(
    "sse_http_requests",
    "HTTP requests by route and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
PUBLISHED = Counter(
    "sse_events_published", "Entries added through POST", ["stream"], registry=REGISTRY
)
REJECTED = Counter(
    "sse_connections_rejected", "SSE connections refused", ["reason"], registry=REGISTRY
)
