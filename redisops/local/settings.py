"""The local twin's settings and where it keeps its files (`.redisops/local/`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from redisops.acl import DEFAULT_STREAMS, validate_stream_patterns
from redisops.client import Endpoint
from redisops.conf import TlsAuthClients
from redisops.errors import ConfigError
from redisops.local import netns
from redisops.tls import TlsLayout
from redisops.topology import MIN_SHARDS, DesiredCluster, DesiredNode

DEFAULT_STATE_DIR = Path(".redisops/local")
TWIN_ZONES = ("zone-a", "zone-b", "zone-c")
BUS_OFFSET = 10000
MONITORING_BLOCK = 10  # Prometheus, Alertmanager, platform metrics; then one per exporter
HOST = "127.0.0.1"
HostsMode = Literal["loopback", "netns"]
# netns: each host's number on the twin's /24 (its address's last octet): fixed, so no
# host's address changes when nodes are added
PROXY_HOST, CLIENT_HOSTS, FIRST_NODE_NUMBER = "proxy", ("client-a", "client-b"), 10


class TwinSettings(BaseModel):
    """What shape of twin to run; stored in state.json so later commands agree."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shards: int = 3
    replicas: int = 1
    base_port: int = 7000
    node_timeout_ms: int = 1000
    tls_auth_clients: TlsAuthClients = "yes"
    streams: tuple[str, ...] = DEFAULT_STREAMS
    maxmemory: str = "256mb"
    sse_proxy: bool = True
    proxy_port: int = 8700
    proxy_max_connections: int = Field(default=10_000, ge=1)
    # When set, backups are expected (the smoke suite checks the newest is younger).
    backup_max_age_s: int | None = None
    # When set, restore drills are expected at least this often (an alert says otherwise).
    drill_max_age_s: int | None = None
    # Prometheus, Alertmanager, exporters (redisops.local.monitoring).
    monitoring: bool = False
    monitoring_port: int = 9700
    alert_webhook: str | None = None
    # loopback: every process on 127.0.0.1; netns: every node, the proxy and two client
    # hosts in network namespaces of their own, on one bridge (redisops.local.netns)
    hosts: HostsMode = "loopback"
    # what a primary needs before it accepts a write (redisops.conf.NodeSpec)
    min_replicas_to_write: int = Field(default=0, ge=0, le=3)
    min_replicas_max_lag_s: int = Field(default=10, ge=1, le=3600)
    network_id: str | None = Field(default=None, pattern=r"^[a-z0-9]{1,6}$")

    @field_validator("shards")
    @classmethod
    def _shards(cls, value: int) -> int:
        if value < MIN_SHARDS:
            raise ValueError(
                f"must be at least {MIN_SHARDS} (a cluster needs a majority of primaries "
                f"to agree on a failover); got {value}"
            )
        if value > 16:
            raise ValueError(f"at most 16 shards on one machine; got {value}")
        return value

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"must be 0 or more; got {value}")
        if value > 3:
            raise ValueError(f"at most 3 replicas per shard on one machine; got {value}")
        return value

    @field_validator("min_replicas_to_write")
    @classmethod
    def _min_replicas(cls, value: int, info: ValidationInfo) -> int:
        replicas = info.data.get("replicas", 1)
        if value and value >= replicas:
            raise ValueError(
                f"is {value} with {replicas} replicas per shard: after a failover the new "
                "primary would refuse every write until the failed node is back; give fewer "
                "than --replicas, or 0"
            )
        return value

    @field_validator("node_timeout_ms")
    @classmethod
    def _timeout(cls, value: int) -> int:
        if not 200 <= value <= 60_000:
            raise ValueError(f"must be between 200 and 60000 milliseconds; got {value}")
        return value

    @field_validator("streams")
    @classmethod
    def _streams(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return validate_stream_patterns(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("base_port")
    @classmethod
    def _ports(cls, value: int, info: ValidationInfo) -> int:
        shards = info.data.get("shards", 3)
        replicas = info.data.get("replicas", 1)
        count = shards * (1 + replicas)
        last = value + count - 1
        if value < 1024 or last + BUS_OFFSET > 65535:
            raise ValueError(
                f"ports {value}-{last} and bus ports {value + BUS_OFFSET}-{last + BUS_OFFSET} "
                "must lie in 1024-65535; choose a base port between 1024 and "
                f"{65535 - BUS_OFFSET - count + 1}"
            )
        return value

    @field_validator("proxy_port")
    @classmethod
    def _proxy_port(cls, value: int, info: ValidationInfo) -> int:
        base = info.data.get("base_port", 7000)
        count = info.data.get("shards", 3) * (1 + info.data.get("replicas", 1))
        nodes = range(base, base + count)
        if not 1024 <= value <= 65535:
            raise ValueError(f"must be between 1024 and 65535; got {value}")
        if value in nodes or value - BUS_OFFSET in nodes:
            raise ValueError(f"{value} is a Redis node or bus port of this twin; choose another")
        return value

    @field_validator("monitoring_port")
    @classmethod
    def _monitoring_port(cls, value: int, info: ValidationInfo) -> int:
        base = info.data.get("base_port", 7000)
        count = info.data.get("shards", 3) * (1 + info.data.get("replicas", 1))
        block = range(value, value + MONITORING_BLOCK + count)
        if value < 1024 or block[-1] > 65535:
            raise ValueError(f"must leave {len(block)} ports below 65536 from 1024 on; got {value}")
        taken = {*range(base, base + count), *range(base + BUS_OFFSET, base + BUS_OFFSET + count)}
        taken.add(info.data.get("proxy_port", 8700))
        if taken & set(block):
            raise ValueError(
                f"ports {value}-{block[-1]} (Prometheus, Alertmanager, metrics, exporters) "
                "overlap the twin's node, bus or proxy ports; choose another"
            )
        return value

    @field_validator("alert_webhook")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL; got {value!r}")
        return value

    @property
    def node_count(self) -> int:
        return self.shards * (1 + self.replicas)

    @property
    def ports(self) -> list[int]:
        return [self.base_port + i for i in range(self.node_count)]

    @staticmethod
    def node_host(index: int) -> str:
        return f"node-{index}"

    def network(self) -> netns.Network | None:
        """The twin's hosts (netns mode), or None (loopback)."""
        if self.hosts != "netns":
            return None
        if self.network_id is None:
            raise ConfigError("a netns twin has no network id; recreate it")
        numbers = {PROXY_HOST: 2, **{name: 3 + i for i, name in enumerate(CLIENT_HOSTS)}}
        numbers |= {self.node_host(i): FIRST_NODE_NUMBER + i for i in range(self.node_count)}
        # host_of derives the same address from a port (also a departed node's)
        return netns.Network(self.network_id, numbers)

    def host_of(self, port: int) -> str:
        """The address the node on `port` listens on."""
        if self.hosts != "netns" or self.network_id is None:
            return HOST
        # also a node a scale-in stopped: its number follows from its port
        subnet = netns.subnet_of(self.network_id)
        return str(subnet.network_address + FIRST_NODE_NUMBER + port - self.base_port)

    def endpoint(self, port: int) -> Endpoint:
        return Endpoint(host=self.host_of(port), port=port)

    @property
    def endpoints(self) -> list[Endpoint]:
        return [self.endpoint(p) for p in self.ports]

    @property
    def proxy_host(self) -> str:
        network = self.network()
        return HOST if network is None else network[PROXY_HOST].address

    def desired(self) -> DesiredCluster:
        return DesiredCluster(
            shards=self.shards,
            replicas=self.replicas,
            nodes=tuple(
                DesiredNode(
                    endpoint=self.endpoint(port),
                    zone=TWIN_ZONES[i % len(TWIN_ZONES)],
                )
                for i, port in enumerate(self.ports)
            ),
        )


def settings_from_options(**options: object) -> TwinSettings:
    """Build settings from CLI options; errors name the option and the fix."""
    given = {k: v for k, v in options.items() if v is not None}
    try:
        return TwinSettings.model_validate(given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "settings"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"--{loc.replace('_', '-')}: {message}"


class TwinLayout:
    """Paths of one twin under its state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def tls(self) -> TlsLayout:
        return TlsLayout(self.root / "tls")

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    def password_file(self, role: str) -> Path:
        return self.secrets / f"{role}.password"

    # A password rotation (redisops.local.passwords): the second password before it is
    # handed out (phase add), the first one after (phase switch, until retire), and the
    # phase last completed.
    def next_password_file(self, role: str) -> Path:
        return self.secrets / f"{role}.password.next"

    def old_password_file(self, role: str) -> Path:
        return self.secrets / f"{role}.password.old"

    def accepted_password_files(self, role: str) -> dict[str, Path]:
        """The role's password files that exist, by name (current, next, old): every
        password the role accepts (two while a rotation is between add and retire)."""
        files = {
            "current": self.password_file(role),
            "next": self.next_password_file(role),
            "old": self.old_password_file(role),
        }
        return {name: path for name, path in files.items() if path.exists()}

    def rotation_record(self, role: str) -> Path:
        return self.secrets / f"{role}.rotation.json"

    @property
    def replication_include(self) -> Path:
        return self.secrets / "replication.conf"

    def node_dir(self, port: int) -> Path:
        return self.root / "nodes" / str(port)

    def conf(self, port: int) -> Path:
        return self.node_dir(port) / "redis.conf"

    def aclfile(self, port: int) -> Path:
        return self.node_dir(port) / "users.acl"

    def pidfile(self, port: int) -> Path:
        return self.node_dir(port) / "redis.pid"

    def logfile(self, port: int) -> Path:
        return self.node_dir(port) / "redis.log"

    def load_settings(self) -> TwinSettings | None:
        """The settings the twin was created with, or None when there is no twin."""
        if not self.state_file.exists():
            return None
        try:
            data = json.loads(self.state_file.read_text())
            return TwinSettings.model_validate(data["settings"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"state file {self.state_file} is unreadable ({type(exc).__name__}: "
                f"{str(exc)[:120]}); fix it, or remove the twin with "
                "`redisops local down --purge` (deletes its data)"
            ) from exc

    def save_settings(self, settings: TwinSettings) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        payload = {"version": 1, "settings": settings.model_dump(mode="json")}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        tmp.replace(self.state_file)
