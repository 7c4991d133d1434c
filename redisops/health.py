"""The cluster's health: one model of what the nodes report, judged one way.

`observe` reads every desired node (CLUSTER NODES, CLUSTER INFO, replication, key count,
and on request the ACL rules and the function library); `assess` turns observations
into findings; `judge` sums them up. Reconcile plans from these observations, backup
refuses to snapshot a cluster they call incomplete, and the smoke suite's health checks
are these findings: a cluster is judged the same way wherever it is looked at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import redis
from pydantic import BaseModel

from redisops import functions
from redisops.client import Credentials, Endpoint, TlsClient, connect
from redisops.cluster import (
    ClusterNode,
    NodeView,
    count_slots,
    format_ranges,
    parse_cluster_nodes,
    parse_info,
    slot_map_signature,
    uncovered_slots,
)
from redisops.errors import ConfigError
from redisops.topology import DesiredCluster, DesiredNode

Severity = Literal["info", "warning", "error"]

# Findings that say the cluster has not settled yet rather than that it is broken.
TRANSIENT = frozenset({"node_suspected", "views_disagree"})


class Finding(BaseModel):
    """Something noticed about the cluster, with what to do about it."""

    code: str
    severity: Severity
    message: str
    node: str | None = None
    fix: str | None = None


@dataclass
class Observation:
    """One desired node as read just now (view None when unreachable)."""

    desired: DesiredNode
    view: NodeView | None = None
    error: str | None = None
    dbsize: int = 0
    link_status: str | None = None  # master_link_status when the node is a replica
    loading: bool = False  # answering LOADING: busy with an RDB (a replica's first sync)
    acl_rules: list[str] | None = None  # ACL LIST, when asked for
    libraries: dict[str, str | None] | None = None  # FUNCTION LIST on a primary, when asked for
    library_error: str | None = None  # FUNCTION LIST refused

    @property
    def reachable(self) -> bool:
        return self.view is not None

    @property
    def node_id(self) -> str | None:
        return self.view.myself.node_id if self.view else None

    @property
    def name(self) -> str:
        return str(self.desired.endpoint)


@dataclass(frozen=True)
class Reads:
    """What `observe` reads besides the topology."""

    acl: bool = False
    functions: bool = False


def read_node(client: redis.Redis, obs: Observation, reads: Reads) -> None:
    """Fill `obs` from one node; Redis errors propagate to `observe`."""
    nodes = parse_cluster_nodes(str(client.execute_command("CLUSTER", "NODES")))
    info = parse_info(str(client.execute_command("CLUSTER", "INFO")))
    repl = client.info("replication")
    obs.view = NodeView(nodes, info.get("cluster_state", "unknown"), info)
    obs.dbsize = int(client.dbsize())
    obs.link_status = repl.get("master_link_status")
    if reads.acl:
        obs.acl_rules = [str(x) for x in client.execute_command("ACL", "LIST")]
    if reads.functions and obs.view.myself.is_primary:
        try:
            listing = client.execute_command("FUNCTION", "LIST", "WITHCODE")
            obs.libraries = functions.libraries(listing)
        except redis.ResponseError as exc:
            obs.library_error = str(exc)


def observe(
    nodes: Iterable[DesiredNode],
    client_for: Callable[[Endpoint], redis.Redis],
    username: str,
    reads: Reads = Reads(),
    forget_client: Callable[[Endpoint], None] = lambda _ep: None,
) -> list[Observation]:
    """Read every node; a node that cannot be read is an observation with its error.

    Refused credentials or a missing permission are configuration errors, not a node's
    state: they raise ConfigError naming the node and the role.
    """
    observations = []
    for node in nodes:
        obs = Observation(node)
        try:
            read_node(client_for(node.endpoint), obs, reads)
        except redis.AuthenticationError as exc:
            raise ConfigError(
                f"{node.endpoint}: the {username} credentials were refused ({exc}); check "
                "the password file and that the node loaded the current ACL file"
            ) from exc
        except redis.BusyLoadingError as exc:
            obs.view, obs.error, obs.loading = None, f"loading its dataset ({exc})", True
        except redis.ResponseError as exc:
            if "NOPERM" in str(exc):
                raise ConfigError(
                    f"{node.endpoint}: user {username} lacks a permission this needs ({exc}); "
                    "check the role's ACL rules in redisops/acl.py"
                ) from exc
            obs.view, obs.error = None, str(exc)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            obs.view, obs.error = None, str(exc) or type(exc).__name__
            forget_client(node.endpoint)
        observations.append(obs)
    return observations


def observe_as(
    nodes: Iterable[DesiredNode],
    tls: TlsClient,
    creds: Credentials,
    reads: Reads = Reads(),
    timeout: float = 3.0,
) -> list[Observation]:
    """`observe` with a connection per node as `creds`, all closed afterwards."""
    clients: dict[Endpoint, redis.Redis] = {}

    def client_for(endpoint: Endpoint) -> redis.Redis:
        if endpoint not in clients:
            clients[endpoint] = connect(endpoint, tls, creds, timeout=timeout)
        return clients[endpoint]

    try:
        return observe(nodes, client_for, creds.username, reads)
    finally:
        for client in clients.values():
            client.close()


# ---- judging ------------------------------------------------------------------------


def members_of(observations: Sequence[Observation]) -> list[Observation]:
    """Reachable nodes that are part of a cluster."""
    return [o for o in observations if o.view is not None and not o.view.is_alone]


def anchor_of(members: Sequence[Observation]) -> Observation:
    """The member that knows the latest configuration (cluster_state ok first)."""
    return max(
        members,
        key=lambda o: (
            o.view.cluster_state == "ok" if o.view else False,
            int(o.view.info.get("cluster_current_epoch", "0")) if o.view else 0,
        ),
    )


def serving_primaries(view: NodeView) -> list[ClusterNode]:
    return [n for n in view.nodes if n.is_primary and n.slots and not n.failed]


def live_followers(view: NodeView, primary_id: str) -> list[ClusterNode]:
    return [
        n
        for n in view.nodes
        if n.master_id == primary_id and not n.failed and "noaddr" not in n.flags
    ]


def unreachable_finding(obs: Observation) -> Finding:
    return Finding(
        code="node_unreachable",
        severity="error",
        node=obs.name,
        message=f"cannot reach the node: {obs.error}",
        fix="check that the node runs and that TLS and credentials match",
    )


def _membership(observations: Sequence[Observation], members: list[Observation]) -> list[Finding]:
    findings = [unreachable_finding(o) for o in observations if o.view is None]
    for obs in observations:
        if obs.view is not None and obs.view.is_alone and members:
            findings.append(
                Finding(
                    code="node_not_in_cluster",
                    severity="error",
                    node=obs.name,
                    message="node is not part of the cluster",
                    fix="run `redisops reconcile` to add it",
                )
            )
    return findings


def slot_findings(observations: Sequence[Observation]) -> list[Finding]:
    """Whether every slot is served, judged from the member with the latest view."""
    members = members_of(observations)
    if not members:
        return []
    view = anchor_of(members).view
    assert view is not None
    return _slot_map(members, view)


def _slot_map(members: list[Observation], view: NodeView) -> list[Finding]:
    findings = []
    signatures = {slot_map_signature(o.view) for o in members if o.view}
    if len(signatures) > 1:
        findings.append(
            Finding(
                code="views_disagree",
                severity="error",
                message=f"nodes disagree about who serves which slots ({len(signatures)} views)",
                fix="usually transient after a failover; if it persists run "
                "`redis-cli --cluster check` and `redisops reconcile`",
            )
        )
    for obs in members:
        if obs.view and obs.view.cluster_state != "ok":
            findings.append(
                Finding(
                    code="cluster_state_fail",
                    severity="error",
                    node=obs.name,
                    message=f"node reports cluster_state:{obs.view.cluster_state}",
                    fix="see the other findings; a shard without a live primary causes it",
                )
            )
    missing = uncovered_slots(view.nodes)
    if missing:
        findings.append(
            Finding(
                code="slots_uncovered",
                severity="error",
                message=f"{count_slots(missing)} slots have no live primary: "
                f"{format_ranges(missing)[:120]}",
                fix="bring the shard's nodes back; if its data is gone, restore from backup "
                "(reconcile never assigns lost slots to empty nodes)",
            )
        )
    return findings


def _open_slots(members: list[Observation]) -> list[Finding]:
    findings = []
    for obs in members:
        me = obs.view.myself if obs.view else None  # a node shows its own open slots only
        if me and (me.migrating or me.importing):
            findings.append(
                Finding(
                    code="slots_open",
                    severity="error",
                    node=obs.name,
                    message=f"slots in migration: migrating {list(me.migrating)[:5]} "
                    f"importing {list(me.importing)[:5]}",
                    fix="a resharding was interrupted; `redisops reconcile` closes it with "
                    "`redis-cli --cluster fix`",
                )
            )
    return findings


def _node_flags(view: NodeView) -> list[Finding]:
    findings = []
    for node in view.nodes:
        if node.failed:
            findings.append(
                Finding(
                    code="node_failed",
                    severity="error" if node.slots or node.is_primary else "warning",
                    node=node.address,
                    message=f"node {node.node_id[:8]} is marked failed by the cluster",
                    fix="restart it; reconcile forgets it once a replacement took its address",
                )
            )
        elif node.suspected:
            findings.append(
                Finding(
                    code="node_suspected",
                    severity="warning",
                    node=node.address,
                    message=f"node {node.node_id[:8]} is suspected down (PFAIL)",
                )
            )
    return findings


def _follower_findings(
    primary: ClusterNode, follower: ClusterNode, by_id: dict[str, Observation]
) -> list[Finding]:
    findings = []
    p_obs, f_obs = by_id.get(primary.node_id), by_id.get(follower.node_id)
    if f_obs and f_obs.link_status not in (None, "up"):
        findings.append(
            Finding(
                code="replication_link_down",
                severity="error",
                node=follower.address,
                message=f"replica's link to its primary is {f_obs.link_status}",
                fix="check the node log; the replication role needs +psync +replconf",
            )
        )
    if p_obs and f_obs and p_obs.desired.zone and p_obs.desired.zone == f_obs.desired.zone:
        findings.append(
            Finding(
                code="replica_same_zone",
                severity="warning",
                node=follower.address,
                message=f"replica is in zone {f_obs.desired.zone}, like its primary",
                fix="a zone outage would take the whole shard; move the pod",
            )
        )
    return findings


def _shards(
    desired: DesiredCluster, view: NodeView, by_id: dict[str, Observation]
) -> list[Finding]:
    findings = []
    primaries = serving_primaries(view)
    if len(primaries) != desired.shards:
        findings.append(
            Finding(
                code="shard_count",
                severity="error",
                message=f"{len(primaries)} primaries serve slots, {desired.shards} desired",
                fix="run `redisops reconcile` to add shards, `redisops scale --shards N` to "
                "remove them",
            )
        )
    for primary in primaries:
        followers = live_followers(view, primary.node_id)
        if len(followers) < desired.replicas:
            findings.append(
                Finding(
                    code="replicas_missing",
                    severity="error",
                    node=primary.address,
                    message=f"primary has {len(followers)} of {desired.replicas} replicas",
                    fix="start the missing nodes and run `redisops reconcile`",
                )
            )
        for follower in followers:
            findings.extend(_follower_findings(primary, follower, by_id))
    return findings


def _unexpected_nodes(
    observations: Sequence[Observation], view: NodeView, by_id: dict[str, Observation]
) -> list[Finding]:
    findings = []
    desired_addresses = {o.name for o in observations}
    for node in view.nodes:
        if node.node_id in by_id or node.failed or node.handshake:
            continue
        name = f"{node.hostname}:{node.port}" if node.hostname else node.address
        if name not in desired_addresses and node.address not in desired_addresses:
            findings.append(
                Finding(
                    code="unexpected_node",
                    severity="warning",
                    node=node.address,
                    message=f"node {node.node_id[:8]} is in the cluster but not desired",
                    fix="`redisops scale` removes nodes: it moves their slots away and makes "
                    "them leave",
                )
            )
    return findings


def library_findings(obs: Observation) -> list[Finding]:
    """What a primary's function library state means (read with Reads(functions=True))."""
    if obs.library_error is not None:
        return [
            Finding(
                code="function_load_failed",
                severity="error",
                node=obs.name,
                message=f"FUNCTION LIST refused: {obs.library_error}",
                fix="the operator role needs +function|load +function|list (a mounted ACL "
                "file takes up to a minute to update); run reconcile again",
            )
        ]
    if obs.libraries is None:
        return []
    findings = [
        Finding(
            code="unexpected_function_library",
            severity="warning",
            node=obs.name,
            message=f"function library {name} is loaded; the publisher may FCALL any loaded "
            "function",
            fix=f"FUNCTION DELETE {name} as admin, unless it was loaded on purpose",
        )
        for name in sorted(set(obs.libraries) - {functions.LIBRARY})
    ]
    code = obs.libraries.get(functions.LIBRARY)
    if code is None:
        findings.append(
            Finding(
                code="function_missing",
                severity="error",
                node=obs.name,
                message=f"function library {functions.LIBRARY} is not loaded: POSTs with an "
                "Idempotency-Key to streams of this shard get 503",
                fix="run `redisops reconcile`",
            )
        )
    elif code != functions.CODE:
        findings.append(
            Finding(
                code="function_outdated",
                severity="warning",
                node=obs.name,
                message=f"function library {functions.LIBRARY} differs from this version's",
                fix="run `redisops reconcile`",
            )
        )
    return findings


def assess(desired: DesiredCluster, observations: Sequence[Observation]) -> list[Finding]:
    """Judge the cluster as observed: every problem an on-call engineer should know about."""
    if not any(o.reachable for o in observations):
        return [unreachable_finding(o) for o in observations]
    members = members_of(observations)
    findings = _membership(observations, members)
    if not members:
        findings.append(
            Finding(
                code="cluster_not_formed",
                severity="error",
                message="no node is part of a cluster",
                fix="run `redisops reconcile` to form it",
            )
        )
        return findings
    view = anchor_of(members).view
    assert view is not None
    by_id = {o.node_id: o for o in observations if o.node_id}
    findings += _slot_map(members, view)
    findings += _open_slots(members)
    findings += _node_flags(view)
    findings += _shards(desired, view, by_id)
    findings += _unexpected_nodes(observations, view, by_id)
    for obs in observations:
        findings += library_findings(obs)
    return findings


@dataclass
class Health:
    """The cluster judged: its findings and the counts callers report."""

    findings: list[Finding] = field(default_factory=list)
    primaries: int = 0
    replicas: int = 0

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def settled(self) -> bool:
        """Healthy and done moving: no node suspected, every node of one view."""
        return self.ok and not any(f.code in TRANSIENT for f in self.findings)

    def problems(self, *, settled: bool = False) -> list[str]:
        """One line per error (and, with `settled`, per transient warning)."""
        return [
            f"{f.node + ': ' if f.node else ''}{f.message}"
            for f in self.findings
            if f.severity == "error" or (settled and f.code in TRANSIENT)
        ]


def judge(desired: DesiredCluster, observations: Sequence[Observation]) -> Health:
    findings = assess(desired, observations)
    members = members_of(observations)
    if not members:
        return Health(findings)
    view = anchor_of(members).view
    assert view is not None
    primaries = serving_primaries(view)
    replicas = sum(len(live_followers(view, p.node_id)) for p in primaries)
    return Health(findings, len(primaries), replicas)
