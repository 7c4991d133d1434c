"""The fastest chaos drills (devtools/chaos.py), in `make test`: a real partition of a
primary and a client from the majority, and a stopped primary, on the netns twin, under
the WAIT-1 canary, plain writes and SSE clients. What the cluster promises is checked;
what it does not (plain writes a minority primary accepted) is measured and must be
accounted for. `make chaos` runs every drill. Needs root (CI runs as root)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools import chaos
from redisops.local import checks, netns
from redisops.local.twin import Twin
from tests.conftest import free_base_port, requires_redis


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twin]:
    requires_redis()
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run the tests as root (CI does)")
    root = tmp_path_factory.mktemp("chaos")
    with chaos.netns_twin(root / "twin", node_timeout_ms=1000) as twin:
        network = twin.settings().network()
        yield twin
    assert network is not None  # and nothing of it is left once the twin is down:
    prefix = network.bridge.removesuffix("br")
    assert not [ns for ns in netns.namespaces() if ns.startswith(f"{prefix}-")]


def drill(twin: Twin, name: str, tmp_path: Path) -> dict[str, Any]:
    return chaos.run_drill(twin, chaos.DRILLS[name], tmp_path, say=lambda _m: None)


def check_promises(report: dict[str, Any]) -> None:
    assert report["whole_afterwards"], report["problems_afterwards"]
    assert report["wait_acknowledged_lost"] == 0, report["writes"]
    for agent in report["writes"].values():
        assert agent["acknowledged"] > 50, report["writes"]  # the load ran throughout
    # every plain write that was lost was accepted while the fault lasted
    assert report["acknowledged_lost"] == sum(
        a["lost_during_fault"] for a in report["writes"].values()
    ), report["writes"]
    assert report["published"] > 50 and report["published_lost"] == 0, report
    for name, sse in report["sse"].items():
        assert sse["connected"] and sse["received"] > 0, (name, sse)
        assert sse["duplicated"] == 0, (name, sse)
    assert report["reconcile_actions"] == [], report["reconcile_actions"]


def test_a_primary_partitioned_longer_than_node_timeout(twin: Twin, tmp_path: Path) -> None:
    report = drill(twin, "partition-long", tmp_path)
    check_promises(report)
    # the majority elected a new primary: writes stopped for about node-timeout plus the
    # election, not for the whole partition
    assert report["unavailable_s"] < report["hold_s"], report
    # only the cut-off side loses plain writes: the majority side loses none
    assert report["writes"]["client-b"]["lost"] == 0, report["writes"]


def test_a_stopped_primary(twin: Twin, tmp_path: Path) -> None:
    report = drill(twin, "sigstop", tmp_path)
    check_promises(report)
    assert report["minority_accepted_lost"] == 0


def test_no_namespace_of_the_drills_is_left(twin: Twin) -> None:
    network = twin.settings().network()
    assert network is not None
    prefix = network.bridge.removesuffix("br")
    left = [ns for ns in netns.namespaces() if ns.startswith(f"{prefix}-")]
    assert len(left) == len(network.hosts)  # exactly the twin's own, until it goes down


def test_prod_s_min_replicas_setting_forms_and_grows_a_cluster(tmp_path: Path) -> None:
    """`min-replicas-to-write 1` (prod) refuses writes to a primary without a synced
    replica: reconcile's own writes (function libraries, slot moves) must still succeed
    when it forms a 3 x 2 cluster and scales it out."""
    requires_redis()
    twin = Twin(tmp_path / "min-replicas")
    try:
        formed = twin.up(
            replicas=2, min_replicas_to_write=1, min_replicas_max_lag_s=2,
            base_port=free_base_port(12), sse_proxy=False,
        )  # fmt: skip
        assert formed.healthy, formed.findings
        grown = twin.up(shards=4)
        assert grown.healthy and grown.failed is None, (grown.failed, grown.findings)
        assert not checks.cluster_problems(twin, twin.settings(), timeout=30)
    finally:
        twin.down(purge=True)
