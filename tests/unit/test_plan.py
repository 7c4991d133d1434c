"""reconcile's plan as a pure function of (desired, observed): table-driven over the
cluster states met so far. Each case is what the nodes would answer, written as their
`CLUSTER NODES` lines; the expected plan is the ordered (code, node) list."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from redisops import functions
from redisops.acl import ROLES, hash_password, render_acl_file
from redisops.client import Endpoint
from redisops.cluster import NodeView, even_slot_ranges, parse_cluster_nodes
from redisops.health import Observation
from redisops.plan import ACTIONS, AssignSlots, Intent, Rebalance, Replicate, make_plan
from redisops.topology import DesiredCluster, DesiredNode

IDS = [f"{c * 40}"[:40] for c in "abcdefghij"]
HOST = "127.0.0.1"


def ep(i: int) -> str:
    return f"{HOST}:{7000 + i}"


def line(i: int, flags: str, master: str = "-", slots: str = "", epoch: int = 1) -> str:
    address = f"{HOST}:{7000 + i}@{17000 + i}"
    return f"{IDS[i]} {address} {flags} {master} 0 0 {epoch} connected {slots}".strip()


def desired(n: int = 6, shards: int = 3, replicas: int = 1) -> DesiredCluster:
    return DesiredCluster(
        shards=shards,
        replicas=replicas,
        nodes=tuple(
            DesiredNode(endpoint=Endpoint(host=HOST, port=7000 + i), zone="abc"[i % 3])
            for i in range(n)
        ),
    )


HEALTHY = [
    line(0, "master", slots="0-5460"),
    line(1, "master", slots="5461-10922"),
    line(2, "master", slots="10923-16383"),
    line(3, "slave", IDS[2]),
    line(4, "slave", IDS[0]),
    line(5, "slave", IDS[1]),
]


@dataclass
class Node:
    """What node i answers: the cluster lines it knows (its own marked myself)."""

    lines: list[str] | None  # None: unreachable
    dbsize: int = 0
    library: str | None = functions.CODE
    acl: list[str] | None = None
    mine: str = ""  # its own line when it differs from the shared ones
    extra: dict[str, str] = field(default_factory=dict)


def observations(d: DesiredCluster, nodes: list[Node]) -> list[Observation]:
    result = []
    for i, node in enumerate(nodes):
        obs = Observation(d.nodes[i])
        if node.lines is None:
            obs.error = "Connection refused"
            result.append(obs)
            continue
        own = node.mine or next(ln for ln in node.lines if ln.startswith(IDS[i]))
        flags = own.split()[2]
        marked = own.replace(f" {flags} ", f" myself,{flags} ", 1)
        others = [ln for ln in node.lines if ln != own and not ln.startswith(IDS[i])]
        parsed = parse_cluster_nodes("\n".join([marked, *others]))
        obs.view = NodeView(parsed, "ok", {"cluster_state": "ok", "cluster_current_epoch": "3"})
        obs.dbsize = node.dbsize
        me = obs.view.myself
        obs.link_status = "up" if me.is_replica else None
        if me.is_primary:
            obs.libraries = {} if node.library is None else {functions.LIBRARY: node.library}
        obs.acl_rules = node.acl
        result.append(obs)
    return result


def alone(i: int, slots: str = "") -> Node:
    return Node([line(i, "master", slots=slots)])


def plan_of(d: DesiredCluster, nodes: list[Node], **intent: object) -> list[tuple[str, str | None]]:
    plan = make_plan(d, observations(d, nodes), Intent(**intent))  # type: ignore[arg-type]
    return [(a.code, a.node) for a in plan.actions]


def healthy_nodes() -> list[Node]:
    return [Node(HEALTHY) for _ in range(6)]


def test_a_healthy_cluster_plans_nothing() -> None:
    assert plan_of(desired(), healthy_nodes()) == []


def test_fresh_nodes_are_formed_slots_then_meet_then_replicas_then_functions() -> None:
    d = desired()
    plan = make_plan(d, observations(d, [alone(i) for i in range(6)]), Intent())
    codes = [a.code for a in plan.actions]
    assert codes == ["assign_slots"] * 3 + ["meet"] * 5 + ["replicate"] * 3 + ["function_load"] * 0
    assigns = [a for a in plan.actions if isinstance(a, AssignSlots)]
    assert [a.add for a in assigns] == [[r] for r in even_slot_ranges(3)]
    assert [a.epoch for a in assigns] == [1, 2, 3]
    assert {a.risk for a in assigns} == {"medium"}
    assert all(a.reason for a in plan.actions)
    assert plan.topology


def test_forming_loads_the_library_on_the_primaries_to_be_only() -> None:
    d = desired()
    nodes = [alone(i) for i in range(6)]
    for node in nodes:
        node.library = None
    codes = plan_of(d, nodes)
    loads = [n for c, n in codes if c == "function_load"]
    assert loads == [ep(0), ep(1), ep(2)]


def test_forming_is_refused_when_a_free_node_holds_keys() -> None:
    d = desired()
    nodes = [alone(i) for i in range(6)]
    nodes[4].dbsize = 12
    plan = make_plan(d, observations(d, nodes), Intent())
    assert plan.actions == []
    assert [f.code for f in plan.findings] == ["refuse_form_with_data"]


def test_forming_waits_for_every_node() -> None:
    d = desired()
    nodes = [alone(i) for i in range(5)] + [Node(None)]
    plan = make_plan(d, observations(d, nodes), Intent())
    assert plan.actions == [] and [f.code for f in plan.findings] == ["cannot_form"]


def test_nodes_that_claimed_slots_from_an_rdb_get_only_the_rest_of_their_shard() -> None:
    # A restore starts one node per shard with its RDB: each claims the slots of its keys.
    d = desired()
    nodes = [alone(0, "5 77"), alone(1, "6000"), alone(2), *(alone(i) for i in range(3, 6))]
    for i in (0, 1):
        nodes[i].dbsize = 2
    shard_slots = [[(0, 5460)], [(5461, 10922)], [(10923, 16383)]]
    plan = make_plan(d, observations(d, nodes), Intent(shard_slots=shard_slots))
    assigns = [a for a in plan.actions if isinstance(a, AssignSlots)]
    assert assigns[0].add == [(0, 4), (6, 76), (78, 5460)]
    assert assigns[1].add == [(5461, 5999), (6001, 10922)]
    assert assigns[2].add == [(10923, 16383)]
    assert "loaded keys" in assigns[0].reason


def test_a_replaced_replica_is_forgotten_met_and_attached() -> None:
    # Node 3's volume was lost: it answers with a new id at the old address.
    d = desired()
    nodes = healthy_nodes()
    fresh = f"{'z' * 40} {HOST}:7003@17003 master - 0 0 0 connected"
    nodes[3] = Node([fresh], mine=fresh)
    others = [ln.replace(" slave ", " slave,fail ", 1) if ln.startswith(IDS[3]) else ln
              for ln in HEALTHY]  # fmt: skip
    for i in (0, 1, 2, 4, 5):
        nodes[i] = Node(others)
    plan = make_plan(d, observations(d, nodes), Intent())
    assert [(a.code, a.node) for a in plan.actions] == [
        ("forget", None),
        ("meet", ep(3)),
        ("replicate", ep(3)),
    ]
    replicate = plan.actions[2]
    assert isinstance(replicate, Replicate) and replicate.primary_id == IDS[2]
    assert "new node answers at its address" in plan.actions[0].reason


def test_a_failed_node_at_a_desired_address_is_not_forgotten() -> None:
    # Nobody answers at 7003: it may come back with its data.
    d = desired()
    others = [ln.replace(" slave ", " slave,fail ", 1) if ln.startswith(IDS[3]) else ln
              for ln in HEALTHY]  # fmt: skip
    nodes = [Node(others) for _ in range(6)]
    nodes[3] = Node(None)
    assert plan_of(d, nodes) == []


def test_a_loading_replica_is_left_alone() -> None:
    d = desired()
    nodes = healthy_nodes()
    nodes[4] = Node(None)  # answers LOADING: observed as unreachable, loading
    obs = observations(d, nodes)
    obs[4].loading = True
    assert make_plan(d, obs, Intent()).actions == []


def test_open_slots_are_closed_with_redis_cli_fix() -> None:
    d = desired()
    nodes = healthy_nodes()
    nodes[0].mine = line(0, "master", slots="0-5460 [100->-" + IDS[1] + "]")
    nodes[1].mine = line(1, "master", slots="5461-10922 [100-<-" + IDS[0] + "]")
    plan = make_plan(d, observations(d, nodes), Intent())
    assert [a.code for a in plan.actions] == ["fix_open_slots"]
    assert plan.actions[0].risk == "medium"


def test_open_slots_with_uncovered_slots_are_only_reported() -> None:
    d = desired()
    lines = [ln.replace(" master ", " master,fail ", 1) if ln.startswith(IDS[2]) else ln
             for ln in HEALTHY]  # fmt: skip
    nodes = [Node(lines) for _ in range(6)]
    nodes[2] = Node(None)
    nodes[0].mine = line(0, "master", slots="0-5460 [100->-" + IDS[1] + "]")
    assert plan_of(d, nodes) == []


def test_scale_out_meets_attaches_then_rebalances() -> None:
    d = desired(8, shards=4)
    nodes = [*healthy_nodes(), alone(6), alone(7)]
    plan = make_plan(d, observations(d, nodes), Intent())
    assert [a.code for a in plan.actions] == ["meet", "meet", "replicate", "rebalance"]
    rebalance = plan.actions[-1]
    assert isinstance(rebalance, Rebalance) and len(rebalance.receivers) == 1
    assert rebalance.attached  # the new replica is seen first


def test_a_free_node_with_keys_is_not_added() -> None:
    d = desired()
    lines = [ln for ln in HEALTHY if not ln.startswith(IDS[3])]
    nodes = [Node(lines) for _ in range(6)]
    nodes[3] = alone(3)
    nodes[3].dbsize = 5
    plan = make_plan(d, observations(d, nodes), Intent())
    assert plan.actions == [] and [f.code for f in plan.findings] == ["free_node_has_data"]
    nodes[3].dbsize = 0
    assert plan_of(d, nodes) == [("meet", ep(3)), ("replicate", ep(3))]


def test_acl_drift_is_loaded_first_and_says_what_differs() -> None:
    d = desired()
    text = render_acl_file({role: [hash_password("x" * 32)] for role in ROLES})
    nodes = healthy_nodes()
    for node in nodes:
        node.acl = []
    plan = make_plan(d, observations(d, nodes), Intent(acl_text=text))
    assert [a.code for a in plan.actions] == ["acl_load"] * 6
    assert all(a.reason for a in plan.actions)


def test_missing_or_outdated_libraries_are_loaded_on_primaries() -> None:
    d = desired()
    nodes = healthy_nodes()
    nodes[0].library = None
    nodes[1].library = "#!lua name=platform\nold"
    assert plan_of(d, nodes) == [("function_load", ep(0)), ("function_load", ep(1))]


def test_tls_reload_is_planned_on_every_reachable_node() -> None:
    d = desired()
    nodes = healthy_nodes()
    nodes[5] = Node(None)
    codes = plan_of(d, nodes, reload_tls=True)
    assert codes == [("reload_tls", ep(i)) for i in range(5)]


@pytest.mark.parametrize("case", ["form", "heal"])
def test_a_plan_round_trips_through_json(case: str) -> None:
    d = desired(8, shards=4) if case == "heal" else desired()
    nodes = (
        [*healthy_nodes(), alone(6), alone(7)] if case == "heal" else [alone(i) for i in range(6)]
    )
    actions = make_plan(d, observations(d, nodes), Intent()).actions
    dumped = ACTIONS.dump_json(actions)
    assert ACTIONS.validate_json(dumped) == actions


def test_a_surplus_replica_moves_to_a_primary_without_one() -> None:
    # After a scale-in Redis made the emptied primary (node 3) a replica of whoever took
    # its last slot (node 1), not of node 2, whose replica left.
    d = desired()
    lines = [
        line(0, "master", slots="0-5460"),
        line(1, "master", slots="5461-10922"),
        line(2, "master", slots="10923-16383"),
        line(3, "slave", IDS[1]),
        line(4, "slave", IDS[0]),
        line(5, "slave", IDS[1]),
    ]
    plan = make_plan(d, observations(d, [Node(lines) for _ in range(6)]), Intent())
    assert [a.code for a in plan.actions] == ["replicate"]
    move = plan.actions[0]
    assert isinstance(move, Replicate) and move.primary_id == IDS[2]
    # zones a, b, c by ordinal: node 5 shares node 2's zone, node 3 does not
    assert move.node == ep(3)
    assert "2 replicas" in move.reason


def test_a_node_of_another_cluster_is_refused_not_merged() -> None:
    d = desired()
    lines = [ln for ln in HEALTHY if not ln.startswith(IDS[3])]
    nodes = [Node(lines) for _ in range(6)]
    # node 3 knows a peer this cluster has never seen: a stale nodes.conf
    stranger = f"{'y' * 40} 10.9.9.9:6379@16379 master - 0 0 9 connected 0-100"
    nodes[3] = Node([line(3, "master"), stranger])
    plan = make_plan(d, observations(d, nodes), Intent())
    assert plan.actions == [] and [f.code for f in plan.findings] == ["foreign_node"]


def test_rdb_nodes_claiming_slots_of_another_shard_are_refused() -> None:
    d = desired()
    nodes = [alone(0, "6000"), alone(1, "6000"), *(alone(i) for i in range(2, 6))]
    for i in (0, 1):
        nodes[i].dbsize = 1
    shard_slots = [[(0, 5460)], [(5461, 10922)], [(10923, 16383)]]
    plan = make_plan(d, observations(d, nodes), Intent(shard_slots=shard_slots))
    assert plan.actions == []
    assert [(f.code, f.node) for f in plan.findings] == [("restore_slots_conflict", ep(0))]


def test_a_surplus_replica_is_not_moved_while_the_donor_would_keep_only_a_loading_one() -> None:
    d = desired()
    lines = [
        line(0, "master", slots="0-5460"),
        line(1, "master", slots="5461-10922"),
        line(2, "master", slots="10923-16383"),
        line(3, "slave", IDS[1]),
        line(4, "slave", IDS[0]),
        line(5, "slave", IDS[1]),
    ]
    obs = observations(d, [Node(lines) for _ in range(6)])
    obs[5].link_status = "sync"  # still loading its first copy
    assert make_plan(d, obs, Intent()).actions == []
