"""Names, labels, ports and paths every Kubernetes component agrees on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.settings import StackSettings

REDIS_PORT = 6379
BUS_PORT = REDIS_PORT + 10000
EXPORTER_PORT = 9121
PROXY_PORT = 8080
OPS_METRICS_PORT = 9122

STATEFULSET = "redis-cluster"
HEADLESS = "redis-cluster-headless"
CLIENT_SERVICE = "redis-cluster"
PROXY_RELEASE = "sse-proxy"
# The platform's own metrics (`redisops metrics serve`): Deployment, ServiceAccount and
# PodMonitoring share the name; GMP's job label is the PodMonitoring's name.
OPS_METRICS = "redis-ops-metrics"

# The platform image's user; the Redis pods run that image too (one Redis build).
PLATFORM_UID = 10001
REDIS_UID = PLATFORM_UID

PART_OF = {"app.kubernetes.io/part-of": "redis-platform", "app.kubernetes.io/managed-by": "pulumi"}
REDIS_SELECTOR = {"app.kubernetes.io/name": "redis-cluster", "app.kubernetes.io/instance": "redis"}
# Pods of this namespace that may open Redis client connections carry this label
# (the jobs; the proxy is selected by its own labels).
CLIENT_LABEL = {"redis-platform.io/redis-client": "true"}
# Node pools of a cluster the GCP layer creates carry this label; the Redis pool is also
# tainted so that nothing else lands on it.
POOL_LABEL = "redis-platform.io/pool"
REDIS_TAINT_KEY, REDIS_TAINT_VALUE = "dedicated", "redis"
PROXY_SELECTOR = {
    "app.kubernetes.io/name": "sse-proxy",
    "app.kubernetes.io/instance": PROXY_RELEASE,
}
# Not a Redis client: no CLIENT_LABEL.
OPS_METRICS_SELECTOR = {"app.kubernetes.io/name": OPS_METRICS}
# The restore drill's scratch namespace and its ServiceAccount (bound to the drill's
# Google identity); `redisops drill job-spec` and the runbooks use the same names.
DRILL_NAMESPACE = "redis-drill"
DRILL_KSA = "redis-drill"


def service_host(settings: StackSettings, name: str) -> str:
    """The in-cluster DNS name of a Service (or `<pod>.<headless service>`)."""
    return f"{name}.{settings.namespace}.svc.{settings.cluster_domain}"


def redis_client_endpoint(settings: StackSettings) -> str:
    """host:port of the Redis client Service."""
    return f"{service_host(settings, CLIENT_SERVICE)}:{REDIS_PORT}"


def dedicated_pools(settings: StackSettings) -> bool:
    """Whether the cluster is the GCP layer's own, with a pool per workload."""
    return settings.gcp is not None and settings.gcp.gke.create


def pool_placement(settings: StackSettings, pool: str) -> dict[str, Any]:
    """nodeSelector (and for Redis the toleration) that puts pods on their pool."""
    if not dedicated_pools(settings):
        return {}
    placement: dict[str, Any] = {"nodeSelector": {POOL_LABEL: pool}}
    if pool == "redis":
        placement["tolerations"] = [
            {
                "key": REDIS_TAINT_KEY,
                "operator": "Equal",
                "value": REDIS_TAINT_VALUE,
                "effect": "NoSchedule",
            }
        ]
    return placement


def labels(component: str, selector: dict[str, str] | None = None) -> dict[str, str]:
    """Labels of an object: its selector labels (if any), component, part-of."""
    return {**(selector or {}), "app.kubernetes.io/component": component, **PART_OF}


def job_labels(component: str) -> dict[str, str]:
    return labels(component, {"app.kubernetes.io/name": f"redis-{component}", **CLIENT_LABEL})


@dataclass(frozen=True)
class Platform:
    """What every Kubernetes component is built from: the validated settings, the explicit
    provider, and the namespace its objects must wait for."""

    settings: StackSettings
    provider: k8s.Provider
    namespace: pulumi.Resource | None = None
    #: resolves once the rollout is known to be safe (infra/__main__.py checked_rollout);
    #: the namespace waits for it, and so everything in it
    gate: pulumi.Input[pulumi.Resource] | None = None

    @property
    def ns(self) -> str:
        return self.settings.namespace

    def state_opts(self, parent: pulumi.Resource) -> pulumi.ResourceOptions:
        """Options of a child kept only in the stack's state (keys, certificates): parented,
        and after the rollout check, so a refused rollout changes none of them either."""
        return pulumi.ResourceOptions(
            parent=parent, depends_on=[self.gate] if self.gate is not None else []
        )

    def opts(self, parent: pulumi.Resource, **extra: Any) -> pulumi.ResourceOptions:
        """A child's options: parented, on the explicit provider, after the namespace."""
        depends_on = list(extra.pop("depends_on", []))
        if self.namespace is not None:
            depends_on.append(self.namespace)
        if self.gate is not None:
            depends_on.append(self.gate)
        return pulumi.ResourceOptions(
            parent=parent, provider=self.provider, depends_on=depends_on, **extra
        )


def meta(name: str, namespace: str | None, component: str, **extra: Any) -> dict[str, Any]:
    """ObjectMeta with a fixed name (never auto-named: other objects refer to it)."""
    result: dict[str, Any] = {"name": name, "labels": labels(component), **extra}
    if namespace is not None:
        result["namespace"] = namespace
    return result


RESTRICTED_CONTAINER: dict[str, Any] = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def restricted_pod(uid: int) -> dict[str, Any]:
    """Pod securityContext meeting Pod Security Admission `restricted`."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of `repository[:tag][@sha256:...]`."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest or None
    return name, None, digest or None


def pod_monitoring_spec(selector: dict[str, str], port: str = "metrics") -> dict[str, Any]:
    """What Managed Prometheus scrapes (a PodMonitoring's spec): `port` of the pods
    `selector` matches, every 30 s. The PodMonitoring's name is the series' `job`."""
    return {"selector": {"matchLabels": selector}, "endpoints": [{"port": port, "interval": "30s"}]}
