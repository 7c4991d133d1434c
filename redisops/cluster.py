"""What a Redis Cluster looks like from one node: `CLUSTER NODES` parsed into data.

Pure functions only; `reconcile` and `local` use them on what they read from real nodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

SLOTS = 16384

SlotRange = tuple[int, int]


@dataclass(frozen=True)
class ClusterNode:
    """One line of `CLUSTER NODES`."""

    node_id: str
    ip: str
    port: int
    bus_port: int
    hostname: str | None
    flags: frozenset[str]
    master_id: str | None
    config_epoch: int
    link_state: str
    slots: tuple[SlotRange, ...] = ()
    migrating: tuple[int, ...] = ()
    importing: tuple[int, ...] = ()

    @property
    def myself(self) -> bool:
        return "myself" in self.flags

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def is_replica(self) -> bool:
        return "slave" in self.flags

    @property
    def failed(self) -> bool:
        return "fail" in self.flags

    @property
    def suspected(self) -> bool:
        return "fail?" in self.flags

    @property
    def handshake(self) -> bool:
        return "handshake" in self.flags

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def slot_count(self) -> int:
        return count_slots(self.slots)


@dataclass(frozen=True)
class NodeView:
    """Everything one node says about the cluster."""

    nodes: tuple[ClusterNode, ...]
    cluster_state: str = "unknown"
    info: dict[str, str] = field(default_factory=dict)

    @property
    def myself(self) -> ClusterNode:
        for node in self.nodes:
            if node.myself:
                return node
        raise ValueError("CLUSTER NODES output has no 'myself' line")

    def by_id(self, node_id: str) -> ClusterNode | None:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        return None

    @property
    def is_alone(self) -> bool:
        """A node that knows no peer and serves no slot: not part of any cluster yet."""
        return len(self.nodes) == 1 and not self.myself.slots


def _parse_address(text: str) -> tuple[str, int, int, str | None]:
    # ip:port@cport[,hostname]  (hostname since 7.0; ip may be empty for noaddr nodes)
    hostname: str | None = None
    if "," in text:
        text, hostname = text.split(",", 1)
        hostname = hostname or None
    hostport, _, cport = text.partition("@")
    host, _, port = hostport.rpartition(":")
    return host, int(port or 0), int(cport or 0), hostname


def parse_cluster_nodes(text: str) -> tuple[ClusterNode, ...]:
    """Parse the output of `CLUSTER NODES`."""
    nodes: list[ClusterNode] = []
    for raw in text.splitlines():
        parts = raw.split()
        if len(parts) < 8:
            continue
        node_id, addr, flags, master, _ping, _pong, epoch, link = parts[:8]
        ip, port, bus_port, hostname = _parse_address(addr)
        slots: list[SlotRange] = []
        migrating: list[int] = []
        importing: list[int] = []
        for token in parts[8:]:
            if token.startswith("["):
                inner = token[1:-1]
                if "->-" in inner:
                    migrating.append(int(inner.split("->-", 1)[0]))
                elif "-<-" in inner:
                    importing.append(int(inner.split("-<-", 1)[0]))
                continue
            lo, _, hi = token.partition("-")
            slots.append((int(lo), int(hi or lo)))
        nodes.append(
            ClusterNode(
                node_id=node_id,
                ip=ip,
                port=port,
                bus_port=bus_port,
                hostname=hostname,
                flags=frozenset(flags.split(",")),
                master_id=None if master == "-" else master,
                config_epoch=int(epoch),
                link_state=link,
                slots=tuple(slots),
                migrating=tuple(migrating),
                importing=tuple(importing),
            )
        )
    return tuple(nodes)


def parse_info(text: str) -> dict[str, str]:
    """Parse `INFO` / `CLUSTER INFO` output into a flat dict."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        result[key.strip()] = value.strip()
    return result


def count_slots(ranges: Iterable[SlotRange]) -> int:
    return sum(hi - lo + 1 for lo, hi in ranges)


def merge_ranges(slots: Iterable[int]) -> tuple[SlotRange, ...]:
    """Turn slot numbers into sorted, merged inclusive ranges."""
    ranges: list[list[int]] = []
    for slot in sorted(set(slots)):
        if ranges and slot == ranges[-1][1] + 1:
            ranges[-1][1] = slot
        else:
            ranges.append([slot, slot])
    return tuple((lo, hi) for lo, hi in ranges)


def expand(ranges: Iterable[SlotRange]) -> set[int]:
    result: set[int] = set()
    for lo, hi in ranges:
        result.update(range(lo, hi + 1))
    return result


def format_ranges(ranges: Sequence[SlotRange]) -> str:
    """`0-5460,5461-10922` style, as people read slot ranges."""
    return ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in ranges) or "-"


def even_slot_ranges(shards: int) -> list[SlotRange]:
    """Split the 16384 slots into `shards` contiguous ranges of near-equal size."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    ranges: list[SlotRange] = []
    for i in range(shards):
        lo = i * SLOTS // shards
        hi = (i + 1) * SLOTS // shards - 1
        ranges.append((lo, hi))
    return ranges


def uncovered_slots(nodes: Iterable[ClusterNode]) -> tuple[SlotRange, ...]:
    """Slots no live primary in this view serves."""
    covered: set[int] = set()
    for node in nodes:
        if node.is_primary and not node.failed:
            covered |= expand(node.slots)
    return merge_ranges(set(range(SLOTS)) - covered)


def slot_map_signature(view: NodeView) -> tuple[tuple[str, tuple[SlotRange, ...]], ...]:
    """Who serves which slots, as this node sees it: equal signatures mean agreement."""
    return tuple(sorted((n.node_id, n.slots) for n in view.nodes if n.is_primary and n.slots))


def replica_signature(view: NodeView) -> tuple[tuple[str, str], ...]:
    """Which replica follows which primary, as this node sees it."""
    return tuple(
        sorted(
            (n.node_id, n.master_id)
            for n in view.nodes
            if n.is_replica and n.master_id and not n.failed
        )
    )
