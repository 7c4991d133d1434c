"""The whole plan of `pulumi up -s dev|prod`, recorded under Pulumi's mock runtime from
the real stack files, and what must hold for it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from infra.k8s import common, network
from infra.k8s.redis_cluster import ZONE_KEY
from redisops import acl
from redisops.local.settings import TwinSettings
from redisops.local.twin import Twin
from tests.infra import harness

KUBE = "1.33"
STACKS = ("dev", "prod")
# Custom resources the Kubernetes schemas do not know (checked by hand below).
CRDS = {"PodMonitoring", "BackendConfig", "FrontendConfig", "ManagedCertificate", "PrometheusRule"}


@pytest.fixture(scope="module", params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def plan_of(stack: str) -> harness.Plan:
    return harness.recorded(stack)


@pytest.fixture
def plan(stack: str) -> harness.Plan:
    return plan_of(stack)


@pytest.fixture
def settings(stack: str) -> Any:
    return harness.settings(stack)


@pytest.fixture(scope="module")
def chart_objects() -> dict[str, list[dict[str, Any]]]:
    """The sse-proxy chart rendered by the real Helm engine with the values each stack's
    program passes to `helm.v4.Chart` (hook pods dropped: Pulumi's Chart skips hooks)."""
    return {name: harness.chart_objects(plan_of(name)) for name in STACKS}


# ---- structure --------------------------------------------------------------------------


def test_every_resource_is_parented_and_kubernetes_uses_the_explicit_provider(
    plan: harness.Plan,
) -> None:
    providers = {
        r.type.split(":")[-1]: r for r in plan.resources if r.type.startswith("pulumi:providers:")
    }
    components = {r.urn for r in plan.resources if not r.custom}
    assert len(components) >= 7
    for resource in plan.resources:
        if resource.type.startswith("pulumi:providers:") or resource.urn in components:
            continue
        assert resource.parent in components, f"{resource.type} {resource.name} has no component"
        package = resource.type.split(":")[0]
        if package in ("kubernetes", "gcp"):
            expected = providers[package].urn
            assert resource.provider.startswith(expected + "::"), resource.name
    # Everything namespaced waits for its namespace (the platform's, the drill's scratch one).
    namespaces = {r.object_name: r.urn for r in plan.kube("Namespace")}
    for resource in plan.kubernetes_objects:
        namespace = resource.manifest.get("metadata", {}).get("namespace")
        if namespace in namespaces:
            assert namespaces[namespace] in resource.dependencies, resource.name


def test_namespace_enforces_restricted_pod_security(plan: harness.Plan, settings: Any) -> None:
    labels = plan.one("Namespace", settings.namespace)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


def test_statefulset_shape(plan: harness.Plan, settings: Any) -> None:
    sts = plan.one("StatefulSet", common.STATEFULSET)
    spec = sts["spec"]
    assert spec["replicas"] == settings.redis.shards * (1 + settings.redis.replicas)
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == common.HEADLESS
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"] == common.REDIS_SELECTOR
    assert common.REDIS_SELECTOR.items() <= spec["template"]["metadata"]["labels"].items()
    redis = next(c for c in pod["containers"] if c["name"] == "redis")
    assert redis["resources"]["requests"] == {
        "cpu": settings.redis.resources.cpu,
        "memory": settings.redis.resources.memory,
    }
    # one Redis build: the servers run the image whose tools verify and restore backups
    assert redis["image"] == settings.platform_image
    assert pod["securityContext"]["runAsUser"] == common.PLATFORM_UID
    # each node announces its stable pod DNS name
    announce = " ".join(redis["args"])
    assert (
        f"--cluster-announce-hostname $(POD_NAME).{common.HEADLESS}.{settings.namespace}.svc."
        f"{settings.cluster_domain}" in announce
    )
    # probes run redis-cli over TLS as the monitoring user (never admin)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        command = " ".join(redis[probe]["exec"]["command"])
        assert "scripts/" in command, probe
    assert "preStop" in redis["lifecycle"]
    assert pod["terminationGracePeriodSeconds"] >= 30
    # restricted everywhere
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"] + pod.get("initContainers", []):
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert ctx["readOnlyRootFilesystem"] is True
    exporter = next(c for c in pod["containers"] if c["name"] == "exporter")
    env = {e["name"]: e for e in exporter["env"]}
    assert env["REDIS_USER"]["value"] == acl.MONITORING
    assert env["REDIS_ADDR"]["value"].startswith("rediss://")
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == settings.redis.storage_size
    assert claim["spec"]["storageClassName"] == settings.redis.storage_class


def test_zone_spread_is_hard_exactly_where_configured(plan: harness.Plan, settings: Any) -> None:
    pod = plan.one("StatefulSet", common.STATEFULSET)["spec"]["template"]["spec"]
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    expected = "DoNotSchedule" if settings.redis.zone_spread == "hard" else "ScheduleAnyway"
    assert spread[ZONE_KEY]["whenUnsatisfiable"] == expected
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == expected
    for constraint in spread.values():
        assert constraint["labelSelector"]["matchLabels"] == common.REDIS_SELECTOR
    if settings.environment == "prod":
        assert expected == "DoNotSchedule"


def test_pdb_allows_one_pod_down(plan: harness.Plan) -> None:
    (pdb,) = plan.kube("PodDisruptionBudget")
    spec = pdb.manifest["spec"]
    assert spec["maxUnavailable"] == 1
    assert spec["selector"]["matchLabels"] == common.REDIS_SELECTOR


def test_services(plan: harness.Plan) -> None:
    headless = plan.one("Service", common.HEADLESS)["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True  # formation needs unready pods' names
    client = plan.one("Service", common.CLIENT_SERVICE)["spec"]
    assert [p["port"] for p in client["ports"]] == [common.REDIS_PORT]
    assert client["selector"] == common.REDIS_SELECTOR


# ---- network ----------------------------------------------------------------------------

EXPECTED_POLICIES = {
    "default-deny",
    "allow-dns",
    "redis-client-port",
    "redis-bus",
    "redis-to-redis",
    "redis-metrics",
    "jobs-to-redis",
    "jobs-to-api-server",
    "smoke-to-proxy",
    "ops-metrics",
    "backup-to-google-apis",
    "smoke-to-google-apis",
    "ops-metrics-to-google-apis",
}


def _policies(plan: harness.Plan, namespace: str = "redis") -> dict[str, dict[str, Any]]:
    """name -> spec of the NetworkPolicies of one namespace (default: the platform's)."""
    return {
        r.object_name: r.manifest["spec"]
        for r in plan.kube("NetworkPolicy")
        if r.manifest["metadata"]["namespace"] == namespace
    }


def test_default_deny_and_exactly_the_allowed_flows(plan: harness.Plan) -> None:
    policies = _policies(plan)
    assert set(policies) == EXPECTED_POLICIES
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for name, spec in policies.items():
        if name not in ("default-deny", "allow-dns"):
            assert spec["podSelector"], f"{name} selects every pod"
        for rule in spec.get("ingress", []) + spec.get("egress", []):
            peers = rule.get("from", rule.get("to"))
            assert peers, f"{name}: a rule without peers allows everyone"
            assert rule.get("ports"), f"{name}: a rule without ports allows every port"
            for peer in peers:
                block = peer.get("ipBlock")
                if block and block["cidr"] == "0.0.0.0/0":
                    assert "10.0.0.0/8" in block["except"], f"{name}: 0.0.0.0/0 incl. the VPC"


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy podSelector (matchLabels, matchExpressions In) selects a pod."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression  # the only operator the plan uses
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _egress_to_addresses(plan: harness.Plan, labels: dict[str, str]) -> set[tuple[str, int]]:
    """(CIDR, port) of every ipBlock egress the namespace's policies allow a pod with
    `labels` (pods, namespaces and DNS are other flows)."""
    allowed = set()
    for spec in _policies(plan).values():
        if "Egress" not in spec["policyTypes"] or not _selects(spec["podSelector"], labels):
            continue
        for rule in spec.get("egress", []):
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    allowed |= {(peer["ipBlock"]["cidr"], p["port"]) for p in rule["ports"]}
    return allowed


def _pod_labels(plan: harness.Plan) -> dict[str, dict[str, str]]:
    cron = plan.one("CronJob", "redis-backup")
    (job,) = plan.kube("Job")
    return {
        "backup": cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
        "smoke": plan.outputs["smokeJob"][0]["spec"]["template"]["metadata"]["labels"],
        "reconcile": job.manifest["spec"]["template"]["metadata"]["labels"],
        "redis": plan.one("StatefulSet", common.STATEFULSET)["spec"]["template"]["metadata"][
            "labels"
        ],
        "ops-metrics": plan.one("Deployment", common.OPS_METRICS)["spec"]["template"]["metadata"][
            "labels"
        ],
    }


def test_google_apis_and_the_metadata_server_only_for_the_pods_that_read_the_bucket(
    plan: harness.Plan, settings: Any
) -> None:
    # Workload Identity: a pod gets its Google token from the metadata server, then calls
    # Cloud Storage on 443. Backups write; the smoke Job reads the newest backup's age.
    google = {(cidr, 443) for cidr in settings.network.google_apis_cidrs}
    metadata = set(network.METADATA_SERVER)
    api_server = {(cidr, 443) for cidr in settings.network.api_server_cidrs}
    flows = {pod: _egress_to_addresses(plan, labels) for pod, labels in _pod_labels(plan).items()}
    assert flows["backup"] == google | metadata
    # only dev's smoke suite calls the API (it deletes a pod); prod's never does
    assert flows["smoke"] == google | metadata | (
        api_server if settings.environment == "dev" else set()
    )
    assert flows["reconcile"] == api_server
    assert flows["redis"] == set()
    # the platform metrics read backup and drill outcomes from the bucket
    assert flows["ops-metrics"] == google | metadata


def test_client_namespaces_get_a_client_certificate_when_redis_requires_one(
    plan: harness.Plan, settings: Any
) -> None:
    # tls-auth-clients yes: a pod the NetworkPolicy admits still needs a certificate
    assert settings.redis.tls_auth_clients == "yes" and settings.clients.namespaces
    issued = {
        (r.inputs["metadata"]["namespace"], r.object_name): r
        for r in plan.kube("Secret")
        if r.object_name == "redis-client-tls"
    }
    assert set(issued) == {(ns, "redis-client-tls") for ns in settings.clients.namespaces}
    for secret in issued.values():
        assert set(secret.inputs["stringData"]) == {"ca.crt", "tls.crt", "tls.key"}
        data = secret.raw["stringData"]  # the key marked secret (or the whole of it)
        assert harness.is_secret(data) or harness.is_secret(data["tls.key"])
    certs = [
        r
        for r in plan.of_type("tls:index/locallySignedCert:LocallySignedCert")
        if r.name.startswith("clients-")
    ]
    assert len(certs) == len(settings.clients.namespaces)
    for cert in certs:
        assert "client_auth" in cert.inputs["allowedUses"]
        assert "server_auth" not in cert.inputs["allowedUses"]
    assert plan.outputs["secretNames"][0]["clientTls"] == dict.fromkeys(
        settings.clients.namespaces, "redis-client-tls"
    )


def test_no_client_certificates_where_redis_does_not_require_them() -> None:
    redis = json.loads(harness.stack_config("dev")["redis-platform:redis"])
    plan = harness.run("dev", {"redis": {**redis, "tlsAuthClients": "optional"}})
    assert not [r for r in plan.kube("Secret") if r.object_name == "redis-client-tls"]


def test_bus_port_only_from_redis_pods(plan: harness.Plan) -> None:
    for name, spec in _policies(plan).items():
        for rule in spec.get("ingress", []):
            if any(p["port"] == common.BUS_PORT for p in rule["ports"]):
                assert rule["from"] == [{"podSelector": {"matchLabels": common.REDIS_SELECTOR}}]
                assert spec["podSelector"] == {"matchLabels": common.REDIS_SELECTOR}, name


def test_redis_client_port_peers(plan: harness.Plan, settings: Any) -> None:
    (rule,) = _policies(plan)["redis-client-port"]["ingress"]
    assert rule["ports"] == [{"port": common.REDIS_PORT, "protocol": "TCP"}]
    selectors = [p["podSelector"]["matchLabels"] for p in rule["from"] if "podSelector" in p]
    assert common.CLIENT_LABEL in selectors and common.PROXY_SELECTOR in selectors
    namespaces = [
        p["namespaceSelector"]["matchExpressions"][0]["values"]
        for p in rule["from"]
        if "namespaceSelector" in p
    ]
    assert namespaces == (
        [list(settings.clients.namespaces)] if settings.clients.namespaces else []
    )


def test_metrics_only_from_managed_prometheus(plan: harness.Plan) -> None:
    (rule,) = _policies(plan)["redis-metrics"]["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gmp-system"}}}
    ]
    assert rule["ports"] == [{"port": common.EXPORTER_PORT, "protocol": "TCP"}]


def test_proxy_ingress_only_from_the_load_balancer_and_its_scrapers(
    stack: str, settings: Any, chart_objects: dict[str, list[dict[str, Any]]]
) -> None:
    (policy,) = [o for o in chart_objects[stack] if o["kind"] == "NetworkPolicy"]
    clients, scrapes = policy["spec"]["ingress"]
    cidrs = {p["ipBlock"]["cidr"] for p in clients["from"] if "ipBlock" in p}
    assert cidrs == set(settings.network.load_balancer_cidrs)
    assert [p for p in clients["from"] if "ipBlock" not in p] == [{"podSelector": {}}]
    assert scrapes == {
        "ports": [{"port": "http", "protocol": "TCP"}],
        "from": [_ns_peer(network.GMP_NAMESPACE)],
    }


# ---- who reaches whom: the namespace's policies (and the chart's) evaluated ---------------


def _ns_peer(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def _all_policies(
    plan: harness.Plan, chart: list[dict[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    """(namespace, spec) of every NetworkPolicy: the program's and the chart's (rendered
    into the release's namespace)."""
    (release,) = plan.of_type("kubernetes:helm.sh/v4:Chart")
    found = [
        (r.manifest["metadata"]["namespace"], r.manifest["spec"])
        for r in plan.kube("NetworkPolicy")
    ]
    found += [
        (release.inputs["namespace"], o["spec"]) for o in chart if o["kind"] == "NetworkPolicy"
    ]
    return found


def _port_in(rule: dict[str, Any], port: int, named: dict[str, int]) -> bool:
    if "ports" not in rule:
        return True
    return any(
        p.get("protocol", "TCP") == "TCP" and (p["port"] == port or named.get(p["port"]) == port)
        for p in rule["ports"]
    )


def _peer_matches(
    peer: dict[str, Any], policy_ns: str, from_ns: str, from_labels: dict[str, str]
) -> bool:
    if "ipBlock" in peer:  # addresses, not pods (pod-to-pod flows are by label here)
        return False
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": from_ns}):
            return False
    elif from_ns != policy_ns:
        return False
    return "podSelector" not in peer or _selects(peer["podSelector"], from_labels)


def _admitted(
    policies: list[tuple[str, dict[str, Any]]],
    pod: tuple[str, dict[str, str], dict[str, int]],
    source: tuple[str, dict[str, str]],
    port: int,
) -> bool:
    """Whether the policies admit a connection from a pod (namespace, labels) to `port`
    of `pod` (namespace, labels, named container ports), as Kubernetes evaluates them:
    a pod no Ingress policy selects admits everything, else some rule must."""
    namespace, labels, named = pod
    selecting = [
        spec
        for ns, spec in policies
        if ns == namespace
        and "Ingress" in spec["policyTypes"]
        and _selects(spec["podSelector"], labels)
    ]
    if not selecting:
        return True
    for spec in selecting:
        for rule in spec.get("ingress", []):
            if not _port_in(rule, port, named):
                continue
            if "from" not in rule or any(
                _peer_matches(peer, namespace, *source) for peer in rule["from"]
            ):
                return True
    return False


def _scrape_targets(
    plan: harness.Plan, chart: list[dict[str, Any]]
) -> list[tuple[str, dict[str, Any], tuple[str, dict[str, str], dict[str, int]]]]:
    """(PodMonitoring name, its spec, the pod it selects) for every PodMonitoring of the
    plan and the chart; asserts each selects exactly one of the declared workloads."""
    (release,) = plan.of_type("kubernetes:helm.sh/v4:Chart")
    templates = [
        (r.manifest["metadata"]["namespace"], r.manifest["spec"]["template"])
        for r in plan.kube("StatefulSet") + plan.kube("Deployment")
    ]
    templates += [
        (release.inputs["namespace"], o["spec"]["template"])
        for o in chart
        if o["kind"] == "Deployment"
    ]
    monitors = [
        (r.manifest["metadata"]["namespace"], r.manifest) for r in plan.kube("PodMonitoring")
    ]
    monitors += [(release.inputs["namespace"], o) for o in chart if o["kind"] == "PodMonitoring"]
    targets = []
    for namespace, monitor in monitors:
        selected = [
            (ns, template)
            for ns, template in templates
            if ns == namespace
            and _selects(monitor["spec"]["selector"], template["metadata"]["labels"])
        ]
        assert len(selected) == 1, (
            f"PodMonitoring {monitor['metadata']['name']} selects {len(selected)}"
        )
        ((ns, template),) = selected
        named = {
            port["name"]: port["containerPort"]
            for container in template["spec"]["containers"]
            for port in container.get("ports", [])
        }
        targets.append(
            (
                monitor["metadata"]["name"],
                monitor["spec"],
                (ns, template["metadata"]["labels"], named),
            )
        )
    return targets


COLLECTOR = (network.GMP_NAMESPACE, {"app.kubernetes.io/name": "collector"})


def test_managed_prometheus_reaches_every_scrape_target(
    stack: str, plan: harness.Plan, chart_objects: dict[str, list[dict[str, Any]]]
) -> None:
    policies = _all_policies(plan, chart_objects[stack])
    targets = _scrape_targets(plan, chart_objects[stack])
    # the Redis exporters, the SSE proxy (the chart's own policy), the platform metrics
    assert {name for name, _, _ in targets} == {
        common.STATEFULSET,
        common.PROXY_RELEASE,
        common.OPS_METRICS,
    }
    for name, spec, pod in targets:
        for endpoint in spec["endpoints"]:
            port = pod[2][endpoint["port"]]
            assert _admitted(policies, pod, COLLECTOR, port), (
                f"gmp-system cannot scrape {name}:{port}"
            )
            # and only Managed Prometheus: a client namespace's pods may not scrape
            assert not _admitted(policies, pod, ("agents", {}), port), f"{name}:{port} is open"
    # the model is not trivially permissive: what no rule allows is refused
    redis = next(pod for name, _, pod in targets if name == common.STATEFULSET)
    assert not _admitted(policies, redis, COLLECTOR, common.REDIS_PORT)
    assert not _admitted(policies, redis, COLLECTOR, common.BUS_PORT)


def test_nothing_else_reaches_the_platform_metrics(
    stack: str, plan: harness.Plan, chart_objects: dict[str, list[dict[str, Any]]]
) -> None:
    policies = _all_policies(plan, chart_objects[stack])
    labels = _pod_labels(plan)["ops-metrics"]
    namespace = harness.settings(stack).namespace
    selecting = [
        spec
        for ns, spec in policies
        if ns == namespace
        and "Ingress" in spec["policyTypes"]
        and _selects(spec["podSelector"], labels)
    ]
    rules = [rule for spec in selecting for rule in spec.get("ingress", [])]
    assert rules == [
        {
            "from": [_ns_peer(network.GMP_NAMESPACE)],
            "ports": [{"port": common.OPS_METRICS_PORT, "protocol": "TCP"}],
        }
    ]
    assert {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]} in selecting  # deny
    # every other pod of the plan, on any port, is refused; so are other namespaces
    pod = (namespace, labels, {"metrics": common.OPS_METRICS_PORT})
    for other, other_labels in _pod_labels(plan).items():
        for port in (common.OPS_METRICS_PORT, common.REDIS_PORT, common.PROXY_PORT):
            assert not _admitted(policies, pod, (namespace, other_labels), port), other
    assert not _admitted(
        policies, pod, (namespace, dict(common.PROXY_SELECTOR)), common.OPS_METRICS_PORT
    )
    assert not _admitted(policies, pod, ("agents", {}), common.OPS_METRICS_PORT)
    assert not _admitted(policies, pod, COLLECTOR, common.EXPORTER_PORT)
    # and it may call out to nothing but DNS and (with backups) Google APIs: no Redis
    egress_peers = [
        peer
        for ns, spec in policies
        if ns == namespace
        and "Egress" in spec["policyTypes"]
        and _selects(spec["podSelector"], labels)
        for rule in spec.get("egress", [])
        for peer in rule["to"]
        if "ipBlock" not in peer
    ]
    assert egress_peers == [
        {**_ns_peer("kube-system"), "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    ]


# ---- secrets ----------------------------------------------------------------------------


def _leaks(value: Any, secrets: list[str]) -> list[str]:
    return [s[:24] for s in secrets for text in harness.strings_in(value) if s.strip() in text]


def test_no_generated_secret_outside_secrets(plan: harness.Plan) -> None:
    assert len(plan.generated_secrets) >= 9 + 5  # passwords + private keys
    for resource in plan.resources:
        if resource.type == "kubernetes:core/v1:Secret":
            continue
        if resource.is_kubernetes_object:
            assert not _leaks(resource.inputs, plan.generated_secrets), resource.name
        else:
            # pulumi-tls inputs carry keys: they must stay marked secret in the state
            for key, value in resource.raw.items():
                if _leaks(value, plan.generated_secrets):
                    assert harness.is_secret(value), f"{resource.name}.{key} is not secret"


def test_outputs_hold_no_secret_unless_marked(plan: harness.Plan) -> None:
    assert {"namespace", "redisClientEndpoint", "caCertificate", "secretNames", "proxyUrl"} <= set(
        plan.outputs
    )
    for name, (value, secret) in plan.outputs.items():
        if not secret:
            assert not _leaks(value, plan.generated_secrets), name
    smoke_job, _ = plan.outputs["smokeJob"]
    assert smoke_job["metadata"]["generateName"] == "redis-smoke-"


def test_secrets_marked_secret_and_acl_file_holds_hashes_only(plan: harness.Plan) -> None:
    (acl_secret,) = plan.kube("Secret", "redis-acl")
    text = acl_secret.inputs["stringData"]["users.acl"]
    generated = [s for s in plan.generated_secrets if not s.startswith("-----")]
    assert len(generated) == len(plan.of_type("random:index/randomPassword:RandomPassword"))
    for password in generated:
        assert password not in text
    for role in acl.ROLES:
        (secret,) = plan.kube("Secret", f"redis-user-{role}")
        password = secret.inputs["stringData"]["password"]
        assert password in generated
        assert f"#{hashlib.sha256(password.encode()).hexdigest()}" in text
    for secret in plan.kube("Secret"):
        if _leaks(secret.inputs, plan.generated_secrets):
            assert harness.is_secret(secret.raw["stringData"]), secret.object_name


def test_acl_file_equals_the_twin_rendering(plan: harness.Plan, settings: Any) -> None:
    (acl_secret,) = plan.kube("Secret", "redis-acl")
    password_of = {
        s.inputs["stringData"]["username"]: s.inputs["stringData"]["password"]
        for s in plan.kube("Secret")
        if s.object_name.startswith("redis-user-")
    }
    expected = acl.render_acl_file(
        {role: [acl.hash_password(password_of[role])] for role in acl.ROLES},
        settings.streams.patterns,
    )
    assert acl_secret.inputs["stringData"]["users.acl"] == expected


def test_rotation_adds_a_second_password_and_renames_the_reconcile_job() -> None:
    before = plan_of("dev")
    rotating = harness.run("dev", {"acl": {"rotating": ["reader"]}})
    text = rotating.kube("Secret", "redis-acl")[0].inputs["stringData"]["users.acl"]
    (reader_line,) = [line for line in text.splitlines() if line.startswith("user reader ")]
    assert reader_line.count("#") == 2
    assert rotating.outputs["reconcileJob"][0] != before.outputs["reconcileJob"][0]
    # handing out the other replication password re-runs it too (masterauth)
    switched = harness.run(
        "dev", {"acl": {"rotating": ["replication"], "active": {"replication": "green"}}}
    )
    only_rotating = harness.run("dev", {"acl": {"rotating": ["replication"]}})
    assert switched.outputs["reconcileJob"][0] != only_rotating.outputs["reconcileJob"][0]
    # the same config again names the same Job: nothing to redo
    assert harness.run("dev").outputs["reconcileJob"][0] == before.outputs["reconcileJob"][0]


# ---- configuration equals the twin's ------------------------------------------------------

# Lines only the twin has (it daemonizes local processes) or that differ by host.
_PROCESS = {
    "pidfile",
    "logfile",
    "daemonize",
    "bind",
    "port",
    "tls-port",
    "cluster-preferred-endpoint-type",
}


def _normalized(conf: str) -> dict[str, str]:
    result = {}
    for line in conf.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if key in _PROCESS:
            continue
        result[key] = "<path>" if value.strip('"').startswith("/") else value
    return result


def test_redis_conf_equals_the_twin_rendering(
    plan: harness.Plan, settings: Any, tmp_path: Path
) -> None:
    config = plan.one("ConfigMap", "redis-cluster-config")["data"]["redis.conf"]
    twin_settings = TwinSettings(
        replicas=settings.redis.replicas,
        node_timeout_ms=settings.redis.node_timeout_ms,
        maxmemory=settings.redis.maxmemory,
        tls_auth_clients=settings.redis.tls_auth_clients,
        min_replicas_to_write=settings.redis.min_replicas_to_write,
        min_replicas_max_lag_s=settings.redis.min_replicas_max_lag_s,
    )
    twin_conf = Twin(tmp_path).node_spec(twin_settings, 7000)
    from redisops.conf import render_redis_conf

    assert _normalized(config) == _normalized(render_redis_conf(twin_conf))
    assert "cluster-preferred-endpoint-type hostname" in config


# ---- validity ---------------------------------------------------------------------------


def test_every_kubernetes_object_validates_strictly(plan: harness.Plan) -> None:
    kinds = set()
    for resource in plan.kubernetes_objects:
        if resource.type == "kubernetes:helm.sh/v4:Chart":
            continue
        obj = resource.manifest
        kinds.add(obj["kind"])
        if obj["kind"] in CRDS:
            assert obj["apiVersion"] and obj["metadata"]["name"] and obj["spec"]
            continue
        kubernetes_validate.validate(obj, KUBE, strict=True)
    kubernetes_validate.validate(plan.outputs["smokeJob"][0], KUBE, strict=True)
    assert {"StatefulSet", "Service", "Secret", "ConfigMap", "NetworkPolicy", "Job"} <= kinds


def test_chart_renders_valid_objects_referencing_only_planned_secrets(
    stack: str, plan: harness.Plan, chart_objects: dict[str, list[dict[str, Any]]]
) -> None:
    objects = chart_objects[stack]
    assert {"Deployment", "Service", "NetworkPolicy"} <= {o["kind"] for o in objects}
    hostname = harness.settings(stack).proxy.hostname
    certificates = [o["spec"]["domains"] for o in objects if o["kind"] == "ManagedCertificate"]
    assert certificates == ([[hostname]] if hostname else [])  # Google-managed, for the edge
    planned = {
        s.object_name: set(s.inputs.get("stringData", {})) | set(s.inputs.get("data", {}))
        for s in plan.kube("Secret")
    }
    referenced: set[tuple[str, str | None]] = set()
    for obj in objects:
        if obj["kind"] not in CRDS:
            kubernetes_validate.validate(obj, KUBE, strict=True)
        referenced |= set(_secret_refs(obj))
    assert referenced, "the chart mounts no Secret?"
    for name, key in referenced:
        assert name in planned, f"chart references Secret {name}, not in the plan"
        if key is not None:
            assert key in planned[name], f"chart references {name}/{key}"


def _secret_refs(value: Any) -> Iterator[tuple[str, str | None]]:
    if isinstance(value, dict):
        if "secretKeyRef" in value:
            yield value["secretKeyRef"]["name"], value["secretKeyRef"]["key"]
        secret = value.get("secret")
        if isinstance(secret, dict) and "secretName" in secret:
            for item in secret.get("items") or [None]:
                yield secret["secretName"], item["key"] if item else None
        if "secretRef" in value:
            yield value["secretRef"]["name"], None
        for child in value.values():
            yield from _secret_refs(child)
    elif isinstance(value, list):
        for child in value:
            yield from _secret_refs(child)


def test_every_pod_mounts_only_planned_secrets_and_keys(plan: harness.Plan) -> None:
    planned = {s.object_name: set(s.inputs.get("stringData", {})) for s in plan.kube("Secret")}
    objects = [r.manifest for r in plan.kubernetes_objects] + [plan.outputs["smokeJob"][0]]
    referenced = {ref for obj in objects for ref in _secret_refs(obj)}
    assert len(referenced) >= 5
    for name, key in referenced:
        assert name in planned, name
        if key is not None:
            assert key in planned[name], f"{name}/{key}"


# ---- jobs -------------------------------------------------------------------------------


def test_reconcile_job_and_its_narrow_rights(plan: harness.Plan, settings: Any) -> None:
    (job,) = plan.kube("Job")
    name = job.object_name
    assert name == plan.outputs["reconcileJob"][0]
    assert name.startswith("redis-reconcile-")
    container = job.manifest["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:1] == ["reconcile"] or "reconcile" in container["args"]
    role = plan.one("Role", "redis-reconcile")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["pods"],
            "verbs": ["get"],
            "resourceNames": [f"{common.STATEFULSET}-{i}" for i in range(settings.redis.pods)],
        }
    ]
    (cluster_role,) = plan.kube("ClusterRole")
    assert cluster_role.manifest["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}
    ]
    # API tokens only in pods that call the API
    for account in plan.kube("ServiceAccount"):
        assert account.manifest["automountServiceAccountToken"] is False, account.object_name
    pods = {
        "reconcile": job.manifest["spec"]["template"]["spec"],
        "backup": plan.one("CronJob", "redis-backup")["spec"]["jobTemplate"]["spec"]["template"][
            "spec"
        ],
        "smoke": plan.outputs["smokeJob"][0]["spec"]["template"]["spec"],
        "redis": plan.one("StatefulSet", common.STATEFULSET)["spec"]["template"]["spec"],
        "drill": plan.one("CronJob", "redis-restore-drill")["spec"]["jobTemplate"]["spec"][
            "template"
        ]["spec"],
    }
    mounts = {name: pod["automountServiceAccountToken"] for name, pod in pods.items()}
    assert mounts == {
        "reconcile": True,
        "backup": False,
        "smoke": settings.environment == "dev",
        "redis": False,
        "drill": False,
    }


def test_a_new_function_library_renames_the_reconcile_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # reconcile loads redisops.functions on every primary; on GKE it runs only when its
    # Job's name changes
    from redisops import functions

    before = harness.run("dev").outputs["reconcileJob"][0]
    monkeypatch.setattr(functions, "CODE", functions.CODE + "\n-- changed\n")
    after = harness.run("dev").outputs["reconcileJob"][0]
    assert before != after


def test_backup_cronjob(plan: harness.Plan, settings: Any) -> None:
    spec = plan.one("CronJob", "redis-backup")["spec"]
    assert spec["schedule"] == settings.backup.schedule
    assert spec["concurrencyPolicy"] == "Forbid"
    account = plan.one("ServiceAccount", "redis-backup")
    annotations = account["metadata"].get("annotations", {})
    expected = settings.backup.gcp_service_account
    if settings.gcp is not None:  # the identity the GCP layer creates
        expected = plan.outputs["backupServiceAccount"][0]
    assert expected
    assert annotations["iam.gke.io/gcp-service-account"] == expected
    args = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["backup", "create"]
    assert settings.backup.location in args


def test_smoke_job_targets_this_stack(plan: harness.Plan, settings: Any) -> None:
    job, secret = plan.outputs["smokeJob"]
    assert not secret
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["smoke", "--target", "kubernetes"]
    assert ("--no-disruption" in args) == (settings.environment == "prod")
    target = json.loads(plan.one("ConfigMap", "redis-smoke-target")["data"]["target.json"])
    assert target["name"] == settings.environment
    assert len(target["nodes"]) == settings.redis.pods
    assert target["can_disrupt"] == (settings.environment != "prod")
    # only dev may delete pods
    killers = plan.kube("Role", "redis-smoke")
    assert bool(killers) == (settings.environment == "dev")


# ---- dev vs prod ------------------------------------------------------------------------


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return {prefix: value}


def test_dev_and_prod_differ_exactly_where_their_config_does() -> None:
    dev_cfg, prod_cfg = (
        _flatten(
            {k: json.loads(v) if v[:1] in "{[" else v for k, v in harness.stack_config(s).items()}
        )
        for s in STACKS
    )
    config_differs = {
        k for k in dev_cfg.keys() | prod_cfg.keys() if dev_cfg.get(k) != prod_cfg.get(k)
    }
    dev, prod = plan_of("dev"), plan_of("prod")

    def sts(p: harness.Plan) -> dict[str, Any]:
        spec: dict[str, Any] = p.one("StatefulSet", common.STATEFULSET)["spec"]
        return spec

    observed = {
        "redis-platform:redis.replicas": (sts(dev)["replicas"], sts(prod)["replicas"]),
        "redis-platform:redis.zoneSpread": (
            sts(dev)["template"]["spec"]["topologySpreadConstraints"][0]["whenUnsatisfiable"],
            sts(prod)["template"]["spec"]["topologySpreadConstraints"][0]["whenUnsatisfiable"],
        ),
        "redis-platform:backup.schedule": tuple(
            p.one("CronJob", "redis-backup")["spec"]["schedule"] for p in (dev, prod)
        ),
        "redis-platform:redis.storageSize": tuple(
            sts(p)["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
            for p in (dev, prod)
        ),
        "redis-platform:proxy.minReplicas": tuple(
            p.of_type("kubernetes:helm.sh/v4:Chart")[0].inputs["values"]["autoscaling"][
                "minReplicas"
            ]
            for p in (dev, prod)
        ),
    }
    for key, (dev_value, prod_value) in observed.items():
        assert (dev_value != prod_value) == (key in config_differs), key
    # Same shape where the config agrees: the same kinds and names of objects.
    names = [
        {(r.inputs.get("kind"), r.object_name) for r in p.kubernetes_objects} for p in (dev, prod)
    ]
    # (the reconcile Job's name is a hash of its inputs, so it differs)
    only_dev = {n for n in names[0] - names[1] if n[0] != "Job"}
    only_prod = {n for n in names[1] - names[0] if n[0] != "Job"}
    # dev's smoke suite may delete pods (chaos); prod's may not
    assert only_dev == {("Role", "redis-smoke"), ("RoleBinding", "redis-smoke")}
    assert only_prod == set()
