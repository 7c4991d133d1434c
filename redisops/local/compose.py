"""What docker-compose.yml's services mount: TLS material, passwords, the ACL file (hashes
only), redis.conf, the proxy's config and the smoke target, rendered by the same code as
the twin and the Pulumi program, for the compose service names (`redis-0`, …, `proxy`).

`render()` runs in the compose file's one-shot `init` service and keeps what exists, so
a second `docker-compose up` reuses the cluster's credentials and certificates.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redisops import acl, tls
from redisops.conf import NodeSpec, TlsFiles, render_redis_conf, render_replication_include
from redisops.errors import ConfigError

REDIS_PORT = 6379
PROXY_PORT = 8080
# Roles whose passwords the services need: the servers' own probes, reconcile (operator,
# admin, replication), the proxy, the smoke suite.
CLIENT_CERTS = ("jobs", "proxy")


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def tls(self) -> tls.TlsLayout:
        return tls.TlsLayout(self.root / "tls")

    def password(self, role: str) -> Path:
        return self.root / "users" / role / "password"

    @property
    def acl(self) -> Path:
        return self.root / "users.acl"

    @property
    def replication(self) -> Path:
        return self.root / "replication.conf"

    @property
    def redis_conf(self) -> Path:
        return self.root / "redis.conf"

    @property
    def proxy_config(self) -> Path:
        return self.root / "proxy.json"

    @property
    def jwt_secret(self) -> Path:
        return self.root / "sse-jwt" / "secret"

    @property
    def target(self) -> Path:
        return self.root / "target.json"


def node_names(nodes: int) -> list[str]:
    return [f"redis-{i}" for i in range(nodes)]


def _write(path: Path, data: str, *, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        tls.write_private(path, data.encode())
    else:
        path.write_text(data)


def _ensure_passwords(layout: Layout) -> dict[str, str]:
    passwords = {}
    for role in acl.ROLES:
        path = layout.password(role)
        if not path.exists():
            _write(path, secrets.token_urlsafe(32) + "\n", private=True)
        passwords[role] = path.read_text().strip()
    if not layout.jwt_secret.exists():
        _write(layout.jwt_secret, secrets.token_urlsafe(48), private=True)
    return passwords


def node_spec(layout: Layout, node_timeout_ms: int) -> NodeSpec:
    return NodeSpec(
        port=REDIS_PORT,
        bind=("0.0.0.0",),  # noqa: S104 (a container's own network namespace)
        data_dir="/data",
        tls=TlsFiles(
            ca_cert_file=str(layout.tls.ca_cert),
            cert_file=str(layout.tls.node_cert),
            key_file=str(layout.tls.node_key),
        ),
        tls_auth_clients="yes",
        aclfile=str(layout.acl),
        replication_include=str(layout.replication),
        cluster_node_timeout_ms=node_timeout_ms,
        preferred_endpoint_type="hostname",
        maxmemory="128mb",
    )


def proxy_config(layout: Layout, nodes: list[str], streams: tuple[str, ...]) -> dict[str, Any]:
    return {
        "host": "0.0.0.0",  # noqa: S104 (published on the host's 127.0.0.1 only)
        "port": PROXY_PORT,
        "redis_mode": "cluster",
        "redis_nodes": [f"{n}:{REDIS_PORT}" for n in nodes],
        "redis_tls": True,
        "redis_tls_ca_file": str(layout.tls.ca_cert),
        "redis_tls_cert_file": str(layout.tls.client_cert("proxy")),
        "redis_tls_key_file": str(layout.tls.client_key("proxy")),
        "reader_username": acl.READER,
        "reader_password_file": str(layout.password(acl.READER)),
        "publisher_username": acl.PUBLISHER,
        "publisher_password_file": str(layout.password(acl.PUBLISHER)),
        "streams": list(streams),
        "auth_mode": "jwt",
        "jwt_secret_file": str(layout.jwt_secret),
        "log_json": True,
    }


def smoke_target(
    layout: Layout, nodes: list[str], shards: int, replicas: int, node_timeout_ms: int,
    streams: tuple[str, ...],
) -> dict[str, Any]:  # fmt: skip
    """The smoke suite's target file, as the Pulumi program writes it for a cluster (no
    backups here, no disruption: both declared absent)."""
    return {
        "name": "compose",
        "namespace": "compose",
        "shards": shards,
        "replicas": replicas,
        "node_timeout_ms": node_timeout_ms,
        "streams": list(streams),
        "mutual_tls": True,
        "can_disrupt": False,
        "nodes": [{"endpoint": f"{n}:{REDIS_PORT}"} for n in nodes],
        "tls": {
            "ca": str(layout.tls.ca_cert),
            "cert": str(layout.tls.client_cert("jobs")),
            "key": str(layout.tls.client_key("jobs")),
        },
        "users": {
            role: {"username": role, "password_file": str(layout.password(role))}
            for role in (acl.SMOKE, acl.PUBLISHER, acl.READER, acl.MONITORING, acl.BACKUP)
        },
        "sse_proxy": {
            "url": f"http://proxy:{PROXY_PORT}",
            "jwt_secret_file": str(layout.jwt_secret),
        },
        "backups": None,
    }


def render(
    root: Path,
    *,
    shards: int = 3,
    replicas: int = 1,
    node_timeout_ms: int = 2000,
    streams: tuple[str, ...] = acl.DEFAULT_STREAMS,
) -> dict[str, Any]:
    """Write (or keep) everything the services mount under `root`; what was written."""
    if shards < 3 or replicas < 0:
        raise ConfigError(f"compose: {shards} shards x {replicas} replicas; use >= 3 shards")
    layout = Layout(root)
    nodes = node_names(shards * (1 + replicas))
    tls.ensure_twin_tls(layout.tls, CLIENT_CERTS, [*nodes, "localhost"], ["127.0.0.1"])
    passwords = _ensure_passwords(layout)
    hashes = {role: [acl.hash_password(p)] for role, p in passwords.items()}
    _write(layout.acl, acl.render_acl_file(hashes, streams), private=True)
    _write(layout.replication, render_replication_include(passwords[acl.REPLICATION]), private=True)
    _write(layout.redis_conf, render_redis_conf(node_spec(layout, node_timeout_ms)), private=False)
    _write(layout.proxy_config, json.dumps(proxy_config(layout, nodes, streams)), private=False)
    target = smoke_target(layout, nodes, shards, replicas, node_timeout_ms, streams)
    _write(layout.target, json.dumps(target, indent=2), private=False)
    return {"root": str(root), "nodes": nodes, "shards": shards, "replicas": replicas}
