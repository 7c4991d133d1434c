"""reconcile.assess: the findings an on-call engineer sees, from observed views."""

from __future__ import annotations

from redisops.client import Endpoint
from redisops.cluster import NodeView, parse_cluster_nodes
from redisops.reconcile import Observation, assess
from redisops.topology import DesiredCluster, DesiredNode

IDS = [f"{c * 8}" for c in "abcdef"]


def line(i: int, flags: str, master: str = "-", slots: str = "", epoch: int = 1) -> str:
    address = f"127.0.0.1:{7000 + i}@{17000 + i}"
    return f"{IDS[i]} {address} {flags} {master} 0 0 {epoch} connected {slots}".strip()


HEALTHY = [
    line(0, "master", slots="0-5460"),
    line(1, "master", slots="5461-10922"),
    line(2, "master", slots="10923-16383"),
    line(3, "slave", IDS[2]),
    line(4, "slave", IDS[0]),
    line(5, "slave", IDS[1]),
]


def desired(zones: tuple[str, ...] = ("a", "b", "c")) -> DesiredCluster:
    return DesiredCluster(
        shards=3,
        replicas=1,
        nodes=tuple(
            DesiredNode(
                endpoint=Endpoint(host="127.0.0.1", port=7000 + i), zone=zones[i % len(zones)]
            )
            for i in range(6)
        ),
    )


def observe(
    lines: list[str],
    state: str = "ok",
    down: tuple[int, ...] = (),
    d: DesiredCluster | None = None,
) -> list[Observation]:
    d = d or desired()
    result = []
    for i in range(6):
        obs = Observation(d.nodes[i])
        if i in down:
            obs.error = "Connection refused"
        else:
            mine = [
                (
                    ln.replace(" master ", " myself,master ", 1).replace(
                        " slave ", " myself,slave ", 1
                    )
                    if ln.startswith(IDS[i])
                    else ln
                )
                for ln in lines
            ]
            nodes = parse_cluster_nodes("\n".join(mine))
            obs.view = NodeView(
                nodes, state, {"cluster_state": state, "cluster_current_epoch": "3"}
            )
            obs.link_status = "up" if nodes[i].is_replica else None
        result.append(obs)
    return result


def codes(findings: list) -> set[str]:  # type: ignore[type-arg]
    return {f.code for f in findings}


def test_healthy_cluster_has_no_findings() -> None:
    assert assess(desired(), observe(HEALTHY)) == []


def test_unreachable_node_and_missing_replica_are_errors() -> None:
    lines = [*HEALTHY[:3], HEALTHY[3].replace("slave", "slave,fail"), *HEALTHY[4:]]
    findings = assess(desired(), observe(lines, down=(3,)))
    assert {"node_unreachable", "replicas_missing", "node_failed"} <= codes(findings)
    missing = next(f for f in findings if f.code == "replicas_missing")
    assert missing.severity == "error" and missing.node == "127.0.0.1:7002"
    assert missing.fix


def test_failed_primary_leaves_slots_uncovered() -> None:
    lines = [*HEALTHY]
    lines[2] = line(2, "master,fail", slots="10923-16383")
    findings = assess(desired(), observe(lines, state="fail", down=(2,)))
    assert {"slots_uncovered", "cluster_state_fail", "shard_count", "node_failed"} <= codes(
        findings
    )
    uncovered = next(f for f in findings if f.code == "slots_uncovered")
    assert "5461 slots" in uncovered.message and "10923-16383" in uncovered.message


def test_nodes_that_disagree_are_reported() -> None:
    obs = observe(HEALTHY)
    moved = [*HEALTHY]
    moved[0] = line(0, "myself,master", slots="0-5459")
    moved[1] = line(1, "master", slots="5460-10922")
    obs[0].view = NodeView(
        parse_cluster_nodes("\n".join(moved)), "ok", {"cluster_current_epoch": "3"}
    )
    assert "views_disagree" in codes(assess(desired(), obs))


def test_replica_in_its_primarys_zone_is_a_warning() -> None:
    one_zone = desired(zones=("a",))
    findings = assess(one_zone, observe(HEALTHY, d=one_zone))
    same = [f for f in findings if f.code == "replica_same_zone"]
    assert len(same) == 3 and all(f.severity == "warning" for f in same)


def test_open_slots_are_reported_from_the_node_that_holds_them() -> None:
    lines = [*HEALTHY]
    lines[0] = line(0, "master", slots="0-5460 [93->-" + IDS[1] + "]")
    findings = assess(desired(), observe(lines))
    open_slots = [f for f in findings if f.code == "slots_open"]
    assert [f.node for f in open_slots] == ["127.0.0.1:7000"]


def test_node_outside_the_cluster_is_reported() -> None:
    obs = observe(HEALTHY)
    alone = parse_cluster_nodes(f"{'9' * 40} 127.0.0.1:7005@17005 myself,master - 0 0 0 connected")
    obs[5].view = NodeView(alone, "fail", {})
    assert "node_not_in_cluster" in codes(assess(desired(), obs))
