"""The local twin: a real Redis Cluster of `redis-server` processes on 127.0.0.1.

It runs the configuration production runs (rendered by `redisops.conf` and
`redisops.acl`, TLS only, ACLs with hashes only) and is formed and healed by the same
`reconcile` code. Everything lives under one state directory (default `.redisops/local`).
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from redisops import acl
from redisops.client import Credentials, Endpoint, TlsClient, connect
from redisops.cluster import NodeView, parse_cluster_nodes, parse_info
from redisops.conf import NodeSpec, TlsFiles, render_redis_conf, render_replication_include
from redisops.errors import ConfigError, OperationError
from redisops.local import netns, process
from redisops.local.monitoring import TwinMonitoring
from redisops.local.proxy import TwinProxy
from redisops.local.settings import (
    BUS_OFFSET,
    HOST,
    TWIN_ZONES,
    TwinLayout,
    TwinSettings,
    settings_from_options,
)
from redisops.reconcile import ReconcileOptions, ReconcileReport, reconcile
from redisops.tls import ensure_twin_tls, write_private

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


class Twin:
    """One local twin under `root`."""

    def __init__(self, root: Path, progress: Progress = _quiet) -> None:
        self.layout = TwinLayout(root)
        self.proxy = TwinProxy(self.layout)
        self.monitoring = TwinMonitoring(self.layout)
        self.progress = progress

    # ---- configuration ------------------------------------------------------------

    def settings(self) -> TwinSettings:
        settings = self.layout.load_settings()
        if settings is None:
            raise ConfigError(
                f"no local twin in {self.layout.root}; start one with `make up` "
                "or `redisops local up`"
            )
        return settings

    def _merge(self, requested: dict[str, Any]) -> TwinSettings:
        """Settings for `up`: stored ones, changed only where a change is supported."""
        stored = self.layout.load_settings()
        given = {k: v for k, v in requested.items() if v is not None}
        if stored is None:
            if given.get("hosts") == "netns" and not given.get("network_id"):
                given["network_id"] = netns.free_network_id()  # a /24 of its own
            return settings_from_options(**given)
        merged = settings_from_options(**{**stored.model_dump(), **given})
        # Streams may change: reconcile then loads the re-rendered ACL file on every node.
        immutable = ("base_port", "node_timeout_ms", "tls_auth_clients", "maxmemory", "hosts")
        for key in (*immutable, "network_id"):
            if getattr(merged, key) != getattr(stored, key):
                raise ConfigError(
                    f"--{key.replace('_', '-')}: this twin was created with "
                    f"{getattr(stored, key)!r}; it cannot change. Omit the option, or recreate the "
                    "twin with `redisops local down --purge` (deletes its data)"
                )
        shrinks = merged.shards < stored.shards or merged.replicas < stored.replicas
        if shrinks and not self._scaled_in(stored, merged):
            raise ConfigError(
                f"--shards/--replicas: the twin runs {stored.shards} x {stored.replicas} and "
                f"the nodes that would stop still hold slots or replicas. First move their "
                f"data off: `redisops scale --target local --shards {merged.shards} "
                f"--replicas {merged.replicas}`, then run this again"
            )
        if shrinks:
            return merged
        if merged.replicas != stored.replicas and merged.shards != stored.shards:
            raise ConfigError("--shards/--replicas: change one at a time on an existing twin")
        return merged

    @property
    def scale_in_record(self) -> Path:
        """Written by `redisops scale` once the nodes beyond the new shape have left."""
        return self.layout.root / "scale-in.json"

    def _scaled_in(self, stored: TwinSettings, merged: TwinSettings) -> bool:
        try:
            record = json.loads(self.scale_in_record.read_text())
        except (OSError, ValueError):
            return False
        if (
            record.get("from") != f"{stored.shards}x{stored.replicas}"
            or record.get("to") != f"{merged.shards}x{merged.replicas}"
        ):
            return False
        # The record may be stale (the nodes rejoined since): each node that would stop
        # must have left, i.e. know no cluster, or be stopped.
        views = self.views(stored)
        leaving = set(stored.ports) - set(merged.ports)
        return all((v := views.get(p)) is None or v.is_alone for p in leaving)

    def _stop_departed(self, before: TwinSettings | None, now: TwinSettings) -> None:
        """After a scale-in: stop the nodes that left (their data directories stay, like
        a StatefulSet's PVCs; they hold an empty, reset node)."""
        if before is None or set(before.ports) <= set(now.ports):
            return
        for port in sorted(set(before.ports) - set(now.ports)):
            pid = process.running_pid(self.layout.pidfile(port), port)
            if pid is not None:
                process.stop(pid, port)
                self.progress(f"stopped redis-server :{port} (left the cluster)")
        self.scale_in_record.unlink(missing_ok=True)

    def credentials(self, role: str) -> Credentials:
        return Credentials.from_file(role, self.layout.password_file(role))

    def client_tls(self, role: str) -> TlsClient:
        tls = self.layout.tls
        return TlsClient(
            ca_file=str(tls.ca_cert),
            cert_file=str(tls.client_cert(role)),
            key_file=str(tls.client_key(role)),
        )

    def _ensure_credentials(self) -> None:
        """One random password per role (kept once made), and the replication include."""
        for role in acl.ROLES:
            path = self.layout.password_file(role)
            if not path.exists():
                write_private(path, (secrets.token_urlsafe(32) + "\n").encode())
        include = render_replication_include(
            self.credentials(acl.REPLICATION).password.get_secret_value()
        )
        _write_if_changed(self.layout.replication_include, include, private=True)

    def acl_text(self, settings: TwinSettings, drop: tuple[str, str] | None = None) -> str:
        """The ACL file with every password each role accepts (two while `redisops acl
        rotate` is between add and retire, so that `local up`/reconcile keep both);
        `drop` = (role, name) leaves one out (a rotation's retire)."""
        hashes: dict[str, list[str]] = {}
        for role in acl.ROLES:
            files = self.layout.accepted_password_files(role)
            if drop is not None and drop[0] == role:
                files.pop(drop[1], None)
            accepted = [
                Credentials.from_file(role, f).password.get_secret_value() for f in files.values()
            ]
            hashes[role] = [acl.hash_password(p) for p in dict.fromkeys(accepted)]
        return acl.render_acl_file(hashes, settings.streams)

    def node_spec(self, settings: TwinSettings, port: int) -> NodeSpec:
        tls = self.layout.tls
        return NodeSpec(
            port=port,
            bind=(settings.host_of(port),),
            data_dir=str(self.layout.node_dir(port)),
            tls=TlsFiles(
                ca_cert_file=str(tls.ca_cert),
                cert_file=str(tls.node_cert),
                key_file=str(tls.node_key),
            ),
            tls_auth_clients=settings.tls_auth_clients,
            aclfile=str(self.layout.aclfile(port)),
            replication_include=str(self.layout.replication_include),
            cluster_node_timeout_ms=settings.node_timeout_ms,
            min_replicas_to_write=settings.min_replicas_to_write,
            min_replicas_max_lag_s=settings.min_replicas_max_lag_s,
            maxmemory=settings.maxmemory,
            pidfile=str(self.layout.pidfile(port)),
            logfile=str(self.layout.logfile(port)),
            daemonize=True,
        )

    def write_acl(self, endpoint: Endpoint, text: str) -> None:
        """Place the ACL file where the node on `endpoint` reads it (`ACL LOAD`)."""
        _write_if_changed(self.layout.aclfile(endpoint.port), text, private=True)

    # ---- lifecycle ----------------------------------------------------------------

    def up(self, **requested: Any) -> ReconcileReport:
        """Create, start, recover or grow the twin; idempotent on a running twin."""
        process.redis_server_path()
        before = self.layout.load_settings()
        settings = self._merge(requested)
        started = time.monotonic()
        to_start = [
            port
            for port in settings.ports
            if process.running_pid(self.layout.pidfile(port), port) is None
        ]
        network = settings.network()
        if network is not None:
            netns.require_root()
        # Refuse before anything is written, so a failed first `up` leaves no twin behind.
        # (A netns twin's nodes are alone on their hosts: nothing else holds their ports.)
        for port in to_start if network is None else ():
            for p in (port, port + BUS_OFFSET):
                if process.port_in_use(HOST, p, wait=3.0):
                    raise ConfigError(
                        f"port {p} on {HOST} is in use by another process; stop it or choose "
                        "another --base-port (ports base..base+N-1 and +10000 are needed)"
                    )
        self.layout.save_settings(settings)
        self._stop_departed(before, settings)
        if network is not None:
            network.create()
            self.progress(f"hosts ready: {len(network.hosts)} namespaces on {network.subnet}")
        written = ensure_twin_tls(
            self.layout.tls,
            roles=acl.ROLES,
            dns_names=("localhost",),
            ip_addresses=tuple(dict.fromkeys([HOST, *(e.host for e in settings.endpoints)])),
        )
        if written:
            self.progress(f"TLS material written ({len(written)} files)")
        self._ensure_credentials()
        acl_text = self.acl_text(settings)
        for port in settings.ports:
            self.layout.node_dir(port).mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_if_changed(
                self.layout.conf(port), render_redis_conf(self.node_spec(settings, port))
            )
            if port in to_start:
                # A stopped node loads the current file at start (a missing one aborts it);
                # running nodes get theirs from reconcile, which loads it where it drifted.
                self.write_acl(settings.endpoint(port), acl_text)
        for port in to_start:
            pid = self._start(settings, port)
            self.progress(f"started redis-server :{port} (pid {pid})")
        self.wait_responding(settings)
        if to_start:
            self._wait_settled(settings)
        report = reconcile(
            settings.desired(),
            self.client_tls(acl.OPERATOR),
            self.credentials(acl.OPERATOR),
            ReconcileOptions(acl_text=acl_text, write_acl=self.write_acl, progress=self.progress),
        )
        if report.healthy:
            self.progress(f"cluster ready in {time.monotonic() - started:.2f} s")
        self._proxy_up(settings)
        self._monitoring_up(settings)
        return report

    def _monitoring_up(self, settings: TwinSettings) -> None:
        if not settings.monitoring:
            for name in self.monitoring.down():
                self.progress(f"stopped {name} (monitoring disabled)")
            return
        started = time.monotonic()
        names = self.monitoring.up(settings)
        if names:
            urls = self.monitoring.urls(settings)
            self.progress(
                f"monitoring: started {len(names)} processes in "
                f"{time.monotonic() - started:.2f} s; Prometheus {urls['prometheus']}, "
                f"Alertmanager {urls['alertmanager']}"
            )

    def _proxy_up(self, settings: TwinSettings) -> None:
        """Start (or restart after a settings change, or stop if disabled) the SSE proxy."""
        running = self.proxy.running_pid()
        if not settings.sse_proxy:
            if running is not None:
                self.proxy.stop()
                self.progress("stopped the SSE proxy (disabled)")
            return
        self.proxy.ensure_credentials()
        changed = self.proxy.write_config(settings)
        if running is not None and not changed:
            return
        if running is not None:
            self.proxy.stop()
            self.progress("restarting the SSE proxy with new settings")
        pid = self.proxy.start(settings)
        self.progress(f"SSE proxy ready at {self.proxy.url(settings)} (pid {pid})")

    def wait_responding(self, settings: TwinSettings, timeout: float = 15.0) -> None:
        creds = self.credentials(acl.MONITORING)
        tls = self.client_tls(acl.MONITORING)
        deadline = time.monotonic() + timeout
        for port in settings.ports:
            client = connect(settings.endpoint(port), tls, creds, timeout=1.0)
            try:
                while True:
                    try:
                        client.ping()
                        break
                    except redis.BusyLoadingError:
                        pass
                    except redis.AuthenticationError as exc:
                        raise OperationError(
                            f"node :{port} refused the monitoring credentials ({exc}); its ACL "
                            f"file {self.layout.aclfile(port)} is stale: run "
                            "`redisops local up` again after fixing it"
                        ) from exc
                    except (redis.ConnectionError, redis.TimeoutError):
                        pass
                    if time.monotonic() > deadline:
                        raise OperationError(
                            f"node :{port} does not answer after {timeout:.0f} s; see "
                            f"{self.layout.logfile(port)}"
                        )
                    time.sleep(0.05)
            finally:
                client.close()

    def _wait_settled(self, settings: TwinSettings, timeout: float = 20.0) -> None:
        """After restarting nodes of a formed cluster, give them time to rejoin (Redis
        waits up to a few seconds before it declares the cluster ok again)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            views = list(self.views(settings).values())
            if all(v is not None and v.is_alone for v in views):
                return  # a new twin: nothing to rejoin, reconcile forms it
            if all(v is not None and v.cluster_state == "ok" for v in views):
                return
            time.sleep(0.1)

    def down(self, purge: bool = False) -> list[int]:
        """Stop every node by PID (data kept unless `purge`); return the ports stopped."""
        try:
            settings = self.layout.load_settings()
        except ConfigError:
            settings = None  # a damaged state file: find the nodes on disk instead
        stopped: list[int] = []
        for name in self.monitoring.down():
            self.progress(f"stopped {name}")
        pid = self.proxy.stop()
        if pid is not None:
            self.progress(f"stopped the SSE proxy (pid {pid})")
        # Also nodes that left in a scale-in: their directories stay, like PVCs.
        ports = sorted(set(settings.ports if settings else ()) | set(self._ports_on_disk()))
        for port in ports:
            pid = process.running_pid(self.layout.pidfile(port), port)
            if pid is not None:
                process.stop(pid, port)
                stopped.append(port)
                self.progress(f"stopped redis-server :{port} (pid {pid})")
            self.layout.pidfile(port).unlink(missing_ok=True)
        if settings is not None and settings.hosts == "netns" and settings.network_id:
            removed = netns.remove(settings.network_id)  # also what a crashed run left
            if removed:
                self.progress(f"removed {len(removed)} namespaces and links")
        if purge and self.layout.root.exists():
            shutil.rmtree(self.layout.root)
            self.progress(f"removed {self.layout.root}")
        return stopped

    def _ports_on_disk(self) -> list[int]:
        nodes = self.layout.root / "nodes"
        if not nodes.is_dir():
            return []
        return sorted(int(p.name) for p in nodes.iterdir() if p.name.isdigit())

    def kill_node(self, port: int) -> int:
        """kill -9 the node on `port` (a crash); return the PID killed."""
        pid = process.running_pid(self.layout.pidfile(port), port)
        if pid is None:
            raise OperationError(f"node :{port} is not running")
        process.kill(pid, port)
        return pid

    def stop_node(self, port: int) -> int:
        """Stop one node gracefully (SIGTERM: Redis saves and exits); return its PID."""
        pid = process.running_pid(self.layout.pidfile(port), port)
        if pid is None:
            raise OperationError(f"node :{port} is not running")
        process.stop(pid, port)
        return pid

    def start_node(self, port: int) -> int:
        """Start one node again with its existing data and cluster state."""
        if process.running_pid(self.layout.pidfile(port), port) is not None:
            raise OperationError(f"node :{port} is already running")
        return self._start(self.settings(), port)

    def _start(self, settings: TwinSettings, port: int) -> int:
        """Start the node on `port`, on its own host in netns mode."""
        network = settings.network()
        prefix: tuple[str, ...] = ()
        if network is not None:
            prefix = tuple(network[settings.node_host(settings.ports.index(port))].argv())
        return process.start(
            self.layout.conf(port),
            self.layout.pidfile(port),
            self.layout.logfile(port),
            port,
            prefix=prefix,
        )

    # ---- status -------------------------------------------------------------------

    def views(self, settings: TwinSettings) -> dict[int, NodeView | None]:
        creds = self.credentials(acl.MONITORING)
        tls = self.client_tls(acl.MONITORING)
        result: dict[int, NodeView | None] = {}
        for port in settings.ports:
            client = connect(settings.endpoint(port), tls, creds, timeout=1.0)
            try:
                nodes = parse_cluster_nodes(str(client.execute_command("CLUSTER", "NODES")))
                info = parse_info(str(client.execute_command("CLUSTER", "INFO")))
                result[port] = NodeView(nodes, info.get("cluster_state", "unknown"), info)
            except (redis.RedisError, OSError):
                result[port] = None
            finally:
                client.close()
        return result

    def status(self) -> dict[str, Any]:
        """The machine-readable description other tools (the smoke suite) rely on."""
        settings = self.settings()
        views = self.views(settings)
        shard_of: dict[str, int] = {}
        for view in views.values():
            if view is None:
                continue
            primaries = sorted(
                # A failed primary still owning its slots keeps its shard's number (the
                # numbering `redisops failover --shard` uses).
                (n for n in view.nodes if n.is_primary and n.slots),
                key=lambda n: n.slots[0][0],
            )
            shard_of = {n.node_id: i for i, n in enumerate(primaries)}
            break
        nodes = []
        for i, port in enumerate(settings.ports):
            view = views[port]
            pid = process.running_pid(self.layout.pidfile(port), port)
            entry: dict[str, Any] = {
                "host": settings.host_of(port),
                "port": port,
                "bus_port": port + BUS_OFFSET,
                "zone": TWIN_ZONES[i % len(TWIN_ZONES)],
                "pid": pid,
                "running": pid is not None,
                "node_id": None,
                "role": "unknown",
                "shard": None,
                "primary_id": None,
                "slots": [],
                "slot_count": 0,
                "cluster_state": None,
            }
            if view is not None:
                me = view.myself
                entry.update(
                    node_id=me.node_id,
                    role="primary" if me.is_primary else "replica",
                    primary_id=me.master_id,
                    shard=shard_of.get(me.node_id if me.is_primary else me.master_id or ""),
                    slots=[list(r) for r in me.slots],
                    slot_count=me.slot_count,
                    cluster_state=view.cluster_state,
                )
            nodes.append(entry)
        tls = self.layout.tls
        healthy = all(n["running"] and n["cluster_state"] == "ok" for n in nodes) and (
            not settings.sse_proxy or self.proxy.ready(settings)
        )
        return {
            "target": "local",
            "state_dir": str(self.layout.root),
            "healthy": healthy,
            "settings": settings.model_dump(mode="json"),
            "nodes": nodes,
            "tls": {
                "ca": str(tls.ca_cert),
                "mutual": settings.tls_auth_clients == "yes",
                "clients": {
                    role: {"cert": str(tls.client_cert(role)), "key": str(tls.client_key(role))}
                    for role in acl.ROLES
                },
            },
            "users": {
                role: {"username": role, "password_file": str(self.layout.password_file(role))}
                for role in acl.ROLES
            },
            "streams": list(settings.streams),
            "network": _network_status(settings),
            "sse_proxy": self.proxy.status(settings),
            "monitoring": self.monitoring.status(settings),
            "backups": {
                "location": f"file://{self.layout.root / 'backups'}",
                "max_age_s": settings.backup_max_age_s,
            },
        }


def _network_status(settings: TwinSettings) -> dict[str, Any]:
    """Where each host is (netns mode): namespace and address, for drills and clients."""
    network = settings.network()
    if network is None:
        return {"mode": "loopback", "hosts": {}}
    return {
        "mode": "netns",
        "id": network.id,
        "subnet": str(network.subnet),
        "gateway": network.gateway,
        "bridge": network.bridge,
        "hosts": {
            h.name: {"namespace": h.namespace, "address": h.address} for h in network.hosts.values()
        },
    }


def _write_if_changed(path: Path, text: str, private: bool = False) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    if private:
        write_private(path, text.encode())
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return True
