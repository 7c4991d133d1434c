"""Where each Redis pod runs: its zone, read from the Kubernetes API.

Reconcile places a shard's primary and replicas in different zones; on GKE the zone of a
pod is the `topology.kubernetes.io/zone` label of the node it was scheduled on. The
reconcile Job's ServiceAccount may `get` pods in its namespace and `get` nodes, nothing
else. Only the object handling is tested here (no API server on these machines).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from redisops.errors import ConfigError

ZONE_LABEL = "topology.kubernetes.io/zone"


def pod_of(hostname: str) -> tuple[str, str]:
    """(pod, namespace) from a pod DNS name `<pod>.<service>.<namespace>.svc[.<domain>]`."""
    labels = hostname.split(".")
    if len(labels) < 4 or labels[3] != "svc":
        raise ConfigError(
            f"--zones-from-kubernetes: {hostname!r} is not a pod DNS name "
            "(<pod>.<headless service>.<namespace>.svc.cluster.local)"
        )
    return labels[0], labels[2]


def zones_of(
    hostnames: Sequence[str],
    read_pod: Callable[[str, str], Any],
    read_node: Callable[[str], Any],
) -> dict[str, str | None]:
    """Zone per hostname; None for a pod not scheduled yet or a node without the label.

    `read_pod(name, namespace)` and `read_node(name)` return kubernetes client objects
    (`CoreV1Api.read_namespaced_pod` / `read_node`).
    """
    zones: dict[str, str | None] = {}
    node_zone: dict[str, str | None] = {}
    for hostname in hostnames:
        pod_name, namespace = pod_of(hostname)
        pod = read_pod(pod_name, namespace)
        node_name = getattr(pod.spec, "node_name", None)
        if not node_name:
            zones[hostname] = None
            continue
        if node_name not in node_zone:
            labels = read_node(node_name).metadata.labels or {}
            node_zone[node_name] = labels.get(ZONE_LABEL)
        zones[hostname] = node_zone[node_name]
    return zones


def in_cluster_zones(hostnames: Sequence[str]) -> dict[str, str | None]:
    """zones_of() through the pod's own ServiceAccount (in-cluster configuration)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException as exc:
        raise ConfigError(
            f"--zones-from-kubernetes: not running in a Kubernetes pod ({exc}); "
            "give zones as --node host:port=zone instead"
        ) from exc
    core = client.CoreV1Api()
    return zones_of(
        hostnames,
        lambda name, namespace: core.read_namespaced_pod(name=name, namespace=namespace),
        lambda name: core.read_node(name=name),
    )
