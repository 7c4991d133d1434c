"""The policy pack's rules (infra/policy/rules.py): each on small hand-made objects, one
that breaks it and one that keeps it; the recorded dev and prod plans (with the SSE
proxy chart's objects, as a real preview registers them) pass every rule; and each rule
refuses the recorded plan changed to break it, while every other rule stays quiet.

The adapter to the real pulumi-policy runs in the pack's own virtualenv:
tests/policy/pack_check.py (`make policy`)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import Any

import pytest

from infra import settings as stack_settings
from infra.k8s import common, redis_cluster
from infra.policy import detect, model, redis_config, rules
from tests.policy import mutations, plans

DEV = model.Stack("dev", "dev")
PROD = model.Stack("prod", "prod")
DIGEST = "@sha256:" + "a" * 64
LABELS = {"app.kubernetes.io/name": "redis-cluster"}
GOOD_CONF = (
    "port 0\ntls-port 6379\ntls-cluster yes\ntls-replication yes\n"
    "aclfile /etc/redis/acl/users.acl\ninclude /etc/redis/extra/extra.conf\n"
)
GOOD_ACL = "user default off resetchannels -@all\nuser admin on #0a1b ~* &* +@all\n"
RESOURCES = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}}


def as_resources(dicts: Sequence[dict[str, Any]]) -> list[model.Resource]:
    return [model.Resource(d["type"], d["name"], d["properties"], d["urn"]) for d in dicts]


def violations(
    rule: str, resources: Sequence[model.Resource], stack: model.Stack = DEV
) -> list[str]:
    return [v.message for v in rules.rule(rule).check(resources, stack)]


def k8s(kind: str, name: str, api: str = "v1", **fields: Any) -> model.Resource:
    """A Kubernetes object in namespace `redis`, shaped as the engine hands it over."""
    group, _, version = api.rpartition("/")
    props = {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "redis"}}
    token = f"kubernetes:{group or 'core'}/{version}:{kind}"
    return model.Resource(token, name, {**props, **fields}, f"urn:pulumi:t::p::{token}::{name}")


def gcp(token: str, resource_name: str, **props: Any) -> model.Resource:
    urn = f"urn:pulumi:t::p::{token}::{resource_name}"
    return model.Resource(token, resource_name, props, urn)


def pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "template": {
            "metadata": {"labels": LABELS},
            "spec": {"containers": list(containers), **spec},
        }
    }


def container(name: str = "app", image: str = "app" + DIGEST, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": image, "resources": RESOURCES, **fields}


def redis_stack(
    conf: Any = GOOD_CONF,
    acl: str = GOOD_ACL,
    args: Sequence[str] = (),
    pdb: bool = True,
    spread: str = "DoNotSchedule",
    replicas: int = 1,
    deny: bool = True,
) -> list[model.Resource]:
    """A minimal Redis deployment that keeps every rule: a StatefulSet whose redis.conf
    (a ConfigMap, by subPath), include (a ConfigMap) and ACL file (a Secret's base64
    `data`, as outputs carry it) are all in the stack, its PDB, default deny, reconcile Job."""
    redis = container(
        "redis",
        "redis" + DIGEST,
        command=["redis-server"],
        args=["/etc/redis/redis.conf", *args],
        ports=[{"containerPort": 6379.0, "name": "redis"}],
        volumeMounts=[
            {"name": "conf", "mountPath": "/etc/redis/redis.conf", "subPath": "redis.conf"},
            {"name": "extra", "mountPath": "/etc/redis/extra"},
            {"name": "acl", "mountPath": "/etc/redis/acl", "readOnly": True},
        ],
    )
    volumes = [
        {"name": "conf", "configMap": {"name": "redis-conf"}},
        {
            "name": "extra",
            "configMap": {"name": "redis-extra", "items": [{"key": "x", "path": "extra.conf"}]},
        },
        {"name": "acl", "secret": {"secretName": "redis-acl"}},
    ]
    spreads = [
        {
            "maxSkew": 1.0,
            "topologyKey": rules.ZONE_KEY,
            "whenUnsatisfiable": spread,
            "labelSelector": {"matchLabels": LABELS},
        }
    ]
    stack = [
        k8s("Namespace", "redis"),
        k8s(
            "StatefulSet",
            "redis-cluster",
            "apps/v1",
            spec={
                "replicas": 3.0 * (1 + replicas),
                "selector": {"matchLabels": LABELS},
                **pod(redis, volumes=volumes, topologySpreadConstraints=spreads),
            },
        ),
        k8s("ConfigMap", "redis-conf", data={"redis.conf": conf}),
        k8s("ConfigMap", "redis-extra", data={"x": "maxmemory 1gb\n"}),
        k8s("Secret", "redis-acl", data={"users.acl": base64.b64encode(acl.encode()).decode()}),
        k8s(
            "Job",
            "redis-reconcile",
            "batch/v1",
            spec=pod(
                container(
                    "reconcile",
                    command=["redisops"],
                    args=["reconcile", "--shards", "3", "--replicas", str(replicas)],
                )
            ),
        ),
    ]
    if pdb:
        stack.append(
            k8s(
                "PodDisruptionBudget",
                "redis",
                "policy/v1",
                spec={"maxUnavailable": 1.0, "selector": {"matchLabels": LABELS}},
            )
        )
    if deny:
        stack.append(
            k8s(
                "NetworkPolicy",
                "default-deny",
                "networking.k8s.io/v1",
                spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
            )
        )
    return stack


def backup_stack(
    age: float = 30.0, to: str = "gs://backups/redis", bucket: bool = True, suspend: bool = False
) -> list[model.Resource]:
    job = container("backup", command=["redisops"], args=["backup", "create", "--to", to])
    cron = k8s(
        "CronJob",
        "redis-backup",
        "batch/v1",
        spec={"schedule": "0 * * * *", "suspend": suspend, "jobTemplate": {"spec": pod(job)}},
    )
    lifecycle = [
        {"action": {"type": "Delete"}, "condition": {"age": age}},
        # noncurrent versions only: never shortens the backups' own retention
        {"action": {"type": "Delete"}, "condition": {"daysSinceNoncurrentTime": 1.0}},
    ]
    found = [cron]
    if bucket:
        found.append(
            gcp(
                "gcp:storage/bucket:Bucket",
                "bucket",
                name="backups",
                uniformBucketLevelAccess=True,
                publicAccessPrevention="enforced",
                lifecycleRules=lifecycle,
            )
        )
    return found


# ---- the rules agree with the program -----------------------------------------------------


def test_rules_use_the_programs_ports_zone_key_and_digest_form() -> None:
    assert redis_config.REDIS_PORT == common.REDIS_PORT
    assert redis_config.BUS_PORT == common.BUS_PORT
    assert rules.ZONE_KEY == redis_cluster.ZONE_KEY
    assert rules.DIGEST.pattern == stack_settings.DIGEST.pattern


def test_one_rule_per_guardrail_each_with_a_description() -> None:
    names = [r.name for r in rules.RULES]
    assert len(names) == len(set(names)) == 12
    assert all(
        r.description.endswith(".") and r.scope in ("resource", "stack") for r in rules.RULES
    )


@pytest.mark.parametrize(
    ("name", "environment", "prod"),
    [
        ("prod", None, True),
        ("prod-eu", "dev", True),
        ("org/redis-platform/prod", None, True),
        ("dev", "prod", True),
        ("dev", "dev", False),
        ("staging", None, False),
        ("", None, False),
    ],
)
def test_prod_is_the_config_or_the_stack_name(
    name: str, environment: str | None, prod: bool
) -> None:
    assert model.Stack(name, environment).is_prod is prod


# ---- the recorded plans ---------------------------------------------------------------


@pytest.fixture(scope="module", params=plans.STACKS)
def stack_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _stack(name: str) -> model.Stack:
    return model.Stack(name, plans.config(name)["redis-platform:environment"])


def test_recorded_plan_passes_every_rule(stack_name: str) -> None:
    resources = as_resources(plans.plain_resources(stack_name))
    assert rules.evaluate(resources, _stack(stack_name)) == []
    # not vacuous: the chart's objects are in, the Redis config and ACL file were found
    assert {r.object_name for r in resources if r.kind == "Deployment"} >= {"sse-proxy"}
    (config,) = redis_config.redis_configs(resources)
    assert config.problems == []
    assert config.last("port") is not None and config.last("aclfile") is not None
    assert "include" not in {d for d, _, _ in config.directives}  # expanded
    assert config.last("masteruser") is not None  # from the replication Secret's include


@pytest.mark.parametrize(
    ("stack_name", "mutation"),
    [pytest.param(s, m, id=f"{s}-{m.name}") for m in mutations.MUTATIONS for s in m.stacks],
)
def test_each_rule_refuses_the_recorded_plan_changed_to_break_it(
    stack_name: str, mutation: mutations.Mutation
) -> None:
    changed = as_resources(mutation.applied(plans.plain_resources(stack_name)))
    found = rules.evaluate(changed, _stack(stack_name))
    assert {v.rule for v in found} == ({mutation.rule} if mutation.rule else set()), [
        v.message for v in found
    ]


def test_prod_rules_do_not_apply_to_dev() -> None:
    for mutation in mutations.MUTATIONS:
        if mutation.stacks == ("prod",):
            changed = as_resources(mutation.applied(plans.plain_resources("prod")))
            assert rules.evaluate(changed, model.Stack("dev", "dev")) == [], mutation.name


def test_refusals_name_the_resource_and_never_echo_the_secret() -> None:
    leaks = {"pem-in-configmap": mutations.PEM_KEY, "password-in-env": "s3cr3t-literal-password"}
    for mutation in mutations.MUTATIONS:
        if mutation.name not in leaks:
            continue
        found = rules.evaluate(as_resources(mutation.applied(plans.plain_resources("dev"))), DEV)
        (violation,) = found
        assert violation.resource is not None and violation.resource.label in violation.message
        assert violation.urn and violation.urn.startswith("urn:pulumi:dev::redis-platform::")
        for line in leaks[mutation.name].splitlines():
            if "-----" not in line:
                assert line not in violation.message


# ---- Redis: port 0, TLS on the bus and replication, default user off -----------------------


def test_redis_stack_keeps_every_rule() -> None:
    assert rules.evaluate(redis_stack() + backup_stack(), PROD) == []


@pytest.mark.parametrize(
    ("conf", "args", "expected"),
    [
        (GOOD_CONF.replace("port 0\n", ""), (), "sets no 'port'"),
        (GOOD_CONF.replace("port 0", "port 6379"), (), "'port 6379'"),
        (GOOD_CONF, ("--port", "6380"), "'port 6380' (from the container's command line)"),
        (
            GOOD_CONF.replace("include /etc/redis/extra/extra.conf", "include /opt/other.conf"),
            (),
            "includes /opt/other.conf, which is not a ConfigMap or Secret",
        ),
    ],
)
def test_plaintext_port_refused(conf: str, args: tuple[str, ...], expected: str) -> None:
    (message,) = violations("redis-plaintext-port-off", redis_stack(conf, args=args))
    assert expected in message and "StatefulSet redis/redis-cluster" in message


def test_include_overrides_count() -> None:
    stack = redis_stack()
    extra = next(r for r in stack if r.object_name == "redis-extra")
    extra.props["data"]["x"] = "port 6379\ntls-replication no\n"
    assert violations("redis-plaintext-port-off", stack)
    (message,) = violations("redis-tls-cluster-and-replication", stack)
    assert (
        "tls-replication no' (from /etc/redis/extra/extra.conf (ConfigMap redis/redis-extra key x))"
        in message
    )


def test_values_unknown_during_preview_are_not_judged() -> None:
    assert rules.evaluate(redis_stack(conf=model.UNKNOWN, acl="ignored"), DEV) == []
    # an unknown include: what the known part sets is judged, what it lacks is not
    stack = redis_stack(GOOD_CONF.replace("port 0\ntls-port 6379\ntls-cluster yes\n", ""))
    files = {r.object_name: r.props["data"] for r in stack if r.kind == "ConfigMap"}
    files["redis-extra"]["x"] = model.UNKNOWN
    assert rules.evaluate(stack, DEV) == []
    files["redis-conf"]["redis.conf"] += "tls-cluster no\n"
    assert [v.rule for v in rules.evaluate(stack, DEV)] == ["redis-tls-cluster-and-replication"]


@pytest.mark.parametrize(
    ("conf", "args", "expected"),
    [
        (GOOD_CONF.replace("tls-cluster yes\n", ""), (), "does not set 'tls-cluster'"),
        (
            GOOD_CONF.replace("tls-replication yes", "tls-replication no"),
            (),
            "'tls-replication no'",
        ),
        (
            GOOD_CONF,
            ("--tls-cluster", "no"),
            "'tls-cluster no' (from the container's command line)",
        ),
    ],
)
def test_plaintext_bus_or_replication_refused(
    conf: str, args: tuple[str, ...], expected: str
) -> None:
    (message,) = violations("redis-tls-cluster-and-replication", redis_stack(conf, args=args))
    assert expected in message


@pytest.mark.parametrize(
    ("conf", "acl", "expected"),
    [
        (
            GOOD_CONF,
            GOOD_ACL.replace("default off", "default on nopass"),
            "turns the default user on",
        ),
        (GOOD_CONF, "user admin on #0a1b ~* +@all\n", "has no 'user default' line"),
        (
            GOOD_CONF.replace("aclfile /etc/redis/acl/", "aclfile /var/"),
            GOOD_ACL,
            "is not a ConfigMap or Secret",
        ),
        (GOOD_CONF.replace("aclfile", "# aclfile"), GOOD_ACL, "names no 'aclfile'"),
    ],
)
def test_default_user_on_refused(conf: str, acl: str, expected: str) -> None:
    (message,) = violations("redis-default-user-off", redis_stack(conf, acl))
    assert expected in message


def test_default_user_off_inline_or_switched_off_last_is_kept() -> None:
    inline = GOOD_CONF.replace("aclfile /etc/redis/acl/users.acl", "user default off")
    assert violations("redis-default-user-off", redis_stack(inline)) == []
    assert violations("redis-default-user-off", redis_stack(acl="user default on off\n")) == []


# ---- availability --------------------------------------------------------------------


def test_statefulset_without_a_budget_refused() -> None:
    (message,) = violations("redis-availability", redis_stack(pdb=False))
    assert "no PodDisruptionBudget selects its pods" in message


def test_soft_spread_and_no_replicas_refused_in_prod_only() -> None:
    soft = redis_stack(spread="ScheduleAnyway")
    assert violations("redis-availability", soft, DEV) == []
    (message,) = violations("redis-availability", soft, PROD)
    assert "spread hard across zones" in message
    (message,) = violations("redis-availability", redis_stack(replicas=0), PROD)
    assert "0 replicas per shard" in message


# ---- backups -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        (backup_stack(age=3.0), "deletes backups after 3 days"),
        (backup_stack(bucket=False), "which this stack does not declare"),
        (backup_stack(to="file:///tmp/backups"), "backs up to file:///tmp/backups"),
        (backup_stack(suspend=True), "is suspended"),
        ([], "no CronJob runs `redisops backup create`"),
    ],
)
def test_prod_without_retained_backups_refused(stack: list[model.Resource], expected: str) -> None:
    (message,) = violations("backups-retained-in-prod", stack, PROD)
    assert expected in message
    assert violations("backups-retained-in-prod", stack, DEV) == []


def test_a_retention_of_seven_days_is_enough() -> None:
    assert violations("backups-retained-in-prod", backup_stack(age=7.0), PROD) == []


# ---- network -------------------------------------------------------------------------


def test_namespace_without_default_deny_refused() -> None:
    (message,) = violations("default-deny-network-policy", redis_stack(deny=False))
    assert "namespace redis has no default-deny NetworkPolicy" in message
    allow_all = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}]}
    allowing = [
        *redis_stack(deny=False),
        k8s("NetworkPolicy", "allow", "networking.k8s.io/v1", spec=allow_all),
    ]
    assert violations("default-deny-network-policy", allowing)


def _service(kind: str, selector: dict[str, str], port: float, target: Any) -> model.Resource:
    return k8s(
        "Service",
        "svc",
        spec={"type": kind, "selector": selector, "ports": [{"port": port, "targetPort": target}]},
    )


@pytest.mark.parametrize(
    ("service", "refused"),
    [
        (_service("LoadBalancer", LABELS, 6379.0, "redis"), True),
        (_service("NodePort", {}, 443.0, "bus"), True),  # no selector, but Redis's port
        (_service("LoadBalancer", {"app": "sse-proxy"}, 443.0, "http"), False),  # the edge
        (_service("ClusterIP", LABELS, 6379.0, 6379.0), False),
    ],
)
def test_only_redis_services_are_kept_inside(service: model.Resource, refused: bool) -> None:
    assert bool(violations("redis-not-exposed", [*redis_stack(), service])) is refused


# ---- images and resources --------------------------------------------------------------


def test_tags_refused_in_prod_only() -> None:
    tagged = k8s("Deployment", "app", "apps/v1", spec=pod(container(image="app:1.0")))
    (message,) = violations("images-pinned-by-digest", [tagged], PROD)
    assert "runs 'app:1.0', not pinned by digest" in message
    assert violations("images-pinned-by-digest", [tagged], DEV) == []
    pinned = k8s("Deployment", "app", "apps/v1", spec=pod(container()))
    assert violations("images-pinned-by-digest", [pinned], PROD) == []


def test_containers_without_requests_or_memory_limit_refused() -> None:
    init = {"name": "init", "image": "i" + DIGEST, "resources": {"requests": {"cpu": "1"}}}
    job = k8s("Job", "job", "batch/v1", spec=pod(container(), initContainers=[init]))
    (message,) = violations("container-resources", [job])
    assert "container 'init' sets no requests.memory, limits.memory" in message
    assert (
        violations("container-resources", [k8s("Job", "job", "batch/v1", spec=pod(container()))])
        == []
    )


# ---- secrets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (mutations.PEM_KEY, "a PEM private key"),
        ("requirepass hunter2hunter2\n", "a Redis password directive"),
        ("user app on >plaintext ~* +@all\n", "a plaintext ACL password"),
        ('{"redis_url": "rediss://app:hunter2@redis:6379"}', "credentials in a URL"),
        ('{"api_key": "k-123456"}', "a value for 'api_key'"),
        ("JWT_SECRET=abcdef123456\n", "a value for 'JWT_SECRET'"),
    ],
)
def test_secret_material_in_a_configmap_refused(text: str, found: str) -> None:
    (message,) = violations(
        "no-secrets-in-configmaps-or-env", [k8s("ConfigMap", "cm", data={"f": text})]
    )
    assert f"key 'f' holds {found}" in message


@pytest.mark.parametrize(
    "text",
    [
        '{"jwt_secret_file": "/run/jwt", "allow_query_token": false, "cookie_name": "t"}',
        '{"volumes": [{"secret": {"secretName": "redis-tls"}}], "passwordKey": "password"}',
        'REDISCLI_AUTH=$(cat "$USERS_DIR/monitoring/password") redis-cli --tls\n',
        "tls-key-file /etc/tls/tls.key\nmasteruser replication\n-----BEGIN CERTIFICATE-----\n",
        "user default off resetchannels -@all\nuser admin on #0a1b ~* +@all\n",
    ],
)
def test_references_and_hashes_are_not_secrets(text: str) -> None:
    assert (
        violations("no-secrets-in-configmaps-or-env", [k8s("ConfigMap", "cm", data={"f": text})])
        == []
    )


def test_literal_secret_in_env_refused_references_kept() -> None:
    env = [
        {"name": "REDIS_PASSWORD", "value": "hunter2hunter2"},
        {"name": "REDIS_PASSWORD_FILE", "value": "/etc/users/app/password"},
        {"name": "REDISCLI_AUTH", "valueFrom": {"secretKeyRef": {"name": "s", "key": "password"}}},
        {"name": "TOKEN_TTL", "value": "3600"},
        {"name": "ALLOW_QUERY_TOKEN", "value": "false"},
    ]
    deployment = k8s("Deployment", "app", "apps/v1", spec=pod(container(env=env)))
    (message,) = violations("no-secrets-in-configmaps-or-env", [deployment])
    assert "env REDIS_PASSWORD holds a literal value" in message and "hunter2" not in message


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("REDIS_PASSWORD", True),
        ("jwtSecret", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("REDISCLI_AUTH", True),
        ("REDIS_PASSWORD_FILE", False),
        ("secretName", False),
        ("passwordKey", False),
        ("TOKEN_TTL", False),
        ("REDIS_EXPORTER_TLS_CLIENT_KEY_FILE", False),
    ],
)
def test_secret_like_names(name: str, secret: bool) -> None:
    assert detect.secret_like_name(name) is secret


# ---- Google Cloud ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        (
            {"uniformBucketLevelAccess": False, "publicAccessPrevention": "enforced"},
            ["uniformBucketLevelAccess is False"],
        ),
        (
            {"uniformBucketLevelAccess": True, "publicAccessPrevention": "inherited"},
            ["publicAccessPrevention is 'inherited'"],
        ),
        ({}, ["uniformBucketLevelAccess is None", "publicAccessPrevention is None"]),
        ({"uniformBucketLevelAccess": True, "publicAccessPrevention": "enforced"}, []),
    ],
)
def test_bucket_access(props: dict[str, Any], expected: list[str]) -> None:
    found = violations(
        "bucket-access-locked-down", [gcp("gcp:storage/bucket:Bucket", "b", **props)]
    )
    assert len(found) == len(expected)
    assert all(e in m for e, m in zip(expected, found, strict=True))


@pytest.mark.parametrize(
    ("resource", "refused"),
    [
        (
            gcp("gcp:projects/iAMMember:IAMMember", "m", role="roles/editor", member="user:a@b.c"),
            True,
        ),
        (
            gcp(
                "gcp:storage/bucketIAMBinding:BucketIAMBinding", "b", role="roles/owner", members=[]
            ),
            True,
        ),
        (
            gcp(
                "gcp:projects/iAMPolicy:IAMPolicy",
                "p",
                policyData=json.dumps(
                    {"bindings": [{"role": "roles/viewer", "members": ["group:x@y.z"]}]}
                ),
            ),
            True,
        ),
        (
            gcp(
                "gcp:secretmanager/secretIamMember:SecretIamMember",
                "s",
                role="roles/secretmanager.secretAccessor",
            ),
            False,
        ),
        (
            gcp("gcp:projects/iAMCustomRole:IAMCustomRole", "c", role="roles/owner"),
            False,
        ),  # not a grant
    ],
)
def test_primitive_roles_refused(resource: model.Resource, refused: bool) -> None:
    found = violations("no-primitive-iam-roles", [resource])
    assert bool(found) is refused
    assert all(re.search(r"grants roles/(owner|editor|viewer)", m) for m in found)
