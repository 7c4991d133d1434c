"""The desired shape of the cluster, and pure decisions about where each node goes.

`reconcile` reads the real cluster and uses these functions to decide what to change;
keeping the decisions pure makes them testable without a cluster.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from redisops.client import Endpoint

MIN_SHARDS = 3


class DesiredNode(BaseModel):
    """A node that should be part of the cluster: where it listens, and its zone if known."""

    model_config = ConfigDict(frozen=True)

    endpoint: Endpoint
    zone: str | None = None


class DesiredCluster(BaseModel):
    """shards x (1 + replicas) nodes, in a stable order (StatefulSet ordinals on GKE)."""

    model_config = ConfigDict(frozen=True)

    shards: int = Field(ge=MIN_SHARDS)
    replicas: int = Field(ge=0, le=5)
    nodes: tuple[DesiredNode, ...]

    @model_validator(mode="after")
    def _node_count(self) -> DesiredCluster:
        expected = self.shards * (1 + self.replicas)
        if len(self.nodes) != expected:
            raise ValueError(
                f"{self.shards} shards x (1 + {self.replicas} replicas) needs {expected} "
                f"nodes, {len(self.nodes)} given"
            )
        endpoints = [str(n.endpoint) for n in self.nodes]
        duplicates = sorted({e for e in endpoints if endpoints.count(e) > 1})
        if duplicates:
            raise ValueError(f"nodes listed twice: {', '.join(duplicates)}")
        return self

    @property
    def zones_known(self) -> bool:
        return all(n.zone for n in self.nodes)


@dataclass(frozen=True)
class ShardLayout:
    """One shard of a new cluster: its primary and its replicas."""

    primary: DesiredNode
    replicas: tuple[DesiredNode, ...]


def plan_layout(desired: DesiredCluster) -> list[ShardLayout]:
    """Decide which node is which shard's primary and which replicas follow it.

    With zones known: primaries spread over zones, and no replica in the zone of its
    primary (or of another replica of its shard) while another zone has a free node.
    Without zones the layout is deterministic by position, offset so that with
    round-robin zone placement (GKE topology spread by ordinal) replicas still land in
    other zones than their primary.
    """
    nodes = list(desired.nodes)
    shards, replicas = desired.shards, desired.replicas
    if not desired.zones_known:
        layout = []
        for s in range(shards):
            chosen = tuple(
                nodes[shards + j * shards + (s + j + 1) % shards] for j in range(replicas)
            )
            layout.append(ShardLayout(nodes[s], chosen))
        return layout

    order = {n.endpoint: i for i, n in enumerate(nodes)}
    remaining = list(nodes)

    def left_in_zone(zone: str | None) -> int:
        return sum(1 for n in remaining if n.zone == zone)

    primaries: list[DesiredNode] = []
    per_zone: Counter[str | None] = Counter()
    for _ in range(shards):
        pick = min(
            remaining,
            key=lambda n: (per_zone[n.zone], -left_in_zone(n.zone), order[n.endpoint]),
        )
        primaries.append(pick)
        per_zone[pick.zone] += 1
        remaining.remove(pick)
    followers: list[list[DesiredNode]] = [[] for _ in range(shards)]
    for _ in range(replicas):
        pending = list(range(shards))
        while pending:
            # Most constrained shard first: the one with the fewest nodes in zones it
            # does not use yet; then the node from the zone with the most nodes left.
            def options(s: int) -> list[DesiredNode]:
                used = {primaries[s].zone, *(r.zone for r in followers[s])}
                return [n for n in remaining if n.zone not in used]

            shard = min(pending, key=lambda s: (len(options(s)), s))
            candidates = options(shard) or remaining
            pick = min(candidates, key=lambda n: (-left_in_zone(n.zone), order[n.endpoint]))
            followers[shard].append(pick)
            remaining.remove(pick)
            pending.remove(shard)
    return [ShardLayout(p, tuple(f)) for p, f in zip(primaries, followers, strict=True)]


@dataclass(frozen=True)
class PrimaryState:
    """An existing primary with slots, as reconcile sees it."""

    node_id: str
    zone: str | None
    replica_zones: tuple[str | None, ...]


@dataclass(frozen=True)
class Attachment:
    """Make `node` a replica of the primary `primary_id`."""

    node: DesiredNode
    primary_id: str | None  # None: one of the new primaries, see `new_primary`
    new_primary: DesiredNode | None = None


@dataclass(frozen=True)
class HealPlan:
    new_primaries: tuple[DesiredNode, ...]
    attachments: tuple[Attachment, ...]
    spare: tuple[DesiredNode, ...]


def plan_heal(
    primaries: Sequence[PrimaryState],
    free_nodes: Sequence[DesiredNode],
    shards: int,
    replicas: int,
) -> HealPlan:
    """Place free nodes (new, wiped, or empty masters) into an existing cluster.

    First the missing primaries (scale out), spread over zones; then replicas for every
    primary short of them, each preferring a zone its shard does not use yet.
    """
    free = list(free_nodes)
    zone_primaries: Counter[str | None] = Counter(p.zone for p in primaries)
    new_primaries: list[DesiredNode] = []
    for _ in range(max(0, shards - len(primaries))):
        if not free:
            break
        pick = min(free, key=lambda n: (zone_primaries[n.zone], free.index(n)))
        new_primaries.append(pick)
        zone_primaries[pick.zone] += 1
        free.remove(pick)

    # (key, zone of primary, zones of replicas) for every shard, old and new.
    shard_zones: list[tuple[str | DesiredNode, list[str | None]]] = [
        (p.node_id, [p.zone, *p.replica_zones]) for p in primaries
    ]
    shard_zones += [(n, [n.zone]) for n in new_primaries]
    attachments: list[Attachment] = []
    progress = True
    while free and progress:
        progress = False
        # The shard with the fewest replicas gets the next node.
        short = [s for s in shard_zones if len(s[1]) - 1 < replicas]
        if not short:
            break
        short.sort(key=lambda s: len(s[1]))
        key, zones = short[0]
        pick = min(
            free,
            key=lambda n: (n.zone is not None and n.zone in zones, free.index(n)),
        )
        if isinstance(key, str):
            attachments.append(Attachment(pick, key))
        else:
            attachments.append(Attachment(pick, None, new_primary=key))
        zones.append(pick.zone)
        free.remove(pick)
        progress = True
    return HealPlan(tuple(new_primaries), tuple(attachments), tuple(free))
