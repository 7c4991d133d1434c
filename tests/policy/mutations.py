"""The recorded plans changed to break one rule each, as plain data (standard library
only: `pack_check.py` uses them in the policy pack's virtualenv too).

A mutation works on the engine-shaped resources of `plans.py` with secrets unwrapped
(`unwrap_secrets`) and names the one rule that must refuse the result; the tests assert
that exactly that rule does.
"""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Pulumi's wire signature for secret values (sdk/go/common/resource/properties.go).
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
# PEM-armoured random bytes, made when the tests run: what the secret detector sees in a
# leaked key (its armour), with no key in the repository (the policy venv has no
# cryptography to make a real one).
_ARMOUR = "PRIVATE " + "KEY"
PEM_KEY = (
    f"-----BEGIN {_ARMOUR}-----\n"
    f"{base64.b64encode(os.urandom(48)).decode()}\n"
    f"-----END {_ARMOUR}-----\n"
)

Resources = list[dict[str, Any]]


def unwrap_secrets(value: Any) -> Any:
    """`value` with Pulumi's secret wrappers replaced by what they hold."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return unwrap_secrets(value.get("value"))
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


def kube(
    resources: Resources, kind: str, name: str | None = None, namespace: str = "redis"
) -> list[dict[str, Any]]:
    """The properties of the Kubernetes objects of `kind` (and metadata.name `name`) in
    `namespace`."""
    found = []
    for r in resources:
        props, metadata = r["properties"], r["properties"].get("metadata", {})
        if (
            r["type"].startswith("kubernetes:")
            and props.get("kind") == kind
            and metadata.get("namespace", namespace) == namespace
            and (name is None or metadata.get("name") == name)
        ):
            found.append(props)
    return found


def one(resources: Resources, kind: str, name: str) -> dict[str, Any]:
    found = kube(resources, kind, name)
    assert len(found) == 1, f"expected one {kind} redis/{name}, found {len(found)}"
    return found[0]


def drop(resources: Resources, kind: str, name: str) -> None:
    target = one(resources, kind, name)
    resources[:] = [r for r in resources if r["properties"] is not target]


def pod_spec(props: dict[str, Any]) -> dict[str, Any]:
    spec = props["spec"]
    if props["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    result: dict[str, Any] = spec["template"]["spec"]
    return result


def container(props: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod_spec(props)
    found: list[dict[str, Any]] = [
        c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name
    ]
    assert len(found) == 1, f"expected one container {name}"
    return found[0]


def _conf(resources: Resources) -> dict[str, Any]:
    data: dict[str, Any] = one(resources, "ConfigMap", "redis-cluster-config")["data"]
    return data


def _edit_conf(old: str, new: str) -> Callable[[Resources], None]:
    def apply(resources: Resources) -> None:
        data = _conf(resources)
        assert old in data["redis.conf"], old
        data["redis.conf"] = data["redis.conf"].replace(old, new)

    return apply


def _add_redis_args(*args: str) -> Callable[[Resources], None]:
    def apply(resources: Resources) -> None:
        container(one(resources, "StatefulSet", "redis-cluster"), "redis")["args"] += list(args)

    return apply


def _default_user_on(resources: Resources) -> None:
    data = one(resources, "Secret", "redis-acl")["stringData"]
    assert data["users.acl"].startswith("user default off")
    data["users.acl"] = data["users.acl"].replace("user default off", "user default on nopass", 1)


def _spread_soft(resources: Resources) -> None:
    spec = pod_spec(one(resources, "StatefulSet", "redis-cluster"))
    for constraint in spec["topologySpreadConstraints"]:
        constraint["whenUnsatisfiable"] = "ScheduleAnyway"


def _no_replicas(resources: Resources) -> None:
    (job,) = kube(resources, "Job")
    args = container(job, "reconcile")["args"]
    args[args.index("--replicas") + 1] = "0"


def _bucket(resources: Resources) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        r["properties"] for r in resources if r["type"] == "gcp:storage/bucket:Bucket"
    ]
    assert len(found) == 1, "expected one bucket"
    return found[0]


def _short_retention(resources: Resources) -> None:
    for rule in _bucket(resources)["lifecycleRules"]:
        if "age" in rule["condition"]:
            rule["condition"]["age"] = 3.0


def _drop_backups(resources: Resources) -> None:
    drop(resources, "CronJob", "redis-backup")


def _service_type(name: str, kind: str) -> Callable[[Resources], None]:
    def apply(resources: Resources) -> None:
        one(resources, "Service", name)["spec"]["type"] = kind

    return apply


def _exporter_tag(resources: Resources) -> None:
    exporter = container(one(resources, "StatefulSet", "redis-cluster"), "exporter")
    exporter["image"] = exporter["image"].split("@")[0]


def _proxy_tag(resources: Resources) -> None:
    proxy = pod_spec(one(resources, "Deployment", "sse-proxy"))["containers"][0]
    proxy["image"] = proxy["image"].split("@")[0] + ":0.1.0"


def _no_limits(resources: Resources) -> None:
    del container(one(resources, "StatefulSet", "redis-cluster"), "exporter")["resources"]["limits"]


def _pem_in_configmap(resources: Resources) -> None:
    one(resources, "ConfigMap", "redis-smoke-target")["data"]["node.key"] = PEM_KEY


def _password_in_env(resources: Resources) -> None:
    exporter = container(one(resources, "StatefulSet", "redis-cluster"), "exporter")
    (password,) = [e for e in exporter["env"] if e["name"] == "REDIS_PASSWORD"]
    del password["valueFrom"]
    password["value"] = "s3cr3t-literal-password"


def _public_bucket(resources: Resources) -> None:
    _bucket(resources)["publicAccessPrevention"] = "inherited"


def _fine_grained_bucket(resources: Resources) -> None:
    _bucket(resources)["uniformBucketLevelAccess"] = False


def _editor_binding(resources: Resources) -> None:
    (member,) = [r for r in resources if r["name"] == "node-logging-logWriter"]
    member["properties"]["role"] = "roles/editor"


@dataclass(frozen=True)
class Mutation:
    """A change to a recorded plan that exactly `rule` must refuse (None: no rule may)."""

    name: str
    rule: str | None
    apply: Callable[[Resources], None]
    stacks: tuple[str, ...] = ("dev", "prod")

    def applied(self, resources: Resources) -> Resources:
        changed = copy.deepcopy(resources)
        self.apply(changed)
        return changed


MUTATIONS = (
    Mutation(
        "conf-plaintext-port", "redis-plaintext-port-off", _edit_conf("\nport 0\n", "\nport 6379\n")
    ),
    Mutation("args-plaintext-port", "redis-plaintext-port-off", _add_redis_args("--port", "6379")),
    Mutation("acl-default-user-on", "redis-default-user-off", _default_user_on),
    Mutation("conf-no-aclfile", "redis-default-user-off", _edit_conf("\naclfile ", "\n# aclfile ")),
    Mutation(
        "conf-bus-plaintext",
        "redis-tls-cluster-and-replication",
        _edit_conf("tls-cluster yes", "tls-cluster no"),
    ),
    Mutation(
        "conf-replication-unset",
        "redis-tls-cluster-and-replication",
        _edit_conf("\ntls-replication yes", ""),
    ),
    Mutation(
        "args-replication-plaintext",
        "redis-tls-cluster-and-replication",
        _add_redis_args("--tls-replication", "no"),
    ),
    Mutation(
        "no-pdb", "redis-availability", lambda r: drop(r, "PodDisruptionBudget", "redis-cluster")
    ),
    Mutation("soft-zone-spread", "redis-availability", _spread_soft, ("prod",)),
    Mutation("no-replicas", "redis-availability", _no_replicas, ("prod",)),
    Mutation("short-retention", "backups-retained-in-prod", _short_retention, ("prod",)),
    Mutation("no-backups", "backups-retained-in-prod", _drop_backups, ("prod",)),
    Mutation(
        "no-default-deny",
        "default-deny-network-policy",
        lambda r: drop(r, "NetworkPolicy", "default-deny"),
    ),
    Mutation(
        "redis-load-balancer", "redis-not-exposed", _service_type("redis-cluster", "LoadBalancer")
    ),
    Mutation("redis-node-port", "redis-not-exposed", _service_type("redis-cluster", "NodePort")),
    Mutation("proxy-load-balancer", None, _service_type("sse-proxy", "LoadBalancer")),
    Mutation("exporter-tag", "images-pinned-by-digest", _exporter_tag, ("prod",)),
    Mutation("proxy-tag", "images-pinned-by-digest", _proxy_tag, ("prod",)),
    Mutation("no-limits", "container-resources", _no_limits),
    Mutation("pem-in-configmap", "no-secrets-in-configmaps-or-env", _pem_in_configmap),
    Mutation("password-in-env", "no-secrets-in-configmaps-or-env", _password_in_env),
    Mutation("public-bucket", "bucket-access-locked-down", _public_bucket),
    Mutation("fine-grained-bucket", "bucket-access-locked-down", _fine_grained_bucket),
    Mutation("editor-binding", "no-primitive-iam-roles", _editor_binding),
)
