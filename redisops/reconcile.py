"""Form, heal and scale the cluster, push ACLs and the function library, reload TLS, and
report drift.

`reconcile` decides *what* should change from the desired topology and what the nodes
report; `redis-cli --cluster` does slot migration. Run twice, the second run changes
nothing and says so. Every run ends with an assessment of the cluster as findings.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import redis
from pydantic import BaseModel

from redisops import functions, rediscli
from redisops.acl import diff_acl
from redisops.client import Credentials, Endpoint, TlsClient, connect, served_certificate
from redisops.cluster import (
    NodeView,
    count_slots,
    even_slot_ranges,
    expand,
    format_ranges,
    merge_ranges,
    parse_cluster_nodes,
    parse_info,
    replica_signature,
    slot_map_signature,
    uncovered_slots,
)
from redisops.errors import ConfigError, OperationError
from redisops.topology import DesiredCluster, DesiredNode, PrimaryState, plan_heal, plan_layout

Severity = Literal["info", "warning", "error"]


class Finding(BaseModel):
    """Something reconcile noticed about the cluster."""

    code: str
    severity: Severity
    message: str
    node: str | None = None
    fix: str | None = None


class Action(BaseModel):
    """Something reconcile changed (or, in a dry run, would change)."""

    code: str
    message: str
    node: str | None = None


class ReconcileReport(BaseModel):
    """What reconcile found and did; `healthy` is false when any error finding remains."""

    actions: list[Action]
    findings: list[Finding]
    dry_run: bool
    duration_s: float

    @property
    def changed(self) -> bool:
        return bool(self.actions) and not self.dry_run

    @property
    def healthy(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def summary(self) -> str:
        if not self.actions:
            head = "no changes: the cluster already matches the desired state"
        elif self.dry_run:
            head = f"dry run: {len(self.actions)} change(s) would be made"
        else:
            head = f"{len(self.actions)} change(s) made"
        errors = sum(1 for f in self.findings if f.severity == "error")
        warnings = sum(1 for f in self.findings if f.severity == "warning")
        return f"{head}; {errors} error(s), {warnings} warning(s)"


@dataclass
class Observation:
    """One desired node as read just now (view None when unreachable)."""

    desired: DesiredNode
    view: NodeView | None = None
    error: str | None = None
    dbsize: int = 0
    link_status: str | None = None  # master_link_status when the node is a replica
    loading: bool = False  # answering LOADING: busy with an RDB (a replica's first sync)

    @property
    def reachable(self) -> bool:
        return self.view is not None


@dataclass
class ReconcileOptions:
    """What else reconcile should do besides topology.

    acl_text: the rendered ACL file every node must enforce.
    write_acl: how to place it on a node before `ACL LOAD` (the twin writes the node's
      file; on GKE the file is a mounted Secret and this is None).
    reload_tls: re-read certificate files on every node (needs `admin`, since only the
      admin role may run CONFIG SET).
    """

    acl_text: str | None = None
    write_acl: Callable[[Endpoint, str], None] | None = None
    # Seconds to keep re-loading a node whose ACL or certificate files are still the old
    # ones (GKE: they are mounted Secrets, updated by the kubelet up to a minute late).
    mount_settle_s: float = 0.0
    # The node certificate (PEM) every node must serve after the TLS reload.
    expected_cert_pem: str | None = None
    # The replication user's credentials, set on every node with the TLS reload.
    replication: Credentials | None = None
    # A restore forms the cluster over nodes that already hold a backup's shards: the
    # slots each shard must serve (in plan_layout's shard order), data allowed.
    shard_slots: Sequence[Sequence[tuple[int, int]]] | None = None
    reload_tls: bool = False
    admin: Credentials | None = None
    dry_run: bool = False
    timeout_s: float = 60.0
    progress: Callable[[str], None] = field(default=lambda _msg: None)


def resolve_ip(host: str) -> str:
    """CLUSTER MEET takes an IP: resolve names (pod DNS names on GKE) first."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OperationError(f"cannot resolve {host}: {exc}; check DNS for the node") from exc
    ipv4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]
    return str(ipv4[0] if ipv4 else infos[0][4][0])


class Reconciler:
    """One reconcile run against the nodes of `desired`, as the `operator` role."""

    def __init__(
        self,
        desired: DesiredCluster,
        tls: TlsClient,
        operator: Credentials,
        options: ReconcileOptions | None = None,
    ) -> None:
        self.desired = desired
        self.tls = tls
        self.operator = operator
        self.options = options or ReconcileOptions()
        self.actions: list[Action] = []
        self.findings: list[Finding] = []
        self._clients: dict[Endpoint, redis.Redis] = {}

    # ---- I/O helpers -------------------------------------------------------------

    def _client(self, endpoint: Endpoint) -> redis.Redis:
        client = self._clients.get(endpoint)
        if client is None:
            client = connect(endpoint, self.tls, self.operator, timeout=5.0)
            self._clients[endpoint] = client
        return client

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def observe(self) -> list[Observation]:
        observations = []
        for node in self.desired.nodes:
            obs = Observation(node)
            try:
                client = self._client(node.endpoint)
                nodes = parse_cluster_nodes(str(client.execute_command("CLUSTER", "NODES")))
                info = parse_info(str(client.execute_command("CLUSTER", "INFO")))
                repl = client.info("replication")
                obs.view = NodeView(nodes, info.get("cluster_state", "unknown"), info)
                obs.dbsize = int(client.dbsize())
                obs.link_status = repl.get("master_link_status")
            except redis.AuthenticationError as exc:
                raise ConfigError(
                    f"{node.endpoint}: the operator credentials were refused ({exc}); check "
                    "the password file and that the node loaded the current ACL file"
                ) from exc
            except redis.ResponseError as exc:
                if "NOPERM" in str(exc):
                    raise ConfigError(
                        f"{node.endpoint}: user {self.operator.username} lacks a permission "
                        f"reconcile needs ({exc}); use the operator role"
                    ) from exc
                obs.error = str(exc)
            except redis.BusyLoadingError as exc:
                obs.error = f"loading its dataset ({exc})"
                obs.loading = True
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                obs.error = str(exc) or type(exc).__name__
                self._clients.pop(node.endpoint, None)
            observations.append(obs)
        return observations

    def _act(self, code: str, message: str, node: Endpoint | str | None = None) -> bool:
        """Record an action; return whether to carry it out (false in a dry run)."""
        self.actions.append(Action(code=code, message=message, node=str(node) if node else None))
        self.options.progress(("would " if self.options.dry_run else "") + message)
        return not self.options.dry_run

    def _wait(
        self, what: str, done: Callable[[list[Observation]], bool], *, must: bool = True
    ) -> list[Observation]:
        """Poll until `done`; on timeout raise (`must`) or return the last observation."""
        deadline = time.monotonic() + self.options.timeout_s
        while True:
            observations = self.observe()
            if done(observations):
                return observations
            if time.monotonic() > deadline:
                if not must:
                    return observations
                raise OperationError(
                    f"timed out after {self.options.timeout_s:.0f} s waiting for {what}; "
                    "run `redisops reconcile` again to see what is left"
                )
            time.sleep(0.1)

    # ---- the run -----------------------------------------------------------------

    def run(self) -> ReconcileReport:
        started = time.monotonic()
        try:
            observations = self.observe()
            # ACLs first: the operator's own rights may be what a change needs.
            self._sync_acl(observations)
            reachable = [o for o in observations if o.reachable]
            # A restore's nodes claimed the slots of their keys at load: still unformed.
            unformed = (
                (lambda v: len(v.nodes) == 1)
                if self.options.shard_slots is not None
                else (lambda v: v.is_alone)
            )
            if reachable and all(o.view and unformed(o.view) for o in reachable):
                if len(reachable) < len(observations):
                    self._report_unreachable(observations)
                    self.findings.append(
                        Finding(
                            code="cannot_form",
                            severity="error",
                            message="the cluster is not formed and some nodes are unreachable",
                            fix="start every node, then run reconcile again",
                        )
                    )
                else:
                    self._form(observations)
            elif reachable:
                self._heal(observations)
            if self.options.reload_tls:
                self._reload_tls(observations)
            if self.actions and not self.options.dry_run:
                observations = self._wait_converged()
            else:
                observations = self.observe()
            # Last: the primaries are known only once the topology has settled.
            self._sync_functions(observations)
            self.findings.extend(assess(self.desired, observations))
        finally:
            self.close()
        return ReconcileReport(
            actions=self.actions,
            findings=_dedupe(self.findings),
            dry_run=self.options.dry_run,
            duration_s=round(time.monotonic() - started, 3),
        )

    def _report_unreachable(self, observations: Sequence[Observation]) -> None:
        for obs in observations:
            if not obs.reachable:
                self.findings.append(
                    Finding(
                        code="node_unreachable",
                        severity="error",
                        node=str(obs.desired.endpoint),
                        message=f"cannot reach the node: {obs.error}",
                        fix="check that the node runs and that TLS and credentials match",
                    )
                )

    # ---- forming a new cluster ---------------------------------------------------

    def _form(self, observations: Sequence[Observation]) -> None:
        with_data = [o for o in observations if o.dbsize]
        slot_plan = self.options.shard_slots
        if with_data and slot_plan is None:
            self.findings.append(
                Finding(
                    code="refuse_form_with_data",
                    severity="error",
                    node=str(with_data[0].desired.endpoint),
                    message=f"{len(with_data)} unclustered node(s) hold keys; forming a "
                    "cluster over them could hide or drop data",
                    fix="inspect the nodes' data; restore it from a backup, or empty the nodes "
                    "deliberately (FLUSHALL as admin) and run reconcile again",
                )
            )
            return
        ids = {o.desired.endpoint: o.view.myself.node_id for o in observations if o.view}
        layout = plan_layout(self.desired)
        self.options.progress(
            f"forming a cluster of {self.desired.shards} shards x {1 + self.desired.replicas} nodes"
        )
        plan = (
            [list(ranges) for ranges in slot_plan]
            if slot_plan is not None
            else [[r] for r in even_slot_ranges(self.desired.shards)]
        )
        if len(plan) != len(layout):
            raise ConfigError(
                f"{len(plan)} shards of slots for {len(layout)} primaries; the shard counts "
                "must match"
            )
        owned = {o.desired.endpoint: expand(o.view.myself.slots) for o in observations if o.view}
        for epoch, (shard, ranges) in enumerate(zip(layout, plan, strict=True), start=1):
            ep = shard.primary.endpoint
            # A node that loaded keys already serves their slots; add the rest.
            missing = merge_ranges(expand(ranges) - owned.get(ep, set()))
            text = format_ranges(ranges)
            if self._act("assign_slots", f"assign slots {text} to {ep}", ep):
                client = self._client(ep)
                if missing:
                    bounds = [b for lo, hi in missing for b in (lo, hi)]
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", *bounds)
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        first = layout[0].primary.endpoint
        for node in self.desired.nodes:
            if node.endpoint == first:
                continue
            if self._act("meet", f"introduce {node.endpoint} to the cluster", node.endpoint):
                self._client(node.endpoint).execute_command(
                    "CLUSTER", "MEET", resolve_ip(first.host), first.port, first.port + 10000
                )
        if self.options.dry_run:
            for shard in layout:
                for replica in shard.replicas:
                    self._act(
                        "replicate",
                        f"make {replica.endpoint} a replica of {shard.primary.endpoint}",
                        replica.endpoint,
                    )
            return
        total = len(self.desired.nodes)
        self._wait(
            "every node to know every other node",
            lambda obs: all(
                o.view is not None
                and len(o.view.nodes) == total
                and not any(n.handshake for n in o.view.nodes)
                for o in obs
            ),
        )
        for shard in layout:
            primary_id = ids[shard.primary.endpoint]
            for replica in shard.replicas:
                if self._act(
                    "replicate",
                    f"make {replica.endpoint} a replica of {shard.primary.endpoint}",
                    replica.endpoint,
                ):
                    self._client(replica.endpoint).execute_command(
                        "CLUSTER", "REPLICATE", primary_id
                    )

    # ---- healing and scaling an existing cluster ----------------------------------

    def _heal(self, observations: list[Observation]) -> None:
        self._report_unreachable(observations)
        reachable = [o for o in observations if o.view is not None]
        # Judge from the member that knows the latest configuration epoch.
        anchor = max(
            (o for o in reachable if o.view and not o.view.is_alone),
            key=lambda o: (
                o.view.cluster_state == "ok" if o.view else False,
                int(o.view.info.get("cluster_current_epoch", "0")) if o.view else 0,
            ),
        )
        assert anchor.view is not None
        view = anchor.view
        anchor_ep = anchor.desired.endpoint
        member_ids = {n.node_id for n in view.nodes}
        desired_ids = {o.view.myself.node_id: o.desired for o in reachable if o.view}
        zone_of = {node_id: d.zone for node_id, d in desired_ids.items()}

        gone = self._forget_departed(reachable, view, desired_ids)
        self._close_open_slots(anchor_ep, reachable, view)

        def followers(node_id: str) -> list[str]:
            return [
                r.node_id
                for r in view.nodes
                if r.master_id == node_id
                and r.is_replica
                and not r.failed
                and r.node_id not in gone
            ]

        def state(node_id: str) -> PrimaryState:
            return PrimaryState(
                node_id, zone_of.get(node_id), tuple(zone_of.get(r) for r in followers(node_id))
            )

        serving = [n.node_id for n in view.nodes if n.is_primary and n.slots and not n.failed]
        # Members that are primaries without slots: an interrupted scale-out left them, or
        # they are new nodes added by hand. Adopt as many as shards are missing.
        empty = [
            o.view.myself.node_id
            for o in reachable
            if o.view
            and o.view.myself.node_id in member_ids
            and not o.view.is_alone
            and o.view.myself.is_primary
            and not o.view.myself.slots
        ]
        empty.sort(key=lambda node_id: -len(followers(node_id)))
        adopted = empty[: max(0, self.desired.shards - len(serving))]
        free: list[DesiredNode] = [
            desired_ids[node_id] for node_id in empty[len(adopted) :] if not followers(node_id)
        ]
        outsiders = [
            o
            for o in reachable
            if o.view and (o.view.is_alone or o.view.myself.node_id not in member_ids)
        ]
        for obs in outsiders:
            if obs.dbsize:
                self.findings.append(
                    Finding(
                        code="free_node_has_data",
                        severity="error",
                        node=str(obs.desired.endpoint),
                        message="node is outside the cluster but holds keys; not adding it",
                        fix="inspect the node's data; empty it (FLUSHALL as admin) to reuse it",
                    )
                )
            else:
                free.append(obs.desired)

        primaries = [state(node_id) for node_id in (*serving, *adopted)]
        plan = plan_heal(primaries, free, self.desired.shards, self.desired.replicas)
        for node in plan.spare:
            self.findings.append(
                Finding(
                    code="spare_node",
                    severity="warning",
                    node=str(node.endpoint),
                    message="node is not needed by the desired topology",
                    fix="check the shards/replicas settings",
                )
            )
        joining = [
            o.desired
            for o in outsiders
            if o.desired in plan.new_primaries or any(a.node == o.desired for a in plan.attachments)
        ]
        if not (joining or adopted or plan.new_primaries or plan.attachments):
            return

        # 1. Bring new nodes into the cluster.
        for node in joining:
            ep = node.endpoint
            if self._act("meet", f"introduce {ep} to the cluster", ep):
                self._client(anchor_ep).execute_command(
                    "CLUSTER", "MEET", resolve_ip(ep.host), ep.port, ep.port + 10000
                )
        if joining and not self.options.dry_run:
            wanted = {n.endpoint for n in joining}
            self._wait("new nodes to join", lambda obs: _all_joined(obs, wanted))
        ids = {o.desired.endpoint: o.view.myself.node_id for o in reachable if o.view}

        # 2. Attach replicas first, so that rebalancing only sees the new primaries as empty.
        for attach in plan.attachments:
            if attach.new_primary is not None:
                target, name = ids[attach.new_primary.endpoint], str(attach.new_primary.endpoint)
            else:
                assert attach.primary_id is not None
                target = attach.primary_id
                name = str(desired_ids[target].endpoint) if target in desired_ids else target
            if self._act(
                "replicate",
                f"make {attach.node.endpoint} a replica of {name}",
                attach.node.endpoint,
            ):
                self._client(attach.node.endpoint).execute_command("CLUSTER", "REPLICATE", target)

        # 3. Scale out: move slots onto the empty primaries (redis-cli does the moving).
        receivers = [str(desired_ids[i].endpoint) for i in adopted]
        receivers += [str(n.endpoint) for n in plan.new_primaries]
        if receivers and self._act(
            "rebalance", f"move slots onto new primaries {', '.join(receivers)}", anchor_ep
        ):
            attached = {ids[a.node.endpoint] for a in plan.attachments}
            if attached:
                self._wait(
                    "every node to see the new replicas",
                    lambda obs: _seen_as_replicas(obs, attached),
                )
            # A node that does not yet see cluster_state:ok refuses migrated keys
            # (CLUSTERDOWN), so every node must agree first.
            self._wait(
                "every node to report cluster_state:ok",
                lambda obs: all(o.view is None or o.view.cluster_state == "ok" for o in obs),
            )
            self._redis_cli_cluster("rebalance", anchor_ep, "--cluster-use-empty-masters")

    def _close_open_slots(
        self, anchor: Endpoint, reachable: Sequence[Observation], view: NodeView
    ) -> None:
        """Finish or roll back an interrupted slot migration (redis-cli does the work)."""
        open_slots = _open_slots(reachable)
        if not open_slots or uncovered_slots(view.nodes):
            return  # with slots uncovered, `--cluster fix` would hide data loss: report only
        if self._act(
            "fix_open_slots",
            f"close {len(open_slots)} open slot(s) {open_slots[:5]} with redis-cli --cluster fix",
            anchor,
        ):
            self._redis_cli_cluster("fix", anchor)

    def _redis_cli_cluster(self, command: str, anchor: Endpoint, *extra: str) -> None:
        result = rediscli.run(
            ["--cluster", command, str(anchor), *extra, "--cluster-yes"],
            self.tls,
            self.operator,
            timeout=max(600.0, self.options.timeout_s),
        )
        if not result.ok:
            raise OperationError(
                f"redis-cli --cluster {command} failed: "
                f"{_last_lines(result.stdout + result.stderr)}; run reconcile again, or "
                f"`redis-cli --cluster {command}` as the operator user"
            )

    def _forget_departed(
        self,
        reachable: Sequence[Observation],
        view: NodeView,
        desired_ids: dict[str, DesiredNode],
    ) -> set[str]:
        """Forget nodes that will not come back; return their ids.

        A node is gone when another node now answers at its address (a pod that came
        back with an empty volume has a new id), when Redis lost its address (`noaddr`),
        or when it failed and its address belongs to no desired node. A failed node at a
        desired address that nobody answers on is *not* forgotten: it may restart with
        its data and rejoin.
        """
        current: dict[str, str] = {}
        for obs in reachable:
            if obs.view is None:
                continue
            for address in _addresses_of(obs.desired):
                current[address] = obs.view.myself.node_id
        desired_addresses = _desired_addresses(self.desired.nodes)
        gone: set[str] = set()
        for node in view.nodes:
            if node.slots or node.node_id in desired_ids:
                continue
            names = {node.address}
            if node.hostname:
                names.add(f"{node.hostname}:{node.port}")
            taken = any(current.get(n, node.node_id) != node.node_id for n in names)
            if taken or "noaddr" in node.flags:
                why = "a new node answers at its address"
            elif node.failed and not names & desired_addresses:
                why = "failed, and not part of the desired topology"
            else:
                continue
            gone.add(node.node_id)
            if not self._act("forget", f"forget node {node.node_id[:8]} ({node.address}): {why}"):
                continue
            for obs in reachable:
                if obs.view is None or obs.view.by_id(node.node_id) is None:
                    continue
                try:
                    self._client(obs.desired.endpoint).execute_command(
                        "CLUSTER", "FORGET", node.node_id
                    )
                except redis.ResponseError as exc:
                    self.findings.append(
                        Finding(
                            code="forget_failed",
                            severity="warning",
                            node=str(obs.desired.endpoint),
                            message=f"CLUSTER FORGET {node.node_id[:8]} refused: {exc}",
                        )
                    )
        return gone

    # ---- ACLs and TLS ------------------------------------------------------------

    def _sync_acl(self, observations: Sequence[Observation]) -> None:
        text = self.options.acl_text
        if text is None:
            return
        for obs in observations:
            if not obs.reachable:
                continue
            ep = obs.desired.endpoint
            client = self._client(ep)
            problems = diff_acl(text, [str(x) for x in client.execute_command("ACL", "LIST")])
            if not problems:
                continue
            if not self._act("acl_load", f"load the ACL file on {ep} ({problems[0]})", ep):
                continue
            if self.options.write_acl is not None:
                self.options.write_acl(ep, text)
            settle_until = time.monotonic() + self.options.mount_settle_s
            while True:
                left = self._acl_load(ep, text)
                if not left or time.monotonic() >= settle_until:
                    break
                # A mounted Secret reaches the pod up to a minute after it changed.
                self.options.progress(f"{ep}: ACL file not updated yet ({left[0]}); retrying")
                time.sleep(2.0)
            if left:
                self.findings.append(
                    Finding(
                        code="acl_drift",
                        severity="error",
                        node=str(ep),
                        message=f"after ACL LOAD the node still differs: {left[0]}",
                        fix="the node's ACL file is stale (a mounted Secret takes up to a "
                        "minute to update); run reconcile again",
                    )
                )

    def _acl_load(self, ep: Endpoint, text: str) -> list[str]:
        """ACL LOAD on `ep`; what still differs afterwards ([] also when Redis refused the
        file, which is reported as its own finding)."""
        try:
            self._client(ep).execute_command("ACL", "LOAD")
        except redis.ResponseError as exc:
            self.findings.append(
                Finding(
                    code="acl_load_failed",
                    severity="error",
                    node=str(ep),
                    message=f"ACL LOAD refused the file: {exc}",
                    fix="render the ACL file again with redisops.acl; the node kept its "
                    "previous users",
                )
            )
            return []
        except redis.ConnectionError:
            pass  # Redis 7.0 drops every client on ACL LOAD; reconnect below.
        self._clients.pop(ep, None)
        return diff_acl(text, [str(x) for x in self._client(ep).execute_command("ACL", "LIST")])

    # ---- the function library ---------------------------------------------------

    def _sync_functions(self, observations: Sequence[Observation]) -> None:
        """Load the platform's function library on every primary where it is missing or
        different; replicas get it through replication."""
        for obs in observations:
            if obs.view is None or not obs.view.myself.is_primary:
                continue
            ep = obs.desired.endpoint
            client = self._client(ep)
            try:
                listing = client.execute_command("FUNCTION", "LIST", "WITHCODE")
                loaded = functions.libraries(listing)
            except redis.ResponseError as exc:
                self.findings.append(_function_refused(ep, "FUNCTION LIST", exc))
                continue
            for name in sorted(set(loaded) - {functions.LIBRARY}):
                self.findings.append(
                    Finding(
                        code="unexpected_function_library",
                        severity="warning",
                        node=str(ep),
                        message=f"function library {name} is loaded; the publisher may FCALL "
                        "any loaded function",
                        fix=f"FUNCTION DELETE {name} as admin, unless it was loaded on purpose",
                    )
                )
            code = loaded.get(functions.LIBRARY)
            if code == functions.CODE:
                continue
            state = "missing" if code is None else "different"
            if not self._act(
                "function_load", f"load function library {functions.LIBRARY} on {ep} ({state})", ep
            ):
                self.findings.append(_function_finding(ep, missing=code is None))
                continue
            try:
                client.execute_command("FUNCTION", "LOAD", "REPLACE", functions.CODE)
            except redis.ResponseError as exc:
                self.findings.append(_function_refused(ep, "FUNCTION LOAD", exc))

    def _reload_tls(self, observations: Sequence[Observation]) -> None:
        if self.options.admin is None:
            raise ConfigError(
                "reload TLS: needs the admin credentials (only admin may CONFIG SET); "
                "pass --admin-password-file"
            )
        expected = _der(self.options.expected_cert_pem) if self.options.expected_cert_pem else None
        for obs in observations:
            if not obs.reachable:
                continue
            ep = obs.desired.endpoint
            if not self._act("reload_tls", f"reload TLS certificates on {ep}", ep):
                continue
            settle_until = time.monotonic() + self.options.mount_settle_s
            while True:
                if not self._config_set_tls(ep):
                    break
                if expected is None or served_certificate(ep, self.tls) == expected:
                    break
                if time.monotonic() >= settle_until:
                    self.findings.append(
                        Finding(
                            code="tls_stale",
                            severity="error",
                            node=str(ep),
                            message="after the reload the node still serves another "
                            "certificate than the one deployed",
                            fix="the node's mounted certificate Secret is not updated yet "
                            "(up to a minute); run reconcile again",
                        )
                    )
                    break
                self.options.progress(f"{ep}: certificate file not updated yet; retrying")
                time.sleep(2.0)

    def _config_set_tls(self, ep: Endpoint) -> bool:
        """CONFIG SET the node's own TLS paths (Redis re-reads the files, no restart), and
        masteruser/masterauth when given; False when Redis refused."""
        assert self.options.admin is not None
        admin = connect(ep, self.tls, self.options.admin)
        try:
            current = admin.config_get("tls-*-file")
            args: list[str] = []
            for key in ("tls-cert-file", "tls-key-file", "tls-ca-cert-file"):
                value = current.get(key)
                if value:
                    args += [key, value]
            admin.execute_command("CONFIG", "SET", *args)
            if self.options.replication is not None:
                # The include file is read at start only; a rotated replication password
                # must reach the running nodes before the old one is dropped.
                admin.execute_command(
                    "CONFIG",
                    "SET",
                    "masteruser",
                    self.options.replication.username,
                    "masterauth",
                    self.options.replication.password.get_secret_value(),
                )
        except redis.ResponseError as exc:
            self.findings.append(
                Finding(
                    code="tls_reload_failed",
                    severity="error",
                    node=str(ep),
                    message=f"Redis refused the certificate files: {exc}",
                    fix="check that certificate and key match and chain to the CA; "
                    "the node keeps serving the previous certificate",
                )
            )
            return False
        finally:
            admin.close()
        return True

    def _wait_converged(self) -> list[Observation]:
        def converged(observations: list[Observation]) -> bool:
            if any(o.loading for o in observations):
                return False  # a replica loading its first sync comes back by itself
            views = [o.view for o in observations if o.view is not None]
            if len(views) < len(observations):
                return True  # unreachable nodes are reported by assess, not waited for
            return (
                all(v.cluster_state == "ok" for v in views)
                and len({slot_map_signature(v) for v in views}) == 1
                and len({replica_signature(v) for v in views}) == 1
                and _replicas_settled(observations)
            )

        # If it does not converge in time, assess() says what is left: no exception.
        return self._wait("the cluster to converge", converged, must=False)


def _function_finding(ep: Endpoint, missing: bool) -> Finding:
    """What a primary without the current library means (a dry run leaves it so)."""
    if missing:
        return Finding(
            code="function_missing",
            severity="error",
            node=str(ep),
            message=f"function library {functions.LIBRARY} is not loaded: POSTs with an "
            "Idempotency-Key to streams of this shard get 503",
            fix="run `redisops reconcile`",
        )
    return Finding(
        code="function_outdated",
        severity="warning",
        node=str(ep),
        message=f"function library {functions.LIBRARY} differs from this version's",
        fix="run `redisops reconcile`",
    )


def _function_refused(ep: Endpoint, command: str, exc: redis.ResponseError) -> Finding:
    return Finding(
        code="function_load_failed",
        severity="error",
        node=str(ep),
        message=f"{command} refused: {exc}",
        fix="the operator role needs +function|load +function|list (a mounted ACL file "
        "takes up to a minute to update); run reconcile again",
    )


def _der(pem: str) -> bytes:
    try:
        return ssl.PEM_cert_to_DER_cert(pem.strip() + "\n")
    except ValueError as exc:
        raise ConfigError(f"expected node certificate: not a PEM certificate ({exc})") from exc


def _addresses_of(node: DesiredNode) -> set[str]:
    """host:port as configured and, when it is a name, as resolved."""
    addresses = {str(node.endpoint)}
    with contextlib.suppress(OperationError):  # unresolvable: match by name only
        addresses.add(f"{resolve_ip(node.endpoint.host)}:{node.endpoint.port}")
    return addresses


def _desired_addresses(nodes: Iterable[DesiredNode]) -> set[str]:
    addresses: set[str] = set()
    for node in nodes:
        addresses |= _addresses_of(node)
    return addresses


def _all_joined(observations: Sequence[Observation], wanted: set[Endpoint]) -> bool:
    """Every reachable node knows every other one (no handshake pending), and the nodes
    in `wanted` are among them: a new node must know its future primary before
    CLUSTER REPLICATE ("Unknown node" otherwise)."""
    ids = {o.view.myself.node_id for o in observations if o.view}
    joined = {o.desired.endpoint for o in observations if o.view}
    if not wanted <= joined:
        return False
    for obs in observations:
        if obs.view is None:
            continue
        known = {n.node_id for n in obs.view.nodes if not n.handshake}
        if not ids <= known:
            return False
    return True


def _open_slots(observations: Sequence[Observation]) -> list[int]:
    """Slots some node is migrating or importing (each node reports only its own)."""
    slots: set[int] = set()
    for obs in observations:
        if obs.view is not None:
            me = obs.view.myself
            slots.update(me.migrating, me.importing)
    return sorted(slots)


def _seen_as_replicas(observations: Sequence[Observation], node_ids: set[str]) -> bool:
    for obs in observations:
        if obs.view is None:
            continue
        for node_id in node_ids:
            node = obs.view.by_id(node_id)
            if node is None or not node.is_replica:
                return False
    return True


def _replicas_settled(observations: Sequence[Observation]) -> bool:
    for obs in observations:
        if obs.view is None:
            continue
        me = obs.view.myself
        if me.is_replica and obs.link_status != "up":
            return False
    return True


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "no output"


def _dedupe(findings: Iterable[Finding]) -> list[Finding]:
    seen: set[tuple[str, str | None, str]] = set()
    result = []
    for f in findings:
        key = (f.code, f.node, f.message)
        if key not in seen:
            seen.add(key)
            result.append(f)
    return result


def assess(desired: DesiredCluster, observations: Sequence[Observation]) -> list[Finding]:
    """Judge the cluster as observed: every problem an on-call engineer should know about."""
    findings: list[Finding] = []
    reachable = [o for o in observations if o.view is not None]
    for obs in observations:
        if obs.view is None:
            findings.append(
                Finding(
                    code="node_unreachable",
                    severity="error",
                    node=str(obs.desired.endpoint),
                    message=f"cannot reach the node: {obs.error}",
                    fix="check that the node runs and that TLS and credentials match",
                )
            )
    if not reachable:
        return findings
    members = [o for o in reachable if o.view and not o.view.is_alone]
    for obs in reachable:
        if obs.view and obs.view.is_alone and members:
            findings.append(
                Finding(
                    code="node_not_in_cluster",
                    severity="error",
                    node=str(obs.desired.endpoint),
                    message="node is not part of the cluster",
                    fix="run `redisops reconcile` to add it",
                )
            )
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
    # Judge the slot map from the node that knows the latest epoch.
    anchor = max(
        members,
        key=lambda o: int(o.view.info.get("cluster_current_epoch", "0")) if o.view else 0,
    )
    assert anchor.view is not None
    view = anchor.view
    for obs in members:
        assert obs.view is not None
        if obs.view.cluster_state != "ok":
            findings.append(
                Finding(
                    code="cluster_state_fail",
                    severity="error",
                    node=str(obs.desired.endpoint),
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
    for obs in members:
        assert obs.view is not None
        me = obs.view.myself  # a node shows its own open slots only
        if me.migrating or me.importing:
            findings.append(
                Finding(
                    code="slots_open",
                    severity="error",
                    node=str(obs.desired.endpoint),
                    message=f"slots in migration: migrating {list(me.migrating)[:5]} "
                    f"importing {list(me.importing)[:5]}",
                    fix="a resharding was interrupted; `redisops reconcile` closes it with "
                    "`redis-cli --cluster fix`",
                )
            )
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
    by_id = {o.view.myself.node_id: o for o in reachable if o.view}
    primaries = [n for n in view.nodes if n.is_primary and n.slots and not n.failed]
    if len(primaries) != desired.shards:
        findings.append(
            Finding(
                code="shard_count",
                severity="error",
                message=f"{len(primaries)} primaries serve slots, {desired.shards} desired",
                fix="run `redisops reconcile` (scale-in is not automated)",
            )
        )
    for primary in primaries:
        followers = [
            n
            for n in view.nodes
            if n.master_id == primary.node_id and not n.failed and "noaddr" not in n.flags
        ]
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
        p_obs = by_id.get(primary.node_id)
        for follower in followers:
            f_obs = by_id.get(follower.node_id)
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
    desired_addresses = {str(o.desired.endpoint) for o in observations}
    for node in view.nodes:
        if node.node_id not in by_id and not node.failed and not node.handshake:
            name = f"{node.hostname}:{node.port}" if node.hostname else node.address
            if name not in desired_addresses and node.address not in desired_addresses:
                findings.append(
                    Finding(
                        code="unexpected_node",
                        severity="warning",
                        node=node.address,
                        message=f"node {node.node_id[:8]} is in the cluster but not desired",
                        fix="scale-in is manual: move its slots away and CLUSTER FORGET it",
                    )
                )
    return findings


def reconcile(
    desired: DesiredCluster,
    tls: TlsClient,
    operator: Credentials,
    options: ReconcileOptions | None = None,
) -> ReconcileReport:
    """Bring the cluster to `desired` and report what was found and done."""
    return Reconciler(desired, tls, operator, options).run()
