"""The operations' plans as pure functions of what the nodes report: failover's choice
and refusals, scale-in's order and refusals."""

from __future__ import annotations

import pytest

from redisops.errors import ConfigError, OperationError
from redisops.ops import Replacement, plan_failover, plan_replacement, plan_scale_in, shrunk
from tests.unit.test_plan import HEALTHY, IDS, Node, desired, ep, line, observations


def healthy(n: int = 6) -> list[Node]:
    return [Node(HEALTHY) for _ in range(n)]


def test_a_graceful_failover_promotes_the_in_sync_replica_of_the_shard() -> None:
    d = desired()
    actions, details = plan_failover(observations(d, healthy()), 0, "")
    assert [(a.code, a.node, a.risk) for a in actions] == [("failover", ep(4), "low")]
    assert details["from"] == ep(0) and details["to"] == ep(4)


def test_shards_keep_their_numbers_while_a_primary_is_failed() -> None:
    d = desired()
    lines = [ln.replace(" master ", " master,fail ", 1) if ln.startswith(IDS[0]) else ln
             for ln in HEALTHY]  # fmt: skip
    nodes = [Node(lines) for _ in range(6)]
    nodes[0] = Node(None)
    actions, details = plan_failover(observations(d, nodes), 1, "")
    assert details["from"] == ep(1)  # shard 1 is still the one starting at 5461
    actions, details = plan_failover(observations(d, nodes), 0, "TAKEOVER")
    assert [(a.node, a.risk) for a in actions] == [(ep(4), "high")]


def test_forcing_or_taking_over_a_shard_whose_primary_answers_does_nothing() -> None:
    d = desired()
    for mode in ("FORCE", "TAKEOVER"):
        actions, details = plan_failover(observations(d, healthy()), 0, mode)
        assert actions == [] and "nothing to take over" in details["nothing_to_do"]


def test_a_graceful_failover_needs_the_primary_and_an_in_sync_replica() -> None:
    d = desired()
    nodes = healthy()
    nodes[0] = Node(None)
    with pytest.raises(OperationError, match=r"does not answer.*--takeover"):
        plan_failover(observations(d, nodes), 0, "")
    obs = observations(d, healthy())
    obs[4].link_status = "down"
    with pytest.raises(OperationError, match="no reachable replica in sync"):
        plan_failover(obs, 0, "")
    with pytest.raises(ConfigError, match="--shard 3"):
        plan_failover(observations(d, healthy()), 3, "")
    with pytest.raises(ConfigError, match="--replica"):
        plan_failover(observations(d, healthy()), 0, "", replica=ep(5))


FOUR = [
    line(0, "master", slots="0-4095"),
    line(1, "master", slots="4096-8191"),
    line(2, "master", slots="8192-12287"),
    line(3, "master", slots="12288-16383"),
    line(4, "slave", IDS[3]),
    line(5, "slave", IDS[0]),
    line(6, "slave", IDS[1]),
    line(7, "slave", IDS[2]),
]


def test_scale_in_drains_the_highest_shard_then_the_leaving_nodes_leave() -> None:
    d = desired(8, shards=4)
    actions = plan_scale_in(observations(d, [Node(FOUR) for _ in range(8)]), d, shrunk(d, 3, 1))
    assert [(a.code, a.node) for a in actions] == [
        ("rebalance", ep(0)),
        ("replicate", ep(4)),  # it followed the drained shard: it follows a staying one
        ("leave", ep(7)),
        ("leave", ep(6)),
    ]
    assert actions[0].weights == {IDS[3]: 0}  # type: ignore[union-attr]


TWO_LEAVING = [
    line(0, "master", slots="0-4095"),
    line(3, "master", slots="12288-16383"),
    line(6, "master", slots="4096-8191"),
    line(7, "master", slots="8192-12287"),
    line(1, "slave", IDS[6]),
    line(2, "slave", IDS[7]),
    line(4, "slave", IDS[3]),
    line(5, "slave", IDS[0]),
]


def test_scale_in_promotes_a_staying_replica_of_a_leaving_primary_first() -> None:
    # After failovers nodes 6 and 7 (leaving) are primaries, their replicas stay.
    d = desired(8, shards=4)
    actions = plan_scale_in(
        observations(d, [Node(TWO_LEAVING) for _ in range(8)]), d, shrunk(d, 3, 1)
    )
    assert [(a.code, a.node) for a in actions] == [
        ("failover", ep(1)),
        ("rebalance", ep(0)),
        ("replicate", ep(2)),
        ("leave", ep(7)),
        ("leave", ep(6)),
    ]
    assert actions[1].weights == {IDS[7]: 0}  # type: ignore[union-attr]


def test_scale_in_refuses_when_a_shard_to_keep_has_no_primary_to_promote() -> None:
    d = desired(8, shards=4)
    obs = observations(d, [Node(TWO_LEAVING) for _ in range(8)])
    obs[1].link_status = obs[2].link_status = "sync"
    with pytest.raises(OperationError, match="not healthy"):
        plan_scale_in(obs, d, shrunk(d, 3, 1))


def test_scale_in_refuses_an_unhealthy_cluster_and_bad_shapes() -> None:
    d = desired(8, shards=4)
    nodes = [Node(FOUR) for _ in range(8)]
    nodes[5] = Node(None)
    with pytest.raises(OperationError, match="not healthy"):
        plan_scale_in(observations(d, nodes), d, shrunk(d, 3, 1))
    with pytest.raises(ConfigError):
        shrunk(d, 1, 1)


def test_replacing_a_node_never_wipes_the_only_copy_of_a_shard() -> None:
    d = desired()
    assert plan_replacement(observations(d, healthy()), ep(3)).failover_shard is None
    assert plan_replacement(observations(d, healthy()), ep(1)) == Replacement(IDS[1], 1)
    # shard 2's primary crashed and nobody took over yet: its volume is the only copy
    nodes = healthy()
    nodes[2] = Node(None)
    with pytest.raises(OperationError, match="only copy"):
        plan_replacement(observations(d, nodes), ep(2))
    # after its replica took over, the dead node holds nothing the cluster needs
    lines = [
        line(0, "master", slots="0-5460"),
        line(1, "master", slots="5461-10922"),
        line(2, "slave,fail", IDS[3]),
        line(3, "master", slots="10923-16383", epoch=4),
        line(4, "slave", IDS[0]),
        line(5, "slave", IDS[1]),
    ]
    nodes = [Node(lines) for _ in range(6)]
    nodes[2] = Node(None)
    assert plan_replacement(observations(d, nodes), ep(2)) == Replacement(IDS[2], None)
