"""The alerts' parameters for a stack: what `redisops.alerts` needs to render the same
alerts for Cloud Monitoring (infra/gcp/monitoring.py) and as a PrometheusRule
(infra/k8s/monitoring.py)."""

from __future__ import annotations

from infra.k8s.common import OPS_METRICS, PROXY_RELEASE, STATEFULSET
from infra.settings import StackSettings
from redisops.alerts import AlertParams


def alert_params(settings: StackSettings) -> AlertParams:
    """The stack's AlertParams. Job names are the PodMonitoring names (Managed Prometheus
    labels every series with `job` = the PodMonitoring's name): the Redis one, the
    chart's (its fullname, `sse-proxy`) and the platform metrics'."""
    backup = settings.backup
    return AlertParams(
        redis_job=STATEFULSET,
        proxy_job=PROXY_RELEASE,
        ops_job=OPS_METRICS,
        expected_nodes=settings.redis.pods,
        replicas=settings.redis.replicas,
        proxy=settings.proxy.enabled,
        backup_max_age_s=backup.max_age_s if backup.enabled else None,
        # no backups, nothing to drill
        drill_max_age_s=settings.monitoring.drill_max_age_s if backup.enabled else None,
        runbook_base=settings.monitoring.runbook_base_url,
        # Cloud Monitoring evaluates over the whole metrics scope: only this stack's series
        # (Managed Prometheus labels each with its cluster and namespace).
        scope=_scope(settings),
    )


def _scope(settings: StackSettings) -> dict[str, str]:
    scope = {"namespace": settings.namespace}
    if settings.gcp is not None:
        scope["cluster"] = settings.gcp.gke.name
    return scope


def in_cluster_params(settings: StackSettings) -> AlertParams:
    """For a Prometheus inside the cluster (the PrometheusRule): it sees only this
    cluster's series, which carry no Managed Prometheus `cluster` label."""
    return alert_params(settings).model_copy(update={"scope": {}})
