"""Health: slots covered, nodes ok and agreeing, replicas in place, data reaching every shard."""

from __future__ import annotations

import pytest

from redisops import acl, rediscli
from smoke_tests.conftest import Measure
from smoke_tests.probes import (
    cluster_client,
    cluster_health,
    key_round_trips,
    read_views,
    role_credentials,
)
from smoke_tests.targets import Target


def test_every_node_reports_cluster_state_ok(target: Target) -> None:
    views = read_views(target)
    bad = {str(e): (v.cluster_state if v else "unreachable") for e, v in views.items()}
    bad = {e: s for e, s in bad.items() if s != "ok"}
    assert not bad, f"nodes not ok: {bad}"


def test_all_slots_covered_and_every_primary_has_its_replicas(
    target: Target, measure: Measure
) -> None:
    health = cluster_health(target)
    measure("primaries", health.primaries, unit="count")
    measure("replicas", health.replicas, unit="count")
    assert health.ok, "; ".join(health.problems)


def test_nodes_agree_per_redis_cli_cluster_check(target: Target) -> None:
    endpoint = target.endpoints()[0]
    result = rediscli.cluster_check(
        str(endpoint), target.tls(acl.SMOKE), role_credentials(target, acl.SMOKE)
    )
    assert result.ok, f"redis-cli --cluster check failed:\n{result.stdout}\n{result.stderr}"
    assert "[OK] All nodes agree about slots configuration." in result.stdout
    assert "[OK] All 16384 slots covered." in result.stdout


def test_key_round_trip_lands_on_every_shard(target: Target, run_id: str) -> None:
    views = [v for v in read_views(target).values() if v is not None]
    assert views, "no node reachable"
    view = max(views, key=lambda v: int(v.info.get("cluster_current_epoch", "0")))
    primaries = [n for n in view.nodes if n.is_primary and n.slots and not n.failed]
    assert len(primaries) == target.shards
    client = cluster_client(target)
    try:
        problems = key_round_trips(client, primaries, f"smoke:roundtrip:{run_id}:")
    finally:
        client.close()
    assert not problems, "; ".join(problems)


@pytest.mark.parametrize("role", [acl.READER, acl.PUBLISHER])
def test_cluster_clients_of_stream_roles_can_discover_the_topology(
    target: Target, role: str
) -> None:
    # redis-py needs CLUSTER SLOTS and COMMAND; without them a cluster client cannot start.
    client = cluster_client(target, role)
    try:
        assert len(client.get_primaries()) == target.shards
    finally:
        client.close()
