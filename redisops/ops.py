"""The operations runbooks call: failover, scale (in), node replacement.

Each is planned first from the health model's observations (typed actions from
`redisops.plan`, each with its reason and risk), then applied by reconcile's executor,
which stops at the first failed action. Each ends by judging the cluster again. The
functions take a `Cluster` (how to reach it as the operator) so they run the same on
the twin and against explicit nodes (GKE's in-cluster Jobs).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from redisops import health
from redisops.client import Credentials, Endpoint, TlsClient
from redisops.cluster import ClusterNode, NodeView
from redisops.errors import ConfigError, OperationError
from redisops.health import Finding, Observation
from redisops.plan import Action, Failover, Leave, Rebalance, Replicate
from redisops.reconcile import (
    FailedAction,
    ReconcileOptions,
    Reconciler,
    ReconcileReport,
    reconcile,
)
from redisops.topology import DesiredCluster

Mode = Literal["", "FORCE", "TAKEOVER"]


@dataclass
class Cluster:
    """A cluster to operate on, as the operator role."""

    desired: DesiredCluster
    tls: TlsClient
    operator: Credentials
    acl_text: str | None = None
    write_acl: Callable[[Endpoint, str], None] | None = None
    progress: Callable[[str], None] = field(default=lambda _msg: None)
    timeout_s: float = 120.0

    def options(self) -> ReconcileOptions:
        return ReconcileOptions(
            acl_text=self.acl_text,
            write_acl=self.write_acl,
            progress=self.progress,
            timeout_s=self.timeout_s,
        )

    def reconciler(self, desired: DesiredCluster | None = None) -> Reconciler:
        return Reconciler(desired or self.desired, self.tls, self.operator, self.options())

    def reconcile(self, desired: DesiredCluster | None = None) -> ReconcileReport:
        return reconcile(desired or self.desired, self.tls, self.operator, self.options())


class OpReport(BaseModel):
    """What an operation planned, did and found afterwards."""

    operation: str
    actions: list[Action]
    done: int = 0
    failed: FailedAction | None = None
    findings: list[Finding] = []
    details: dict[str, Any] = {}
    duration_s: float = 0.0
    planned_only: bool = False
    # Set by operations judged by their own outcome (a takeover while other shards are
    # still down succeeds when its shard is served again): None means the whole cluster
    # must be healthy.
    succeeded: bool | None = None

    @property
    def ok(self) -> bool:
        if self.failed is not None:
            return False
        if self.succeeded is not None:
            return self.succeeded
        return not any(f.severity == "error" for f in self.findings)


# ---- reading the cluster -------------------------------------------------------------


def shard_primaries(view: NodeView) -> list[ClusterNode]:
    """Serving primaries in shard order: shard N is the one whose first slot is Nth lowest
    (the numbering backups use)."""
    # A failed primary still holding its slots is still its shard's primary: numbering
    # must not shift while shards are down.
    owners = [n for n in view.nodes if n.is_primary and n.slots]
    return sorted(owners, key=lambda n: n.slots[0][0])


def _anchor_view(observations: Sequence[Observation]) -> NodeView:
    members = health.members_of(observations)
    if not members:
        raise OperationError("no reachable node is part of a cluster; check `redisops reconcile`")
    view = health.anchor_of(members).view
    assert view is not None
    return view


def _name_of(node: ClusterNode, observations: Sequence[Observation]) -> str:
    for obs in observations:
        if obs.node_id == node.node_id:
            return obs.name
    return f"{node.hostname}:{node.port}" if node.hostname else node.address


def _run(
    cluster: Cluster,
    operation: str,
    actions: list[Action],
    *,
    plan_only: bool,
    details: dict[str, Any],
    desired_after: DesiredCluster | None = None,
) -> OpReport:
    started = time.monotonic()
    for action in actions:
        cluster.progress(f"plan: {action.message} [{action.risk}] — {action.reason}")
    report = OpReport(operation=operation, actions=actions, details=details)
    if plan_only:
        report.planned_only = True
        return report
    runner = cluster.reconciler()
    try:
        report.done, report.failed = runner.apply(actions)
    finally:
        runner.close()
    if report.failed is None:
        # Redis moves replicas by itself after slots move (an emptied primary follows
        # whoever took its last slot): plan the rest only once the staying nodes agree.
        settle = cluster.reconciler(desired_after)
        try:
            settle.wait_converged()
        finally:
            settle.close()
    if report.failed is None:
        final = cluster.reconcile(desired_after)
        if final.changed and not final.healthy:
            final = cluster.reconcile(desired_after)  # what the first pass made visible
        report.findings = final.findings
        report.details["reconcile_actions"] = [a.message for a in final.actions]
    report.duration_s = round(time.monotonic() - started, 3)
    return report


# ---- failover -----------------------------------------------------------------------


def plan_failover(
    observations: Sequence[Observation], shard: int, mode: Mode, replica: str | None = None
) -> tuple[list[Action], dict[str, Any]]:
    """The replica of shard `shard` that should take over, as one Failover action."""
    view = _anchor_view(observations)
    primaries = shard_primaries(view)
    if not 0 <= shard < len(primaries):
        raise ConfigError(
            f"--shard {shard}: the cluster has shards 0..{len(primaries) - 1} (numbered by "
            "first slot); see `redisops local status` or `redis-cli --cluster check`"
        )
    primary = primaries[shard]
    name = _name_of(primary, observations)
    answering = _answers_as_primary(observations, primary.node_id)
    if mode and answering:
        # Redis elected a replica by itself, or the primary never went away: forcing a
        # replica over a primary that serves would lose its latest writes for nothing.
        done = (
            f"the shard's primary {name} answers; nothing to take over (a graceful "
            "`redisops failover` moves it without loss)"
        )
        return [], {"shard": shard, "from": name, "to": name, "mode": mode, "nothing_to_do": done}
    if not mode and not answering:
        raise OperationError(
            f"shard {shard}'s primary {name} does not answer: a graceful failover needs it. "
            "Wait cluster-node-timeout for Redis to elect its replica; if it does not (no "
            "majority of primaries), use --takeover; --force when only this primary is down "
            "(writes it did not replicate are lost)"
        )
    candidates = _candidates(observations, view, primary.node_id, in_sync_only=not mode)
    if replica is not None:
        candidates = [r for r in candidates if _name_of(r, observations) == replica]
        if not candidates:
            raise ConfigError(
                f"--replica {replica}: not a reachable replica of shard {shard}"
                f"{' in sync' if not mode else ''}; omit it to let redisops choose"
            )
    if not candidates:
        raise OperationError(
            f"shard {shard} ({name}) has no reachable replica{' in sync' if not mode else ''} "
            "to fail over to; wait for its replica (RedisPrimaryWithoutReplica) or restore"
        )
    chosen = candidates[0]
    risk = {"": "low", "FORCE": "high", "TAKEOVER": "high"}[mode]
    reason = {
        "": "graceful: the primary stops writes, the replica catches up, then takes over",
        "FORCE": "forced: the replica takes over without the primary; unreplicated writes are lost",
        "TAKEOVER": "takeover: no agreement of the other primaries; unreplicated writes are "
        "lost and two primaries may briefly serve the shard",
    }[mode]
    name = _name_of(chosen, observations)
    action = Failover(
        message=f"fail shard {shard} over to {name}{' (' + mode + ')' if mode else ''}",
        node=name,
        mode=mode,
        primary_id=primary.node_id,
        reason=reason,
        risk=risk,
    )
    details = {"shard": shard, "from": _name_of(primary, observations), "to": name, "mode": mode}
    return [action], details


def _answers_as_primary(observations: Sequence[Observation], node_id: str) -> bool:
    return any(
        o.node_id == node_id and o.view is not None and o.view.myself.is_primary
        for o in observations
    )


def _candidates(
    observations: Sequence[Observation], view: NodeView, primary_id: str, *, in_sync_only: bool
) -> list[ClusterNode]:
    """Reachable replicas of the primary, those whose link is up (the most recent data)
    first; only those with `in_sync_only`."""
    by_id = {o.node_id: o for o in observations if o.node_id and o.view is not None}
    found = [
        r for r in health.live_followers(view, primary_id) if r.is_replica and r.node_id in by_id
    ]
    if in_sync_only:
        return [r for r in found if by_id[r.node_id].link_status == "up"]
    return sorted(found, key=lambda r: by_id[r.node_id].link_status != "up")


def failover(
    cluster: Cluster, shard: int, mode: Mode = "", replica: str | None = None,
    plan_only: bool = False,
) -> OpReport:  # fmt: skip
    runner = cluster.reconciler()
    try:
        observations = runner.observe()
    finally:
        runner.close()
    actions, details = plan_failover(observations, shard, mode, replica)
    report = _run(cluster, "failover", actions, plan_only=plan_only, details=details)
    if report.planned_only or report.failed is not None:
        return report
    runner = cluster.reconciler()
    try:
        after = runner.observe()
    finally:
        runner.close()
    promoted = next((o for o in after if o.name == details["to"]), None)
    me = promoted.view.myself if promoted and promoted.view else None
    report.succeeded = bool(me and me.is_primary and me.slots)
    if not mode:
        # A graceful failover runs on a healthy cluster and must leave it so; a forced
        # one or a takeover usually runs while other nodes are still down: only its
        # shard is judged.
        report.succeeded = report.succeeded and not any(
            f.severity == "error" for f in report.findings
        )
    return report


# ---- scale in ------------------------------------------------------------------------


def shrunk(desired: DesiredCluster, shards: int, replicas: int) -> DesiredCluster:
    """The desired cluster after a scale-in: the lowest ordinals stay (a StatefulSet
    removes the highest)."""
    count = shards * (1 + replicas)
    try:
        return DesiredCluster(shards=shards, replicas=replicas, nodes=desired.nodes[:count])
    except ValueError as exc:
        raise ConfigError(f"--shards/--replicas: {exc}") from exc


def plan_scale_in(
    observations: Sequence[Observation], current: DesiredCluster, target: DesiredCluster
) -> list[Action]:
    """Promote kept replicas of leaving primaries, move every slot onto the kept primaries,
    re-attach kept replicas of drained primaries, then make the leaving nodes leave."""
    view = _anchor_view(observations)
    problems = [f for f in health.assess(current, observations) if f.severity == "error"]
    if problems:
        raise OperationError(
            f"the cluster is not healthy ({problems[0].message}); a scale-in moves data: fix "
            "it first (`redisops health`, `redisops reconcile --plan`)"
        )
    keep = {str(n.endpoint) for n in target.nodes}
    ids = {o.node_id: o.name for o in observations if o.node_id}
    order = {str(n.endpoint): i for i, n in enumerate(current.nodes)}
    primaries = sorted(shard_primaries(view), key=lambda n: order.get(ids.get(n.node_id, ""), 1e9))
    staying = [p.node_id for p in primaries if ids.get(p.node_id) in keep][: target.shards]
    actions, handed_over = _promotions(observations, view, primaries, staying, keep, target)
    if len(staying) < target.shards:
        raise OperationError(
            f"only {len(staying)} of the {target.shards} shards to keep have a primary among "
            "the staying nodes, and no leaving primary has a staying replica in sync to "
            "promote; wait until replicas are in sync (`redisops health`), or fail over by "
            "hand (`redisops failover`) first"
        )
    # A primary that handed its shard to a staying replica is a replica by then.
    drained = [p.node_id for p in primaries if p.node_id not in set(staying) | handed_over]
    if drained:
        actions.append(_drain(ids, drained, staying[0], len(primaries), target.shards))
    actions += _reattach(view, ids, keep, staying, drained, target)
    actions += _leaves(ids, keep, order)
    return actions


def _drain(ids: dict[str, str], drained: list[str], anchor: str, now: int, shards: int) -> Action:
    names = ", ".join(ids.get(i, i[:8]) for i in drained)
    return Rebalance(
        message=f"move every slot off {names}",
        node=ids[anchor],
        weights={i: 0 for i in drained},
        reason=f"{now} shards serve slots, {shards} desired",
        risk="medium",
    )


def _leaves(ids: dict[str, str], keep: set[str], order: dict[str, int]) -> list[Action]:
    """The leaving nodes, highest ordinal first (replicas usually before primaries)."""
    return [
        Leave(
            message=f"make {name} leave the cluster",
            node=name,
            node_id=node_id,
            reason="beyond the new shape: the StatefulSet removes it next",
            risk="medium",
        )
        for node_id, name in sorted(ids.items(), key=lambda kv: -order.get(kv[1], 0))
        if name not in keep
    ]


def _promotions(
    observations: Sequence[Observation],
    view: NodeView,
    primaries: Sequence[ClusterNode],
    staying: list[str],
    keep: set[str],
    target: DesiredCluster,
) -> tuple[list[Action], set[str]]:
    """Fail leaving primaries over to a staying replica in sync while shards to keep lack
    a primary (appends to `staying`); the actions and the primaries that hand over."""
    ids = {o.node_id: o.name for o in observations if o.node_id}
    actions: list[Action] = []
    handed_over: set[str] = set()
    for primary in primaries:
        if primary.node_id in staying or len(staying) >= target.shards:
            continue
        kept = [
            r
            for r in _candidates(observations, view, primary.node_id, in_sync_only=True)
            if ids.get(r.node_id) in keep
        ]
        if not kept:
            continue
        name = ids[kept[0].node_id]
        actions.append(
            Failover(
                message=f"promote {name}, replica of leaving {ids.get(primary.node_id)}",
                node=name,
                primary_id=primary.node_id,
                reason="its primary leaves; this node stays and keeps the shard's data",
                risk="low",
            )
        )
        staying.append(kept[0].node_id)
        handed_over.add(primary.node_id)
    return actions, handed_over


def _reattach(
    view: NodeView,
    ids: dict[str, str],
    keep: set[str],
    staying: list[str],
    drained: list[str],
    target: DesiredCluster,
) -> list[Action]:
    """Kept replicas whose primary leaves or is drained follow a staying primary."""
    count = {p: 0 for p in staying}
    for node in view.nodes:
        if node.master_id in count and ids.get(node.node_id) in keep:
            count[node.master_id] += 1
    actions: list[Action] = []
    for node in view.nodes:
        name = ids.get(node.node_id)
        if name not in keep or not node.is_replica or node.master_id in staying:
            continue
        if node.node_id in staying:
            continue  # promoted by a Failover before this
        if node.master_id not in drained and ids.get(node.master_id or "") in keep:
            continue
        primary = min(staying, key=lambda p: count[p])
        if count[primary] >= target.replicas:
            continue  # the final reconcile finds it a place (or calls it spare)
        count[primary] += 1
        actions.append(
            Replicate(
                message=f"make {name} a replica of {ids[primary]}",
                node=name,
                primary_id=primary,
                reason="its primary leaves the cluster",
                risk="low",
            )
        )
    return actions


def scale(cluster: Cluster, shards: int, replicas: int, plan_only: bool = False) -> OpReport:
    """Scale in to shards x replicas (the lowest ordinals stay)."""
    current = cluster.desired
    if shards > current.shards or replicas > current.replicas:
        raise ConfigError(
            f"--shards {shards} --replicas {replicas}: more than the {current.shards} x "
            f"{current.replicas} running. Scale out by growing the deployment (`redisops local "
            "up --shards N`, or redis.shards and `pulumi up`); reconcile adds the nodes"
        )
    if (shards, replicas) == (current.shards, current.replicas):
        raise ConfigError(f"--shards {shards} --replicas {replicas}: that is the current shape")
    target = shrunk(current, shards, replicas)
    runner = cluster.reconciler()
    try:
        observations = runner.observe()
    finally:
        runner.close()
    actions = plan_scale_in(observations, current, target)
    details = {
        "from": f"{current.shards}x{current.replicas}",
        "to": f"{shards}x{replicas}",
        "leaving": [str(n.endpoint) for n in current.nodes[len(target.nodes) :]],
    }
    return _run(
        cluster, "scale", actions, plan_only=plan_only, details=details, desired_after=target
    )


# ---- the twin's record of a finished scale-in ----------------------------------------


def record_scale_in(path: Path, report: OpReport) -> None:
    """What `redisops local up` checks before it stops the nodes that left."""
    record = {"from": report.details["from"], "to": report.details["to"],
              "leaving": report.details["leaving"]}  # fmt: skip
    path.write_text(json.dumps(record) + "\n")


# ---- node replacement (the twin; GKE deletes the PVC and the pod) ---------------------


@dataclass(frozen=True)
class Replacement:
    """What replacing the node at `name` involves, judged before anything is wiped."""

    node_id: str | None  # its id as the cluster knows it (None: unknown to the cluster)
    failover_shard: int | None  # a primary that answers: fail this shard over first


def plan_replacement(observations: Sequence[Observation], name: str) -> Replacement:
    """Refuse to wipe the only copy of a shard: a primary that still owns slots and does
    not answer (no replica has taken over yet, or it has none)."""
    obs = next((o for o in observations if o.name == name), None)
    if obs is None:
        raise ConfigError(f"{name}: not a node of this cluster")
    view = _anchor_view(observations)
    primaries = shard_primaries(view)
    if obs.view is not None:
        me = obs.view.myself
        known = view.by_id(me.node_id)
        if known is not None and known.is_primary and known.slots:
            shard = next(i for i, p in enumerate(primaries) if p.node_id == me.node_id)
            return Replacement(me.node_id, shard)
        return Replacement(me.node_id if known else None, None)
    return _unanswered(view, name)


def _unanswered(view: NodeView, name: str) -> Replacement:
    """A node that does not answer: who does the cluster think is at that address?"""
    host, _, port = name.rpartition(":")
    for node in view.nodes:
        at = node.address == name or (node.hostname == host and str(node.port) == port)
        if at and node.is_primary and node.slots:
            raise OperationError(
                f"{name} does not answer and still owns {node.slot_count} slots: its data is "
                "its shard's only copy until Redis promotes a replica (after "
                "cluster-node-timeout). Wait and check `redisops health`; with no replica "
                "left, restore the shard from a backup instead (runbooks/restore.md)"
            )
        if at:
            return Replacement(node.node_id, None)
    return Replacement(None, None)


def wipe_node_dir(node_dir: Path) -> list[str]:
    """What a new, empty volume means for a node: no nodes.conf, no RDB, no AOF."""
    removed = []
    for name in ("nodes.conf", "dump.rdb", "appendonlydir"):
        path = node_dir / name
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(name)
        elif path.exists():
            path.unlink()
            removed.append(name)
    return removed
