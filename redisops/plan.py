"""Reconcile's plan: (desired, observed) in, an ordered list of typed actions out.

Pure: no I/O here. Every action says what it changes, why (`reason`) and how much can
go wrong (`risk`); `redisops reconcile --plan` prints the plan and changes nothing, and
`apply` (in `reconcile.py`) carries out exactly these actions in this order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from redisops import functions
from redisops.acl import diff_acl
from redisops.client import Endpoint
from redisops.cluster import (
    ClusterNode,
    NodeView,
    SlotRange,
    even_slot_ranges,
    expand,
    format_ranges,
    merge_ranges,
    uncovered_slots,
)
from redisops.errors import ConfigError
from redisops.health import Finding, Observation, anchor_of, members_of, serving_primaries
from redisops.topology import (
    Attachment,
    DesiredCluster,
    DesiredNode,
    HealPlan,
    PrimaryState,
    ShardLayout,
    plan_heal,
    plan_layout,
)

# none: reads or reloads only; low: adds to the cluster, no data moves; medium: data
# moves or a node's role changes; high: data can be lost if the observation was wrong.
Risk = Literal["none", "low", "medium", "high"]


class BaseAction(BaseModel):
    """One step of a plan. `node` is the host:port the step acts on."""

    code: str
    message: str
    node: str | None = None
    reason: str = ""
    risk: Risk = "low"


class AclLoad(BaseAction):
    code: Literal["acl_load"] = "acl_load"


class AssignSlots(BaseAction):
    code: Literal["assign_slots"] = "assign_slots"
    add: list[SlotRange]  # the slots the node does not serve yet
    epoch: int


class Meet(BaseAction):
    """CLUSTER MEET, sent by `node` to `peer`."""

    code: Literal["meet"] = "meet"
    peer: str


class Replicate(BaseAction):
    code: Literal["replicate"] = "replicate"
    primary_id: str


class Forget(BaseAction):
    code: Literal["forget"] = "forget"
    node_id: str


class FixOpenSlots(BaseAction):
    code: Literal["fix_open_slots"] = "fix_open_slots"
    slots: list[int]


class Rebalance(BaseAction):
    """redis-cli --cluster rebalance through `node`; `weights` 0 empties those ids."""

    code: Literal["rebalance"] = "rebalance"
    receivers: list[str] = Field(default_factory=list)
    weights: dict[str, float] = Field(default_factory=dict)
    attached: list[str] = Field(default_factory=list)  # replica ids to be seen first


class FunctionLoad(BaseAction):
    code: Literal["function_load"] = "function_load"


class ReloadTls(BaseAction):
    code: Literal["reload_tls"] = "reload_tls"


class Failover(BaseAction):
    """CLUSTER FAILOVER [FORCE|TAKEOVER] on the replica `node`."""

    code: Literal["failover"] = "failover"
    mode: Literal["", "FORCE", "TAKEOVER"] = ""
    primary_id: str


class Leave(BaseAction):
    """Make `node` (no slots, no role needed) leave: every other node forgets it, then it
    resets itself so that it cannot gossip its way back."""

    code: Literal["leave"] = "leave"
    node_id: str


Action = Annotated[
    AclLoad
    | AssignSlots
    | Meet
    | Replicate
    | Forget
    | FixOpenSlots
    | Rebalance
    | FunctionLoad
    | ReloadTls
    | Failover
    | Leave,
    Field(discriminator="code"),
]
ACTIONS: TypeAdapter[list[Action]] = TypeAdapter(list[Action])


@dataclass
class Plan:
    """What to do, in order, and what planning found (refusals, spare nodes)."""

    actions: list[Action] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    topology: bool = False  # whether the actions change the cluster's shape


@dataclass(frozen=True)
class Intent:
    """What reconcile is asked to do besides matching the topology.

    acl_text: the ACL file every node must enforce; reload_tls: reload certificates on
    every node; shard_slots: a restore forms the cluster over nodes that already hold a
    backup's shards (the slots each shard serves, in plan_layout's shard order).
    addresses: every address (configured, resolved) of each desired node, for telling a
    replaced node from one that will come back.
    """

    acl_text: str | None = None
    reload_tls: bool = False
    shard_slots: Sequence[Sequence[SlotRange]] | None = None
    addresses: Mapping[Endpoint, frozenset[str]] = field(default_factory=dict)


def make_plan(
    desired: DesiredCluster, observations: Sequence[Observation], intent: Intent = Intent()
) -> Plan:
    """The ordered actions that bring the observed cluster to `desired`."""
    if not intent.addresses:
        configured = {n.endpoint: frozenset({str(n.endpoint)}) for n in desired.nodes}
        intent = replace(intent, addresses=configured)
    plan = Plan(actions=list(_acl_actions(observations, intent.acl_text)))
    reachable = [o for o in observations if o.view is not None]
    unformed = _unformed(intent)
    if reachable and all(o.view and unformed(o.view) for o in reachable):
        if len(reachable) < len(observations):
            plan.findings.append(
                Finding(
                    code="cannot_form",
                    severity="error",
                    message="the cluster is not formed and some nodes are unreachable",
                    fix="start every node, then run reconcile again",
                )
            )
        else:
            _form(desired, observations, intent, plan)
    elif members_of(reachable):
        _heal(desired, observations, intent, plan)
    if intent.reload_tls:
        plan.actions += [
            ReloadTls(
                message=f"reload TLS certificates on {o.name}",
                node=o.name,
                reason="asked for (--reload-tls): certificate files may have changed",
                risk="none",
            )
            for o in reachable
        ]
    return plan


def _unformed(intent: Intent) -> Callable[[NodeView], bool]:
    # A restore's nodes claimed the slots of their keys at load: still unformed.
    if intent.shard_slots is not None:
        return lambda v: len(v.nodes) == 1
    return lambda v: v.is_alone


def _acl_actions(observations: Sequence[Observation], text: str | None) -> list[Action]:
    if text is None:
        return []
    actions: list[Action] = []
    for obs in observations:
        if obs.acl_rules is None:
            continue
        problems = diff_acl(text, obs.acl_rules)
        if problems:
            actions.append(
                AclLoad(
                    message=f"load the ACL file on {obs.name} ({problems[0]})",
                    node=obs.name,
                    reason=problems[0],
                    risk="low",
                )
            )
    return actions


# ---- forming a new cluster ----------------------------------------------------------


def _form(
    desired: DesiredCluster, observations: Sequence[Observation], intent: Intent, plan: Plan
) -> None:
    with_data = [o for o in observations if o.dbsize]
    if with_data and intent.shard_slots is None:
        plan.findings.append(_refuse_form_with_data(with_data))
        return
    layout = plan_layout(desired)
    by_ep = {o.desired.endpoint: o for o in observations}
    why = f"no node is in a cluster: form {desired.shards} shards x {1 + desired.replicas} nodes"
    slots = _shard_slots(desired, layout, intent)
    stray = _stray_slots(layout, by_ep, slots)
    if stray:
        plan.findings += stray
        return
    plan.topology = True
    plan.actions += _assignments(layout, by_ep, slots, why)
    first = str(layout[0].primary.endpoint)
    plan.actions += [
        _meet(str(node.endpoint), first, why)
        for node in desired.nodes
        if str(node.endpoint) != first
    ]
    for shard in layout:
        primary_id = by_ep[shard.primary.endpoint].node_id
        assert primary_id is not None
        plan.actions += [
            _replicate(replica, str(shard.primary.endpoint), primary_id, "the layout")
            for replica in shard.replicas
        ]
    plan.actions += _function_loads([by_ep[s.primary.endpoint] for s in layout])


def _stray_slots(
    layout: Sequence[ShardLayout],
    by_ep: Mapping[Endpoint, Observation],
    slots: Sequence[Sequence[SlotRange]],
) -> list[Finding]:
    """Nodes that loaded keys of slots another shard owns (a backup taken during a
    resharding, a wrong shard order): forming would let one copy hide the other."""
    findings = []
    for shard, ranges in zip(layout, slots, strict=True):
        obs = by_ep[shard.primary.endpoint]
        owned = expand(obs.view.myself.slots) if obs.view else set()
        outside = owned - expand(ranges)
        if outside:
            findings.append(
                Finding(
                    code="restore_slots_conflict",
                    severity="error",
                    node=obs.name,
                    message=f"it loaded keys of {len(outside)} slot(s) outside its shard's "
                    f"range ({format_ranges(merge_ranges(outside))[:80]}); forming would hide keys",
                    fix="check the backup's shard order and that it was not taken during a "
                    "resharding (`redisops backup verify`); restore it with the key-copying "
                    "path into a new cluster",
                )
            )
    return findings


def _shard_slots(
    desired: DesiredCluster, layout: Sequence[ShardLayout], intent: Intent
) -> list[list[SlotRange]]:
    slots = (
        [list(ranges) for ranges in intent.shard_slots]
        if intent.shard_slots is not None
        else [[r] for r in even_slot_ranges(desired.shards)]
    )
    if len(slots) != len(layout):
        raise ConfigError(
            f"{len(slots)} shards of slots for {len(layout)} primaries; the shard counts must match"
        )
    return slots


def _refuse_form_with_data(with_data: Sequence[Observation]) -> Finding:
    return Finding(
        code="refuse_form_with_data",
        severity="error",
        node=with_data[0].name,
        message=f"{len(with_data)} unclustered node(s) hold keys; forming a "
        "cluster over them could hide or drop data",
        fix="inspect the nodes' data; restore it from a backup, or empty the nodes "
        "deliberately (FLUSHALL as admin) and run reconcile again",
    )


def _assignments(
    layout: Sequence[ShardLayout],
    by_ep: Mapping[Endpoint, Observation],
    slots: Sequence[Sequence[SlotRange]],
    why: str,
) -> list[Action]:
    actions: list[Action] = []
    for epoch, (shard, ranges) in enumerate(zip(layout, slots, strict=True), start=1):
        obs = by_ep[shard.primary.endpoint]
        owned = expand(obs.view.myself.slots) if obs.view else set()
        actions.append(
            AssignSlots(
                message=f"assign slots {format_ranges(ranges)} to {obs.name}",
                node=obs.name,
                reason=why if not owned else "it loaded keys of these slots; add the rest",
                risk="medium",
                add=list(merge_ranges(expand(ranges) - owned)),
                epoch=epoch,
            )
        )
    return actions


def _meet(node: str, peer: str, reason: str) -> Meet:
    return Meet(
        message=f"introduce {node} to the cluster", node=node, peer=peer, reason=reason, risk="low"
    )


def _replicate(node: DesiredNode, primary: str, primary_id: str, why: str) -> Replicate:
    return Replicate(
        message=f"make {node.endpoint} a replica of {primary}",
        node=str(node.endpoint),
        primary_id=primary_id,
        reason=f"{why} gives {primary} this replica",
        risk="low",
    )


def _function_loads(primaries: Sequence[Observation]) -> list[Action]:
    actions: list[Action] = []
    for obs in primaries:
        if obs.libraries is None:
            continue  # not read (or refused: assess reports it)
        code = obs.libraries.get(functions.LIBRARY)
        if code == functions.CODE:
            continue
        state = "missing" if code is None else "different"
        actions.append(
            FunctionLoad(
                message=f"load function library {functions.LIBRARY} on {obs.name} ({state})",
                node=obs.name,
                reason=f"the library is {state}: keyed POSTs of this shard need it",
                risk="low",
            )
        )
    return actions


# ---- healing and scaling out an existing cluster -------------------------------------


@dataclass
class _Pool:
    """Who is what in an existing cluster, judged from the anchor's view."""

    view: NodeView
    anchor: str
    by_id: dict[str, Observation]
    gone: set[str]
    serving: list[str]
    adopted: list[str]
    free: list[DesiredNode]
    outsiders: list[Observation]


def _heal(
    desired: DesiredCluster, observations: Sequence[Observation], intent: Intent, plan: Plan
) -> None:
    reachable = [o for o in observations if o.view is not None]
    anchor = anchor_of(members_of(reachable))
    assert anchor.view is not None
    by_id = {o.node_id: o for o in reachable if o.node_id}
    forgets = _departed(anchor.view, reachable, by_id, intent.addresses)
    plan.actions += forgets
    gone = {f.node_id for f in forgets}
    plan.actions += _fix_open_slots(anchor, reachable)
    pool = _pool(desired, anchor, reachable, by_id, gone, plan)
    heal = plan_heal(
        [_state(pool, node_id) for node_id in (*pool.serving, *pool.adopted)],
        pool.free,
        desired.shards,
        desired.replicas,
    )
    plan.findings += [_spare(node) for node in heal.spare]
    plan.actions += _placements(pool, heal)
    plan.actions += _replica_moves(pool, heal, desired.replicas)
    plan.topology = any(a.code != "acl_load" for a in plan.actions)
    replicas_to_be = {a.node.endpoint for a in heal.attachments}
    plan.actions += _function_loads([o for o in reachable if _stays_primary(o, replicas_to_be)])


def _stays_primary(obs: Observation, replicas_to_be: set[Endpoint]) -> bool:
    return bool(
        obs.view and obs.view.myself.is_primary and obs.desired.endpoint not in replicas_to_be
    )


def _spare(node: DesiredNode) -> Finding:
    return Finding(
        code="spare_node",
        severity="warning",
        node=str(node.endpoint),
        message="node is not needed by the desired topology",
        fix="check the shards/replicas settings",
    )


def _followers(pool: _Pool, node_id: str) -> list[str]:
    return [
        r.node_id
        for r in pool.view.nodes
        if r.master_id == node_id and r.is_replica and not r.failed and r.node_id not in pool.gone
    ]


def _state(pool: _Pool, node_id: str) -> PrimaryState:
    def zone(i: str) -> str | None:
        obs = pool.by_id.get(i)
        return obs.desired.zone if obs else None

    return PrimaryState(node_id, zone(node_id), tuple(zone(r) for r in _followers(pool, node_id)))


def _pool(
    desired: DesiredCluster,
    anchor: Observation,
    reachable: Sequence[Observation],
    by_id: dict[str, Observation],
    gone: set[str],
    plan: Plan,
) -> _Pool:
    view = anchor.view
    assert view is not None
    member_ids = {n.node_id for n in view.nodes}
    pool = _Pool(view, anchor.name, by_id, gone, [n.node_id for n in serving_primaries(view)],
                 [], [], [])  # fmt: skip
    # Members that are primaries without slots: an interrupted scale-out left them, or
    # they are new nodes added by hand. Adopt as many as shards are missing.
    ids = [o.node_id for o in reachable if o.node_id and _empty_member(o, member_ids)]
    ids.sort(key=lambda node_id: -len(_followers(pool, node_id)))
    pool.adopted = ids[: max(0, desired.shards - len(pool.serving))]
    pool.free = [by_id[i].desired for i in ids[len(pool.adopted) :] if not _followers(pool, i)]
    for obs in reachable:
        _place_outsider(obs, member_ids, pool, plan)
    return pool


def _place_outsider(obs: Observation, member_ids: set[str], pool: _Pool, plan: Plan) -> None:
    if obs.view is None or obs.node_id in member_ids:
        return
    if not obs.view.is_alone:
        # It knows peers or serves slots of another cluster (a stale nodes.conf, a
        # volume restored elsewhere): meeting it would merge two clusters.
        plan.findings.append(_foreign(obs))
        return
    pool.outsiders.append(obs)
    if obs.dbsize:
        plan.findings.append(_free_node_has_data(obs))
    else:
        pool.free.append(obs.desired)


def _empty_member(obs: Observation, member_ids: set[str]) -> bool:
    """A cluster member that is a primary without slots."""
    view = obs.view
    return bool(
        view
        and obs.node_id in member_ids
        and not view.is_alone
        and view.myself.is_primary
        and not view.myself.slots
    )


def _foreign(obs: Observation) -> Finding:
    return Finding(
        code="foreign_node",
        severity="error",
        node=obs.name,
        message="node belongs to another cluster (it knows other peers or serves slots this "
        "cluster does not know); not adding it",
        fix="inspect it (`CLUSTER NODES` on it); if its data is not needed, `CLUSTER RESET "
        "HARD` and FLUSHALL it as admin, then run reconcile again",
    )


def _free_node_has_data(obs: Observation) -> Finding:
    return Finding(
        code="free_node_has_data",
        severity="error",
        node=obs.name,
        message="node is outside the cluster but holds keys; not adding it",
        fix="inspect the node's data; empty it (FLUSHALL as admin) to reuse it",
    )


def _placements(pool: _Pool, heal: HealPlan) -> list[Action]:
    """Meet the joining nodes, attach replicas, then move slots onto new primaries."""
    placed = {a.node for a in heal.attachments} | set(heal.new_primaries)
    joining = [o for o in pool.outsiders if o.desired in placed]
    actions: list[Action] = [
        _meet(o.name, pool.anchor, "the desired topology needs it and it is outside the cluster")
        for o in joining
    ]
    ids = {o.desired.endpoint: o.node_id for o in pool.by_id.values()}
    for attach in heal.attachments:
        actions.append(_attach(pool, attach, ids))
    receivers = [pool.by_id[i].name for i in pool.adopted]
    receivers += [str(n.endpoint) for n in heal.new_primaries]
    if receivers:
        actions.append(
            Rebalance(
                message=f"move slots onto new primaries {', '.join(receivers)}",
                node=pool.anchor,
                receivers=receivers,
                attached=[ids[a.node.endpoint] or "" for a in heal.attachments],
                reason=f"{len(pool.serving)} primaries serve slots, more are desired",
                risk="medium",
            )
        )
    return actions


def _replica_moves(pool: _Pool, heal: HealPlan, replicas: int) -> list[Action]:
    """Move surplus replicas to primaries still short of replicas once the free nodes are
    placed. Redis makes them: an emptied primary, and replicas by replica migration,
    follow whichever primary took the last slot, not the one that lacks a replica."""
    count = _replica_counts(pool, heal)
    zone = {i: o.desired.zone for i, o in pool.by_id.items()}
    moved: set[str] = set()
    actions: list[Action] = []
    for short in [p for p in pool.serving if count[p] < replicas]:
        while count[short] < replicas:
            donors = [p for p in pool.serving if count[p] > replicas]
            if not donors:
                return actions
            donor = max(donors, key=lambda p: count[p])
            # Only a replica in sync moves, and only while the donor keeps enough in sync:
            # never its one good copy for a loading one.
            movable = [r for r in _followers(pool, donor) if r not in moved and _in_sync(pool, r)]
            if len(movable) <= replicas:
                count[donor] = replicas  # its surplus is not in sync (yet): leave it
                continue
            pick = min(movable, key=lambda r: zone.get(r) == zone.get(short))
            count[donor] -= 1
            count[short] += 1
            moved.add(pick)  # no longer a follower of the donor
            why = f"its primary has {count[donor] + 1} replicas, this one {count[short] - 1}"
            actions.append(_move(pool, pick, short, f"{why} of {replicas}"))
    return actions


def _in_sync(pool: _Pool, node_id: str) -> bool:
    obs = pool.by_id.get(node_id)
    return obs is not None and obs.link_status == "up" and not obs.loading


def _replica_counts(pool: _Pool, heal: HealPlan) -> dict[str, int]:
    """Replicas per serving primary once the plan's attachments are made."""
    count = {p: len(_followers(pool, p)) for p in pool.serving}
    for attach in heal.attachments:
        if attach.primary_id in count:
            count[attach.primary_id] += 1
    return count


def _move(pool: _Pool, replica: str, primary: str, reason: str) -> Replicate:
    target = pool.by_id[primary].name if primary in pool.by_id else primary[:8]
    name = pool.by_id[replica].name
    return Replicate(
        message=f"make {name} a replica of {target}",
        node=name,
        primary_id=primary,
        reason=reason,
        risk="low",
    )


def _attach(pool: _Pool, attach: Attachment, ids: Mapping[Endpoint, str | None]) -> Replicate:
    if attach.new_primary is not None:
        target, name = ids[attach.new_primary.endpoint], str(attach.new_primary.endpoint)
    else:
        assert attach.primary_id is not None
        target = attach.primary_id
        obs = pool.by_id.get(target)
        name = obs.name if obs else target
    assert target is not None
    return _replicate(attach.node, name, target, "the desired replicas per shard")


def _fix_open_slots(anchor: Observation, reachable: Sequence[Observation]) -> list[Action]:
    """Finish or roll back an interrupted slot migration (redis-cli does the work)."""
    slots: set[int] = set()
    for obs in reachable:
        if obs.view is not None:  # each node reports only its own open slots
            slots.update(obs.view.myself.migrating, obs.view.myself.importing)
    assert anchor.view is not None
    if not slots or uncovered_slots(anchor.view.nodes):
        return []  # with slots uncovered, `--cluster fix` would hide data loss: report only
    open_slots = sorted(slots)
    return [
        FixOpenSlots(
            message=f"close {len(open_slots)} open slot(s) {open_slots[:5]} with redis-cli "
            "--cluster fix",
            node=anchor.name,
            slots=open_slots,
            reason="a slot migration was interrupted",
            risk="medium",
        )
    ]


def _names(node: ClusterNode, desired_addresses: set[str]) -> set[str]:
    """How to recognise a node's address: by the name it announces when that is a desired
    one (pod IPs are reused by other pods), else by IP and name."""
    named = f"{node.hostname}:{node.port}" if node.hostname else None
    if named in desired_addresses:
        return {named}
    return {node.address, named or node.address}


def _departed(
    view: NodeView,
    reachable: Sequence[Observation],
    by_id: Mapping[str, Observation],
    addresses: Mapping[Endpoint, frozenset[str]],
) -> list[Forget]:
    """Forget nodes that will not come back.

    A node is gone when another node now answers at its address (a pod that came back
    with an empty volume has a new id), when Redis lost its address (`noaddr`), or when
    it failed and its address belongs to no desired node. A failed node at a desired
    address that nobody answers on is *not* forgotten: it may restart with its data and
    rejoin.
    """
    current: dict[str, str] = {}
    for obs in reachable:
        for address in addresses.get(obs.desired.endpoint, frozenset({obs.name})):
            current[address] = obs.node_id or ""
    desired_addresses: set[str] = set().union(*addresses.values())
    forgets = []
    for node in view.nodes:
        if node.slots or node.node_id in by_id:
            continue
        names = _names(node, desired_addresses)
        if any(current.get(n, node.node_id) != node.node_id for n in names) or (
            "noaddr" in node.flags
        ):
            why = "a new node answers at its address"
        elif node.failed and not names & desired_addresses:
            why = "failed, and not part of the desired topology"
        else:
            continue
        forgets.append(
            Forget(
                message=f"forget node {node.node_id[:8]} ({node.address}): {why}",
                node_id=node.node_id,
                reason=why,
                risk="low",
            )
        )
    return forgets


def addresses_of(
    desired: DesiredCluster, resolve: Callable[[str], str | None]
) -> dict[Endpoint, frozenset[str]]:
    """Every desired node's addresses: host:port as configured and as `resolve`d."""
    result: dict[Endpoint, frozenset[str]] = {}
    for node in desired.nodes:
        found = {str(node.endpoint)}
        ip = resolve(node.endpoint.host)
        if ip:
            found.add(f"{ip}:{node.endpoint.port}")
        result[node.endpoint] = frozenset(found)
    return result
