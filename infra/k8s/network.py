"""NetworkPolicies: deny everything in the namespace, then allow each flow by name.

Flows: DNS for every pod; the Redis client port from Redis pods (replication, handoff),
the platform's jobs, the SSE proxy and the configured client namespaces; the cluster bus
only among Redis pods; the exporter port from Managed Prometheus; the jobs that read the
API (reconcile: zones; dev smoke: pod deletion) to the control plane; backups to Google
APIs and the metadata server (Workload Identity), and the smoke Job too (it reads the
newest backup's age); the platform metrics (redis-ops-metrics): scraped from Managed
Prometheus, and with backups to Google APIs (it reads their outcomes), nothing else. The
SSE proxy's own policy (ingress from the load balancer and Managed Prometheus, egress to
Redis) comes with its chart.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s.common import (
    BUS_PORT,
    CLIENT_LABEL,
    EXPORTER_PORT,
    OPS_METRICS_PORT,
    OPS_METRICS_SELECTOR,
    PROXY_PORT,
    PROXY_SELECTOR,
    REDIS_PORT,
    REDIS_SELECTOR,
    Platform,
    job_labels,
    meta,
)
from infra.settings import StackSettings

PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16")
# GKE's metadata server as Workload Identity pods see it (Dataplane V2 serves it on
# 169.254.169.252:988; the classic address is 169.254.169.254:80).
METADATA_SERVER = (("169.254.169.254/32", 80), ("169.254.169.252/32", 988))
GMP_NAMESPACE = "gmp-system"


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"port": p, "protocol": "TCP"} for p in ports]


def _ns_selector(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def redis_client_peers(settings: StackSettings) -> list[dict[str, Any]]:
    """Who may open connections to the Redis client port."""
    peers: list[dict[str, Any]] = [
        {"podSelector": {"matchLabels": REDIS_SELECTOR}},
        {"podSelector": {"matchLabels": CLIENT_LABEL}},
        {"podSelector": {"matchLabels": PROXY_SELECTOR}},
    ]
    clients = settings.clients
    if clients.namespaces:
        peer: dict[str, Any] = {
            "namespaceSelector": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "In",
                        "values": list(clients.namespaces),
                    }
                ]
            }
        }
        if clients.pod_labels:
            peer["podSelector"] = {"matchLabels": dict(clients.pod_labels)}
        peers.append(peer)
    elif clients.pod_labels:
        peers.append({"podSelector": {"matchLabels": dict(clients.pod_labels)}})
    return peers


def _cidr_peers(cidrs: tuple[str, ...]) -> list[dict[str, Any]]:
    peers = []
    for cidr in cidrs:
        block: dict[str, Any] = {"cidr": cidr}
        if cidr == "0.0.0.0/0":
            block["except"] = list(PRIVATE_RANGES)  # public Google APIs only
        peers.append({"ipBlock": block})
    return peers


def _named(component: str) -> dict[str, Any]:
    """The podSelector of one job's pods."""
    return {
        "matchLabels": {"app.kubernetes.io/name": job_labels(component)["app.kubernetes.io/name"]}
    }


DEFAULT_DENY: dict[str, Any] = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def dns_egress() -> dict[str, Any]:
    """Every pod of the namespace may resolve names (kube-dns, UDP and TCP 53)."""
    return {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [
                    {
                        **_ns_selector("kube-system"),
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    }
                ],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
            }
        ],
    }


def _google_apis(settings: StackSettings, component: str) -> dict[str, Any]:
    return google_apis_egress(settings, _named(component))


def google_apis_egress(settings: StackSettings, pod_selector: dict[str, Any]) -> dict[str, Any]:
    """Egress of Workload Identity pods to Google APIs (443) and their metadata server."""
    return {
        "podSelector": pod_selector,
        "policyTypes": ["Egress"],
        "egress": [
            {"to": _cidr_peers(settings.network.google_apis_cidrs), "ports": _tcp(443)},
            *(
                {"to": [{"ipBlock": {"cidr": cidr}}], "ports": _tcp(port)}
                for cidr, port in METADATA_SERVER
            ),
        ],
    }


def policies(settings: StackSettings) -> dict[str, dict[str, Any]]:
    """name -> NetworkPolicy spec."""
    redis = {"matchLabels": REDIS_SELECTOR}
    # reconcile reads pod zones; dev's smoke suite deletes a pod (prod's never calls the API)
    api_callers = ["redis-reconcile"] + (["redis-smoke"] if settings.environment != "prod" else [])
    api_clients = {
        "matchExpressions": [
            {"key": "app.kubernetes.io/name", "operator": "In", "values": api_callers}
        ]
    }
    specs: dict[str, dict[str, Any]] = {
        "default-deny": dict(DEFAULT_DENY),
        "allow-dns": dns_egress(),
        "redis-client-port": {
            "podSelector": redis,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": redis_client_peers(settings), "ports": _tcp(REDIS_PORT)}],
        },
        "redis-bus": {
            "podSelector": redis,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": redis}], "ports": _tcp(BUS_PORT)}],
        },
        "redis-to-redis": {
            "podSelector": redis,
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": redis}], "ports": _tcp(REDIS_PORT, BUS_PORT)}],
        },
        "redis-metrics": {
            "podSelector": redis,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [_ns_selector(GMP_NAMESPACE)], "ports": _tcp(EXPORTER_PORT)}],
        },
        "ops-metrics": {
            "podSelector": {"matchLabels": OPS_METRICS_SELECTOR},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [_ns_selector(GMP_NAMESPACE)], "ports": _tcp(OPS_METRICS_PORT)}],
        },
        "jobs-to-redis": {
            "podSelector": {"matchLabels": CLIENT_LABEL},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": redis}], "ports": _tcp(REDIS_PORT)}],
        },
        "jobs-to-api-server": {
            "podSelector": api_clients,
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": c}} for c in settings.network.api_server_cidrs],
                    "ports": _tcp(443),
                }
            ],
        },
        "smoke-to-proxy": {
            "podSelector": _named("smoke"),
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"podSelector": {"matchLabels": PROXY_SELECTOR}}],
                    "ports": _tcp(PROXY_PORT),
                }
            ],
        },
    }
    if settings.backup.enabled:
        specs["backup-to-google-apis"] = _google_apis(settings, "backup")
        specs["smoke-to-google-apis"] = _google_apis(settings, "smoke")
        specs["ops-metrics-to-google-apis"] = _google_apis(settings, "ops-metrics")
    return specs


def drill_policies(
    settings: StackSettings, pod_selector: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """name -> NetworkPolicy spec of the restore drill's scratch namespace: nothing comes in;
    out only DNS, and Google APIs with the metadata server for the drill's pods (they read
    the backup and write the run record; the scratch servers live inside the pod)."""
    return {
        "default-deny": dict(DEFAULT_DENY),
        "allow-dns": dns_egress(),
        "allow-google-apis": google_apis_egress(settings, pod_selector),
    }


class NetworkPolicies(pulumi.ComponentResource):
    """Default deny plus one NetworkPolicy per allowed flow: the platform namespace's
    (`policies`) unless other `specs` and their `namespace` are given (their resources
    named with `prefix`, so no two share a name)."""

    def __init__(
        self,
        resource_name: str,
        platform: Platform,
        specs: dict[str, dict[str, Any]] | None = None,
        namespace: str | None = None,
        prefix: str = "",
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("redis-platform:k8s:NetworkPolicies", resource_name, None, opts)
        self.names = []
        for name, spec in (specs if specs is not None else policies(platform.settings)).items():
            k8s.networking.v1.NetworkPolicy(
                prefix + name,
                metadata=meta(name, namespace or platform.ns, "network"),
                spec=spec,
                opts=platform.opts(self),
            )
            self.names.append(name)
        self.register_outputs({"names": self.names})
