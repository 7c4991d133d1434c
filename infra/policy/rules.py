"""The platform's guardrails: pure functions over what one stack declares.

Each rule reads the stack's resources (model.Resource: type token, name, properties as
the engine gives them) and the stack (model.Stack: prod or not), and yields violations
whose message names the resource, what is wrong and how to fix it, and never repeats a
secret. Nothing here imports Pulumi: pack.py wraps the rules for pulumi-policy (in the
pack's own virtualenv), the tests run them in the project's virtualenv on the recorded plan.

Two principles hold throughout:
- A value the engine does not know yet (UNKNOWN, computed during preview) is never a
  violation: the engine runs the policies again at `pulumi up`, with the value known.
- What a guard needs but cannot find is a violation: a missing `port` directive is
  Redis's default 6379, no ACL line for `default` is an open default user, a config file
  from outside the stack cannot be verified.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

from infra.policy.detect import is_literal, secret_like_name, secret_material
from infra.policy.kube import (
    ALL_CONTAINERS,
    PodTemplate,
    argv_of,
    container_name,
    containers,
    object_files,
    option,
    pod_template,
    selects,
    service_selects,
)
from infra.policy.model import (
    Finding,
    Resource,
    ResourceCheck,
    Rule,
    Stack,
    StackCheck,
    Unknown,
    Violation,
    as_list,
    as_map,
    as_number,
    as_str,
    is_unknown,
)
from infra.policy.redis_config import (
    REDIS_PORT,
    REDIS_PORT_NAMES,
    REDIS_PORTS,
    RedisConfig,
    redis_configs,
    redis_workloads,
)

ZONE_KEY: Final = "topology.kubernetes.io/zone"
MIN_BACKUP_RETENTION_DAYS: Final = 7
PRIMITIVE_ROLES: Final = frozenset({"roles/owner", "roles/editor", "roles/viewer"})
DIGEST: Final = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
# CPU limits are left out on purpose: CFS throttling of redis-server shows as latency
# spikes; requests place the pods and the memory limit bounds what one pod may take.
REQUIRED_RESOURCES: Final = (("requests", "cpu"), ("requests", "memory"), ("limits", "memory"))

RULES: list[Rule] = []


def resource_rule(name: str, description: str) -> Callable[[ResourceCheck], ResourceCheck]:
    """Register a rule that judges one resource at a time (its check yields messages)."""

    def register(check: ResourceCheck) -> ResourceCheck:
        def findings(resources: Sequence[Resource], stack: Stack) -> Iterator[Finding]:
            for res in resources:
                for message in check(res, stack):
                    yield res, message

        RULES.append(Rule(name, description, "resource", findings))
        return check

    return register


def stack_rule(name: str, description: str) -> Callable[[StackCheck], StackCheck]:
    """Register a rule that judges the stack's resources together (it yields findings)."""

    def register(check: StackCheck) -> StackCheck:
        RULES.append(Rule(name, description, "stack", check))
        return check

    return register


def evaluate(resources: Sequence[Resource], stack: Stack) -> list[Violation]:
    """Every rule's violations for a whole stack."""
    return [v for rule in RULES for v in rule.check(resources, stack)]


def rule(name: str) -> Rule:
    """The registered rule called `name`."""
    for candidate in RULES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no policy rule named {name!r}; known: {', '.join(r.name for r in RULES)}")


# ---- Redis: what redis-server runs -------------------------------------------------------


def _unverifiable(config: RedisConfig, what: str) -> Iterator[Finding]:
    for problem in config.problems:
        yield (
            config.workload,
            f"{config.where()} {problem}, so '{what}' cannot be verified; start it with the "
            "redis.conf redisops.conf renders, from a ConfigMap of this stack",
        )


@stack_rule(
    "redis-plaintext-port-off",
    "Redis serves clients over TLS only: the effective redis.conf has `port 0`.",
)
def plaintext_port_off(resources: Sequence[Resource], stack: Stack) -> Iterator[Finding]:
    for config in redis_configs(resources):
        yield from _unverifiable(config, "port 0")
        if config.problems:
            continue
        port = config.last("port")
        if port is None and not config.incomplete:
            yield (
                config.workload,
                f"{config.where()}: redis.conf sets no 'port', so Redis listens in plaintext "
                f"on {REDIS_PORT}; set 'port 0' and serve clients on 'tls-port'",
            )
        elif port is not None and port[0][:1] != ["0"]:
            yield (
                config.workload,
                f"{config.where()}: 'port {' '.join(port[0])}' (from {port[1]}) opens a "
                "plaintext port; set 'port 0' (clients use 'tls-port')",
            )


@stack_rule(
    "redis-tls-cluster-and-replication",
    "The cluster bus and replication run over TLS: `tls-cluster yes`, `tls-replication yes`.",
)
def tls_cluster_and_replication(resources: Sequence[Resource], stack: Stack) -> Iterator[Finding]:
    for config in redis_configs(resources):
        yield from _unverifiable(config, "tls-cluster yes, tls-replication yes")
        if config.problems:
            continue
        for directive, carries in (
            ("tls-cluster", "the cluster bus"),
            ("tls-replication", "replication"),
        ):
            found = config.last(directive)
            if found is None and not config.incomplete:
                yield (
                    config.workload,
                    f"{config.where()}: redis.conf does not set '{directive}' (default no), "
                    f"so {carries} runs in plaintext; set '{directive} yes'",
                )
            elif found is not None and [a.lower() for a in found[0][:1]] != ["yes"]:
                yield (
                    config.workload,
                    f"{config.where()}: '{directive} {' '.join(found[0])}' (from {found[1]}) "
                    f"sends {carries} in plaintext; set '{directive} yes'",
                )


def _default_user_on(lines: Sequence[Sequence[str]]) -> bool | None:
    """Whether `user default ...` lines leave the user on; None when no line names it."""
    state: bool | None = None
    for tokens in lines:
        if len(tokens) < 2 or tokens[0].lower() != "user" or tokens[1] != "default":
            continue
        state = False  # an ACL line builds the user from scratch: off unless `on`
        for acl_rule in tokens[2:]:
            if acl_rule.lower() == "on":
                state = True
            elif acl_rule.lower() in ("off", "reset"):
                state = False
    return state


_ACL_FIX = "make its line 'user default off resetchannels -@all' (redisops.acl renders it)"


def _acl_file_findings(config: RedisConfig, path: str) -> Iterator[Finding]:
    mounted = config.files.lookup(path)
    if mounted is None or mounted.content is None:
        yield (
            config.workload,
            f"{config.where()}: the ACL file {path} is not a ConfigMap or Secret of this "
            "stack, so 'user default off' cannot be verified; mount the Secret holding the "
            "ACL file redisops.acl renders",
        )
        return
    if is_unknown(mounted.content):
        return
    state = _default_user_on([line.split() for line in str(mounted.content).splitlines()])
    if state is None:
        yield (
            config.workload,
            f"{config.where()}: the ACL file {path} ({mounted.source}) has no 'user default' "
            f"line, so Redis creates the default user on, without a password; {_ACL_FIX}",
        )
    elif state:
        yield (
            config.workload,
            f"{config.where()}: the ACL file {path} ({mounted.source}) turns the default "
            f"user on (clients that skip AUTH get its rights); {_ACL_FIX}",
        )


@stack_rule(
    "redis-default-user-off",
    "Redis's `default` user is off: every client authenticates as a named ACL user.",
)
def default_user_off(resources: Sequence[Resource], stack: Stack) -> Iterator[Finding]:
    for config in redis_configs(resources):
        yield from _unverifiable(config, "user default off")
        if config.problems:
            continue
        aclfile = config.last("aclfile")
        if aclfile is not None:
            yield from _acl_file_findings(config, aclfile[0][0] if aclfile[0] else "")
            continue
        if config.incomplete:
            continue
        inline = [["user", *args] for name, args, _ in config.directives if name == "user"]
        if _default_user_on(inline) is not False:
            yield (
                config.workload,
                f"{config.where()}: redis.conf names no 'aclfile' and no 'user default off', "
                "so the default user is on without a password; set 'aclfile' to the ACL "
                "file redisops.acl renders",
            )


# ---- availability: disruption budget, zone spread, replicas -----------------------------


def _reconcile_shape(resources: Sequence[Resource], namespace: str) -> tuple[float, float] | None:
    """(shards, replicas per shard) the reconcile Job forms the cluster with
    (`redisops reconcile --shards S --replicas R`), or None when no Job says."""
    for res in resources:
        template = pod_template(res)
        if template is None or res.kind not in ("Job", "CronJob") or res.namespace != namespace:
            continue
        for container in containers(template.spec, ("containers",)):
            argv = argv_of(container)
            shards = as_number(option(argv, "shards"))
            replicas = as_number(option(argv, "replicas"))
            if "reconcile" in argv and shards is not None and replicas is not None:
                return shards, replicas
    return None


def _budget_findings(
    sts: Resource, template: PodTemplate, resources: Sequence[Resource]
) -> Iterator[Finding]:
    covering = [
        pdb
        for pdb in resources
        if pdb.kind == "PodDisruptionBudget"
        and pdb.namespace == sts.namespace
        and selects(as_map(pdb.props.get("spec")).get("selector"), template.labels)
    ]
    if not covering:
        yield (
            sts,
            f"{sts.label}: no PodDisruptionBudget selects its pods, so a node drain may evict "
            "a primary and its replicas at once; add one with maxUnavailable 1 selecting "
            "the pod labels",
        )
    for pdb in covering:
        spec = as_map(pdb.props.get("spec"))
        if spec.get("maxUnavailable") is None and spec.get("minAvailable") is None:
            yield pdb, f"{pdb.label} selects {sts.label} but limits nothing; set maxUnavailable 1"


def _spread_findings(sts: Resource, template: PodTemplate) -> Iterator[Finding]:
    constraints = template.spec.get("topologySpreadConstraints")
    if is_unknown(constraints):
        return
    hard = [
        c
        for c in map(as_map, as_list(constraints))
        if c.get("topologyKey") == ZONE_KEY
        and c.get("whenUnsatisfiable") == "DoNotSchedule"
        and selects(c.get("labelSelector"), template.labels)
    ]
    if not hard:
        yield (
            sts,
            f"{sts.label}: in prod its pods must spread hard across zones; add a "
            f"topologySpreadConstraint on {ZONE_KEY} with whenUnsatisfiable DoNotSchedule "
            "selecting the pod labels (redis.zoneSpread: hard)",
        )


def _replica_findings(sts: Resource, resources: Sequence[Resource]) -> Iterator[Finding]:
    shape = _reconcile_shape(resources, sts.namespace)
    if shape is None:
        yield (
            sts,
            f"{sts.label}: no reconcile Job in {sts.namespace} declares --shards and "
            "--replicas, so replicas per shard cannot be verified; deploy the reconcile "
            "Job (infra/k8s/jobs.py)",
        )
        return
    shards, replicas = shape
    pods = as_number(as_map(sts.props.get("spec")).get("replicas"))
    if replicas < 1:
        yield (
            sts,
            f"{sts.label}: the cluster is formed with {replicas:g} replicas per shard; prod "
            "needs at least 1 (a node failure would lose its shard): set redis.replicas to 1 "
            "or more",
        )
    elif pods is not None and pods < shards * (1 + replicas):
        yield (
            sts,
            f"{sts.label}: runs {pods:g} pods, but {shards:g} shards with {replicas:g} "
            f"replicas each need {shards * (1 + replicas):g}; set spec.replicas to match",
        )


@stack_rule(
    "redis-availability",
    "The Redis StatefulSet has a PodDisruptionBudget; in prod it spreads hard across zones "
    "and every shard has at least one replica.",
)
def availability(resources: Sequence[Resource], stack: Stack) -> Iterator[Finding]:
    for sts, template in redis_workloads(resources, frozenset({"StatefulSet"})):
        yield from _budget_findings(sts, template, resources)
        if stack.is_prod:
            yield from _spread_findings(sts, template)
            yield from _replica_findings(sts, resources)


# ---- backups ---------------------------------------------------------------------------


def _backup_destinations(template: PodTemplate) -> Iterator[str | None]:
    """The `--to` of each `redisops backup create` container (None: not given)."""
    for container in containers(template.spec, ("containers",)):
        argv = argv_of(container)
        if ("backup", "create") in itertools.pairwise(argv):
            yield option(argv, "to")


def _live_delete_age(lifecycle_rule: Mapping[str, Any], prefix: str) -> float | None:
    """After how many days a lifecycle rule deletes live objects under `prefix`; None when
    it never deletes them. Outputs spell unset conditions as 0 or "": treated as unset."""
    if as_str(as_map(lifecycle_rule.get("action")).get("type")) != "Delete":
        return None
    condition = as_map(lifecycle_rule.get("condition"))
    noncurrent_only = (
        (as_number(condition.get("daysSinceNoncurrentTime")) or 0) > 0
        or (as_number(condition.get("numNewerVersions")) or 0) > 0
        or bool(as_str(condition.get("noncurrentTimeBefore")))
        or as_str(condition.get("withState")) == "ARCHIVED"
    )
    prefixes = [p for p in as_list(condition.get("matchesPrefixes")) if isinstance(p, str)]
    if noncurrent_only or (
        prefixes and not any(prefix.startswith(p) or p.startswith(prefix) for p in prefixes)
    ):
        return None
    # no age (or 0): deleted as soon as the other conditions hold
    return as_number(condition.get("age")) or as_number(condition.get("daysSinceCustomTime")) or 0.0


def _retention_findings(
    res: Resource, destination: str | None, buckets: Mapping[str | None, Resource]
) -> Iterator[Finding]:
    match = re.match(r"^gs://([^/]+)/?(.*)$", destination or "")
    if match is None:
        yield (
            res,
            f"{res.label} backs up to {destination or 'nowhere (no --to)'}; prod backups go to "
            "a gs:// bucket declared in this stack (backup.location)",
        )
        return
    name, prefix = match.groups()
    bucket = buckets.get(name)
    if bucket is None:
        yield (
            res,
            f"{res.label} backs up to gs://{name}, which this stack does not declare, so a "
            f"retention of {MIN_BACKUP_RETENTION_DAYS}+ days cannot be verified; declare the "
            "bucket in this stack (the gcp section)",
        )
        return
    lifecycle = bucket.props.get("lifecycleRules")
    if is_unknown(lifecycle):
        return
    for lifecycle_rule in map(as_map, as_list(lifecycle)):
        age = _live_delete_age(lifecycle_rule, prefix)
        if age is not None and age < MIN_BACKUP_RETENTION_DAYS:
            yield (
                bucket,
                f"{bucket.label} deletes backups after {age:g} days (lifecycle rule Delete, "
                f"age {age:g}); prod keeps them at least {MIN_BACKUP_RETENTION_DAYS}: set "
                f"backup.retentionDays to {MIN_BACKUP_RETENTION_DAYS} or more",
            )


@stack_rule(
    "backups-retained-in-prod",
    "In prod a CronJob runs `redisops backup create` into a bucket of the stack that keeps "
    f"backups at least {MIN_BACKUP_RETENTION_DAYS} days.",
)
def backups_retained(resources: Sequence[Resource], stack: Stack) -> Iterator[Finding]:
    if not stack.is_prod:
        return
    buckets = {
        as_str(r.props.get("name")): r for r in resources if r.type == "gcp:storage/bucket:Bucket"
    }
    backing_up = False
    for res in resources:
        template = pod_template(res)
        if res.kind != "CronJob" or template is None:
            continue
        for destination in _backup_destinations(template):
            backing_up = True
            if as_map(res.props.get("spec")).get("suspend") is True:
                yield res, f"{res.label} is suspended: prod takes no backups; remove spec.suspend"
            yield from _retention_findings(res, destination, buckets)
    if not backing_up:
        yield (
            None,
            "no CronJob runs `redisops backup create`: prod must take backups; set "
            "backup.enabled true in the stack config",
        )


# ---- network ---------------------------------------------------------------------------


def _denies_all(spec: Any) -> bool:
    if is_unknown(spec):
        return True  # judged at `pulumi up`
    spec = as_map(spec)
    selector = spec.get("podSelector")
    types = {t for t in as_list(spec.get("policyTypes")) if isinstance(t, str)}
    return (
        isinstance(selector, Mapping)
        and not as_map(selector).get("matchLabels")
        and not as_map(selector).get("matchExpressions")
        and {"Ingress", "Egress"} <= types
        and not as_list(spec.get("ingress"))
        and not as_list(spec.get("egress"))
    )


@stack_rule(
    "default-deny-network-policy",
    "Every namespace the stack creates or runs Redis in has a default-deny NetworkPolicy "
    "(every pod, Ingress and Egress, no rules).",
)
def default_deny(resources: Sequence[Resource], stack: Stack) -> Iterator[Finding]:
    namespaces: dict[str, Resource] = {}
    for res in resources:
        if res.kind == "Namespace":
            namespaces.setdefault(res.object_name, res)
    for workload, _ in redis_workloads(resources):
        namespaces.setdefault(workload.namespace, workload)
    denied = {
        r.namespace
        for r in resources
        if r.kind == "NetworkPolicy" and _denies_all(r.props.get("spec"))
    }
    for namespace, res in sorted(namespaces.items()):
        if namespace not in denied:
            yield (
                res,
                f"namespace {namespace} has no default-deny NetworkPolicy; add one with "
                "podSelector {} and policyTypes [Ingress, Egress] and no rules, then allow "
                "each flow by name (infra/k8s/network.py)",
            )


def _exposes_redis_port(spec: Mapping[str, Any]) -> bool:
    for port in map(as_map, as_list(spec.get("ports"))):
        target = port.get("targetPort")
        if as_number(port.get("port")) in REDIS_PORTS or as_number(target) in REDIS_PORTS:
            return True
        if isinstance(target, str) and target in REDIS_PORT_NAMES:
            return True
    return False


@stack_rule(
    "redis-not-exposed",
    "No LoadBalancer or NodePort Service reaches Redis (it selects Redis pods or targets a "
    "Redis port); other Services, such as the SSE proxy's edge, may.",
)
def redis_not_exposed(resources: Sequence[Resource], stack: Stack) -> Iterator[Finding]:
    pods = [(workload.namespace, t.labels) for workload, t in redis_workloads(resources)]
    for res in resources:
        spec = as_map(res.props.get("spec"))
        kind = spec.get("type")
        if res.kind != "Service" or kind not in ("LoadBalancer", "NodePort"):
            continue
        selected = any(
            ns == res.namespace and service_selects(spec.get("selector"), labels)
            for ns, labels in pods
        )
        if selected or _exposes_redis_port(spec):
            yield (
                res,
                f"{res.label} is type {kind} and reaches Redis, which exposes it outside the "
                "cluster; use type ClusterIP (clients connect from inside, through the "
                "NetworkPolicy)",
            )


# ---- workloads: images and resources -----------------------------------------------------


@resource_rule(
    "images-pinned-by-digest",
    "In prod every container image is pinned by digest (repository@sha256:<64 hex>).",
)
def images_pinned(res: Resource, stack: Stack) -> Iterator[str]:
    template = pod_template(res)
    if not stack.is_prod or template is None:
        return
    for container in containers(template.spec, ALL_CONTAINERS):
        image = container.get("image")
        if isinstance(image, str) and not DIGEST.match(image):
            yield (
                f"{res.label}: container '{container_name(container)}' runs {image!r}, not "
                "pinned by digest; prod runs repository@sha256:<64 hex> only (set "
                "platformImage / redis.exporterImage in Pulumi.prod.yaml to the published "
                "digest)"
            )


def _set(value: Any) -> bool:
    return is_unknown(value) or (value is not None and value != "")


@resource_rule(
    "container-resources",
    "Every container and init container sets requests.cpu, requests.memory and limits.memory.",
)
def container_resources(res: Resource, stack: Stack) -> Iterator[str]:
    template = pod_template(res)
    if template is None:
        return
    for container in containers(template.spec):
        resources = container.get("resources")
        if is_unknown(resources):
            continue
        missing = [
            f"{group}.{name}"
            for group, name in REQUIRED_RESOURCES
            if not _set(as_map(as_map(resources).get(group)).get(name))
        ]
        if missing:
            yield (
                f"{res.label}: container '{container_name(container)}' sets no "
                f"{', '.join(missing)}; set resources.requests.cpu, requests.memory and "
                "limits.memory"
            )


# ---- secrets ---------------------------------------------------------------------------

_SECRET_FIX: Final = (
    "keep it in a Secret and reference it (env valueFrom.secretKeyRef, or a secret volume)"
)


@resource_rule(
    "no-secrets-in-configmaps-or-env",
    "No secret material in ConfigMaps or in env `value`s: Secrets are referenced through "
    "secretKeyRef or secret volumes.",
)
def no_plain_secrets(res: Resource, stack: Stack) -> Iterator[str]:
    if res.kind == "ConfigMap":
        files = object_files(res)
        if isinstance(files, Unknown):
            return
        for key, content in sorted(files.items()):
            for what in secret_material(content) if isinstance(content, str) else []:
                yield f"{res.label}: key '{key}' holds {what}; {_SECRET_FIX}"
        return
    template = pod_template(res)
    for container in containers(template.spec, ALL_CONTAINERS) if template else []:
        for env in map(as_map, as_list(container.get("env"))):
            name, value = as_str(env.get("name")) or "?", env.get("value")
            if not isinstance(value, str):
                continue  # valueFrom, or not known yet
            found = secret_material(value)
            if secret_like_name(name) and is_literal(value):
                found.insert(0, "a literal value")
            for what in found:
                yield (
                    f"{res.label}: container '{container_name(container)}' env {name} holds "
                    f"{what}; {_SECRET_FIX}"
                )


# ---- Google Cloud ----------------------------------------------------------------------


@resource_rule(
    "bucket-access-locked-down",
    "Storage buckets use uniform bucket-level access, with public access prevention enforced.",
)
def bucket_locked_down(res: Resource, stack: Stack) -> Iterator[str]:
    if res.type != "gcp:storage/bucket:Bucket":
        return
    uniform = res.props.get("uniformBucketLevelAccess")
    if not is_unknown(uniform) and uniform is not True:
        yield (
            f"{res.label}: uniformBucketLevelAccess is {uniform!r}; set it to true (no object "
            "ACLs: IAM alone decides who reads the backups)"
        )
    prevention = res.props.get("publicAccessPrevention")
    if not is_unknown(prevention) and prevention != "enforced":
        yield (
            f'{res.label}: publicAccessPrevention is {prevention!r}; set it to "enforced" '
            "(then no grant can make the backups public)"
        )


_IAM_GRANT: Final = re.compile(r"(?i)iam(member|binding|policy)$")


def _granted_roles(res: Resource) -> Iterator[str]:
    role = res.props.get("role")
    if isinstance(role, str):
        yield role
    policy = res.props.get("policyData")  # IAMPolicy resources: a JSON document
    if isinstance(policy, str):
        try:
            document = json.loads(policy)
        except ValueError:
            return
        for binding in as_list(as_map(document).get("bindings")):
            role = as_map(binding).get("role")
            if isinstance(role, str):
                yield role


@resource_rule(
    "no-primitive-iam-roles",
    "No IAM member, binding or policy grants a primitive role (roles/owner, roles/editor, "
    "roles/viewer).",
)
def no_primitive_roles(res: Resource, stack: Stack) -> Iterator[str]:
    if not res.type.startswith("gcp:") or not _IAM_GRANT.search(res.type.rsplit(":", 1)[-1]):
        return
    for role in _granted_roles(res):
        if role in PRIMITIVE_ROLES:
            yield (
                f"{res.label} grants {role}, a primitive role (thousands of permissions); "
                "grant the predefined role that covers what the member does "
                "(e.g. roles/storage.objectViewer)"
            )
