"""The pod start step (nodes.conf addresses from hostnames), zone lookup from Kubernetes
objects, and the endpoint type a node advertises."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes.client import V1Node, V1NodeSpec, V1ObjectMeta, V1Pod, V1PodSpec

from redisops.conf import NodeSpec, TlsFiles, render_redis_conf
from redisops.errors import ConfigError
from redisops.kube import ZONE_LABEL, pod_of, zones_of
from redisops.node import prepare, refresh_nodes_conf

HEADLESS = "redis-cluster-headless.redis.svc.cluster.local"
A = "a" * 40
B = "b" * 40
C = "c" * 40
NODES_CONF = (
    f"{A} 10.4.0.7:6379@16379,redis-cluster-0.{HEADLESS} myself,master - 0 0 1 connected 0-5460\n"
    f"{B} 10.4.1.9:6379@16379,redis-cluster-1.{HEADLESS},shard-id=abc master - 0 1700 2 "
    "connected 5461-10922\n"
    f"{C} 10.4.2.3:6379@16379 slave {A} 0 1700 1 connected\n"
    "vars currentEpoch 6 lastVoteEpoch 0\n"
)


def test_peer_ips_follow_their_hostnames_and_myself_takes_the_pod_ip() -> None:
    text, changes = refresh_nodes_conf(
        NODES_CONF, {f"redis-cluster-1.{HEADLESS}": "10.8.0.2"}.get, my_ip="10.8.0.1"
    )
    lines = text.splitlines()
    assert lines[0].startswith(f"{A} 10.8.0.1:6379@16379,redis-cluster-0.{HEADLESS} myself")
    # aux fields of Redis 7.2 (shard-id=...) are kept
    assert lines[1].startswith(f"{B} 10.8.0.2:6379@16379,redis-cluster-1.{HEADLESS},shard-id=abc ")
    # no hostname: kept as it was; the vars line untouched
    assert lines[2] == NODES_CONF.splitlines()[2]
    assert lines[3] == "vars currentEpoch 6 lastVoteEpoch 0"
    assert text.endswith("\n")
    assert [(c.node_id, c.old_ip, c.new_ip, c.myself) for c in changes] == [
        (A, "10.4.0.7", "10.8.0.1", True),
        (B, "10.4.1.9", "10.8.0.2", False),
    ]


def test_unresolvable_peer_keeps_its_old_address() -> None:
    text, changes = refresh_nodes_conf(NODES_CONF, lambda _: None, my_ip="10.4.0.7")
    assert text == NODES_CONF
    assert changes == []


def test_damaged_line_is_refused_with_the_fix() -> None:
    damaged = NODES_CONF.replace("10.4.1.9:6379@16379", "10.4.1.9-6379", 1)
    with pytest.raises(ConfigError, match=r"line 2: .*damaged.*move it aside"):
        refresh_nodes_conf(damaged, lambda _: None, my_ip=None)


def test_prepare_rewrites_atomically_and_only_when_needed(tmp_path: Path) -> None:
    assert prepare(tmp_path, "10.0.0.1") == []  # first start: no nodes.conf
    path = tmp_path / "nodes.conf"
    path.write_text(NODES_CONF)
    before = path.stat().st_mtime_ns
    assert prepare(tmp_path, "10.4.0.7", resolve=lambda _: None) == []
    assert path.stat().st_mtime_ns == before
    changes = prepare(tmp_path, "10.9.9.9", resolve=lambda _: None)
    assert [c.new_ip for c in changes] == ["10.9.9.9"]
    assert "10.9.9.9:6379@16379" in path.read_text()
    assert list(tmp_path.iterdir()) == [path]


def _pod(node: str | None) -> V1Pod:
    return V1Pod(metadata=V1ObjectMeta(name="p"), spec=V1PodSpec(containers=[], node_name=node))


def _node(zone: str | None) -> V1Node:
    labels = {ZONE_LABEL: zone} if zone else {}
    return V1Node(metadata=V1ObjectMeta(name="n", labels=labels), spec=V1NodeSpec())


def test_zones_come_from_the_node_each_pod_runs_on() -> None:
    pods = {
        "redis-cluster-0": _pod("gke-a"),
        "redis-cluster-1": _pod("gke-b"),
        "redis-cluster-2": _pod(None),  # not scheduled yet
        "redis-cluster-3": _pod("gke-a"),
        "redis-cluster-4": _pod("gke-c"),
    }
    nodes = {
        "gke-a": _node("europe-west1-b"),
        "gke-b": _node("europe-west1-c"),
        "gke-c": _node(None),
    }
    node_reads: list[str] = []

    def read_pod(name: str, namespace: str) -> V1Pod:
        assert namespace == "redis"
        return pods[name]

    def read_node(name: str) -> V1Node:
        node_reads.append(name)
        return nodes[name]

    hosts = [f"redis-cluster-{i}.{HEADLESS}" for i in range(5)]
    zones = zones_of(hosts, read_pod, read_node)
    assert zones == {
        hosts[0]: "europe-west1-b",
        hosts[1]: "europe-west1-c",
        hosts[2]: None,
        hosts[3]: "europe-west1-b",
        hosts[4]: None,
    }
    assert sorted(node_reads) == ["gke-a", "gke-b", "gke-c"]  # each node read once


@pytest.mark.parametrize("name", ["127.0.0.1", "redis-cluster-0", "a.b.c.d.cluster.local"])
def test_pod_dns_name_is_required(name: str) -> None:
    with pytest.raises(ConfigError, match="not a pod DNS name"):
        pod_of(name)


def test_pod_of() -> None:
    assert pod_of(f"redis-cluster-4.{HEADLESS}") == ("redis-cluster-4", "redis")


def _spec(**extra: object) -> NodeSpec:
    return NodeSpec(
        port=6379,
        data_dir="/data",
        tls=TlsFiles(ca_cert_file="/t/ca.crt", cert_file="/t/tls.crt", key_file="/t/tls.key"),
        aclfile="/a/users.acl",
        replication_include="/r/replication.conf",
        **extra,
    )


def test_preferred_endpoint_type() -> None:
    assert "cluster-preferred-endpoint-type" not in render_redis_conf(_spec())
    announced = render_redis_conf(_spec(announce_hostname="redis-cluster-0.x"))
    assert "cluster-preferred-endpoint-type hostname" in announced
    # GKE: one config for every pod, the hostname comes on the command line
    shared = render_redis_conf(_spec(preferred_endpoint_type="hostname"))
    assert "cluster-preferred-endpoint-type hostname" in shared
    assert "cluster-announce-hostname" not in shared
    with pytest.raises(ValueError, match="preferred_endpoint_type"):
        _spec(preferred_endpoint_type="name")
