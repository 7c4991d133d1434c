"""The stack's configuration: one typed model, validated before any resource is declared.

Every knob of a deployment lives here, read from `Pulumi.<stack>.yaml` (namespace
`redis-platform`). An error names the key as it is written in the stack file and how to
fix it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from redisops.acl import DEFAULT_STREAMS, ROLES, validate_stream_patterns
from redisops.conf import MaxmemoryPolicy
from redisops.errors import ConfigError

PROJECT = "redis-platform"
DIGEST = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Resources(Strict):
    cpu: str = Field(default="500m", pattern=QUANTITY)
    memory: str = Field(default="1Gi", pattern=QUANTITY)


class RedisSettings(Strict):
    """The Redis Cluster: shape, image, storage, memory."""

    shards: int = 3
    replicas: int = 1
    node_timeout_ms: int = Field(default=5000, alias="nodeTimeoutMs", ge=500, le=60_000)
    image: str = Field(description="official redis image, repository@sha256:digest in prod")
    exporter_image: str = Field(alias="exporterImage")
    storage_class: str = Field(default="premium-rwo", alias="storageClass")
    storage_size: str = Field(default="10Gi", alias="storageSize", pattern=QUANTITY)
    resources: Resources = Resources()
    maxmemory: str = Field(default="768mb", pattern=r"^\d+(b|k|kb|m|mb|g|gb)?$")
    maxmemory_policy: MaxmemoryPolicy = Field(default="noeviction", alias="maxmemoryPolicy")
    zone_spread: Literal["hard", "soft"] = Field(default="soft", alias="zoneSpread")
    tls_auth_clients: Literal["yes", "optional"] = Field(default="yes", alias="tlsAuthClients")

    @field_validator("shards")
    @classmethod
    def _shards(cls, value: int) -> int:
        if value < 3:
            raise ValueError(
                f"is {value}; a Redis Cluster needs at least 3 shards so a majority of "
                "primaries can agree on a failover"
            )
        return value

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: int) -> int:
        if not 0 <= value <= 5:
            raise ValueError(f"is {value}; use 0 to 5 replicas per shard")
        return value

    @property
    def pods(self) -> int:
        return self.shards * (1 + self.replicas)


class StreamsSettings(Strict):
    patterns: tuple[str, ...] = DEFAULT_STREAMS
    retention: tuple[dict[str, Any], ...] = ({"pattern": "*", "maxlen": 100_000},)

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return validate_stream_patterns(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        for rule in value:
            if not rule.get("pattern") or not (rule.get("maxlen") or rule.get("max_age_s")):
                raise ValueError(
                    f"rule {rule}: give a pattern and maxlen and/or max_age_s, e.g. "
                    '{"pattern": "*", "maxlen": 100000}'
                )
        return value


class ClientSettings(Strict):
    """Who may open connections to the Redis client port besides the platform's own pods."""

    namespaces: tuple[str, ...] = ()
    pod_labels: dict[str, str] = Field(default_factory=dict, alias="podLabels")


class ProxySettings(Strict):
    enabled: bool = True
    hostname: str | None = None
    min_replicas: int = Field(default=2, alias="minReplicas", ge=1)
    max_replicas: int = Field(default=10, alias="maxReplicas", ge=1)
    cors_origins: tuple[str, ...] = Field(default=(), alias="corsOrigins")
    static_ip_name: str | None = Field(default=None, alias="staticIpName")
    resources: Resources = Resources(cpu="250m", memory="512Mi")

    @model_validator(mode="after")
    def _bounds(self) -> ProxySettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) is above maxReplicas ({self.max_replicas})"
            )
        return self


class BackupSettings(Strict):
    enabled: bool = True
    schedule: str = "0 * * * *"
    retention_days: int = Field(default=14, alias="retentionDays", ge=1)
    location: str

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        if not re.match(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^\s]*)?$", value):
            raise ValueError(
                f"{value!r} is not a gs://bucket[/prefix] URL; backups from GKE go to "
                "Cloud Storage (a file:// path would vanish with the pod)"
            )
        return value.rstrip("/")

    gcp_service_account: str | None = Field(default=None, alias="gcpServiceAccount")
    slack_minutes: int = Field(default=30, alias="slackMinutes", ge=0)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        parse_cron(value)
        return value

    @model_validator(mode="after")
    def _retention(self) -> BackupSettings:
        interval = max_cron_interval_minutes(self.schedule)
        if self.retention_days * 24 * 60 < interval:
            raise ValueError(
                f"retentionDays ({self.retention_days}) is shorter than the time between "
                f"backups ({interval} minutes): every backup would expire before the next"
            )
        return self

    @property
    def max_age_s(self) -> int:
        """How old the newest backup may be: the longest gap of the schedule plus slack."""
        return (max_cron_interval_minutes(self.schedule) + self.slack_minutes) * 60


class TlsSettings(Strict):
    """Certificate lifetimes. `pulumi up` inside the renewal window issues new ones and
    the reconcile Job makes every node load them without a restart."""

    validity_hours: int = Field(default=8760, alias="validityHours", ge=24)
    early_renewal_hours: int = Field(default=720, alias="earlyRenewalHours", ge=1)
    ca_validity_hours: int = Field(default=87600, alias="caValidityHours", ge=8760)
    ca_early_renewal_hours: int = Field(default=8760, alias="caEarlyRenewalHours", ge=720)

    @model_validator(mode="after")
    def _renewal(self) -> TlsSettings:
        if self.early_renewal_hours >= self.validity_hours:
            raise ValueError(
                f"earlyRenewalHours ({self.early_renewal_hours}) must be below validityHours "
                f"({self.validity_hours}), or every `pulumi up` would renew"
            )
        if self.early_renewal_hours < 14 * 24 + 24:
            raise ValueError(
                f"earlyRenewalHours ({self.early_renewal_hours}) leaves less than the smoke "
                "suite's 14 days of warning plus a day; use at least 360"
            )
        if self.ca_early_renewal_hours >= self.ca_validity_hours:
            raise ValueError(
                f"caEarlyRenewalHours ({self.ca_early_renewal_hours}) must be below "
                f"caValidityHours ({self.ca_validity_hours})"
            )
        if self.validity_hours > self.ca_validity_hours - self.ca_early_renewal_hours:
            raise ValueError(
                f"validityHours ({self.validity_hours}) outlives the CA's renewal point "
                f"(caValidityHours - caEarlyRenewalHours = "
                f"{self.ca_validity_hours - self.ca_early_renewal_hours}); shorten it"
            )
        return self


Slot = Literal["blue", "green"]


class AclSettings(Strict):
    """Password rotation without downtime (runbooks/rotate-passwords.md). Every role has
    two password slots; `active` names the one its Secret hands out (blue unless said),
    `rotating` lists roles whose other slot is valid too. A slot that is neither active
    nor rotating is not declared, so the next rotation generates a fresh password."""

    active: dict[str, Slot] = Field(default_factory=dict)
    rotating: tuple[str, ...] = ()

    @field_validator("rotating")
    @classmethod
    def _roles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _known_roles(value)
        return value

    @field_validator("active")
    @classmethod
    def _active_roles(cls, value: dict[str, Slot]) -> dict[str, Slot]:
        _known_roles(value)
        return value

    def active_slot(self, role: str) -> Slot:
        return self.active.get(role, "blue")

    def slots(self, role: str) -> tuple[Slot, ...]:
        """The slots in use for `role`, the active one first."""
        active = self.active_slot(role)
        other: Slot = "green" if active == "blue" else "blue"
        return (active, other) if role in self.rotating else (active,)


def _known_roles(roles: Iterable[str]) -> None:
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown role(s) {unknown}; roles are {', '.join(ROLES)}")


class NetworkSettings(Strict):
    """Addresses the NetworkPolicies cannot name by label."""

    api_server_cidrs: tuple[str, ...] = Field(alias="apiServerCidrs", min_length=1)
    google_apis_cidrs: tuple[str, ...] = Field(default=("0.0.0.0/0",), alias="googleApisCidrs")
    load_balancer_cidrs: tuple[str, ...] = Field(
        default=("35.191.0.0/16", "130.211.0.0/22"), alias="loadBalancerCidrs"
    )

    @field_validator("api_server_cidrs", "google_apis_cidrs", "load_balancer_cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR block like 10.0.0.0/28") from exc
        return value


class MonitoringSettings(Strict):
    pod_monitoring: bool = Field(
        default=True,
        alias="podMonitoring",
        description="declare PodMonitoring objects (needs Google Managed Prometheus)",
    )


class StackSettings(Strict):
    """Everything `Pulumi.<stack>.yaml` says about a deployment."""

    environment: Literal["dev", "prod"]
    namespace: str = Field(default="redis", pattern=K8S_NAME, max_length=63)
    platform_image: str = Field(alias="platformImage")
    redis: RedisSettings
    streams: StreamsSettings = StreamsSettings()
    clients: ClientSettings = ClientSettings()
    proxy: ProxySettings = ProxySettings()
    backup: BackupSettings
    tls: TlsSettings = TlsSettings()
    acl: AclSettings = AclSettings()
    network: NetworkSettings
    monitoring: MonitoringSettings = MonitoringSettings()
    cluster_domain: str = Field(default="cluster.local", alias="clusterDomain")
    kube_context: str | None = Field(
        default=None, alias="kubeContext", description="kubeconfig context; default: current"
    )

    # --- derived names -------------------------------------------------------------

    @property
    def headless(self) -> str:
        return "redis-cluster-headless"

    def pod_fqdn(self, ordinal: int) -> str:
        return f"redis-cluster-{ordinal}.{self.headless}.{self.namespace}.svc.{self.cluster_domain}"

    @property
    def client_service(self) -> str:
        return f"redis-cluster.{self.namespace}.svc.{self.cluster_domain}"


def production_problems(settings: StackSettings) -> list[tuple[str, str]]:
    """(key, problem and fix) for each rule prod adds to what any stack must satisfy."""
    problems: list[tuple[str, str]] = []
    if settings.redis.replicas < 1:
        problems.append(
            ("redis.replicas", "is 0 in prod: a node failure would lose its shard; use 1 or more")
        )
    for key, image in (
        ("redis.image", settings.redis.image),
        ("redis.exporterImage", settings.redis.exporter_image),
        ("platformImage", settings.platform_image),
    ):
        if not DIGEST.match(image):
            problems.append(
                (
                    key,
                    f"{image!r} is not pinned by digest in prod; use "
                    "repository@sha256:<64 hex digits>",
                )
            )
    if settings.proxy.enabled and not settings.proxy.hostname:
        problems.append(
            (
                "proxy.hostname",
                "is missing in prod: browsers need a public name for the SSE proxy "
                "(e.g. events.example.com)",
            )
        )
    if settings.redis.zone_spread != "hard":
        problems.append(
            (
                "redis.zoneSpread",
                "must be hard in prod, so no zone holds a shard's primary and all its replicas",
            )
        )
    return problems


def load(config: Mapping[str, Any]) -> StackSettings:
    """Validate the stack's config (keys without the `redis-platform:` prefix).

    Raises ConfigError listing every problem, one per line, each as
    `redis-platform:<key>: <what is wrong and how to fix it>`.
    """
    try:
        settings = StackSettings.model_validate(dict(config))
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            key = ".".join(str(p) for p in error["loc"]) or "config"
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["type"] == "missing":
                message = "is required; set it in Pulumi.<stack>.yaml"
            elif error["type"] == "extra_forbidden":
                message = "is not a known setting (a typo?); see infra/settings.py"
            lines.append(f"{PROJECT}:{key}: {message}")
        raise ConfigError("\n".join(lines)) from exc
    if settings.environment == "prod":
        problems = production_problems(settings)
        if problems:
            raise ConfigError("\n".join(f"{PROJECT}:{k}: {m}" for k, m in problems))
    return settings


# ---- cron ------------------------------------------------------------------------------

_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_NAMES = ("minute", "hour", "day of month", "month", "day of week")


def parse_cron(expression: str) -> list[set[int]]:
    """The five standard fields as sets of allowed values; ValueError names the field."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"{expression!r} has {len(fields)} fields; a schedule has 5: minute hour "
            "day-of-month month day-of-week (e.g. '0 * * * *' hourly)"
        )
    result = []
    for text, (low, high), name in zip(fields, _RANGES, _NAMES, strict=True):
        allowed: set[int] = set()
        for part in text.split(","):
            step = 1
            if "/" in part:
                part, step_text = part.split("/", 1)
                if not step_text.isdigit() or int(step_text) == 0:
                    raise ValueError(f"{expression!r}: bad step in the {name} field")
                step = int(step_text)
            if part == "*":
                start, end = low, high
            elif "-" in part:
                a, _, b = part.partition("-")
                if not (a.isdigit() and b.isdigit()):
                    raise ValueError(f"{expression!r}: bad range in the {name} field")
                start, end = int(a), int(b)
            elif part.isdigit():
                start = end = int(part)
            else:
                raise ValueError(f"{expression!r}: {part!r} in the {name} field is not a number")
            if not low <= start <= end <= high:
                raise ValueError(f"{expression!r}: the {name} field must stay within {low}-{high}")
            allowed.update(range(start, end + 1, step))
        result.append(allowed)
    return result


def max_cron_interval_minutes(expression: str) -> int:
    """The longest gap between two runs, over four weeks (minutes)."""
    minute, hour, dom, month, dow = parse_cron(expression)
    # As cron does: when both day fields are restricted, either one matching is enough.
    dom_any, dow_any = (field == "*" for field in expression.split()[2::2])
    start = dt.datetime(2026, 1, 5)  # a Monday
    previous: dt.datetime | None = None
    longest = 0
    for step in range(0, 28 * 24 * 60):
        moment = start + dt.timedelta(minutes=step)
        if (
            moment.minute in minute
            and moment.hour in hour
            and moment.month in month
            and _day_matches(moment, dom, dow, dom_any, dow_any)
        ):
            if previous is not None:
                longest = max(longest, int((moment - previous).total_seconds() // 60))
            previous = moment
    if previous is None:
        raise ValueError(f"{expression!r} never runs within four weeks")
    return longest or 28 * 24 * 60


def _day_matches(
    moment: dt.datetime, dom: set[int], dow: set[int], dom_any: bool, dow_any: bool
) -> bool:
    in_dom, in_dow = moment.day in dom, (moment.isoweekday() % 7) in dow
    if not dom_any and not dow_any:
        return in_dom or in_dow
    return in_dom and in_dow
