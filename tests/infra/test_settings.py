"""Stack settings: the real stack files load, and every mistake a user can make in
Pulumi.<stack>.yaml fails before any resource is declared, naming the key and the fix."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra import settings as stack_settings
from redisops.errors import ConfigError
from tests.infra import harness
from tests.infra.harness import error_of


def test_the_stack_files_load() -> None:
    dev, prod = harness.settings("dev"), harness.settings("prod")
    assert (dev.redis.shards, dev.redis.replicas, dev.redis.pods) == (3, 1, 6)
    assert (prod.redis.shards, prod.redis.replicas, prod.redis.pods) == (3, 2, 9)
    assert prod.redis.zone_spread == "hard"
    assert prod.backup.max_age_s == (60 + prod.backup.slack_minutes) * 60


def redis_of(stack: str, **changes: Any) -> dict[str, Any]:
    document = harness.stack_config(stack)
    redis: dict[str, Any] = json.loads(document["redis-platform:redis"])
    redis.update(changes)
    return redis


@pytest.mark.parametrize(
    ("stack", "overrides", "key", "says"),
    [
        ("dev", {"redis": redis_of("dev", shards=2)}, "redis.shards", "at least 3 shards"),
        ("dev", {"redis": redis_of("dev", replicas=7)}, "redis.replicas", "0 to 5"),
        ("prod", {"redis": redis_of("prod", replicas=0)}, "redis.replicas", "use 1 or more"),
        (
            "prod",
            {"redis": redis_of("prod", image="redis:7.0.15")},
            "redis.image",
            "not pinned by digest",
        ),
        # One Redis build: an engine newer than the image's backup tools is refused.
        (
            "prod",
            {"redis": redis_of("prod", image="redis:7.2.5@sha256:" + "a" * 64)},
            "redis.image",
            "writes RDB format 11, newer than the platform image's tools read",
        ),
        (
            "dev",
            {"redis": redis_of("dev", image="redis:8.0.2")},
            "redis.image",
            "(Redis 8.0) writes RDB format 12",
        ),
        ("dev", {"redis": redis_of("dev", image="redis:latest")}, "redis.image", "names no Redis"),
        (
            "prod",
            {"platformImage": "europe-docker.pkg.dev/p/r/redis-platform:latest"},
            "platformImage",
            "repository@sha256:",
        ),
        ("prod", {"redis": redis_of("prod", zoneSpread="soft")}, "redis.zoneSpread", "hard"),
        (
            "prod",
            {"proxy": {"enabled": True, "minReplicas": 2}},
            "proxy.hostname",
            "public name",
        ),
        (
            "dev",
            {"proxy": {"minReplicas": 5, "maxReplicas": 2}},
            "proxy",
            "above maxReplicas",
        ),
        (
            "dev",
            {"backup": {"schedule": "0 * * *", "location": "gs://bkt/p"}},
            "backup.schedule",
            "has 4 fields",
        ),
        (
            "dev",
            {"backup": {"schedule": "61 * * * *", "location": "gs://bkt/p"}},
            "backup.schedule",
            "the minute field '61' is not valid: use numbers 0-59",
        ),
        (
            "dev",
            {"backup": {"schedule": "0 3 * * 1", "retentionDays": 3, "location": "gs://bkt/p"}},
            "backup",
            "shorter than the time between backups",
        ),
        (
            "dev",
            {"backup": {"location": "/var/backups"}},
            "backup.location",
            "gs://bucket",
        ),
        (
            "dev",
            {
                "gcp": None,
                "network": {"apiServerCidrs": ["172.16.0.0/28"]},
                "backup": {"schedule": "0 * * * *"},
            },
            "backup.location",
            "is required",
        ),
        ("dev", {"gcp": None, "network": {}}, "network.apiServerCidrs", "is required"),
        (
            "dev",
            {"tls": {"validityHours": 720, "earlyRenewalHours": 720}},
            "tls",
            "must be below validityHours",
        ),
        (
            "dev",
            {"tls": {"validityHours": 8760, "earlyRenewalHours": 48}},
            "tls",
            "at least 360",
        ),
        ("dev", {"acl": {"rotating": ["root"]}}, "acl.rotating", "unknown role"),
        ("dev", {"acl": {"active": {"reader": "red"}}}, "acl.active.reader", "'blue' or 'green'"),
        ("dev", {"network": {"apiServerCidrs": []}}, "network.apiServerCidrs", "at least 1"),
        (
            "dev",
            {"network": {"apiServerCidrs": ["10.0.0.300/28"]}},
            "network.apiServerCidrs",
            "not a CIDR",
        ),
        ("dev", {"namespace": "Redis_NS"}, "namespace", "pattern"),
        ("dev", {"shards": 3}, "shards", "not a known setting"),
        ("dev", {"streams": {"patterns": ["smoke:*"]}}, "streams.patterns", "smoke"),
        ("dev", {"environment": "staging"}, "environment", "'dev' or 'prod'"),
    ],
)
def test_each_mistake_names_its_key_and_the_fix(
    stack: str, overrides: dict[str, Any], key: str, says: str
) -> None:
    message = error_of(stack, overrides)
    assert f"redis-platform:{key}:" in message
    assert says in message


def test_every_error_is_reported_at_once() -> None:
    message = error_of(
        "prod",
        {
            "redis": redis_of("prod", replicas=0, image="redis:7"),
            "proxy": {"enabled": True},
        },
    )
    lines = message.splitlines()
    assert {line.split(":")[1] for line in lines} >= {
        "redis.replicas",
        "redis.image",
        "proxy.hostname",
    }


def test_a_bad_config_declares_nothing() -> None:
    with pytest.raises(ConfigError, match=r"redis-platform:redis\.shards"):
        harness.run("dev", {"redis": redis_of("dev", shards=1)})


def test_rotation_slots() -> None:
    acl_settings = stack_settings.AclSettings(
        active={"reader": "green"}, rotating=("reader", "publisher")
    )
    assert acl_settings.slots("reader") == ("green", "blue")
    assert acl_settings.slots("publisher") == ("blue", "green")
    assert acl_settings.slots("backup") == ("blue",)


# ---- what an acknowledged write survives: min-replicas-to-write (make chaos) ------------


def test_prod_bounds_what_a_cut_off_primary_accepts_and_dev_does_not() -> None:
    """Measured on the netns twin (README, make chaos): with two replicas, writes a primary
    cut off from the majority accepted and lost dropped from 29 to 16 (5 s node-timeout,
    a 2 s lag bound); with one replica it made the whole partition unavailable."""
    prod, dev = harness.settings("prod").redis, harness.settings("dev").redis
    assert (prod.min_replicas_to_write, prod.min_replicas_max_lag_s) == (1, 2)
    assert dev.min_replicas_to_write == 0


@pytest.mark.parametrize(
    ("stack", "changes", "says"),
    [
        (
            "dev",
            {"minReplicasToWrite": 1},
            "is 1 with 1 replica per shard: after a failover the new primary has no replica "
            "and refuses every write until the failed node is back",
        ),
        ("prod", {"minReplicasToWrite": 2}, "is 2 with 2 replicas per shard"),
        ("dev", {"minReplicasMaxLagS": 5}, "has no effect with minReplicasToWrite 0"),
        (
            "prod",
            {"minReplicasMaxLagS": 10},
            "is 10 s, not below nodeTimeoutMs (5000 ms): a primary cut off from the majority "
            "stops at node-timeout first",
        ),
        ("prod", {"minReplicasMaxLagS": 0}, "greater than or equal to 1"),
    ],
)
def test_min_replicas_mistakes_are_refused(stack: str, changes: dict[str, Any], says: str) -> None:
    message = error_of(stack, {"redis": redis_of(stack, **changes)})
    assert "redis-platform:redis" in message, message
    assert says in message, message


def test_the_rendered_config_carries_the_bound() -> None:
    plan = harness.recorded("prod")
    config = plan.one("ConfigMap", "redis-cluster-config")["data"]["redis.conf"]
    assert "min-replicas-to-write 1" in config.splitlines()
    assert "min-replicas-max-lag 2" in config.splitlines()
    dev = harness.recorded("dev").one("ConfigMap", "redis-cluster-config")["data"]["redis.conf"]
    assert "min-replicas-to-write 0" in dev.splitlines()
