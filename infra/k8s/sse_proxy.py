"""The SSE proxy, deployed with its own chart (charts/sse-proxy) through Helm v4.

The values wire the chart to what the other components declared: the client Service,
the proxy's client certificate, the reader/publisher Secrets, the token signing Secret,
and the Redis pods' labels for its NetworkPolicy. The same values are rendered by the
real Helm engine in the tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s import credentials as creds
from infra.k8s import tls as tls_names
from infra.k8s.common import (
    PROXY_PORT,
    PROXY_RELEASE,
    REDIS_PORT,
    REDIS_SELECTOR,
    Platform,
    pool_placement,
    redis_client_endpoint,
    service_host,
    split_image,
)
from infra.settings import StackSettings
from redisops import acl

CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "sse-proxy"


def chart_values(settings: StackSettings) -> dict[str, Any]:
    """The chart's values for this stack (schema: charts/sse-proxy/values.schema.json)."""
    proxy = settings.proxy
    repository, tag, digest = split_image(settings.platform_image)
    return {
        "fullnameOverride": PROXY_RELEASE,
        "image": {"repository": repository, "tag": tag or "", "digest": digest or ""},
        "proxy": {
            "port": PROXY_PORT,
            "streams": list(settings.streams.patterns),
            "retention": [dict(rule) for rule in settings.streams.retention],
            "corsOrigins": list(proxy.cors_origins),
        },
        "redis": {
            "mode": "cluster",
            "nodes": [redis_client_endpoint(settings)],
            "tls": {"enabled": True, "secretName": tls_names.CLIENTS["sse-proxy"]},
            "reader": {
                "username": acl.READER,
                "secretName": creds.user_secret(acl.READER),
                "passwordKey": "password",
            },
            "publisher": {
                "username": acl.PUBLISHER,
                "secretName": creds.user_secret(acl.PUBLISHER),
                "passwordKey": "password",
            },
        },
        "auth": {"mode": "jwt", "hs256SecretName": creds.JWT_SECRET},
        "resources": {
            "requests": {"cpu": proxy.resources.cpu, "memory": proxy.resources.memory},
            "limits": {"memory": proxy.resources.memory},
        },
        "ingress": {
            "enabled": proxy.hostname is not None,
            "host": proxy.hostname or "",
            "staticIpName": proxy.static_ip_name or "",
        },
        "autoscaling": {
            "enabled": True,
            "minReplicas": proxy.min_replicas,
            "maxReplicas": proxy.max_replicas,
        },
        "networkPolicy": {
            "enabled": True,
            "redisNamespace": settings.namespace,
            "redisPodLabels": dict(REDIS_SELECTOR),
            "redisPort": REDIS_PORT,
            "allowFromCidrs": list(settings.network.load_balancer_cidrs),
        },
        "metrics": {"podMonitoring": {"enabled": settings.monitoring.pod_monitoring}},
        "nodeSelector": pool_placement(settings, "proxy").get("nodeSelector", {}),
    }


def proxy_url(settings: StackSettings) -> str:
    """Where browsers (public hostname) or in-cluster callers reach the proxy."""
    if settings.proxy.hostname:
        return f"https://{settings.proxy.hostname}"
    return in_cluster_url(settings)


def in_cluster_url(settings: StackSettings) -> str:
    return f"http://{service_host(settings, PROXY_RELEASE)}:{PROXY_PORT}"


class SseProxy(pulumi.ComponentResource):
    """The chart release `sse-proxy` in the platform namespace."""

    url: str

    def __init__(
        self,
        resource_name: str,
        platform: Platform,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("redis-platform:k8s:SseProxy", resource_name, None, opts)
        settings = platform.settings
        self.values = chart_values(settings)
        self.chart = k8s.helm.v4.Chart(
            "chart",
            name=PROXY_RELEASE,
            chart=str(CHART_DIR),
            namespace=settings.namespace,
            values=self.values,
            opts=platform.opts(self, depends_on=depends_on),
        )
        self.url = proxy_url(settings)
        self.register_outputs({"url": self.url})
