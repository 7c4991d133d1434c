"""redis.conf for one cluster node, rendered from a typed node spec.

The same renderer produces the file the twin's processes read and the ConfigMap the GKE
pods mount, so what the tests prove is what production runs. Secrets never enter the
main file: `masterauth` lives in a separate include file (`render_replication_include`).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from redisops.acl import REPLICATION
from redisops.errors import ConfigError

TlsAuthClients = Literal["yes", "no", "optional"]
MaxmemoryPolicy = Literal[
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
]


def _absolute(value: str, field: str) -> str:
    # Relative paths in redis.conf are resolved after Redis changes into `dir`, so a
    # relative TLS path fails with "Failed to load certificate"; refuse them here.
    if not PurePosixPath(value).is_absolute():
        raise ValueError(f"{field} must be an absolute path, got {value!r}")
    if any(c in value for c in "\n\r\"'"):
        raise ValueError(f"{field} may not contain quotes or line breaks: {value!r}")
    return value


class TlsFiles(BaseModel):
    """The node's TLS material. The node certificate doubles as the client certificate on
    the cluster bus and for replication, so it needs EKU serverAuth and clientAuth."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ca_cert_file: str
    cert_file: str
    key_file: str

    @field_validator("ca_cert_file", "cert_file", "key_file")
    @classmethod
    def _must_be_absolute(cls, value: str, info: object) -> str:
        return _absolute(value, getattr(info, "field_name", "path"))


class NodeSpec(BaseModel):
    """Everything that distinguishes one node's redis.conf."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    port: int = Field(ge=1, le=55535, description="TLS client port; the bus is port + 10000")
    bind: tuple[str, ...] = ("127.0.0.1",)
    data_dir: str
    tls: TlsFiles
    tls_auth_clients: TlsAuthClients = "yes"
    aclfile: str
    replication_include: str = Field(
        description="file with masteruser/masterauth (0600 on disk, a Secret on GKE)"
    )
    cluster_node_timeout_ms: int = Field(default=5000, ge=100, le=600_000)
    # A primary refuses writes unless this many replicas acknowledged it within the lag:
    # it bounds what a primary cut off from its replicas accepts and then loses.
    min_replicas_to_write: int = Field(default=0, ge=0, le=5)
    min_replicas_max_lag_s: int = Field(default=10, ge=1, le=3600)
    announce_hostname: str | None = Field(
        default=None,
        description="stable DNS name announced to clients and peers (pod DNS name on GKE)",
    )
    announce_ip: str | None = None
    preferred_endpoint_type: Literal["ip", "hostname"] | None = Field(
        default=None,
        description="what redirects and CLUSTER SLOTS name nodes by; default hostname when "
        "announce_hostname is set. GKE sets hostname and passes the pod's own name on the "
        "command line (one ConfigMap serves every pod).",
    )
    maxmemory: str = Field(default="0", pattern=r"^\d+(b|k|kb|m|mb|g|gb)?$")
    maxmemory_policy: MaxmemoryPolicy = "noeviction"
    appendfsync: Literal["always", "everysec", "no"] = "everysec"
    save: str = Field(default="3600 1 300 100 60 10000", pattern=r"^(\d+ \d+)( \d+ \d+)*$|^$")
    pidfile: str | None = None
    logfile: str = Field(default="", description="empty: log to stdout (containers)")
    daemonize: bool = False
    loglevel: Literal["debug", "verbose", "notice", "warning"] = "notice"

    @field_validator("data_dir", "aclfile", "replication_include")
    @classmethod
    def _paths_absolute(cls, value: str, info: object) -> str:
        return _absolute(value, getattr(info, "field_name", "path"))

    @field_validator("pidfile")
    @classmethod
    def _pidfile_absolute(cls, value: str | None) -> str | None:
        return None if value is None else _absolute(value, "pidfile")

    @field_validator("logfile")
    @classmethod
    def _logfile_absolute(cls, value: str) -> str:
        return value if value == "" else _absolute(value, "logfile")

    @field_validator("announce_hostname")
    @classmethod
    def _hostname(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() or c in "\"'" for c in value)):
            raise ValueError(f"announce_hostname must be a DNS name, got {value!r}")
        return value

    @model_validator(mode="after")
    def _daemon_needs_files(self) -> NodeSpec:
        if self.daemonize and (self.pidfile is None or self.logfile == ""):
            raise ValueError("daemonize needs pidfile and logfile (a daemon has no stdout)")
        return self

    @property
    def bus_port(self) -> int:
        return self.port + 10000


def render_redis_conf(spec: NodeSpec) -> str:
    """Render redis.conf for `spec`: TLS only, cluster mode, ACL file, persistence."""
    lines: list[str] = [
        "# Rendered by redisops.conf; do not edit by hand.",
        "# --- network: TLS only ---",
        f"bind {' '.join(spec.bind)}",
        "protected-mode yes",
        "port 0",
        f"tls-port {spec.port}",
        f"tls-ca-cert-file {spec.tls.ca_cert_file}",
        f"tls-cert-file {spec.tls.cert_file}",
        f"tls-key-file {spec.tls.key_file}",
        f"tls-auth-clients {spec.tls_auth_clients}",
        'tls-protocols "TLSv1.2 TLSv1.3"',
        "tls-prefer-server-ciphers yes",
        "tls-cluster yes",
        "tls-replication yes",
        "tcp-keepalive 60",
        "# --- cluster ---",
        "cluster-enabled yes",
        f"cluster-config-file {spec.data_dir}/nodes.conf",
        f"cluster-node-timeout {spec.cluster_node_timeout_ms}",
        "cluster-require-full-coverage yes",
        "cluster-allow-reads-when-down no",
        "cluster-replica-validity-factor 10",
        "cluster-allow-replica-migration yes",
        "cluster-migration-barrier 1",
    ]
    if spec.announce_hostname:
        lines.append(f"cluster-announce-hostname {spec.announce_hostname}")
    endpoint_type = spec.preferred_endpoint_type or ("hostname" if spec.announce_hostname else None)
    if endpoint_type:
        lines.append(f"cluster-preferred-endpoint-type {endpoint_type}")
    if spec.announce_ip:
        lines.append(f"cluster-announce-ip {spec.announce_ip}")
    lines += [
        "# --- access control: users and rules live in the ACL file (hashes only) ---",
        f"aclfile {spec.aclfile}",
        "acl-pubsub-default resetchannels",
        "enable-debug-command no",
        "enable-module-command no",
        "enable-protected-configs no",
        "# --- replication: credentials come from the include at the end ---",
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",
        "repl-diskless-load disabled",
        "replica-read-only yes",
        f"min-replicas-to-write {spec.min_replicas_to_write}",
        f"min-replicas-max-lag {spec.min_replicas_max_lag_s}",
        "# --- memory: streams must not be evicted silently ---",
        f"maxmemory {spec.maxmemory}",
        f"maxmemory-policy {spec.maxmemory_policy}",
        "# --- persistence: AOF every second plus RDB snapshots ---",
        f"dir {spec.data_dir}",
        "dbfilename dump.rdb",
        "appendonly yes",
        f"appendfsync {spec.appendfsync}",
        'appenddirname "appendonlydir"',
        f"save {spec.save}" if spec.save else 'save ""',
        "stop-writes-on-bgsave-error yes",
        "# --- process ---",
        f"daemonize {'yes' if spec.daemonize else 'no'}",
        f'logfile "{spec.logfile}"',
        f"loglevel {spec.loglevel}",
        "latency-monitor-threshold 100",
    ]
    if spec.pidfile:
        lines.append(f"pidfile {spec.pidfile}")
    lines += [
        "# masteruser / masterauth (secret, kept out of this file)",
        f"include {spec.replication_include}",
    ]
    return "\n".join(lines) + "\n"


def render_replication_include(password: str, username: str = REPLICATION) -> str:
    """The secret include: how a replica authenticates to its primary.

    Every node needs it, since any node may become a replica after a failover.
    """
    if not password or any(c in password for c in '\n\r"\\') or any(c.isspace() for c in password):
        raise ConfigError(
            "replication password: empty or contains white space, quotes or backslashes; "
            "generate a URL-safe random password"
        )
    return f'masteruser {username}\nmasterauth "{password}"\n'
