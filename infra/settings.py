"""The stack's configuration: one typed model, validated before any resource is declared.

Every knob of a deployment lives here, read from `Pulumi.<stack>.yaml` (namespace
`redis-platform`). An error names the key as it is written in the stack file and how to
fix it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from infra.cron import max_cron_interval_minutes
from redisops import engine
from redisops.acl import DEFAULT_STREAMS, ROLES, validate_stream_patterns
from redisops.conf import MaxmemoryPolicy
from redisops.errors import ConfigError
from redisops.topology import MIN_SHARDS

PROJECT = "redis-platform"
DIGEST = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


CPU = r"^[0-9]+(\.[0-9]+)?m?$"
MEMORY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"


class Resources(Strict):
    """A container's CPU and memory (requests = limits for memory)."""

    cpu: str = "500m"
    memory: str = "1Gi"

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: str) -> str:
        if not re.match(CPU, value):
            raise ValueError(f"{value!r} is not a CPU quantity like 500m or 2")
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not re.match(MEMORY, value):
            raise ValueError(
                f"{value!r} is not a memory quantity like 512Mi or 8Gi (m would be millibytes)"
            )
        return value


class ProxyResources(Resources):
    """The SSE proxy's container: its own defaults, so giving one of the two keeps the
    proxy's default for the other."""

    cpu: str = "250m"
    memory: str = "512Mi"


class RedisSettings(Strict):
    """The Redis Cluster: shape, image, storage, memory."""

    shards: int = 3
    replicas: int = 1
    node_timeout_ms: int = Field(default=5000, alias="nodeTimeoutMs", ge=500, le=60_000)
    image: str | None = Field(
        default=None,
        description="the Redis image; default (and recommended): platformImage, whose "
        "redis-server is the build the backup tools read (redisops/engine.py)",
    )
    exporter_image: str = Field(alias="exporterImage")
    storage_class: str = Field(default="premium-rwo", alias="storageClass")
    storage_size: str = Field(default="10Gi", alias="storageSize", pattern=MEMORY)
    resources: Resources = Resources()
    maxmemory: str = Field(default="768mb", pattern=r"^\d+(b|k|kb|m|mb|g|gb)?$")
    maxmemory_policy: MaxmemoryPolicy = Field(default="noeviction", alias="maxmemoryPolicy")
    zone_spread: Literal["hard", "soft"] = Field(default="soft", alias="zoneSpread")
    tls_auth_clients: Literal["yes", "optional"] = Field(default="yes", alias="tlsAuthClients")
    min_replicas_to_write: int = Field(
        default=0,
        alias="minReplicasToWrite",
        ge=0,
        description="a primary accepts writes only while this many replicas acknowledged it "
        "within minReplicasMaxLagS: bounds what a primary cut off from the majority accepts "
        "and loses (README: what an acknowledged write survives)",
    )
    min_replicas_max_lag_s: int = Field(default=10, alias="minReplicasMaxLagS", ge=1, le=3600)
    acknowledge_scale_in_from: str | None = Field(
        default=None,
        alias="acknowledgeScaleInFrom",
        description="the deployed <shards>x<replicas> this rollout may shrink from, once "
        "its pods hold no data any more (see the refusal's message)",
    )

    @field_validator("acknowledge_scale_in_from")
    @classmethod
    def _acknowledgement(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\d+x\d+", value):
            raise ValueError(
                f'{value!r} is not a shape; name the deployed shards x replicas, like "4x1"'
            )
        return value

    @field_validator("shards")
    @classmethod
    def _shards(cls, value: int) -> int:
        if value < MIN_SHARDS:
            raise ValueError(
                f"is {value}; a Redis Cluster needs at least {MIN_SHARDS} shards so a majority of "
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

    @property
    def shape(self) -> str:
        return f"{self.shards}x{self.replicas}"


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
    resources: ProxyResources = ProxyResources()

    @model_validator(mode="after")
    def _bounds(self) -> ProxySettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) is above maxReplicas ({self.max_replicas})"
            )
        return self


# Weekly, Sunday 04:30 UTC: half past the hour, when an hourly backup is done.
DRILL_SCHEDULE = "30 4 * * 0"


class DrillResources(Strict):
    """The restore drill's pod: the scratch cluster holds the whole dataset in memory, and
    the work volume the downloaded backup and the scratch servers' files (defaults: those
    of `redisops drill job-spec`)."""

    cpu: str = Field(default="1", pattern=CPU)
    memory: str = Field(default="4Gi", pattern=MEMORY)
    scratch_size: str = Field(default="20Gi", alias="scratchSize", pattern=MEMORY)
    timeout_minutes: int = Field(default=60, alias="timeoutMinutes", ge=5, le=24 * 60)


class BackupSettings(Strict):
    enabled: bool = True
    schedule: str = "0 * * * *"
    retention_days: int = Field(default=14, alias="retentionDays", ge=1)
    location: str | None = None

    @field_validator("location")
    @classmethod
    def _location(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/[^\s]*)?$", value):
            raise ValueError(
                f"{value!r} is not a gs://bucket[/prefix] URL; backups from GKE go to "
                "Cloud Storage (a file:// path would vanish with the pod)"
            )
        return value.rstrip("/")

    gcp_service_account: str | None = Field(default=None, alias="gcpServiceAccount")
    smoke_service_account: str | None = Field(
        default=None,
        alias="smokeServiceAccount",
        description="without the GCP layer: the Google service account (objectViewer on the "
        "bucket) the smoke Job checks the newest backup's age as, and the platform metrics "
        "(redis-ops-metrics) read backup and drill outcomes as; bind both Kubernetes "
        "ServiceAccounts, redis-smoke and redis-ops-metrics, to it (Workload Identity)",
    )
    slack_minutes: int = Field(default=30, alias="slackMinutes", ge=0)
    drill_schedule: str = Field(
        default=DRILL_SCHEDULE,
        alias="drillSchedule",
        description="when the restore drill CronJob (namespace redis-drill) proves the newest "
        "backup restores; its longest gap must stay under monitoring.drillMaxAgeDays",
    )
    drill_resources: DrillResources = Field(default=DrillResources(), alias="drillResources")
    drill_service_account: str | None = Field(
        default=None,
        alias="drillServiceAccount",
        description="without the GCP layer: the Google service account (objectViewer and "
        "objectCreator on the bucket) the restore drill acts as; bind the Kubernetes "
        "ServiceAccount redis-drill/redis-drill to it (Workload Identity)",
    )

    @field_validator("schedule", "drill_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        max_cron_interval_minutes(value)  # valid for Kubernetes and runs at all
        return value.strip()

    @property
    def url(self) -> str:
        """The location (required when backups are enabled)."""
        assert self.location is not None, "checked by the settings"
        return self.location

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

    @property
    def drill_interval_minutes(self) -> int:
        """The longest time between two restore drills."""
        return max_cron_interval_minutes(self.drill_schedule)


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
        return tuple(_cidr(cidr) for cidr in value)


RUNBOOK_BASE = re.compile(r"^(https?://[^\s/]+(/\S*)?|[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*/?)$")


class MonitoringSettings(Strict):
    """What is collected and how the alerts (redisops/alerts.py) are rendered."""

    pod_monitoring: bool = Field(
        default=True,
        alias="podMonitoring",
        description="declare PodMonitoring objects (needs Google Managed Prometheus)",
    )
    prometheus_rule: bool = Field(
        default=False,
        alias="prometheusRule",
        description="also declare the alerts as a prometheus-operator PrometheusRule (for "
        "clusters that run it; on GKE Cloud Monitoring evaluates them: gcp.alerting)",
    )
    drill_max_age_days: int | None = Field(
        default=8,
        alias="drillMaxAgeDays",
        description="days without a successful restore drill before RedisRestoreDrillOverdue "
        "(weekly drills plus a day); 0 or null: no drill alerts",
    )
    runbook_base_url: str = Field(
        default="runbooks",
        alias="runbookBaseUrl",
        description="where the alerts link their runbook pages: the repository path, or "
        "the URL the pages are served at",
    )

    @field_validator("drill_max_age_days")
    @classmethod
    def _drill(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= 366:
            raise ValueError(
                f"is {value}; give the days a restore drill may be overdue (e.g. 8 for weekly "
                "drills), or 0 to turn the drill alerts off"
            )
        return value or None

    @field_validator("runbook_base_url")
    @classmethod
    def _runbooks(cls, value: str) -> str:
        if not RUNBOOK_BASE.match(value):
            raise ValueError(
                f"{value!r} is neither an http(s) URL nor a repository path; give where the "
                "runbook pages are, e.g. runbooks or "
                "https://github.com/<org>/redis-platform/blob/main/runbooks"
            )
        return value.rstrip("/")

    @property
    def drill_max_age_s(self) -> int | None:
        return self.drill_max_age_days * 86400 if self.drill_max_age_days else None


# ---- Google Cloud (infra/gcp) --------------------------------------------------------

GCP_REGION = r"^[a-z]+-[a-z]+[0-9]$"
GCP_ZONE = r"^[a-z]+-[a-z]+[0-9]-[a-z]$"
BROAD_ROLES = frozenset(
    {
        "roles/owner",
        "roles/editor",
        "roles/viewer",
        "roles/storage.admin",
        "roles/iam.securityAdmin",
    }
)


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR block like 10.0.0.0/20") from exc
    return value


class VpcSettings(Strict):
    """The VPC the cluster's nodes live in (created with the cluster)."""

    subnet_cidr: str = Field(default="10.10.0.0/20", alias="subnetCidr")
    pods_cidr: str = Field(default="10.16.0.0/14", alias="podsCidr")
    services_cidr: str = Field(default="10.20.0.0/20", alias="servicesCidr")

    @field_validator("subnet_cidr", "pods_cidr", "services_cidr")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        return _cidr(value)

    @model_validator(mode="after")
    def _disjoint(self) -> VpcSettings:
        ranges = {
            "subnetCidr": ipaddress.ip_network(self.subnet_cidr),
            "podsCidr": ipaddress.ip_network(self.pods_cidr),
            "servicesCidr": ipaddress.ip_network(self.services_cidr),
        }
        names = list(ranges)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                if ranges[a].overlaps(ranges[b]):
                    raise ValueError(
                        f"{a} ({ranges[a]}) overlaps {b} ({ranges[b]}); pick disjoint ranges"
                    )
        return self


class AuthorizedNetwork(Strict):
    cidr: str
    name: str

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        return _cidr(value)


class NodePool(Strict):
    machine_type: str = Field(alias="machineType")
    nodes_per_zone: int = Field(default=1, alias="nodesPerZone", ge=0, le=100)
    max_nodes_per_zone: int | None = Field(default=None, alias="maxNodesPerZone", ge=1, le=100)
    disk_size_gb: int = Field(default=50, alias="diskSizeGb", ge=20)

    @model_validator(mode="after")
    def _bounds(self) -> NodePool:
        if self.max_nodes_per_zone is not None and self.max_nodes_per_zone < self.nodes_per_zone:
            raise ValueError(
                f"maxNodesPerZone ({self.max_nodes_per_zone}) is below nodesPerZone "
                f"({self.nodes_per_zone})"
            )
        return self


class ProxyPool(NodePool):
    """The proxy's pool autoscales (to 3 nodes per zone) unless told otherwise."""

    machine_type: str = Field(default="e2-standard-2", alias="machineType")
    max_nodes_per_zone: int | None = Field(default=3, alias="maxNodesPerZone", ge=1, le=100)


class NodePools(Strict):
    system: NodePool = NodePool(machine_type="e2-standard-2")
    redis: NodePool
    proxy: ProxyPool = ProxyPool()


class MaintenanceWindow(Strict):
    """A recurring window (RFC 5545 RRULE) in which GKE may upgrade."""

    start: str = Field(default="2026-01-03T02:00:00Z", pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
    end: str = Field(default="2026-01-03T08:00:00Z", pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
    recurrence: str = Field(default="FREQ=WEEKLY;BYDAY=SA,SU", pattern=r"^FREQ=")


class GkeSettings(Strict):
    """A new regional GKE Standard cluster (`create: true`) or an existing one."""

    create: bool = True
    name: str = Field(pattern=K8S_NAME, max_length=40)
    location: str | None = Field(
        default=None, description="existing cluster: its region or zone; default gcp.region"
    )
    release_channel: Literal["RAPID", "REGULAR", "STABLE"] = Field(
        default="REGULAR", alias="releaseChannel"
    )
    master_cidr: str = Field(default="172.16.0.16/28", alias="masterCidr")
    master_authorized_networks: tuple[AuthorizedNetwork, ...] = Field(
        default=(), alias="masterAuthorizedNetworks"
    )
    maintenance_window: MaintenanceWindow = Field(
        default=MaintenanceWindow(), alias="maintenanceWindow"
    )
    node_pools: NodePools | None = Field(default=None, alias="nodePools")
    deletion_protection: bool = Field(default=True, alias="deletionProtection")
    vpc: VpcSettings = VpcSettings()

    @field_validator("master_cidr")
    @classmethod
    def _master(cls, value: str) -> str:
        network = ipaddress.ip_network(_cidr(value))
        if network.prefixlen != 28:
            raise ValueError(f"{value!r}: the control plane's range must be a /28")
        return value

    @model_validator(mode="after")
    def _pools(self) -> GkeSettings:
        if self.create and self.node_pools is None:
            raise ValueError(
                "nodePools is required when create is true (at least "
                '{"redis": {"machineType": "n2-highmem-4"}})'
            )
        return self


class CmekSettings(Strict):
    """A customer-managed key for the bucket (created here: key ring + key)."""

    key_ring: str = Field(alias="keyRing", pattern=K8S_NAME)
    key: str = Field(pattern=K8S_NAME)
    location: str
    rotation_days: int = Field(default=90, alias="rotationDays", ge=1, le=36500)


class BucketSettings(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
    location: str = Field(description="EU, US, a dual region or a region, e.g. europe-west1")
    retention_policy_days: int | None = Field(
        default=None,
        alias="retentionPolicyDays",
        ge=1,
        description="objects cannot be deleted or replaced younger than this",
    )
    lock_retention: bool = Field(default=False, alias="lockRetention")
    cmek: CmekSettings | None = None

    @model_validator(mode="after")
    def _lock(self) -> BucketSettings:
        if self.lock_retention and self.retention_policy_days is None:
            raise ValueError(
                "lockRetention is true but retentionPolicyDays is not set; set the period "
                "to lock (locking is irreversible)"
            )
        if self.cmek is not None and self.cmek.location.lower() != self.location.lower():
            raise ValueError(
                f"cmek.location ({self.cmek.location}) differs from the bucket's location "
                f"({self.location}); Cloud Storage needs the key in the bucket's location"
            )
        return self


class SecretManagerSettings(Strict):
    """Role passwords in Secret Manager for clients outside GKE, and who may read them."""

    enabled: bool = True
    accessors: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="role -> IAM members (serviceAccount:..., group:...)"
    )

    @field_validator("accessors")
    @classmethod
    def _members(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        _known_roles(value)
        for role, members in value.items():
            for member in members:
                if not re.match(
                    r"^(serviceAccount|group|user|principal|principalSet):\S+$", member
                ):
                    raise ValueError(
                        f"{role}: {member!r} is not an IAM member like "
                        "serviceAccount:agents@project.iam.gserviceaccount.com"
                    )
        return value


class RegistrySettings(Strict):
    location: str
    repository: str = Field(default="redis-platform", pattern=K8S_NAME)
    keep_recent: int = Field(default=20, alias="keepRecent", ge=1)
    untagged_days: int = Field(default=14, alias="untaggedDays", ge=1)


class AlertingSettings(Strict):
    """Cloud Monitoring: an alert policy per alert (PromQL over Managed Prometheus data),
    the on-call dashboard, and the uptime check of the proxy's public name. Alerts of
    severity page go to pageChannels, ticket to ticketChannels; each defaults to
    notificationChannels."""

    notification_channels: tuple[str, ...] = Field(default=(), alias="notificationChannels")
    page_channels: tuple[str, ...] | None = Field(
        default=None, alias="pageChannels", description="who is woken up (severity page)"
    )
    ticket_channels: tuple[str, ...] | None = Field(
        default=None,
        alias="ticketChannels",
        description="what waits for working hours (severity ticket)",
    )
    dns_zone: str | None = Field(
        default=None, alias="dnsZone", description="Cloud DNS managed zone for the proxy's name"
    )

    @field_validator("notification_channels", "page_channels", "ticket_channels")
    @classmethod
    def _channels(
        cls, value: tuple[str, ...] | None, info: ValidationInfo
    ) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value and info.field_name != "notification_channels":
            raise ValueError(
                "is empty: these alerts would notify no one; list channels, or remove the "
                "key to use notificationChannels"
            )
        for channel in value:
            if not re.match(r"^projects/[^/]+/notificationChannels/\d+$", channel):
                raise ValueError(
                    f"{channel!r} is not a channel name like "
                    "projects/<project>/notificationChannels/<id> "
                    "(`gcloud beta monitoring channels list`)"
                )
        return value

    @model_validator(mode="after")
    def _every_severity_routed(self) -> AlertingSettings:
        if not self.notification_channels and (
            self.page_channels is None or self.ticket_channels is None
        ):
            raise ValueError(
                "notificationChannels is required (at least one channel) unless both "
                "pageChannels and ticketChannels are given"
            )
        return self

    def channels(self, severity: str) -> tuple[str, ...]:
        """Where alerts of `severity` (page or ticket) are sent."""
        routed = {"page": self.page_channels, "ticket": self.ticket_channels}[severity]
        return routed or self.notification_channels


# GitHub's rules: an owner is 1-39 letters, digits or single hyphens (not first or last);
# a repository name is 1-100 letters, digits, '.', '-' or '_', and not '.' or '..'.
GITHUB_REPOSITORY = re.compile(
    r"^(?P<owner>[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38})/(?P<name>[A-Za-z0-9._-]{1,100})$"
)
# What the attribute condition may quote (it is CEL): no quotes, no backslashes.
GITHUB_BRANCH = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")
GITHUB_ENVIRONMENT = re.compile(r"^[A-Za-z0-9._ -]{1,255}$")
WORKLOAD_POOL_ID = re.compile(r"^[a-z0-9-]{4,32}$")
SERVICE_ACCOUNT_ID = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$"


class CiSettings(Strict):
    """Keyless deploys from GitHub Actions (Workload Identity Federation): a pool, an OIDC
    provider that accepts only this repository's tokens (narrowed to branches and GitHub
    environments when given), and the deployer service account those tokens act as."""

    repository: str = Field(description="the GitHub repository, owner/name")
    branches: tuple[str, ...] = Field(
        default=(), description="refs/heads/<branch> allowed; none given: any ref"
    )
    environments: tuple[str, ...] = Field(
        default=(),
        description="GitHub environments that roll out (and drill), accepted only from "
        "`branches`; none given: any (or none)",
    )
    preview_environments: tuple[str, ...] = Field(
        default=(),
        alias="previewEnvironments",
        description="GitHub environments of pull-request previews, accepted from any ref: "
        "they run the pull request's code as the deployer, so give them required reviewers",
    )
    state_bucket: str | None = Field(
        default=None,
        alias="stateBucket",
        description="the Pulumi state bucket (gs:// backend) the deployer reads and writes",
    )
    pool_id: str = Field(default="github", alias="poolId")
    provider_id: str = Field(default="github-actions", alias="providerId")
    service_account_id: str = Field(
        default="redis-deployer", alias="serviceAccountId", pattern=SERVICE_ACCOUNT_ID
    )

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        match = GITHUB_REPOSITORY.fullmatch(value)
        if match is None or match["name"] in (".", ".."):
            raise ValueError(
                f"{value!r} is not a GitHub repository: give owner/name as in its URL, e.g. "
                "example-org/redis-platform (owner: letters, digits and single hyphens; "
                "name: letters, digits, '.', '-' and '_')"
            )
        return value

    @field_validator("pool_id", "provider_id")
    @classmethod
    def _pool_ids(cls, value: str) -> str:
        if not WORKLOAD_POOL_ID.fullmatch(value) or value.startswith("gcp-"):
            raise ValueError(
                f"{value!r}: give 4 to 32 lower-case letters, digits or hyphens, not starting "
                "with gcp- (Google reserves it); a deleted pool's id stays taken for 30 days"
            )
        return value

    @field_validator("branches")
    @classmethod
    def _branches(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for branch in value:
            if branch.startswith("refs/") or not GITHUB_BRANCH.fullmatch(branch):
                raise ValueError(
                    f"{branch!r}: give a branch name like main or release/1 (without "
                    "refs/heads/; letters, digits, '.', '_', '-' and '/')"
                )
        return value

    @field_validator("environments", "preview_environments")
    @classmethod
    def _environments(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        rollouts = info.data.get("environments", ()) if info.field_name != "environments" else ()
        for environment in value:
            if environment in rollouts:
                raise ValueError(
                    f"{environment!r} is also in environments: an environment either rolls "
                    "out (tokens from `branches` only) or previews pull requests (any ref), "
                    "never both"
                )
            if not GITHUB_ENVIRONMENT.fullmatch(environment):
                raise ValueError(
                    f"{environment!r}: give a GitHub environment name like prod (letters, "
                    "digits, spaces, '.', '_' and '-')"
                )
        return value

    @field_validator("state_bucket")
    @classmethod
    def _state_bucket(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", value):
            raise ValueError(
                f"{value!r} is not a bucket name; give the name of the bucket `pulumi login "
                "gs://<bucket>` uses, without gs:// or a path"
            )
        return value


class GcpSettings(Strict):
    """What the program declares on Google Cloud (infra/gcp)."""

    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    region: str = Field(pattern=GCP_REGION)
    zones: tuple[str, ...] = Field(min_length=1)
    gke: GkeSettings
    bucket: BucketSettings
    secret_manager: SecretManagerSettings = Field(
        default=SecretManagerSettings(), alias="secretManager"
    )
    registry: RegistrySettings | None = None
    alerting: AlertingSettings | None = None
    ci: CiSettings | None = Field(
        default=None, description="keyless GitHub Actions deploys (Workload Identity Federation)"
    )

    @field_validator("zones")
    @classmethod
    def _zones(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        region = info.data.get("region")  # absent when the region itself was invalid
        for zone in value:
            if not re.match(GCP_ZONE, zone) or (region and not zone.startswith(region + "-")):
                raise ValueError(f"{zone!r} is not a zone of {region} (e.g. {region}-b)")
        return value


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
    gcp: GcpSettings | None = Field(
        default=None, description="the Google Cloud layer; without it, deploy into kubeContext"
    )
    cluster_domain: str = Field(default="cluster.local", alias="clusterDomain")
    kube_context: str | None = Field(
        default=None, alias="kubeContext", description="kubeconfig context; default: current"
    )

    @property
    def redis_image(self) -> str:
        """What the StatefulSet runs: the platform image unless redis.image says otherwise."""
        return self.redis.image or self.platform_image

    @model_validator(mode="before")
    @classmethod
    def _from_gcp(cls, data: Any) -> Any:
        """Defaults the GCP layer determines: the control plane's range (the API server the
        jobs reach) and the backup location in the bucket it creates."""
        if not isinstance(data, dict) or not isinstance(data.get("gcp"), dict):
            return data
        data = dict(data)
        gcp = data["gcp"]
        gke = gcp.get("gke") if isinstance(gcp.get("gke"), dict) else {}
        network = data.get("network") if isinstance(data.get("network"), dict) else {}
        if gke.get("create", True) and "apiServerCidrs" not in network:
            master = gke.get("masterCidr", GkeSettings.model_fields["master_cidr"].default)
            data["network"] = {**network, "apiServerCidrs": [master]}
        bucket = gcp.get("bucket") if isinstance(gcp.get("bucket"), dict) else {}
        backup = data.get("backup") if isinstance(data.get("backup"), dict) else {}
        if bucket.get("name") and "location" not in backup and backup.get("enabled", True):
            data["backup"] = {**backup, "location": f"gs://{bucket['name']}/redis"}
        return data


# ---- does Redis fit its node pool ---------------------------------------------------

_GIB_PER_VCPU = {"standard": 4.0, "highmem": 8.0, "highcpu": 1.0}
_UNITS = {"Ki": 2**-20, "Mi": 2**-10, "Gi": 1.0, "Ti": 2**10, "k": 1e3 / 2**30,
          "M": 1e6 / 2**30, "G": 1e9 / 2**30, "T": 1e12 / 2**30, "": 1 / 2**30}  # fmt: skip


def quantity_gib(quantity: str) -> float:
    """A Kubernetes memory quantity (512Mi, 8Gi, 1G) in GiB."""
    match = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T)?", quantity)
    if not match:
        raise ValueError(f"{quantity!r} is not a memory quantity like 512Mi or 8Gi")
    return float(match.group(1)) * _UNITS[match.group(2) or ""]


def machine_memory_gib(machine_type: str) -> float | None:
    """Memory of a predefined <family>-<standard|highmem|highcpu>-<vCPUs> machine type;
    None for anything else (custom, shared-core: not checked)."""
    match = re.fullmatch(
        r"(e2|n2|n2d|n4|c3|c3d|c4|t2d)-(standard|highmem|highcpu)-(\d+)", machine_type
    )
    if not match:
        return None
    family, kind, vcpus = match.group(1), match.group(2), int(match.group(3))
    per_vcpu = _GIB_PER_VCPU[kind]
    if kind == "highcpu" and family in ("c3", "c3d", "c4", "n4"):
        per_vcpu = 2.0
    return vcpus * per_vcpu


def gke_allocatable_gib(memory_gib: float) -> float:
    """What GKE leaves pods of a node's memory (its documented reservation tiers, and 100 Mi
    for eviction)."""
    tiers = ((4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (float("inf"), 0.02))
    reserved, left = 0.0, memory_gib
    for size, share in tiers:
        part = min(left, size)
        reserved += part * share
        left -= part
        if left <= 0:
            break
    return memory_gib - reserved - 100 / 1024


def redis_fit_problem(settings: StackSettings) -> str | None:
    """Why the Redis pods cannot all be scheduled on the Redis pool, or None."""
    gcp = settings.gcp
    if gcp is None or not gcp.gke.create or gcp.gke.node_pools is None:
        return None
    pool = gcp.gke.node_pools.redis
    memory = machine_memory_gib(pool.machine_type)
    nodes = pool.nodes_per_zone * len(set(gcp.zones))
    if memory is None:
        return None
    if nodes == 0:
        return "has no nodes (nodesPerZone 0): the Redis pods could not be scheduled"
    per_node = -(-settings.redis.pods // nodes)
    # the exporter sidecar requests 32Mi next to each Redis container
    need = per_node * (quantity_gib(settings.redis.resources.memory) + 32 / 1024)
    have = gke_allocatable_gib(memory)
    if need > have:
        return (
            f"{per_node} Redis pods of {settings.redis.resources.memory} per node need "
            f"{need:.1f} GiB; {pool.machine_type} leaves pods about {have:.1f} GiB. Use a "
            "larger machineType or more nodesPerZone"
        )
    return None


def _span(minutes: int) -> str:
    """A gap between runs as a person says it (minutes, hours or days)."""
    if minutes % (24 * 60) == 0:
        days = minutes // (24 * 60)
        return f"{days} day{'s' if days != 1 else ''}"
    if minutes >= 48 * 60:
        return f"{minutes / (24 * 60):.1f} days"
    if minutes % 60 == 0:
        return f"{minutes // 60} hours"
    return f"{minutes} minutes"


def drill_schedule_problem(settings: StackSettings) -> str | None:
    """Why the restore drill's schedule would set off RedisRestoreDrillOverdue between two
    drills that pass, or None. A drill's success counts when it finishes, so the longest
    gap between two drills plus the time one may run must stay under the alert's window."""
    backup, days = settings.backup, settings.monitoring.drill_max_age_days
    if not backup.enabled or days is None:
        return None
    gap = backup.drill_interval_minutes
    run = backup.drill_resources.timeout_minutes
    if gap + run < days * 24 * 60:
        return None
    return (
        f"{backup.drill_schedule!r} leaves up to {_span(gap)} between two drills (and a drill "
        f"may run {run} minutes), not less than monitoring.drillMaxAgeDays ({days} days): "
        "RedisRestoreDrillOverdue would fire between drills that pass. Schedule drills more "
        f'often (weekly: "{DRILL_SCHEDULE}") or raise monitoring.drillMaxAgeDays'
    )


def stack_problems(settings: StackSettings) -> list[tuple[str, str]]:
    """(key, problem and fix) for each check across sections of the stack."""
    problems: list[tuple[str, str]] = []
    if settings.redis.image is not None:
        problem = engine.image_problem(settings.redis.image, settings.platform_image)
        if problem:
            problems.append(("redis.image", problem))
    overdue = drill_schedule_problem(settings)
    if overdue is not None:
        problems.append(("backup.drillSchedule", overdue))
    gcp = settings.gcp
    if gcp is None:
        return problems
    if gcp.gke.create and len(set(gcp.zones)) < 3:
        problems.append(
            (
                "gcp.zones",
                f"a regional cluster spreads Redis across three zones; {gcp.region} was "
                f"given {len(set(gcp.zones))} ({', '.join(gcp.zones)})",
            )
        )
    unfit = redis_fit_problem(settings)
    if unfit is not None:
        problems.append(("gcp.gke.nodePools.redis", unfit))
    backup = settings.backup
    bucket = f"gs://{gcp.bucket.name}"
    location = backup.location
    if location is not None and location != bucket and not location.startswith(bucket + "/"):
        problems.append(
            (
                "backup.location",
                f"{location} is not in the bucket this stack creates ({bucket}); "
                f"remove it (default {bucket}/redis) or use {bucket}/<prefix>",
            )
        )
    for key, value, account in (
        ("backup.gcpServiceAccount", backup.gcp_service_account, "redis-backup"),
        ("backup.smokeServiceAccount", backup.smoke_service_account, "redis-smoke"),
        ("backup.drillServiceAccount", backup.drill_service_account, "redis-drill"),
    ):
        if value is not None:
            problems.append(
                (
                    key,
                    "the GCP layer creates this identity "
                    f"({account}@{gcp.project}.iam.gserviceaccount.com); remove the setting",
                )
            )
    locked = gcp.bucket.retention_policy_days
    if locked is not None and locked > backup.retention_days:
        problems.append(
            (
                "gcp.bucket.retentionPolicyDays",
                f"{locked} days is longer than backup.retentionDays ({backup.retention_days}): "
                "the bucket could not delete expired backups; lower it or raise "
                "backup.retentionDays",
            )
        )
    api_servers = settings.network.api_server_cidrs
    if gcp.gke.create and gcp.gke.master_cidr not in api_servers:
        problems.append(
            (
                "network.apiServerCidrs",
                f"{list(api_servers)} leaves out the control plane ({gcp.gke.master_cidr}, "
                "gcp.gke.masterCidr): the reconcile Job could not read pod zones; remove the "
                "setting to use masterCidr",
            )
        )
    return problems


def _set_keys(model: BaseModel, prefix: str, ignore: tuple[str, ...] = ()) -> list[str]:
    """The keys (as written in the stack file) the stack gave explicitly in `model`."""
    fields = type(model).model_fields
    return [
        f"{prefix}.{fields[name].alias or name}"
        for name in sorted(model.model_fields_set)
        if name not in ignore
    ]


_GKE_CREATE_ONLY = (
    "release_channel",
    "master_cidr",
    "master_authorized_networks",
    "maintenance_window",
    "node_pools",
    "deletion_protection",
    "vpc",
)
_REDIS_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 10**6, "mb": 2**20, "g": 10**9,
                "gb": 2**30}  # fmt: skip


def redis_bytes(value: str) -> int:
    """A redis.conf memory value (256mb, 6gb, 1000000) in bytes."""
    match = re.fullmatch(r"(\d+)(b|k|kb|m|mb|g|gb)?", value.lower())
    if not match:
        raise ValueError(f"{value!r} is not a Redis memory value like 256mb")
    return int(match.group(1)) * _REDIS_UNITS[match.group(2) or ""]


def inert_problems(settings: StackSettings) -> list[tuple[str, str]]:
    """(key, problem and fix) for each setting the stack gives that would have no effect
    where it is written, or would be misapplied."""
    problems: list[tuple[str, str]] = []
    proxy, backup, gcp = settings.proxy, settings.backup, settings.gcp
    if not proxy.enabled:
        for key in _set_keys(proxy, "proxy", ignore=("enabled",)):
            problems.append((key, "has no effect with proxy.enabled false; remove it"))
        if "retention" in settings.streams.model_fields_set:
            problems.append(
                (
                    "streams.retention",
                    "has no effect with proxy.enabled false: only the SSE proxy applies "
                    "retention (on POST); remove it or enable the proxy",
                )
            )
        pools = gcp.gke.node_pools if gcp is not None else None
        if pools is not None and "proxy" in pools.model_fields_set:
            problems.append(
                (
                    "gcp.gke.nodePools.proxy",
                    "has no effect with proxy.enabled false (no proxy pool is created); remove it",
                )
            )
        if "load_balancer_cidrs" in settings.network.model_fields_set:
            problems.append(
                ("network.loadBalancerCidrs", "has no effect with proxy.enabled false; remove it")
            )
    elif proxy.static_ip_name and not proxy.hostname:
        problems.append(
            (
                "proxy.staticIpName",
                "needs proxy.hostname: the address is for the proxy's public edge, which "
                "exists only with a hostname; set proxy.hostname or remove staticIpName",
            )
        )
    if backup.enabled and backup.location is None:
        problems.append(
            (
                "backup.location",
                "is required; set it in Pulumi.<stack>.yaml: gs://bucket/prefix (the GCP "
                "layer defaults it to its bucket), or set backup.enabled false",
            )
        )
    if not backup.enabled:
        for key in _set_keys(backup, "backup", ignore=("enabled",)):
            problems.append((key, "has no effect with backup.enabled false; remove it"))
    elif gcp is None and "retention_days" in backup.model_fields_set:
        problems.append(
            (
                "backup.retentionDays",
                "without the gcp section nothing expires backups (the GCP layer's bucket "
                "lifecycle rule does); give your bucket a lifecycle rule and remove the key",
            )
        )
    if gcp is not None:
        gke = gcp.gke
        if not gke.create:
            for key in _set_keys(gke, "gcp.gke"):
                if key.split(".")[-1] in {GkeSettings.model_fields[n].alias or n
                                          for n in _GKE_CREATE_ONLY}:  # fmt: skip
                    problems.append(
                        (
                            key,
                            "is used only with gcp.gke.create true (a cluster this stack "
                            "creates); remove it for an existing cluster",
                        )
                    )
        elif settings.cluster_domain != "cluster.local":
            problems.append(
                (
                    "clusterDomain",
                    f"is {settings.cluster_domain!r}, but a GKE cluster this stack creates "
                    "uses cluster.local (the nodes' names and certificates would not match); "
                    "remove it",
                )
            )
        if gke.create and gke.location is not None:
            problems.append(
                (
                    "gcp.gke.location",
                    "is for an existing cluster (create false); a created cluster is "
                    "regional in gcp.region: remove it",
                )
            )
        if settings.kube_context is not None:
            problems.append(
                (
                    "kubeContext",
                    "has no effect with a gcp section: the gcp section's cluster is used; "
                    "remove it (or remove the gcp section to deploy into a context)",
                )
            )
        if not gcp.secret_manager.enabled and gcp.secret_manager.accessors:
            problems.append(
                (
                    "gcp.secretManager.accessors",
                    "has no effect with gcp.secretManager.enabled false; remove it",
                )
            )
        alerting = gcp.alerting
        if alerting is not None and alerting.dns_zone and not proxy.static_ip_name:
            problems.append(
                (
                    "gcp.alerting.dnsZone",
                    "needs proxy.staticIpName: the A record points at the proxy's static "
                    "address; set it or remove dnsZone",
                )
            )
        if alerting is not None and not settings.monitoring.pod_monitoring:
            problems.append(
                (
                    "monitoring.podMonitoring",
                    "is false, but gcp.alerting's alert policies and dashboard read what the "
                    "PodMonitoring objects collect (Managed Prometheus): they would see no "
                    "data; set it true, or remove gcp.alerting",
                )
            )
        routed = alerting is not None and alerting.page_channels and alerting.ticket_channels
        if routed and alerting is not None and alerting.notification_channels:
            problems.append(
                (
                    "gcp.alerting.notificationChannels",
                    "has no effect: pageChannels and ticketChannels are both given; remove it",
                )
            )
    if not backup.enabled and "drill_max_age_days" in settings.monitoring.model_fields_set:
        problems.append(
            (
                "monitoring.drillMaxAgeDays",
                "has no effect with backup.enabled false (no backups, no restore drills); "
                "remove it",
            )
        )
    redis = settings.redis
    wanted = redis.min_replicas_to_write
    if wanted and wanted >= redis.replicas:
        problems.append(
            (
                "redis.minReplicasToWrite",
                f"is {wanted} with {redis.replicas} replica{'s' if redis.replicas != 1 else ''} "
                "per shard: after a failover the new primary has no replica and refuses every "
                "write until the failed node is back (measured: the whole partition "
                "unavailable); give it fewer than redis.replicas, or 0",
            )
        )
    if wanted and redis.min_replicas_max_lag_s * 1000 >= redis.node_timeout_ms:
        problems.append(
            (
                "redis.minReplicasMaxLagS",
                f"is {redis.min_replicas_max_lag_s} s, not below nodeTimeoutMs "
                f"({redis.node_timeout_ms} ms): a primary cut off from the majority stops at "
                "node-timeout first, so the bound costs availability and saves nothing; give "
                "fewer seconds (prod: 2)",
            )
        )
    if not wanted and "min_replicas_max_lag_s" in redis.model_fields_set:
        problems.append(
            (
                "redis.minReplicasMaxLagS",
                "has no effect with minReplicasToWrite 0; remove it, or set minReplicasToWrite",
            )
        )
    limit = quantity_gib(redis.resources.memory) * 2**30
    maxmemory = redis_bytes(redis.maxmemory)
    if maxmemory == 0:
        problems.append(
            (
                "redis.maxmemory",
                "0 means unlimited: the container would be OOM-killed instead of Redis "
                "refusing writes; set it below the container's memory",
            )
        )
    elif maxmemory > limit:
        problems.append(
            (
                "redis.maxmemory",
                f"({redis.maxmemory}) is above the container's memory "
                f"({redis.resources.memory}): it would be OOM-killed before maxmemory "
                "applies; lower it to about 75 % of redis.resources.memory",
            )
        )
    elif maxmemory > 0.9 * limit:
        problems.append(
            (
                "redis.maxmemory",
                f"({redis.maxmemory}) leaves under 10 % of the container's memory "
                f"({redis.resources.memory}) for snapshot forks and replication buffers; "
                "lower it to about 75 %",
            )
        )
    return problems


def production_problems(settings: StackSettings) -> list[tuple[str, str]]:
    """(key, problem and fix) for each rule prod adds to what any stack must satisfy."""
    problems: list[tuple[str, str]] = []
    if settings.redis.replicas < 1:
        problems.append(
            ("redis.replicas", "is 0 in prod: a node failure would lose its shard; use 1 or more")
        )
    images = [
        ("redis.exporterImage", settings.redis.exporter_image),
        ("platformImage", settings.platform_image),
    ]
    if settings.redis.image is not None:  # unset: the StatefulSet runs platformImage
        images.insert(0, ("redis.image", settings.redis.image))
    for key, image in images:
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
    if (
        settings.gcp is not None
        and settings.gcp.gke.create
        and not settings.gcp.gke.deletion_protection
    ):
        problems.append(
            (
                "gcp.gke.deletionProtection",
                "is false in prod: a mistaken `pulumi destroy` would delete the cluster; "
                "set it to true",
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


# ---- what the last rollout deployed ----------------------------------------------------


def deployed_shape(redis: RedisSettings) -> dict[str, Any]:
    """What a rollout records (stack output `redisShape`) for the next one to compare."""
    return {
        "shards": redis.shards,
        "replicas": redis.replicas,
        "storageClass": redis.storage_class,
        "storageSize": redis.storage_size,
    }


def _pod_range(first: int, last: int) -> str:
    names = [f"redis-cluster-{i}" for i in range(first, last + 1)]
    return ", ".join(names) if len(names) <= 2 else f"{names[0]} .. {names[-1]}"


def rollout_problems(
    redis: RedisSettings, previous: Mapping[str, Any] | None
) -> list[tuple[str, str]]:
    """(key, problem and fix) for changes the StatefulSet cannot make without losing data
    or every pod at once, given what the last rollout deployed (None: the first one)."""
    ack = redis.acknowledge_scale_in_from
    if not previous:
        if ack is not None:
            return [("redis.acknowledgeScaleInFrom", "acknowledges a scale-in, but nothing "
                     "is deployed yet; remove it")]  # fmt: skip
        return []
    problems: list[tuple[str, str]] = []
    was_shards, was_replicas = int(previous["shards"]), int(previous["replicas"])
    was = f"{was_shards}x{was_replicas}"
    shrinks = redis.shards < was_shards or redis.replicas < was_replicas
    if shrinks and ack != was:
        key = "redis.shards" if redis.shards < was_shards else "redis.replicas"
        was_pods = was_shards * (1 + was_replicas)
        if redis.pods < was_pods:
            what = (
                f"shrinks the StatefulSet at once and deletes "
                f"{_pod_range(redis.pods, was_pods - 1)}, which hold slots or replicas, "
                "before anything moves their data"
            )
        else:
            what = (
                f"has fewer {key.removeprefix('redis.')} than the cluster: the slots of the "
                "shards that go would stay where they are while the pods take new roles"
            )
        problems.append(
            (
                key,
                f"the cluster runs {was} (shards x replicas); {redis.shape} {what}. First move "
                "their data off with `redisops scale --shards "
                f"{redis.shards} --replicas {redis.replicas}` (runbooks/scale-in.md: it moves "
                "every slot off the shards that go and makes their nodes leave); then set "
                f'redis.acknowledgeScaleInFrom: "{was}" for that rollout',
            )
        )
    elif not shrinks and ack is not None:
        problems.append(
            (
                "redis.acknowledgeScaleInFrom",
                f'"{ack}" acknowledges a scale-in, but this rollout shrinks nothing (the '
                f"cluster runs {was}); remove it",
            )
        )
    for key, field, current in (
        ("redis.storageSize", "storageSize", redis.storage_size),
        ("redis.storageClass", "storageClass", redis.storage_class),
    ):
        before = previous.get(field)
        if before is not None and before != current:
            problems.append(
                (
                    key,
                    f"is {current!r}, the deployed volumes are {before!r}: a StatefulSet's "
                    "volume claim templates cannot change, so Pulumi would delete and "
                    "recreate it (every Redis pod at once) and the existing volumes would "
                    f"keep {before!r}. Keep {before!r}; grow volumes by resizing each PVC "
                    "(`kubectl patch pvc data-redis-cluster-N`), or move the data with a "
                    "backup and restore into a new stack",
                )
            )
    return problems


# The one secret setting: an existing cluster's kubeconfig (`pulumi config set --secret
# kubeconfig < file`). Read as a secret Output by the program, never into the settings.
KUBECONFIG_KEY = "kubeconfig"


def from_pulumi_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The `redis-platform:*` keys of a config as the Pulumi CLI hands them to a program
    (structured values JSON-encoded), without the prefix and decoded; the secret
    kubeconfig left out."""
    prefix = f"{PROJECT}:"
    result: dict[str, Any] = {}
    for key, value in raw.items():
        if not key.startswith(prefix) or key == prefix + KUBECONFIG_KEY:
            continue
        try:
            result[key.removeprefix(prefix)] = json.loads(value)
        except (TypeError, ValueError):
            result[key.removeprefix(prefix)] = value
    return result


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
    problems = stack_problems(settings) + inert_problems(settings)
    if settings.environment == "prod":
        problems += production_problems(settings)
    if problems:
        raise ConfigError("\n".join(f"{PROJECT}:{k}: {m}" for k, m in problems))
    return settings
