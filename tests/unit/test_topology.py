from __future__ import annotations

import pytest
from pydantic import ValidationError

from redisops.client import Endpoint
from redisops.topology import DesiredCluster, DesiredNode, PrimaryState, plan_heal, plan_layout

ZONES = ("a", "b", "c")


def cluster(shards: int, replicas: int, zones: bool = True) -> DesiredCluster:
    count = shards * (1 + replicas)
    return DesiredCluster(
        shards=shards,
        replicas=replicas,
        nodes=tuple(
            DesiredNode(
                endpoint=Endpoint(host="10.0.0.1", port=7000 + i),
                zone=ZONES[i % 3] if zones else None,
            )
            for i in range(count)
        ),
    )


@pytest.mark.parametrize(("shards", "replicas"), [(3, 1), (3, 2), (4, 1), (5, 2), (6, 1)])
def test_layout_keeps_every_replica_out_of_its_primarys_zone(shards: int, replicas: int) -> None:
    layout = plan_layout(cluster(shards, replicas))
    used = [n.endpoint for s in layout for n in (s.primary, *s.replicas)]
    assert len(used) == len(set(used)) == shards * (1 + replicas)
    for shard in layout:
        zones = [shard.primary.zone, *(r.zone for r in shard.replicas)]
        assert len(zones) == len(set(zones)), f"shard shares a zone: {zones}"
    assert len({s.primary.zone for s in layout[:3]}) == 3


def test_layout_without_zones_is_deterministic_and_offset() -> None:
    layout = plan_layout(cluster(3, 1, zones=False))
    ports = [(s.primary.endpoint.port, [r.endpoint.port for r in s.replicas]) for s in layout]
    assert ports == [(7000, [7004]), (7001, [7005]), (7002, [7003])]
    assert plan_layout(cluster(3, 1, zones=False)) == layout


def test_desired_cluster_checks_counts_and_duplicates() -> None:
    with pytest.raises(ValidationError, match="needs 6 nodes, 5 given"):
        DesiredCluster(shards=3, replicas=1, nodes=cluster(3, 1).nodes[:5])
    with pytest.raises(ValidationError, match="greater than or equal to 3"):
        DesiredCluster(shards=2, replicas=1, nodes=cluster(3, 1).nodes[:4])
    twice = (*cluster(3, 1).nodes[:5], cluster(3, 1).nodes[0])
    with pytest.raises(ValidationError, match="listed twice"):
        DesiredCluster(shards=3, replicas=1, nodes=twice)


def node(port: int, zone: str) -> DesiredNode:
    return DesiredNode(endpoint=Endpoint(host="10.0.0.1", port=port), zone=zone)


def test_heal_attaches_a_replacement_replica_outside_its_primarys_zone() -> None:
    primaries = [
        PrimaryState("p0", "a", ("b",)),
        PrimaryState("p1", "b", ()),
        PrimaryState("p2", "c", ("a",)),
    ]
    plan = plan_heal(primaries, [node(7010, "b"), node(7011, "c")], shards=3, replicas=1)
    assert not plan.new_primaries
    assert [(a.node.endpoint.port, a.primary_id) for a in plan.attachments] == [(7011, "p1")]
    assert [n.endpoint.port for n in plan.spare] == [7010]


def test_heal_scales_out_with_new_primaries_then_their_replicas() -> None:
    primaries = [PrimaryState(f"p{i}", z, (ZONES[(i + 1) % 3],)) for i, z in enumerate(ZONES)]
    free = [node(7006, "a"), node(7007, "b")]
    plan = plan_heal(primaries, free, shards=4, replicas=1)
    assert [n.endpoint.port for n in plan.new_primaries] == [7006]
    assert len(plan.attachments) == 1
    attach = plan.attachments[0]
    assert attach.node.endpoint.port == 7007
    assert attach.primary_id is None and attach.new_primary == free[0]
    assert plan.spare == ()
