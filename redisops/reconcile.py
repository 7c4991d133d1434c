"""Form, heal and scale the cluster, push ACLs and the function library, reload TLS, and
report drift — as a plan, then its application.

`Reconciler.observe` reads the nodes into the health model (`redisops.health`);
`redisops.plan.make_plan` turns (desired, observed) into ordered, typed actions, each
with its reason and risk; `apply` carries out exactly those actions and stops at the
first one that fails, saying what was done and what remains. `redis-cli --cluster` does
slot migration. Run twice, the second run plans nothing and says so. Every run ends with
the health model's findings about the cluster as it is afterwards.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import redis
from pydantic import BaseModel

from redisops import functions, rediscli
from redisops.acl import diff_acl
from redisops.client import Credentials, Endpoint, TlsClient, connect, served_certificate
from redisops.cluster import parse_cluster_nodes, replica_signature, slot_map_signature
from redisops.errors import ConfigError, OperationError, RedisOpsError
from redisops.health import Finding, Observation, Reads, Severity, assess, observe
from redisops.plan import (
    ACTIONS,
    AclLoad,
    Action,
    AssignSlots,
    Failover,
    FixOpenSlots,
    Forget,
    FunctionLoad,
    Intent,
    Leave,
    Meet,
    Plan,
    Rebalance,
    ReloadTls,
    Replicate,
    addresses_of,
    make_plan,
)
from redisops.topology import DesiredCluster

__all__ = [
    "ACTIONS",
    "Action",
    "Finding",
    "Observation",
    "ReconcileOptions",
    "ReconcileReport",
    "Reconciler",
    "Severity",
    "assess",
    "reconcile",
    "resolve_ip",
]


class FailedAction(BaseModel):
    """The action apply stopped at, and why."""

    index: int
    code: str
    message: str
    error: str


class ReconcileReport(BaseModel):
    """What reconcile planned, did and found; `healthy` is false when any error finding
    remains or an action failed."""

    actions: list[Action]
    findings: list[Finding]
    dry_run: bool
    duration_s: float
    done: int = 0  # how many of `actions` were carried out, in order
    failed: FailedAction | None = None

    @property
    def changed(self) -> bool:
        return self.done > 0

    @property
    def remaining(self) -> list[Action]:
        return [] if self.dry_run else self.actions[self.done + (1 if self.failed else 0) :]

    @property
    def healthy(self) -> bool:
        return self.failed is None and not any(f.severity == "error" for f in self.findings)

    def summary(self) -> str:
        if not self.actions:
            head = "no changes: the cluster already matches the desired state"
        elif self.dry_run:
            head = f"plan: {len(self.actions)} change(s) would be made"
        elif self.failed is not None:
            head = (
                f"stopped at change {self.failed.index + 1} of {len(self.actions)} "
                f"({self.failed.code}: {self.failed.error}); {self.done} done, "
                f"{len(self.remaining)} not started"
            )
        else:
            head = f"{len(self.actions)} change(s) made"
        errors = sum(1 for f in self.findings if f.severity == "error")
        warnings = sum(1 for f in self.findings if f.severity == "warning")
        return f"{head}; {errors} error(s), {warnings} warning(s)"


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
    dry_run: bool = False  # plan only: print the plan, change nothing
    timeout_s: float = 60.0
    progress: Callable[[str], None] = field(default=lambda _msg: None)
    # A plan made earlier (`reconcile --plan --json`): apply only if planning now gives
    # exactly the same actions, else refuse (the cluster changed since).
    expected_plan: list[Action] | None = None
    # Shown the plan before anything changes (the CLI prints it as a table).
    on_plan: Callable[[Plan], None] | None = None


def resolve_ip(host: str) -> str:
    """CLUSTER MEET takes an IP: resolve names (pod DNS names on GKE) first."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OperationError(f"cannot resolve {host}: {exc}; check DNS for the node") from exc
    ipv4 = [i[4][0] for i in infos if i[0] == socket.AF_INET]
    return str(ipv4[0] if ipv4 else infos[0][4][0])


def _resolve_or_none(host: str) -> str | None:
    with contextlib.suppress(OperationError):  # unresolvable: match by name only
        return resolve_ip(host)
    return None


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
        self.findings: list[Finding] = []
        self._clients: dict[Endpoint, redis.Redis] = {}
        self._nodes = {str(n.endpoint): n.endpoint for n in desired.nodes}

    # ---- I/O helpers -------------------------------------------------------------

    def _client(self, endpoint: Endpoint) -> redis.Redis:
        client = self._clients.get(endpoint)
        if client is None:
            client = connect(endpoint, self.tls, self.operator, timeout=5.0)
            self._clients[endpoint] = client
        return client

    def _on(self, node: str | None) -> redis.Redis:
        assert node is not None
        return self._client(self._endpoint(node))

    def _endpoint(self, node: str) -> Endpoint:
        return self._nodes.get(node) or Endpoint.parse(node)

    def _drop(self, endpoint: Endpoint) -> None:
        client = self._clients.pop(endpoint, None)
        if client is not None:
            client.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def observe(self, reads: Reads | None = None) -> list[Observation]:
        username = self.operator.username
        return observe(self.desired.nodes, self._client, username, reads or Reads(), self._drop)

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

    def plan(self) -> tuple[Plan, list[Observation]]:
        """Observe and plan; changes nothing."""
        reads = Reads(acl=self.options.acl_text is not None, functions=True)
        observations = self.observe(reads)
        intent = Intent(
            acl_text=self.options.acl_text,
            reload_tls=self.options.reload_tls,
            shard_slots=self.options.shard_slots,
            addresses=addresses_of(self.desired, _resolve_or_none),
        )
        if self.options.reload_tls and self.options.admin is None:
            raise ConfigError(
                "reload TLS: needs the admin credentials (only admin may CONFIG SET); "
                "pass --admin-password-file"
            )
        return make_plan(self.desired, observations, intent), observations

    def run(self) -> ReconcileReport:
        started = time.monotonic()
        try:
            plan, observations = self.plan()
            self._check_expected(plan)
            if self.options.on_plan is not None:
                self.options.on_plan(plan)
            else:
                for action in plan.actions:
                    self.options.progress(f"plan: {action.message} [{action.risk}]")
            self.findings += plan.findings
            done, failed = 0, None
            if not self.options.dry_run:
                done, failed = self.apply(plan.actions)
                if plan.topology and done:
                    self.wait_converged()
                observations = self.observe(
                    Reads(acl=self.options.acl_text is not None, functions=True)
                )
            self.findings += assess(self.desired, observations)
        finally:
            self.close()
        return ReconcileReport(
            actions=plan.actions,
            findings=_dedupe(self.findings),
            dry_run=self.options.dry_run,
            duration_s=round(time.monotonic() - started, 3),
            done=done,
            failed=failed,
        )

    def _check_expected(self, plan: Plan) -> None:
        expected = self.options.expected_plan
        if expected is None:
            return
        now = ACTIONS.dump_python(plan.actions, mode="json")
        if ACTIONS.dump_python(expected, mode="json") != now:
            raise OperationError(
                f"the saved plan ({len(expected)} actions) no longer matches the cluster "
                f"(planning now gives {len(plan.actions)}): the cluster changed since it was "
                "made. Make a new plan with `redisops reconcile --plan` and review it"
            )

    def apply(self, actions: Sequence[Action]) -> tuple[int, FailedAction | None]:
        """Carry out `actions` in order; stop at the first that fails."""
        for index, action in enumerate(actions):
            self.options.progress(f"[{index + 1}/{len(actions)}] {action.message}")
            try:
                self._execute(action)
            except (RedisOpsError, redis.RedisError, OSError) as exc:
                return index, FailedAction(
                    index=index, code=action.code, message=action.message, error=str(exc)
                )
        return len(actions), None

    def _execute(self, action: Action) -> None:
        handlers: dict[type, Callable[[Action], None]] = {
            AclLoad: self._do_acl_load,
            AssignSlots: self._do_assign_slots,
            Meet: self._do_meet,
            Replicate: self._do_replicate,
            Forget: self._do_forget,
            FixOpenSlots: self._do_fix_open_slots,
            Rebalance: self._do_rebalance,
            FunctionLoad: self._do_function_load,
            ReloadTls: self._do_reload_tls,
            Failover: self._do_failover,
            Leave: self._do_leave,
        }
        handlers[type(action)](action)

    # ---- executing actions --------------------------------------------------------

    def _do_assign_slots(self, action: Action) -> None:
        assert isinstance(action, AssignSlots)
        client = self._on(action.node)
        if action.add:
            bounds = [b for lo, hi in action.add for b in (lo, hi)]
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", *bounds)
        client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", action.epoch)

    def _do_meet(self, action: Action) -> None:
        assert isinstance(action, Meet)
        peer = self._endpoint(action.peer)
        self._on(action.node).execute_command(
            "CLUSTER", "MEET", resolve_ip(peer.host), peer.port, peer.port + 10000
        )

    def _do_replicate(self, action: Action) -> None:
        assert isinstance(action, Replicate)
        # A node must know its future primary ("Unknown node" otherwise).
        self._wait(
            f"{action.node} to know its primary {action.primary_id[:8]}",
            lambda obs: _knows(obs, action.node, action.primary_id),
        )
        self._on(action.node).execute_command("CLUSTER", "REPLICATE", action.primary_id)

    def _do_forget(self, action: Action, strict: bool = True) -> None:
        """CLUSTER FORGET on every node that knows the id; a refusal fails the action
        (`strict`), or is a warning for a node that is leaving anyway."""
        assert isinstance(action, Forget)
        for obs in self.observe():
            if obs.view is None or obs.view.by_id(action.node_id) is None:
                continue
            if obs.node_id == action.node_id:
                continue
            try:
                self._client(obs.desired.endpoint).execute_command(
                    "CLUSTER", "FORGET", action.node_id
                )
            except redis.ResponseError as exc:
                if strict:
                    raise OperationError(
                        f"{obs.name}: CLUSTER FORGET {action.node_id[:8]} refused: {exc}"
                    ) from exc
                self.findings.append(
                    Finding(
                        code="forget_failed",
                        severity="warning",
                        node=obs.name,
                        message=f"CLUSTER FORGET {action.node_id[:8]} refused: {exc}",
                    )
                )

    def _do_fix_open_slots(self, action: Action) -> None:
        self._redis_cli_cluster("fix", self._endpoint(action.node or ""))

    def _do_rebalance(self, action: Action) -> None:
        assert isinstance(action, Rebalance)
        attached = set(action.attached)
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
        extra = ["--cluster-use-empty-masters"] if action.receivers else []
        if action.weights:
            extra += ["--cluster-weight", *(f"{i}={w:g}" for i, w in action.weights.items())]
        self._redis_cli_cluster("rebalance", self._endpoint(action.node or ""), *extra)

    def _do_failover(self, action: Action) -> None:
        assert isinstance(action, Failover)
        args = ["CLUSTER", "FAILOVER", *([action.mode] if action.mode else [])]
        self._on(action.node).execute_command(*args)
        self._wait(
            f"{action.node} to take over as primary",
            lambda obs: any(
                o.name == action.node and o.view and o.view.myself.is_primary for o in obs
            ),
        )

    def _do_leave(self, action: Action) -> None:
        assert isinstance(action, Leave)
        client = self._on(action.node)
        # The node at that address must still be the one planned, and empty: a reset
        # drops whatever slots it serves.
        me = str(client.execute_command("CLUSTER", "MYID"))
        if me != action.node_id:
            raise OperationError(
                f"{action.node} is node {me[:8]} now, not {action.node_id[:8]} as planned; "
                "plan again"
            )
        slots = parse_cluster_nodes(str(client.execute_command("CLUSTER", "NODES")))
        mine = next((n for n in slots if n.myself), None)
        keys = int(client.dbsize())
        if mine is not None and mine.is_primary and (mine.slots or keys):
            raise OperationError(
                f"{action.node} still serves {mine.slot_count if mine else 0} slots / holds "
                f"{keys} keys: its slots did not move off; nothing was reset. Run "
                "`redis-cli --cluster check`, then plan again"
            )
        # Reset first: a node that still knows the cluster gossips itself back in.
        client.execute_command("CLUSTER", "RESET", "HARD")
        self._do_forget(Forget(message="", node_id=action.node_id), strict=False)

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

    # ---- ACLs, functions and TLS --------------------------------------------------

    def _do_acl_load(self, action: Action) -> None:
        text = self.options.acl_text
        assert text is not None
        assert action.node is not None
        ep = self._endpoint(action.node)
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
        self._drop(ep)
        return diff_acl(text, [str(x) for x in self._client(ep).execute_command("ACL", "LIST")])

    def _do_function_load(self, action: Action) -> None:
        try:
            self._on(action.node).execute_command("FUNCTION", "LOAD", "REPLACE", functions.CODE)
        except redis.ResponseError as exc:
            if "READONLY" not in str(exc):
                raise
            # It became a replica since the plan was made: it gets the library from its
            # primary, which the final assessment checks.

    def _do_reload_tls(self, action: Action) -> None:
        expected = _der(self.options.expected_cert_pem) if self.options.expected_cert_pem else None
        ep = self._endpoint(action.node or "")
        settle_until = time.monotonic() + self.options.mount_settle_s
        while True:
            self._config_set_tls(ep)
            if expected is None or served_certificate(ep, self.tls) == expected:
                return
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
                return
            self.options.progress(f"{ep}: certificate file not updated yet; retrying")
            time.sleep(2.0)

    def _config_set_tls(self, ep: Endpoint) -> None:
        """CONFIG SET the node's own TLS paths (Redis re-reads the files, no restart), and
        masteruser/masterauth when given; a refusal stops the apply (the node keeps
        serving its previous certificate)."""
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
            raise OperationError(
                f"{ep}: Redis refused the certificate files: {exc}; check that certificate "
                "and key match and chain to the CA (the node keeps serving the previous one)"
            ) from exc
        finally:
            admin.close()

    def wait_converged(self) -> list[Observation]:
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


def _der(pem: str) -> bytes:
    try:
        return ssl.PEM_cert_to_DER_cert(pem.strip() + "\n")
    except ValueError as exc:
        raise ConfigError(f"expected node certificate: not a PEM certificate ({exc})") from exc


def _knows(observations: Sequence[Observation], node: str | None, node_id: str) -> bool:
    """`node` knows `node_id`, handshake done."""
    for obs in observations:
        if obs.name == node and obs.view is not None:
            known = obs.view.by_id(node_id)
            return known is not None and not known.handshake
    return False


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
        if obs.view.myself.is_replica and obs.link_status != "up":
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


def reconcile(
    desired: DesiredCluster,
    tls: TlsClient,
    operator: Credentials,
    options: ReconcileOptions | None = None,
) -> ReconcileReport:
    """Bring the cluster to `desired` and report what was planned, done and found."""
    return Reconciler(desired, tls, operator, options).run()
