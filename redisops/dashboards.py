"""The on-call dashboard, defined once: PromQL panels rendered into a Cloud Monitoring
dashboard (`cloud_dashboard`) and executed against the twin's Prometheus by the tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redisops.alerts import AlertParams


@dataclass(frozen=True)
class Panel:
    title: str
    query: str  # PromQL over the job selectors of `AlertParams`
    unit: str = ""


def panels(p: AlertParams) -> list[Panel]:
    r, x, o = p.r, p.p, p.o
    w = p.duration(300)
    return [
        Panel("Slots ok (the least any node sees)", f"min(redis_cluster_slots_ok{{{r}}})"),
        Panel(
            "Slots in pfail or fail",
            f"max(redis_cluster_slots_pfail{{{r}}} + redis_cluster_slots_fail{{{r}}})",
        ),
        Panel("Nodes up", f"sum(redis_up{{{r}}})"),
        Panel(
            "Primaries and replicas",
            f"count by (role) (redis_instance_info{{{r}}})",
        ),
        Panel(
            "Commands per second",
            f"sum by (instance) (rate(redis_commands_processed_total{{{r}}}[{w}]))",
            "1/s",
        ),
        Panel(
            "Memory used / maxmemory",
            f"redis_memory_used_bytes{{{r}}} / (redis_memory_max_bytes{{{r}}} > 0)",
            "10^2.%",
        ),
        Panel(
            "Replication lag (s since last ack)",
            f"max by (instance) (redis_connected_slave_lag_seconds{{{r}}})",
            "s",
        ),
        Panel(
            "Evictions and OOM rejections",
            f"sum(rate(redis_evicted_keys_total{{{r}}}[{w}]))"
            f' + sum(rate(redis_errors_total{{{r},err="OOM"}}[{w}]) or vector(0))',
            "1/s",
        ),
        Panel("SSE clients", f"sum(sse_clients{{{x}}})"),
        Panel(
            "SSE events delivered per second",
            f"sum(rate(sse_events_delivered_total{{{x}}}[{w}]))",
            "1/s",
        ),
        Panel("SSE reader lag", f"max by (pattern) (sse_reader_lag_seconds{{{x}}})", "s"),
        Panel(
            "Age of the newest complete backup",
            f"time() - max(redisops_backup_last_success_timestamp_seconds{{{o}}})",
            "s",
        ),
    ]


def cloud_dashboard(p: AlertParams, title: str) -> dict[str, Any]:
    """A Cloud Monitoring dashboard (the `dashboard_json` of `gcp.monitoring.Dashboard`):
    one chart per panel, PromQL over Managed Prometheus data, two columns."""
    tiles = []
    for i, panel in enumerate(panels(p)):
        tiles.append(
            {
                "xPos": (i % 2) * 24,
                "yPos": (i // 2) * 16,
                "width": 24,
                "height": 16,
                "widget": {
                    "title": panel.title,
                    "xyChart": {
                        "dataSets": [
                            {
                                "timeSeriesQuery": {
                                    "prometheusQuery": panel.query,
                                    **({"unitOverride": panel.unit} if panel.unit else {}),
                                },
                                "plotType": "LINE",
                            }
                        ]
                    },
                },
            }
        )
    return {"displayName": title, "mosaicLayout": {"columns": 48, "tiles": tiles}}
