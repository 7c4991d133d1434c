"""What the smoke checks do to a live cluster, as plain functions over a `Target`.

The checks in `test_*.py` call these and assert on the results; `tests/` calls them
against deliberately broken servers to prove each check can fail.
"""

from __future__ import annotations

import socket
import ssl
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from cryptography import x509
from redis.crc import key_slot

from redisops import acl, health
from redisops.client import Credentials, Endpoint, TlsClient, connect, connect_cluster
from redisops.cluster import ClusterNode, NodeView, expand, parse_cluster_nodes, parse_info
from redisops.tls import days_until_expiry
from redisops.topology import DesiredCluster, DesiredNode
from smoke_tests.targets import Target, TargetError


def role_credentials(target: Target, role: str) -> Credentials:
    creds = target.credentials(role)
    if creds is None:
        raise TargetError(f"target {target.name} exposes no credentials for role {role}")
    return creds


@contextmanager
def node_client(
    target: Target, endpoint: Endpoint, role: str = acl.SMOKE, timeout: float = 2.0
) -> Iterator[redis.Redis]:
    client = connect(endpoint, target.tls(role), role_credentials(target, role), timeout=timeout)
    try:
        yield client
    finally:
        client.close()


# ---- cluster views ----------------------------------------------------------------


def read_view(target: Target, endpoint: Endpoint, role: str = acl.SMOKE) -> NodeView:
    with node_client(target, endpoint, role) as client:
        nodes = parse_cluster_nodes(str(client.execute_command("CLUSTER", "NODES")))
        info = parse_info(str(client.execute_command("CLUSTER", "INFO")))
    return NodeView(nodes, info.get("cluster_state", "unknown"), info)


def read_views(target: Target) -> dict[Endpoint, NodeView | None]:
    views: dict[Endpoint, NodeView | None] = {}
    for endpoint in target.endpoints():
        try:
            views[endpoint] = read_view(target, endpoint)
        except (redis.RedisError, OSError):
            views[endpoint] = None
    return views


@dataclass
class Health:
    """The cluster's health as the smoke suite reports it: the health model's errors and
    anything not settled yet (a suspected node); `problems` empty means healthy."""

    problems: list[str]
    primaries: int
    replicas: int

    @property
    def ok(self) -> bool:
        return not self.problems


def desired_of(target: Target) -> DesiredCluster:
    nodes = tuple(DesiredNode(endpoint=n.endpoint, zone=n.zone) for n in target.nodes())
    try:
        return DesiredCluster(shards=target.shards, replicas=target.replicas, nodes=nodes)
    except ValueError as exc:
        raise TargetError(f"target {target.name}: its nodes do not match its shape: {exc}") from exc


def observe(target: Target, role: str = acl.SMOKE) -> list[health.Observation]:
    """Every node of the target read into the health model (redisops.health)."""
    tls, creds = target.tls(role), role_credentials(target, role)
    return health.observe_as(desired_of(target).nodes, tls, creds, timeout=2.0)


def cluster_health(target: Target) -> Health:
    judged = health.judge(desired_of(target), observe(target))
    return Health(judged.problems(settled=True), judged.primaries, judged.replicas)


def wait_healthy(target: Target, timeout: float) -> Health:
    deadline = time.monotonic() + timeout
    while True:
        health = cluster_health(target)
        if health.ok or time.monotonic() > deadline:
            return health
        time.sleep(0.2)


def primary_for_slot(target: Target, slot: int) -> tuple[Endpoint, str]:
    """The endpoint and node id serving `slot`.

    Nodes may briefly disagree after a failover; the claim with the highest config
    epoch wins, as it does inside Redis.
    """
    views = [v for v in read_views(target).values() if v is not None]
    if not views:
        raise TargetError("no node is reachable")
    claims = [
        (node.config_epoch, node)
        for view in views
        for node in view.nodes
        if node.is_primary and not node.failed and slot in expand(node.slots)
    ]
    if not claims:
        raise TargetError(f"no live primary serves slot {slot}")
    _, node = max(claims, key=lambda claim: claim[0])
    return Endpoint(host=node.hostname or node.ip, port=node.port), node.node_id


def node_endpoints(node: ClusterNode) -> list[Endpoint]:
    """The endpoints a node answers on as the cluster announces it: its hostname (GKE's
    pod DNS names, what CLUSTER SLOTS prefers there) and its IP."""
    hosts = dict.fromkeys(h for h in (node.hostname, node.ip) if h)
    return [Endpoint(host=host, port=node.port) for host in hosts]


def key_for_primary(node_slots: set[int], prefix: str) -> str:
    """A key under `prefix` whose slot the given primary serves (found by hash tag)."""
    for i in range(100_000):
        key = f"{prefix}{{{i}}}"
        if key_slot(key.encode()) in node_slots:
            return key
    raise ValueError("no key found for the given slots")


def cluster_client(target: Target, role: str = acl.SMOKE) -> redis.RedisCluster:
    return connect_cluster(target.endpoints(), target.tls(role), role_credentials(target, role))


def key_round_trips(
    client: redis.RedisCluster, primaries: Sequence[ClusterNode], prefix: str
) -> list[str]:
    """Write, read and delete one key per primary through a cluster client, each key in a
    slot that primary serves; the problems found (none: every shard took its key).

    The client must route each key to its primary by host *and* port: every pod listens
    on 6379 on GKE, so the port alone tells nodes apart only in the twin.
    """
    problems: list[str] = []
    for primary in primaries:
        key = key_for_primary(expand(primary.slots), prefix)
        node = client.get_node_from_key(key)
        if node is None:
            problems.append(f"the client has no node for {key}")
            continue
        routed = Endpoint(host=node.host, port=node.port)
        owner = node_endpoints(primary)
        if routed not in owner:
            problems.append(
                f"{key} lives on {' / '.join(map(str, owner))}, the client routed it to {routed}"
            )
            continue
        value = f"{prefix}{primary.node_id[:8]}"
        if not client.set(key, value, px=60_000) or client.get(key) != value:
            problems.append(f"{key} did not read back from {primary.address}")
        client.delete(key)
    return problems


# ---- TLS probes -------------------------------------------------------------------


@dataclass
class TlsProbe:
    """The result of one TLS handshake attempt."""

    accepted: bool
    detail: str
    version: str | None = None
    peer_cert: x509.Certificate | None = None
    refused_by_server: bool = False


def tls_probe(
    endpoint: Endpoint,
    ca_file: str,
    *,
    client_cert: tuple[str, str] | None,
    version: ssl.TLSVersion | None = None,
    server_name: str | None = None,
    timeout: float = 3.0,
) -> TlsProbe:
    """Try a TLS handshake (and a PING) and say whether the server accepted it.

    `accepted` means the server answered a command over the connection. A refusal is
    `refused_by_server` when the server sent an alert or closed the connection, as
    opposed to this client being unable to even try.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca_file)
    ctx.check_hostname = server_name is not None
    if server_name is None:
        ctx.verify_mode = ssl.CERT_REQUIRED
    if client_cert is not None:
        ctx.load_cert_chain(*client_cert)
    if version is not None:
        # Allow old protocols on our side so that any refusal is the server's.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 on purpose
            ctx.minimum_version = version
            ctx.maximum_version = version
    try:
        with (
            socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=server_name or endpoint.host) as conn,
        ):
            der = conn.getpeercert(binary_form=True)
            cert = x509.load_der_x509_certificate(der) if der else None
            conn.sendall(b"PING\r\n")
            reply = conn.recv(64)
            accepted = reply.startswith((b"+", b"-"))
            return TlsProbe(accepted, repr(reply[:40]), conn.version(), cert, not accepted)
    except ssl.SSLCertVerificationError as exc:
        return TlsProbe(False, f"certificate verification failed: {exc.verify_message}")
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        local = reason in ("NO_PROTOCOLS_AVAILABLE", "UNSUPPORTED_PROTOCOL", "NO_CIPHERS_AVAILABLE")
        return TlsProbe(False, f"{reason}", refused_by_server=not local)
    except (ConnectionError, TimeoutError, OSError) as exc:
        return TlsProbe(False, f"{type(exc).__name__}: {exc}", refused_by_server=True)


def plaintext_probe(endpoint: Endpoint, timeout: float = 3.0) -> tuple[bool, str]:
    """Send a plaintext PING; return (answered, what came back)."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except (ConnectionError, TimeoutError, OSError) as exc:
        return False, f"{type(exc).__name__}"
    return reply.startswith((b"+", b"-", b"$", b"*", b":")), repr(reply[:40])


def cert_days_left(cert: x509.Certificate) -> float:
    return days_until_expiry(cert)


# ---- ACL probes -------------------------------------------------------------------


def is_noperm(exc: BaseException) -> bool:
    return isinstance(exc, redis.exceptions.NoPermissionError) or "NOPERM" in str(exc)


class Router:
    """Which node serves which key, read once from the cluster (for probes, not failovers)."""

    def __init__(self, target: Target) -> None:
        views = [v for v in read_views(target).values() if v is not None]
        if not views:
            raise TargetError("no node is reachable")
        view = max(views, key=lambda v: int(v.info.get("cluster_current_epoch", "0")))
        self._owner: dict[int, Endpoint] = {}
        for node in view.nodes:
            if node.is_primary and not node.failed:
                endpoint = Endpoint(host=node.hostname or node.ip, port=node.port)
                for slot in expand(node.slots):
                    self._owner[slot] = endpoint
        self.any = target.endpoints()[0]

    def endpoint(self, key: str | None) -> Endpoint:
        if key is None:
            return self.any
        return self._owner[key_slot(key.encode())]


class RoleConnections:
    """One authenticated connection per (role, node), reused across probes."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._clients: dict[tuple[str, Endpoint], redis.Redis] = {}

    def get(self, role: str, endpoint: Endpoint) -> redis.Redis:
        client = self._clients.get((role, endpoint))
        if client is None:
            client = connect(
                endpoint, self.target.tls(role), role_credentials(self.target, role), timeout=3.0
            )
            self._clients[(role, endpoint)] = client
        return client

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def run_as(client: redis.Redis, command: tuple[str, ...]) -> tuple[bool, str]:
    """Run `command` on `client`; (permitted, detail).

    Any reply other than NOPERM (including errors such as "no such key") counts as
    permitted: the ACL let the command through.
    """
    try:
        reply: Any = client.execute_command(*command)
    except redis.ResponseError as exc:
        if is_noperm(exc):
            return False, str(exc)
        return True, f"error {exc}"
    return True, repr(reply)[:60]


def dryrun(client: redis.Redis, username: str, command: tuple[str, ...]) -> tuple[bool, str]:
    """`ACL DRYRUN` (run by the smoke user): would `username` be allowed `command`?"""
    text = str(client.execute_command("ACL", "DRYRUN", username, *command))
    return text == "OK", text


def resp(*args: str) -> bytes:
    """Encode a command as a RESP array (so empty arguments survive)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(f"${len(data)}\r\n".encode() + data + b"\r\n")
    return b"".join(parts)


def raw_command(endpoint: Endpoint, tls: TlsClient, payload: bytes, timeout: float = 3.0) -> bytes:
    """Send raw RESP over a fresh TLS connection without authenticating; return the reply."""
    ctx = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file and tls.key_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    with (
        socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw,
        ctx.wrap_socket(raw, server_hostname=endpoint.host) as conn,
    ):
        conn.sendall(payload)
        return conn.recv(256)
