"""Prometheus metrics of the proxy (served at /metrics).

Per-stream metrics are labelled with the configured pattern the stream matched
(`pattern="standup:*"`), never with the stream's name: clients choose stream names
(`standup:<anything>`), so names would make the number of series unbounded. The series
of every served pattern exist from the start, at zero.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

CLIENTS = Gauge(
    "sse_clients", "Connected SSE clients per stream pattern", ["pattern"], registry=REGISTRY
)
DELIVERED = Counter(
    "sse_events_delivered",
    "Events queued to clients (one per client per event), per stream pattern",
    ["pattern"],
    registry=REGISTRY,
)
CUTOFFS = Counter(
    "sse_slow_client_cutoffs",
    "Clients cut off for falling behind, per stream pattern",
    ["pattern"],
    registry=REGISTRY,
)
READER_LAG = Gauge(
    "sse_reader_lag_seconds",
    "How long the oldest entry not yet delivered has waited (0: caught up), the largest "
    "among a pattern's readers",
    ["pattern"],
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
    "sse_events_published",
    "Entries added through POST, per stream pattern",
    ["pattern"],
    registry=REGISTRY,
)
CONNECTIONS = Gauge("sse_connections", "Open SSE connections of this process", registry=REGISTRY)
CONNECTIONS_LIMIT = Gauge(
    "sse_connections_limit",
    "Connections this process accepts before refusing with 503 (max_connections)",
    registry=REGISTRY,
)
READY = Gauge("sse_ready", "1 when /readyz would answer 200 at this scrape", registry=REGISTRY)
REJECTED = Counter(
    "sse_connections_rejected", "SSE connections refused", ["reason"], registry=REGISTRY
)

PER_PATTERN = (CLIENTS, DELIVERED, CUTOFFS, READER_LAG, PUBLISHED)


def declare_patterns(patterns: Iterable[str]) -> None:
    """Create every per-pattern series at zero, so the set of series is fixed at start."""
    for pattern in patterns:
        for metric in PER_PATTERN:
            metric.labels(pattern)
