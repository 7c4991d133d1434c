"""Lowering redis.shards or redis.replicas would shrink the StatefulSet and delete pods
that hold data before anything moved their slots away. The program compares the stack's
shape with the one its last `pulumi up` deployed (its own `redisShape` output) and refuses
a smaller one unless the stack acknowledges that exact scale-in."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.k8s import common
from redisops.errors import ConfigError
from tests.infra import harness


def redis_of(stack: str, **changes: Any) -> dict[str, Any]:
    redis: dict[str, Any] = json.loads(harness.stack_config(stack)["redis-platform:redis"])
    return {**redis, **changes}


def pods(plan: harness.Plan) -> int:
    return int(plan.one("StatefulSet", common.STATEFULSET)["spec"]["replicas"])


def test_the_first_rollout_records_the_shape_it_deployed() -> None:
    plan = harness.run("dev")
    shape = {"shards": 3, "replicas": 1, "storageClass": "standard-rwo", "storageSize": "5Gi"}
    assert plan.outputs["redisShape"] == (shape, False)
    assert plan.stack_references == ["organization/redis-platform/dev"]  # its own outputs
    assert pods(plan) == 6


def test_growing_and_keeping_the_shape_need_no_acknowledgement() -> None:
    assert (
        pods(harness.run("dev", previous_outputs={"redisShape": {"shards": 3, "replicas": 1}})) == 6
    )
    grown = harness.run(
        "dev",
        {"redis": redis_of("dev", shards=4, replicas=2)},
        previous_outputs={"redisShape": {"shards": 3, "replicas": 1}},
    )
    assert pods(grown) == 12


@pytest.mark.parametrize(
    ("previous", "now", "key", "deleted"),
    [
        (
            {"shards": 4, "replicas": 1},
            {"shards": 3, "replicas": 1},
            "redis.shards",
            "redis-cluster-6, redis-cluster-7",
        ),
        (
            {"shards": 3, "replicas": 2},
            {"shards": 3, "replicas": 1},
            "redis.replicas",
            "redis-cluster-6 .. redis-cluster-8",
        ),
        (
            {"shards": 4, "replicas": 2},
            {"shards": 3, "replicas": 1},
            "redis.shards",
            "redis-cluster-6 .. redis-cluster-11",
        ),
    ],
)
def test_a_smaller_shape_is_refused_before_the_statefulset_shrinks(
    previous: dict[str, int], now: dict[str, int], key: str, deleted: str
) -> None:
    message = harness.refusal(
        "dev", {"redis": redis_of("dev", **now)}, previous_outputs={"redisShape": previous}
    )
    assert message is not None, "a smaller shape was accepted"
    assert message.startswith(f"redis-platform:{key}: ")
    assert deleted in message  # which pods, with their data, would go
    assert "redisops scale --shards" in message and "scale-in.md" in message  # move data first
    ack = f"{previous['shards']}x{previous['replicas']}"
    assert f'redis.acknowledgeScaleInFrom: "{ack}"' in message


def test_an_acknowledged_scale_in_shrinks_the_statefulset() -> None:
    plan = harness.run(
        "dev",
        {"redis": redis_of("dev", shards=3, replicas=1, acknowledgeScaleInFrom="4x1")},
        previous_outputs={"redisShape": {"shards": 4, "replicas": 1}},
    )
    assert pods(plan) == 6
    assert plan.outputs["redisShape"][0]["shards"] == 3


def test_an_acknowledgement_covers_only_the_scale_in_it_names() -> None:
    # left in the stack file after its scale-in, it must not let the next one through
    message = harness.refusal(
        "dev",
        {"redis": redis_of("dev", shards=3, replicas=0, acknowledgeScaleInFrom="4x1")},
        previous_outputs={"redisShape": {"shards": 3, "replicas": 1}},
    )
    assert message is not None
    assert message.startswith("redis-platform:redis.replicas: ")
    assert 'acknowledgeScaleInFrom: "3x1"' in message


def test_a_malformed_acknowledgement_names_the_key_and_the_form() -> None:
    with pytest.raises(ConfigError, match=r"redis\.acknowledgeScaleInFrom: .*like \"4x1\""):
        harness.settings("dev", {"redis": redis_of("dev", acknowledgeScaleInFrom="four")})


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"storageSize": "10Gi"}, "redis.storageSize"),
        ({"storageClass": "premium-rwo"}, "redis.storageClass"),
    ],
)
def test_a_change_to_the_volume_claim_template_is_refused(change: dict[str, str], key: str) -> None:
    # Pulumi can only replace a StatefulSet whose volume claim templates change: every
    # Redis pod at once, and the retained volumes would keep their old size and class.
    deployed = {"shards": 3, "replicas": 1, "storageClass": "standard-rwo", "storageSize": "5Gi"}
    message = harness.refusal(
        "dev", {"redis": redis_of("dev", **change)}, previous_outputs={"redisShape": deployed}
    )
    assert message is not None and message.startswith(f"redis-platform:{key}: ")
    assert "every Redis pod at once" in message


@pytest.mark.parametrize(
    ("previous", "ack"),
    [(None, "4x1"), ({"shards": 3, "replicas": 1}, "4x1"), ({"shards": 3, "replicas": 1}, "3x1")],
)
def test_an_acknowledgement_that_acknowledges_nothing_is_refused(
    previous: dict[str, int] | None, ack: str
) -> None:
    # left in the stack file after its scale-in (or set by mistake), it would be ignored
    message = harness.refusal(
        "dev",
        {"redis": redis_of("dev", acknowledgeScaleInFrom=ack)},
        previous_outputs={"redisShape": previous} if previous else None,
    )
    assert message is not None
    assert message.startswith("redis-platform:redis.acknowledgeScaleInFrom: ")
    assert "remove it" in message


def test_fewer_shards_with_more_pods_is_still_refused_clearly() -> None:
    message = harness.refusal(
        "dev",
        {"redis": redis_of("dev", shards=3, replicas=2)},
        previous_outputs={"redisShape": {"shards": 4, "replicas": 1}},
    )
    assert message is not None and message.startswith("redis-platform:redis.shards: ")
    assert "fewer shards than the cluster" in message and "deletes ," not in message
