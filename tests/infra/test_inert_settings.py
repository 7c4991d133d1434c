"""Settings that would have no effect where they are written are refused, naming the key and
what it depends on; settings that only looked dependent are honoured. A stack file must
never say something the deployment does not do."""

from __future__ import annotations

import json
from typing import Any

import pytest

from redisops.errors import ConfigError
from tests.infra import harness
from tests.infra.harness import error_of


def section(stack: str, key: str, **changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(harness.stack_config(stack)[f"redis-platform:{key}"])
    for name, change in changes.items():
        if change is None:
            value.pop(name, None)
        else:
            value[name] = change
    return value


def gcp_of(stack: str, **gke: Any) -> dict[str, Any]:
    gcp = section(stack, "gcp")
    gcp["gke"] = {**gcp["gke"], **gke}
    return gcp


EXISTING_GKE = {"create": False, "name": "shared-gke", "location": "europe-west1"}


@pytest.mark.parametrize(
    ("stack", "overrides", "key", "says"),
    [
        (
            "dev",
            {"proxy": section("dev", "proxy", enabled=False)},
            "proxy.corsOrigins",
            "no effect with proxy.enabled false",
        ),
        (
            "prod",
            {"proxy": section("prod", "proxy", enabled=False)},
            "proxy.hostname",
            "no effect with proxy.enabled false",
        ),
        (
            "dev",
            {"proxy": {"enabled": False}, "streams": None},  # dev's pools name a proxy pool
            "gcp.gke.nodePools.proxy",
            "no proxy pool is created",
        ),
        (
            "dev",
            {"proxy": {"enabled": False}},  # the stack's retention rules stay
            "streams.retention",
            "only the SSE proxy applies retention",
        ),
        (
            "dev",
            {"proxy": section("dev", "proxy", staticIpName="sse")},
            "proxy.staticIpName",
            "needs proxy.hostname",
        ),
        (
            "dev",
            {"monitoring": {"podMonitoring": False}},  # dev's gcp.alerting reads those metrics
            "monitoring.podMonitoring",
            "they would see no data",
        ),
        (
            "prod",
            {
                "gcp": {
                    **section("prod", "gcp"),
                    "alerting": {
                        **section("prod", "gcp")["alerting"],
                        "notificationChannels": ["projects/p/notificationChannels/1"],
                    },
                }
            },
            "gcp.alerting.notificationChannels",
            "has no effect: pageChannels and ticketChannels are both given",
        ),
        (
            "dev",
            {"backup": {"enabled": False}, "monitoring": {"drillMaxAgeDays": 8}},
            "monitoring.drillMaxAgeDays",
            "no effect with backup.enabled false (no backups, no restore drills)",
        ),
        (
            "prod",
            {"proxy": section("prod", "proxy", staticIpName=None)},
            "gcp.alerting.dnsZone",
            "needs proxy.staticIpName",
        ),
        (
            "dev",
            {"backup": {"enabled": False, "schedule": "0 * * * *"}},
            "backup.schedule",
            "no effect with backup.enabled false",
        ),
        (
            "dev",
            {
                "gcp": None,
                "network": {"apiServerCidrs": ["172.16.0.0/28"]},
                "backup": {"location": "gs://bkt/redis", "retentionDays": 9},
            },
            "backup.retentionDays",
            "nothing expires backups",
        ),
        (
            "prod",
            {
                "gcp": gcp_of("prod", **EXISTING_GKE),
                "network": {"apiServerCidrs": ["172.16.8.0/28"]},
            },
            "gcp.gke.nodePools",
            "only with gcp.gke.create true",
        ),
        (
            "prod",
            {"gcp": gcp_of("prod", location="europe-west1")},
            "gcp.gke.location",
            "is for an existing cluster",
        ),
        ("dev", {"clusterDomain": "corp.internal"}, "clusterDomain", "uses cluster.local"),
        (
            "dev",
            {"kubeContext": "gke_dev"},
            "kubeContext",
            "the gcp section's cluster is used",
        ),
        (
            "dev",
            {
                "gcp": {
                    **section("dev", "gcp"),
                    "secretManager": {
                        "enabled": False,
                        "accessors": section("dev", "gcp")["secretManager"]["accessors"],
                    },
                }
            },
            "gcp.secretManager.accessors",
            "no effect with gcp.secretManager.enabled false",
        ),
        (
            "dev",
            {"redis": section("dev", "redis", maxmemory="2gb")},
            "redis.maxmemory",
            "above the container's memory (512Mi)",
        ),
        (
            "dev",
            {"redis": section("dev", "redis", resources={"cpu": "250m", "memory": "512m"})},
            "redis.resources.memory",
            "like 512Mi",
        ),
        (
            "dev",
            {"redis": section("dev", "redis", resources={"cpu": "2Gi", "memory": "512Mi"})},
            "redis.resources.cpu",
            "like 500m",
        ),
    ],
)
def test_a_setting_without_effect_is_refused_naming_what_it_needs(
    stack: str, overrides: dict[str, Any], key: str, says: str
) -> None:
    message = error_of(stack, overrides)
    lines = [line for line in message.splitlines() if line.startswith(f"redis-platform:{key}:")]
    assert lines, message
    assert says in lines[0], lines[0]


def test_a_disabled_proxy_or_backup_needs_none_of_its_settings_and_gets_no_pool() -> None:
    gcp = section("dev", "gcp")
    del gcp["gke"]["nodePools"]["proxy"]
    overrides = {
        "proxy": {"enabled": False},
        "streams": None,
        "backup": {"enabled": False},
        "gcp": gcp,
    }
    settings = harness.settings("dev", overrides)
    assert not settings.proxy.enabled and not settings.backup.enabled
    plan = harness.run("dev", overrides)
    pools = {r.name for r in plan.of_type("gcp:container/nodePool:NodePool")}
    assert pools == {"pool-system", "pool-redis"}  # no idle proxy nodes
    # Alerting stays, without the proxy's alerts (they would page for a proxy never deployed).
    policies = {r.name for r in plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy")}
    assert "alert-RedisNodeDown" in policies
    assert not [name for name in policies if name.startswith("alert-Sse")], policies


def test_a_kubeconfig_secret_outside_an_existing_gke_cluster_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"redis-platform:kubeconfig: .*gcp\.gke\.create"):
        harness.run("dev", secret_config={"kubeconfig": "apiVersion: v1\nkind: Config\n"})


def test_uptime_alerting_needs_no_static_ip() -> None:
    # The alert policy probes the proxy's hostname; the static IP only pins its address.
    proxy = {**section("prod", "proxy", staticIpName=None)}
    gcp = section("prod", "gcp")
    gcp["alerting"] = {k: v for k, v in gcp["alerting"].items() if k != "dnsZone"}
    plan = harness.run("prod", {"proxy": proxy, "gcp": gcp})
    assert plan.of_type("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig")
    policies = {r.name for r in plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy")}
    assert "uptime-alert" in policies
    assert not plan.of_type("gcp:compute/globalAddress:GlobalAddress")


def test_alerting_needs_no_public_proxy_name() -> None:
    # dev: the alert policies and the dashboard, but no uptime check (nothing public to probe)
    settings = harness.settings("dev")
    assert settings.gcp.alerting is not None and settings.proxy.hostname is None
    plan = harness.recorded("dev")
    policies = {r.name for r in plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy")}
    assert "alert-RedisNodeDown" in policies and "uptime-alert" not in policies
    assert plan.of_type("gcp:monitoring/dashboard:Dashboard")
    assert not plan.of_type("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig")


def test_a_partial_proxy_resources_keeps_the_proxys_own_defaults() -> None:
    settings = harness.settings("dev", {"proxy": section("dev", "proxy", resources={"cpu": "1"})})
    assert settings.proxy.resources.memory == "512Mi"  # not the Redis container's 1Gi


def test_a_proxy_pool_given_only_its_machine_type_still_autoscales() -> None:
    gcp = section("prod", "gcp")
    gcp["gke"]["nodePools"]["proxy"] = {"machineType": "e2-standard-4"}
    settings = harness.settings("prod", {"gcp": gcp})
    assert settings.gcp.gke.node_pools.proxy.max_nodes_per_zone == 3
