"""Monitoring in the cluster: the platform's own metrics (`redisops metrics serve`:
certificate expiry, backup and drill outcomes), and the alerts as a prometheus-operator
PrometheusRule where the stack asks for one.

The metrics Deployment holds no Redis credential and no private key: it reads the node
certificate and the CA (public halves only) and, with backups, the backup location as a
read-only Google identity (Workload Identity).
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s import tls as tls_names
from infra.k8s.common import (
    OPS_METRICS,
    OPS_METRICS_PORT,
    OPS_METRICS_SELECTOR,
    PLATFORM_UID,
    RESTRICTED_CONTAINER,
    Platform,
    labels,
    meta,
    pod_monitoring_spec,
    pool_placement,
    restricted_pod,
)
from infra.k8s.jobs import WORK, work_env
from infra.settings import StackSettings
from redisops import alerts
from redisops.backup.storage import NO_BUCKET_METADATA

CERT_DIR = "/etc/redis-platform/node"
# Certificates watched (redisops_tls_certificate_expiry_timestamp_seconds{certificate}).
WATCHED = {"node": f"{CERT_DIR}/tls.crt", "ca": f"{CERT_DIR}/ca.crt"}
RULE_NAME = "redis-platform"


def ops_metrics_args(settings: StackSettings) -> list[str]:
    args = ["metrics", "serve", "--listen", f"0.0.0.0:{OPS_METRICS_PORT}"]
    for name, path in WATCHED.items():
        args += ["--cert", f"{name}={path}"]
    if settings.backup.enabled:
        args += ["--backups", settings.backup.url]
    return args


def ops_metrics_pod(settings: StackSettings) -> dict[str, Any]:
    """The pod template of the platform metrics Deployment."""
    container = {
        "name": "metrics",
        "image": settings.platform_image,
        "command": ["redisops"],
        "args": ops_metrics_args(settings),
        # The identity holds object rights only: no bucket metadata fetch (buckets.get).
        "env": [*work_env(), {"name": NO_BUCKET_METADATA, "value": "true"}],
        "ports": [{"name": "metrics", "containerPort": OPS_METRICS_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "20m", "memory": "192Mi"}, "limits": {"memory": "192Mi"}},
        # Every scrape reads its sources; an unreadable one is reported (redisops_source_up),
        # never a failed answer, so only a hung server fails this. Generous: a slow Cloud
        # Storage must not restart it.
        "livenessProbe": {
            "httpGet": {"path": "/metrics", "port": "metrics"},
            "periodSeconds": 60,
            "timeoutSeconds": 30,
            "failureThreshold": 3,
        },
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [
            {"name": "node-cert", "mountPath": CERT_DIR, "readOnly": True},
            {"name": "work", "mountPath": WORK},
        ],
    }
    return {
        "metadata": {"labels": labels("ops-metrics", OPS_METRICS_SELECTOR)},
        "spec": {
            "serviceAccountName": OPS_METRICS,
            # Workload Identity needs no token mount; it never calls the API server.
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": restricted_pod(PLATFORM_UID),
            **pool_placement(settings, "system"),
            "containers": [container],
            "volumes": [
                {
                    "name": "node-cert",
                    "secret": {
                        "secretName": tls_names.NODE_SECRET,
                        # the certificates, never the key
                        "items": [
                            {"key": "tls.crt", "path": "tls.crt"},
                            {"key": "ca.crt", "path": "ca.crt"},
                        ],
                        "defaultMode": 0o440,
                    },
                },
                {"name": "work", "emptyDir": {"sizeLimit": "64Mi"}},
            ],
        },
    }


class OpsMetrics(pulumi.ComponentResource):
    """Deployment `redis-ops-metrics` (one replica), its ServiceAccount (Workload Identity
    to `gcp_account` when there are backups to read), and its PodMonitoring. Its
    NetworkPolicies are in infra/k8s/network.py."""

    def __init__(
        self,
        resource_name: str,
        platform: Platform,
        *,
        depends_on: list[pulumi.Resource],
        gcp_account: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`gcp_account`: the read-only Google service account it reads backups as;
        default backup.smokeServiceAccount (the same read-only identity)."""
        super().__init__("redis-platform:k8s:OpsMetrics", resource_name, None, opts)
        settings = platform.settings
        ns = platform.ns
        annotations: dict[str, Any] = {}
        account = gcp_account or settings.backup.smoke_service_account
        if settings.backup.enabled and account:
            annotations["iam.gke.io/gcp-service-account"] = account
        service_account = k8s.core.v1.ServiceAccount(
            "service-account",
            metadata=meta(OPS_METRICS, ns, "ops-metrics", annotations=annotations),
            automount_service_account_token=False,
            opts=platform.opts(self),
        )
        self.deployment = k8s.apps.v1.Deployment(
            "deployment",
            metadata=meta(OPS_METRICS, ns, "ops-metrics"),
            spec={
                "replicas": 1,
                "revisionHistoryLimit": 3,
                "selector": {"matchLabels": OPS_METRICS_SELECTOR},
                "template": ops_metrics_pod(settings),
            },
            opts=platform.opts(self, depends_on=[service_account, *depends_on]),
        )
        if settings.monitoring.pod_monitoring:
            k8s.apiextensions.CustomResource(
                "pod-monitoring",
                api_version="monitoring.googleapis.com/v1",
                kind="PodMonitoring",
                metadata=meta(OPS_METRICS, ns, "monitoring"),
                spec=pod_monitoring_spec(OPS_METRICS_SELECTOR),
                opts=platform.opts(self),
            )
        self.register_outputs({})


class PrometheusAlerts(pulumi.ComponentResource):
    """The alerts as a prometheus-operator PrometheusRule (monitoring.prometheusRule)."""

    def __init__(
        self,
        resource_name: str,
        platform: Platform,
        params: alerts.AlertParams,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("redis-platform:k8s:PrometheusAlerts", resource_name, None, opts)
        rule = alerts.prometheus_rule(params, RULE_NAME, platform.ns, labels("monitoring"))
        k8s.apiextensions.CustomResource(
            "prometheus-rule",
            api_version=rule["apiVersion"],
            kind=rule["kind"],
            metadata=rule["metadata"],
            spec=rule["spec"],
            opts=platform.opts(self),
        )
        self.register_outputs({})
