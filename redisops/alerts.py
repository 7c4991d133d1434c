"""Every alert of the platform, defined once.

Each alert is data: a name, a PromQL expression built from the target's parameters
(`AlertParams`: job names, thresholds, the time scale), how long it must hold (`for`),
a severity (`page` wakes someone, `ticket` waits for working hours), what it means and
its runbook page. The same definition is rendered into

- a Prometheus rule file (`rule_groups`): the twin's Prometheus, `promtool`, and a
  `PrometheusRule` for clusters that run prometheus-operator;
- Cloud Monitoring alert policies with PromQL conditions (`cloud_policies`), which
  Google Cloud evaluates over Managed Prometheus data on GKE;
- `promtool test rules` cases (`promtool_tests`): each alert carries a series that
  must fire it and one that must not.

The twin runs the same rules on a faster clock: `scale` multiplies every `for` and every
range window (1/60: a production minute is a twin second), nothing else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["page", "ticket"]
GROUP = "redis-platform"
SLOTS = 16384
CLIENT_ROUTES = 'route!~"readyz|healthz|metrics"'


class AlertParams(BaseModel):
    """What differs between targets. `scale` is the target's clock: it multiplies every
    `for`, every range window and the two lag thresholds (floored at 2 s); counts,
    ratios, the certificate window and the backup and drill ages stay as given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_job: str = "redis-cluster"
    proxy_job: str = "sse-proxy"
    ops_job: str = "redis-ops-metrics"
    expected_nodes: int = Field(default=6, ge=1)
    replicas: int = Field(default=1, ge=0)
    proxy: bool = True  # the SSE proxy is deployed (else its alerts are left out)
    backup_max_age_s: int | None = Field(default=None, ge=1)
    drill_max_age_s: int | None = Field(default=None, ge=1)
    replica_lag_s: int = Field(default=10, ge=2)
    reader_lag_s: int = Field(default=30, ge=2)
    memory_ratio: float = Field(default=0.9, gt=0, lt=1)
    connections_ratio: float = Field(default=0.9, gt=0, lt=1)
    proxy_5xx_ratio: float = Field(default=0.05, gt=0, lt=1)
    proxy_min_rps: float = Field(default=0.1, ge=0)  # requests/s below which 5xx don't page
    auth_failures: int = Field(default=20, ge=1)
    permission_denials: int = Field(default=50, ge=1)
    cutoffs: int = Field(default=10, ge=1)
    cert_days: int = Field(default=14, ge=1)
    scale: float = Field(default=1.0, gt=0, le=1)
    runbook_base: str = "runbooks"
    # Labels that pin every selector to one deployment (Cloud Monitoring evaluates over a
    # whole metrics scope, which may hold several clusters: `namespace`, `cluster`).
    scope: dict[str, str] = Field(default_factory=dict)

    def duration(self, seconds: float) -> str:
        """A Prometheus duration of `seconds` on this target's clock (at least 1 s)."""
        scaled = max(1, math.ceil(seconds * self.scale))
        if scaled % 3600 == 0:
            return f"{scaled // 3600}h"
        if scaled % 60 == 0:
            return f"{scaled // 60}m"
        return f"{scaled}s"

    def lag(self, seconds: int) -> int:
        """A lag threshold on this target's clock, never below 2 s: Redis and the proxy
        measure lag in whole seconds, and 0-1 s is normal."""
        return max(2, math.ceil(seconds * self.scale))

    def seconds(self, seconds: float) -> int:
        return max(1, math.ceil(seconds * self.scale)) if seconds else 0

    def _selector(self, job: str) -> str:
        extra = "".join(f',{k}="{v}"' for k, v in sorted(self.scope.items()))
        return f'job="{job}"{extra}'

    @property
    def r(self) -> str:
        return self._selector(self.redis_job)

    @property
    def p(self) -> str:
        return self._selector(self.proxy_job)

    @property
    def o(self) -> str:
        return self._selector(self.ops_job)


@dataclass(frozen=True)
class Case:
    """A promtool case: input series (`series{labels}` -> promtool values notation, one
    sample per minute), the time to evaluate at, and the labels a firing alert carries
    (besides alertname and severity)."""

    series: dict[str, str]
    at: str = "10m"
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Alert:
    name: str
    severity: Severity
    for_s: int
    expr: Callable[[AlertParams], str]
    summary: str
    description: str
    fires: Case
    quiet: Case
    applies: Callable[[AlertParams], bool] = lambda _p: True
    also_fires: tuple[Case, ...] = ()  # further failing series promtool must alert on

    def runbook_url(self, params: AlertParams) -> str:
        return f"{params.runbook_base.rstrip('/')}/{self.name}.md"


def _burst(selector: str, window: str, above: float) -> str:
    """More than `above` events in `window` of a counter, including a counter that only
    appears with its first event (Redis errorstats, a restarted pod's series): increase()
    needs two samples, so a series born above the threshold counts as its own burst."""
    return (
        f"increase({selector}[{window}]) > {above:g}"
        f" or ({selector} > {above:g} unless {selector} offset {window})"
    )


def _r(series: str, labels: str = "") -> str:
    """A test series of the Redis job (promtool cases use the default params)."""
    inner = 'job="redis-cluster",instance="redis-0:metrics"' + (f",{labels}" if labels else "")
    return f"{series}{{{inner}}}"


def _p(series: str, labels: str = "") -> str:
    inner = 'job="sse-proxy",instance="proxy-0:http"' + (f",{labels}" if labels else "")
    return f"{series}{{{inner}}}"


def _o(series: str, labels: str = "") -> str:
    inner = 'job="redis-ops-metrics",instance="ops-0:metrics"' + (f",{labels}" if labels else "")
    return f"{series}{{{inner}}}"


REDIS_LABELS = {"job": "redis-cluster", "instance": "redis-0:metrics"}
PROXY_LABELS = {"job": "sse-proxy", "instance": "proxy-0:http"}
OPS_LABELS = {"job": "redis-ops-metrics", "instance": "ops-0:metrics"}

ALERTS: tuple[Alert, ...] = (
    Alert(
        name="RedisClusterStateNotOk",
        severity="page",
        for_s=60,
        expr=lambda p: f"redis_cluster_state{{{p.r}}} == 0",
        summary="Redis node {{ $labels.instance }} reports cluster_state:fail",
        description=(
            "The node refuses queries for some or all keys (CLUSTERDOWN): a shard has no "
            "reachable primary, slots are unassigned, or the node lost the majority."
        ),
        fires=Case({_r("redis_cluster_state"): "1 1 0x10"}, labels=REDIS_LABELS),
        quiet=Case({_r("redis_cluster_state"): "1x12"}),
    ),
    Alert(
        name="RedisClusterSlotsNotOk",
        severity="page",
        for_s=60,
        expr=lambda p: (
            f"(redis_cluster_slots_pfail{{{p.r}}} + redis_cluster_slots_fail{{{p.r}}}) > 0"
            f" or redis_cluster_slots_assigned{{{p.r}}} < {SLOTS}"
        ),
        summary="Redis node {{ $labels.instance }} sees slots not served (pfail/fail/unassigned)",
        description=(
            "Some hash slots belong to a primary this node cannot reach (pfail: suspected, "
            "fail: agreed by the majority) or to no node at all; keys in them fail."
        ),
        fires=Case(
            {
                _r("redis_cluster_slots_pfail"): "0 0 5461x10",
                _r("redis_cluster_slots_fail"): "0x12",
                _r("redis_cluster_slots_assigned"): "16384x12",
            },
            labels=REDIS_LABELS,
        ),
        quiet=Case(
            {
                _r("redis_cluster_slots_pfail"): "0x12",
                _r("redis_cluster_slots_fail"): "0x12",
                _r("redis_cluster_slots_assigned"): "16384x12",
            }
        ),
    ),
    Alert(
        name="RedisNodeDown",
        severity="page",
        for_s=60,
        expr=lambda p: f"redis_up{{{p.r}}} == 0 or up{{{p.r}}} == 0",
        summary="Redis node {{ $labels.instance }} is down or its exporter cannot be scraped",
        description=(
            "The exporter cannot reach its Redis server (redis_up 0), or Prometheus cannot "
            "scrape the exporter (up 0): the node is down, hung, or unobservable."
        ),
        fires=Case({_r("redis_up"): "1 1 0x10", _r("up"): "1x12"}, labels=REDIS_LABELS),
        quiet=Case({_r("redis_up"): "1x12", _r("up"): "1x12"}),
    ),
    Alert(
        name="RedisNodesMissing",
        severity="page",
        for_s=120,
        expr=lambda p: (
            f"count(redis_up{{{p.r}}} == 1) < {p.expected_nodes} or absent(redis_up{{{p.r}}} == 1)"
        ),
        summary="Fewer Redis nodes are up than the cluster declares",
        description=(
            "Counting every node whose exporter reaches it, fewer than the declared "
            "shards x (1 + replicas) are up: pods are missing, not just one down."
        ),
        fires=Case({_r("redis_up"): "1 1 0x10"}),
        quiet=Case(
            {
                f'redis_up{{job="redis-cluster",instance="redis-{i}:metrics"}}': "1x12"
                for i in range(6)
            }
        ),
    ),
    Alert(
        name="RedisPrimaryWithoutReplica",
        severity="page",
        for_s=120,
        expr=lambda p: (
            f"(redis_connected_slaves{{{p.r}}} < 1"
            f' and on (instance) redis_instance_info{{{p.r},role="master"}} == 1)'
            f" or redis_master_link_up{{{p.r}}} == 0"
        ),
        summary="Redis {{ $labels.instance }}: a primary has no replica in sync, or a "
        "replica's link to its primary is down",
        description=(
            "A shard runs without redundancy: its primary has no connected replica, or a "
            "replica lost its replication link. Losing that primary now loses its slots."
        ),
        fires=Case(
            {
                _r("redis_connected_slaves"): "1 1 0x10",
                _r("redis_instance_info", 'role="master"'): "1x12",
            },
            labels=REDIS_LABELS,
        ),
        quiet=Case(
            {
                _r("redis_connected_slaves"): "1x12",
                _r("redis_instance_info", 'role="master"'): "1x12",
            }
        ),
        applies=lambda p: p.replicas >= 1,
    ),
    Alert(
        name="RedisReplicaLagHigh",
        severity="ticket",
        for_s=0,
        expr=lambda p: (
            f"max by (job, instance) (redis_connected_slave_lag_seconds{{{p.r}}})"
            f" > {p.lag(p.replica_lag_s)}"
        ),
        summary="A replica of {{ $labels.instance }} has not acknowledged for {{ $value }} s",
        description=(
            "The primary has heard nothing from one of its replicas for longer than the "
            "threshold: the replica is stalled, overloaded or cut off, and a failover to "
            "it would lose the writes it has not acknowledged."
        ),
        fires=Case(
            {_r("redis_connected_slave_lag_seconds", 'slave_port="6379"'): "0 0 60+60x10"},
            labels=REDIS_LABELS,
        ),
        quiet=Case({_r("redis_connected_slave_lag_seconds", 'slave_port="6379"'): "0 1 0x10"}),
        applies=lambda p: p.replicas >= 1,
    ),
    Alert(
        name="RedisMemoryHigh",
        severity="page",
        for_s=300,
        expr=lambda p: (
            f"redis_memory_used_bytes{{{p.r}}} / (redis_memory_max_bytes{{{p.r}}} > 0)"
            f" > {p.memory_ratio}"
        ),
        summary="Redis {{ $labels.instance }} uses {{ $value | humanizePercentage }} of maxmemory",
        description=(
            "Memory is close to maxmemory and the policy is noeviction: once it is reached "
            "every write fails with OOM."
        ),
        fires=Case(
            {
                _r("redis_memory_used_bytes"): "100 100 950x10",
                _r("redis_memory_max_bytes"): "1000x12",
            },
            labels=REDIS_LABELS,
        ),
        quiet=Case(
            {
                _r("redis_memory_used_bytes"): "800x12",
                _r("redis_memory_max_bytes"): "1000x12",
            }
        ),
    ),
    Alert(
        name="RedisOomRejectedWrites",
        severity="page",
        for_s=0,
        expr=lambda p: _burst(f'redis_errors_total{{{p.r},err="OOM"}}', p.duration(300), 0),
        summary="Redis {{ $labels.instance }} rejects writes: out of memory",
        description="Commands fail with OOM: used memory reached maxmemory (noeviction).",
        fires=Case(
            {_r("redis_errors_total", 'err="OOM"'): "0 0 3+3x10"},
            at="5m",
            labels={**REDIS_LABELS, "err": "OOM"},
        ),
        quiet=Case({_r("redis_errors_total", 'err="OOM"'): "3x12"}),
        also_fires=(
            Case(
                {_r("redis_errors_total", 'err="OOM"'): "_ _ 40x10"},
                at="4m",
                labels={**REDIS_LABELS, "err": "OOM"},
            ),
        ),
    ),
    Alert(
        name="RedisPersistenceWriteErrors",
        severity="page",
        for_s=60,
        expr=lambda p: (
            f"redis_rdb_last_bgsave_status{{{p.r}}} == 0"
            f" or redis_aof_last_write_status{{{p.r}}} == 0"
            f" or redis_aof_last_bgrewrite_status{{{p.r}}} == 0"
        ),
        summary="Redis {{ $labels.instance }} cannot write its RDB or AOF",
        description=(
            "The last snapshot, AOF write or AOF rewrite failed (disk full, volume "
            "read-only): Redis refuses writes (MISCONF) until persistence works again."
        ),
        fires=Case(
            {
                _r("redis_rdb_last_bgsave_status"): "1x12",
                _r("redis_aof_last_write_status"): "1 1 0x10",
                _r("redis_aof_last_bgrewrite_status"): "1x12",
            },
            labels=REDIS_LABELS,
        ),
        quiet=Case(
            {
                _r("redis_rdb_last_bgsave_status"): "1x12",
                _r("redis_aof_last_write_status"): "1x12",
                _r("redis_aof_last_bgrewrite_status"): "1x12",
            }
        ),
    ),
    Alert(
        name="RedisRejectedConnections",
        severity="page",
        for_s=0,
        expr=lambda p: (
            f"increase(redis_rejected_connections_total{{{p.r}}}[{p.duration(300)}]) > 0"
        ),
        summary="Redis {{ $labels.instance }} refuses connections (maxclients reached)",
        description="New connections are refused: the node is at maxclients.",
        fires=Case(
            {_r("redis_rejected_connections_total"): "0 0 5+5x10"}, at="5m", labels=REDIS_LABELS
        ),
        quiet=Case({_r("redis_rejected_connections_total"): "5x12"}),
    ),
    Alert(
        name="RedisAuthFailuresSpike",
        severity="ticket",
        for_s=0,
        expr=lambda p: _burst(
            f'redis_errors_total{{{p.r},err="WRONGPASS"}}', p.duration(300), p.auth_failures
        ),
        summary="Redis {{ $labels.instance }}: {{ $value }} failed logins in 5 minutes",
        description=(
            "Many AUTH attempts with a wrong user or password (Redis 7 counts them as "
            "acl_access_denied_auth and errorstat WRONGPASS): a client kept an old "
            "password after a rotation, or someone is guessing."
        ),
        fires=Case(
            {_r("redis_errors_total", 'err="WRONGPASS"'): "0 0 50+50x10"},
            at="5m",
            labels={**REDIS_LABELS, "err": "WRONGPASS"},
        ),
        quiet=Case({_r("redis_errors_total", 'err="WRONGPASS"'): "0+1x12"}, at="5m"),
        also_fires=(
            Case(
                {_r("redis_errors_total", 'err="WRONGPASS"'): "_ _ 100x10"},
                at="4m",
                labels={**REDIS_LABELS, "err": "WRONGPASS"},
            ),
        ),
    ),
    Alert(
        name="RedisPermissionDenialsSpike",
        severity="ticket",
        for_s=0,
        expr=lambda p: _burst(
            f'redis_errors_total{{{p.r},err="NOPERM"}}', p.duration(300), p.permission_denials
        ),
        summary="Redis {{ $labels.instance }}: {{ $value }} commands refused by the ACL "
        "in 5 minutes",
        description=(
            "A logged-in client keeps running commands or touching keys its role does not "
            "allow (NOPERM): a client deployed with the wrong role or stream names."
        ),
        fires=Case(
            {_r("redis_errors_total", 'err="NOPERM"'): "0 0 100+100x10"},
            at="5m",
            labels={**REDIS_LABELS, "err": "NOPERM"},
        ),
        quiet=Case({_r("redis_errors_total", 'err="NOPERM"'): "0+1x12"}, at="5m"),
        also_fires=(
            Case(
                {_r("redis_errors_total", 'err="NOPERM"'): "_ _ 100x10"},
                at="4m",
                labels={**REDIS_LABELS, "err": "NOPERM"},
            ),
        ),
    ),
    Alert(
        name="RedisTlsCertificateExpiringSoon",
        severity="ticket",
        for_s=0,
        expr=lambda p: (
            f"redisops_tls_certificate_expiry_timestamp_seconds{{{p.o}}} - time()"
            f" < {p.cert_days * 86400}"
        ),
        summary="TLS certificate {{ $labels.certificate }} expires in less than "
        "{{ $value | humanizeDuration }}",
        description=(
            "A certificate Redis or its clients use expires soon; once it does, nodes, "
            "replication and clients stop connecting. `pulumi up` reissues certificates in "
            "their renewal window and the reconcile Job reloads them."
        ),
        fires=Case(
            {
                _o(
                    "redisops_tls_certificate_expiry_timestamp_seconds", 'certificate="node"'
                ): "1000000x12"
            },
            labels={**OPS_LABELS, "certificate": "node"},
        ),
        quiet=Case(
            {
                _o(
                    "redisops_tls_certificate_expiry_timestamp_seconds", 'certificate="node"'
                ): "99999999x12"
            }
        ),
    ),
    Alert(
        name="RedisBackupStale",
        severity="page",
        for_s=0,
        expr=lambda p: (
            f"time() - redisops_backup_last_success_timestamp_seconds{{{p.o}}}"
            f" > {p.backup_max_age_s}"
        ),
        summary="The newest complete backup is {{ $value | humanizeDuration }} old",
        description=(
            "No backup completed within the schedule's longest gap plus slack: a restore "
            "now would lose more than the promised recovery point."
        ),
        fires=Case(
            {_o("redisops_backup_last_success_timestamp_seconds"): "0x200"},
            at="3h",
            labels=OPS_LABELS,
        ),
        quiet=Case({_o("redisops_backup_last_success_timestamp_seconds"): "0+60x200"}, at="3h"),
        applies=lambda p: p.backup_max_age_s is not None,
    ),
    Alert(
        name="RedisBackupFailed",
        severity="ticket",
        for_s=0,
        expr=lambda p: f"redisops_backup_last_run_failed{{{p.o}}} == 1",
        summary="The last backup run failed",
        description=(
            "`redisops backup create` recorded a failure on its last run; the previous "
            "backup is still there, and RedisBackupStale follows if the next run fails too."
        ),
        fires=Case({_o("redisops_backup_last_run_failed"): "0 0 1x10"}, labels=OPS_LABELS),
        quiet=Case({_o("redisops_backup_last_run_failed"): "0x12"}),
        applies=lambda p: p.backup_max_age_s is not None,
    ),
    Alert(
        name="RedisRestoreDrillFailed",
        severity="ticket",
        for_s=0,
        expr=lambda p: f"redisops_drill_last_run_failed{{{p.o}}} == 1",
        summary="The last restore drill failed",
        description=(
            "The newest restore drill could not restore or verify a backup: backups may "
            "exist that cannot be restored."
        ),
        fires=Case({_o("redisops_drill_last_run_failed"): "0 0 1x10"}, labels=OPS_LABELS),
        quiet=Case({_o("redisops_drill_last_run_failed"): "0x12"}),
        applies=lambda p: p.drill_max_age_s is not None,
    ),
    Alert(
        name="RedisRestoreDrillOverdue",
        severity="ticket",
        for_s=0,
        expr=lambda p: (
            f"time() - redisops_drill_last_success_timestamp_seconds{{{p.o}}} > {p.drill_max_age_s}"
        ),
        summary="No restore drill succeeded for {{ $value | humanizeDuration }}",
        description=(
            "Backups are only trusted once a restore from them has been proven; the last "
            "successful drill is older than the drill schedule allows."
        ),
        fires=Case(
            {_o("redisops_drill_last_success_timestamp_seconds"): "0x200"},
            at="3h",
            labels=OPS_LABELS,
        ),
        quiet=Case({_o("redisops_drill_last_success_timestamp_seconds"): "0+60x200"}, at="3h"),
        applies=lambda p: p.drill_max_age_s is not None,
    ),
    Alert(
        name="RedisOpsMetricsDown",
        severity="ticket",
        for_s=300,
        expr=lambda p: (
            f"up{{{p.o}}} == 0 or redisops_source_up{{{p.o}}} == 0 or absent(up{{{p.o}}})"
        ),
        summary="The platform's own metrics (backups, drills, certificates) are not collected",
        description=(
            "`redisops metrics serve` is down or cannot read a source: the backup, drill and "
            "certificate alerts cannot fire while this one does."
        ),
        fires=Case(
            {_o("up"): "1 1 0x10", _o("redisops_source_up", 'source="backups"'): "1x12"},
            labels=OPS_LABELS,
        ),
        quiet=Case({_o("up"): "1x12", _o("redisops_source_up", 'source="backups"'): "1x12"}),
    ),
    Alert(
        name="SseProxyDown",
        severity="page",
        for_s=120,
        expr=lambda p: f"up{{{p.p}}} == 0 or absent(up{{{p.p}}})",
        summary="No SSE proxy can be scraped ({{ $labels.instance }})",
        description=(
            "Prometheus cannot reach an SSE proxy's /metrics, or none is left: browsers "
            "get no live events through it."
        ),
        fires=Case({_p("up"): "1 1 0x10"}, labels=PROXY_LABELS),
        quiet=Case({_p("up"): "1x12"}),
        applies=lambda p: p.proxy,
    ),
    Alert(
        name="SseProxyNotReady",
        severity="page",
        for_s=120,
        expr=lambda p: f"sse_ready{{{p.p}}} == 0",
        summary="SSE proxy {{ $labels.instance }} is not ready (Redis unreachable, a reader "
        "stopped, or draining)",
        description=(
            "The proxy answers /readyz with 503: the load balancer sends it no clients. "
            "Draining during a rollout ends by itself; anything else does not."
        ),
        fires=Case({_p("sse_ready"): "1 1 0x10"}, labels=PROXY_LABELS),
        quiet=Case({_p("sse_ready"): "1x12"}),
        applies=lambda p: p.proxy,
    ),
    Alert(
        name="SseProxyHigh5xxRate",
        severity="page",
        for_s=300,
        expr=lambda p: (
            # Client requests only: a pod that is not ready answers the kubelet's probes
            # with 503, which is SseProxyNotReady's to say.
            f"sum by (job, instance) (rate(sse_http_requests_total{{{p.p},{CLIENT_ROUTES},"
            f'status=~"5.."}}[{p.duration(300)}]))'
            f" / sum by (job, instance) (rate(sse_http_requests_total{{{p.p},{CLIENT_ROUTES}}}"
            f"[{p.duration(300)}])) > {p.proxy_5xx_ratio}"
            # and enough requests that a ratio means something (one client retrying
            # against a full pod is SseConnectionsNearLimit's)
            f" and sum by (job, instance) (rate(sse_http_requests_total{{{p.p},{CLIENT_ROUTES}}}"
            f"[{p.duration(300)}])) > {p.proxy_min_rps:g}"
        ),
        summary="SSE proxy {{ $labels.instance }} answers {{ $value | humanizePercentage }} "
        "of requests with 5xx",
        description=(
            "Subscriptions or publishes fail on the server side (Redis unreachable, the "
            "connection limit reached)."
        ),
        fires=Case(
            {
                _p(
                    "sse_http_requests_total", 'method="GET",route="subscribe",status="200"'
                ): "0+10x20",
                _p(
                    "sse_http_requests_total", 'method="GET",route="subscribe",status="503"'
                ): "0+5x20",
            },
            labels=PROXY_LABELS,
        ),
        quiet=Case(
            {
                _p(
                    "sse_http_requests_total", 'method="GET",route="subscribe",status="200"'
                ): "0+100x20",
                _p(
                    "sse_http_requests_total", 'method="GET",route="subscribe",status="503"'
                ): "0+1x20",
            }
        ),
        applies=lambda p: p.proxy,
    ),
    Alert(
        name="SseReaderLagHigh",
        severity="page",
        for_s=60,
        expr=lambda p: (
            f"max by (job, instance, pattern) (sse_reader_lag_seconds{{{p.p}}})"
            f" > {p.lag(p.reader_lag_s)}"
        ),
        summary="SSE proxy {{ $labels.instance }}: entries of {{ $labels.pattern }} wait "
        "{{ $value }} s to be delivered",
        description=(
            "The oldest stream entry the proxy's reader has not delivered yet is older than "
            "the threshold: the reader is stalled or cannot keep up, browsers see nothing new."
        ),
        fires=Case(
            {_p("sse_reader_lag_seconds", 'pattern="agent_updates"'): "0 0 100x10"},
            labels={**PROXY_LABELS, "pattern": "agent_updates"},
        ),
        quiet=Case({_p("sse_reader_lag_seconds", 'pattern="agent_updates"'): "0 1 0x10"}),
        applies=lambda p: p.proxy,
    ),
    Alert(
        name="SseSlowClientCutoffsSpike",
        severity="ticket",
        for_s=0,
        expr=lambda p: (
            f"sum by (job, instance) (increase(sse_slow_client_cutoffs_total{{{p.p}}}"
            f"[{p.duration(300)}])) > {p.cutoffs}"
        ),
        summary="SSE proxy {{ $labels.instance }} cut off {{ $value }} slow clients in 5 minutes",
        description=(
            "Many clients fell further behind than the per-client buffer allows: their "
            "network is poor, or the proxy is overloaded (CPU) and cannot send in time."
        ),
        fires=Case(
            {_p("sse_slow_client_cutoffs_total", 'pattern="agent_updates"'): "0 0 20+20x10"},
            at="5m",
            labels=PROXY_LABELS,
        ),
        quiet=Case(
            {_p("sse_slow_client_cutoffs_total", 'pattern="agent_updates"'): "0+1x12"}, at="5m"
        ),
        applies=lambda p: p.proxy,
    ),
    Alert(
        name="SseConnectionsNearLimit",
        severity="ticket",
        for_s=300,
        expr=lambda p: (
            f"sse_connections{{{p.p}}} / (sse_connections_limit{{{p.p}}} > 0)"
            f" > {p.connections_ratio}"
        ),
        summary="SSE proxy {{ $labels.instance }} holds {{ $value | humanizePercentage }} "
        "of its connection limit",
        description=(
            "New subscriptions beyond the limit are refused with 503; the HPA scales on CPU, "
            "not connections, so idle browsers can exhaust a pod."
        ),
        fires=Case(
            {_p("sse_connections"): "0 0 95x10", _p("sse_connections_limit"): "100x12"},
            labels=PROXY_LABELS,
        ),
        quiet=Case({_p("sse_connections"): "50x12", _p("sse_connections_limit"): "100x12"}),
        applies=lambda p: p.proxy,
    ),
)

BY_NAME = {alert.name: alert for alert in ALERTS}

# Alerts defined outside this module (not PromQL): their runbook pages are theirs.
EXTERNAL_ALERTS = {
    "SseProxyUnreachable": "Cloud Monitoring uptime check on https://<proxy>/healthz "
    "(infra/gcp/edge.py)",
}


_METRIC = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def metric_names(params: AlertParams) -> list[str]:
    """Every metric the selected alerts' expressions read."""
    names = {m for alert in selected(params) for m in _METRIC.findall(alert.expr(params))}
    return sorted(names)


def selected(params: AlertParams) -> list[Alert]:
    """The alerts that apply to a target with `params`."""
    return [alert for alert in ALERTS if alert.applies(params)]


def _annotations(alert: Alert, params: AlertParams) -> dict[str, str]:
    return {
        "summary": alert.summary,
        "description": alert.description,
        "runbook_url": alert.runbook_url(params),
    }


def rule_groups(
    params: AlertParams, interval_s: int = 30, annotations: bool = True
) -> dict[str, Any]:
    """The Prometheus rule file (as data; `yaml.safe_dump` it). `annotations=False` is
    for promtool cases, which would otherwise have to spell out every rendered text."""
    rules = []
    for alert in selected(params):
        rule: dict[str, Any] = {"alert": alert.name, "expr": alert.expr(params)}
        if alert.for_s:
            rule["for"] = params.duration(alert.for_s)
        rule["labels"] = {"severity": alert.severity}
        if annotations:
            rule["annotations"] = _annotations(alert, params)
        rules.append(rule)
    return {"groups": [{"name": GROUP, "interval": f"{interval_s}s", "rules": rules}]}


def prometheus_rule(
    params: AlertParams, name: str, namespace: str, labels: dict[str, str]
) -> dict[str, Any]:
    """The same rules as a prometheus-operator `PrometheusRule` object."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": rule_groups(params),
    }


def cloud_policies(params: AlertParams, interval_s: int = 30) -> list[dict[str, Any]]:
    """One Cloud Monitoring alert policy per alert (the inputs of
    `gcp.monitoring.AlertPolicy`, in the provider's snake_case), PromQL conditions."""
    policies = []
    for alert in selected(params):
        condition = {
            "query": alert.expr(params),
            "duration": f"{params.seconds(alert.for_s)}s",
            "evaluation_interval": f"{interval_s}s",
            "labels": {"severity": alert.severity},
            "rule_group": GROUP,
            "alert_rule": alert.name,
        }
        policies.append(
            {
                "name": alert.name,
                "display_name": alert.name,
                "severity": "CRITICAL" if alert.severity == "page" else "WARNING",
                "combiner": "OR",
                "conditions": [
                    {"display_name": alert.name, "condition_prometheus_query_language": condition}
                ],
                "documentation": {
                    "mime_type": "text/markdown",
                    "subject": f"[{alert.severity}] {alert.name}",
                    "content": f"{alert.description}\n\nRunbook: {alert.runbook_url(params)}",
                },
                "alert_strategy": {"auto_close": "1800s"},
            }
        )
    return policies


# The parameters the promtool cases are written for: the default job names and
# thresholds, and backup and drill ages of an hour (the cases evaluate at 3 h).
CASE_PARAMS = AlertParams(backup_max_age_s=3600, drill_max_age_s=3600)


def promtool_tests(params: AlertParams, rule_file: str) -> dict[str, Any]:
    """`promtool test rules` input: for every alert, its firing case and its quiet case,
    for a rule file rendered with `params` (the cases' series assume CASE_PARAMS)."""
    if params != CASE_PARAMS:
        raise ValueError("the promtool cases are written for alerts.CASE_PARAMS")
    tests = []
    for alert in selected(params):
        cases = [(alert.fires, True), *((c, True) for c in alert.also_fires), (alert.quiet, False)]
        for n, (case, fires) in enumerate(cases):
            expected = []
            if fires:
                expected = [
                    {
                        "exp_labels": {"severity": alert.severity, **case.labels},
                    }
                ]
            tests.append(
                {
                    "name": f"{alert.name} {'fires' if fires else 'stays quiet'} ({n})",
                    "interval": "1m",
                    "input_series": [
                        {"series": series, "values": values}
                        for series, values in case.series.items()
                    ],
                    "alert_rule_test": [
                        {"eval_time": case.at, "alertname": alert.name, "exp_alerts": expected}
                    ],
                }
            )
    return {"rule_files": [rule_file], "evaluation_interval": "1m", "tests": tests}
