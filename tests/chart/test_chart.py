"""The sse-proxy chart with the real Helm engine (helm-python-sdk): lint, schema, renders,
Kubernetes 1.33 validation, and the security properties it promises."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "sse-proxy"
KUBE = "1.33"
# Custom resources Kubernetes' own schemas do not know; checked by hand below.
CRDS = {"BackendConfig", "FrontendConfig", "ManagedCertificate", "PodMonitoring", "ServiceMonitor"}


def values(name: str) -> dict[str, Any]:
    if name == "default":
        return {}
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return loaded


@pytest.fixture(scope="module")
def chart() -> Iterator[helm_python.Chart]:
    loaded = helm_python.Chart.load(str(CHART))
    yield loaded
    loaded.close()


def render(chart: helm_python.Chart, overrides: dict[str, Any]) -> list[dict[str, Any]]:
    files = chart.render(overrides, name="sse", namespace="agents")
    objects = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """Layer values as Helm does (a None removes a default)."""
    result: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = merged(result[key], value)
            else:
                result[key] = value
    return result


def test_lint_strict_is_clean() -> None:
    report = helm_python.lint(str(CHART), strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] > 1] == []
    for name in ("dev", "prod"):
        report = helm_python.lint(str(CHART), values(name), strict=True)
        assert report["errors"] == [], name


@pytest.mark.parametrize("name", ["default", "dev", "prod"])
def test_every_object_is_valid_kubernetes(chart: helm_python.Chart, name: str) -> None:
    objects = render(chart, values(name))
    assert by_kind(objects, "Deployment") and by_kind(objects, "Service")
    for obj in objects:
        if obj["kind"] in CRDS:
            assert obj["apiVersion"] and obj["metadata"]["name"] and obj["spec"]
            continue
        kubernetes_validate.validate(obj, KUBE, strict=True)


@pytest.mark.parametrize("name", ["default", "dev", "prod"])
def test_pods_are_locked_down(chart: helm_python.Chart, name: str) -> None:
    objects = render(chart, values(name))
    pods = [d["spec"]["template"]["spec"] for d in by_kind(objects, "Deployment")]
    pods += [p["spec"] for p in by_kind(objects, "Pod")]  # the helm-test pod
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert security["seccompProfile"]["type"] == "RuntimeDefault"
            assert container["resources"]["requests"]["memory"]
            assert container["resources"]["limits"]["memory"]


def test_the_proxy_gets_probes_a_drain_longer_grace_and_its_settings(
    chart: helm_python.Chart,
) -> None:
    objects = render(chart, values("prod"))
    [deployment] = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    [config] = by_kind(objects, "ConfigMap")
    settings = json.loads(config["data"]["config.json"])
    assert pod["terminationGracePeriodSeconds"] > settings["shutdown_grace_s"] + pause
    assert settings["jwt_public_key_file"].startswith("/var/run/secrets/sse-jwt/")
    assert settings["jwt_issuer"] == "https://auth.example.com/"
    assert settings["redis_tls_ca_file"] == "/var/run/secrets/redis-tls/ca.crt"
    assert settings["reader_password_file"] == "/var/run/secrets/redis-reader/password"
    # Secrets appear as file paths in mounted Secrets, never as values.
    for key, value in settings.items():
        if "password" in key or "secret" in key or "key_file" in key:
            assert key.endswith("_file") and str(value).startswith("/var/run/secrets/"), key
    assert settings["cors_origins"] == ["https://app.example.com"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/run/secrets/redis-tls", "/var/run/secrets/sse-jwt"} <= mounts
    spread = pod["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert spread[0]["whenUnsatisfiable"] == "DoNotSchedule"
    assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_the_settings_the_chart_renders_are_accepted_by_the_proxy(
    chart: helm_python.Chart,
) -> None:
    from sse_proxy.settings import load_settings

    for name in ("default", "dev", "prod"):
        [config] = by_kind(render(chart, values(name)), "ConfigMap")
        settings = load_settings(**json.loads(config["data"]["config.json"]))
        assert settings.port == 8080
        assert settings.host == "0.0.0.0"  # noqa: S104 (inside the pod, behind the Service)


def test_the_gke_edge_keeps_streams_open_and_drains(chart: helm_python.Chart) -> None:
    objects = render(chart, values("prod"))
    [backend] = by_kind(objects, "BackendConfig")
    assert backend["spec"]["timeoutSec"] >= 3600
    assert backend["spec"]["connectionDraining"]["drainingTimeoutSec"] > 0
    assert backend["spec"]["healthCheck"]["requestPath"] == "/readyz"
    [service] = by_kind(objects, "Service")
    annotations = service["metadata"]["annotations"]
    assert json.loads(annotations["cloud.google.com/backend-config"]) == {
        "default": "sse-sse-proxy"
    }
    assert json.loads(annotations["cloud.google.com/neg"]) == {"ingress": True}
    [ingress] = by_kind(objects, "Ingress")
    assert ingress["metadata"]["annotations"]["networking.gke.io/managed-certificates"]
    assert ingress["spec"]["rules"][0]["host"] == "events.example.com"
    [frontend] = by_kind(objects, "FrontendConfig")
    assert frontend["spec"]["redirectToHttps"]["enabled"] is True
    [cert] = by_kind(objects, "ManagedCertificate")
    assert cert["spec"]["domains"] == ["events.example.com"]


def test_toggles_switch_their_objects(chart: helm_python.Chart) -> None:
    kinds = {o["kind"] for o in render(chart, {})}
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceAccount"} <= kinds
    assert not kinds & {"Ingress", "NetworkPolicy", "PodMonitoring", "ServiceMonitor", "Pod"}
    everything = {
        "ingress": {"enabled": True, "host": "x.example.com"},
        "networkPolicy": {"enabled": True},
        "metrics": {"podMonitoring": {"enabled": True}, "serviceMonitor": {"enabled": True}},
        "tests": {"tokenSecretName": "t"},
        "serviceAccount": {"gcpServiceAccount": "sse@p.iam.gserviceaccount.com"},
    }
    objects = render(chart, everything)
    kinds = {o["kind"] for o in objects}
    assert {"Ingress", "NetworkPolicy", "PodMonitoring", "ServiceMonitor", "Pod"} <= kinds
    [account] = by_kind(objects, "ServiceAccount")
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == (
        "sse@p.iam.gserviceaccount.com"
    )
    [policy] = by_kind(objects, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    [test_pod] = by_kind(objects, "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "smoke_tests.sse_check" in test_pod["spec"]["containers"][0]["command"]
    no_hpa = render(chart, {"autoscaling": {"enabled": False}, "replicaCount": 3})
    [deployment] = by_kind(no_hpa, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert not by_kind(no_hpa, "HorizontalPodAutoscaler")


def _ingress(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    [policy] = by_kind(objects, "NetworkPolicy")
    rules: list[dict[str, Any]] = policy["spec"]["ingress"]
    return rules


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def test_the_scrapers_reach_the_metrics_port_only_when_something_scrapes(
    chart: helm_python.Chart,
) -> None:
    scrape = {"ports": [{"port": "http", "protocol": "TCP"}], "from": [_namespace("gmp-system")]}
    # Managed Prometheus' collectors (gmp-system) by default, once a PodMonitoring exists
    prod = render(chart, values("prod"))
    assert scrape in _ingress(prod)
    [monitoring] = by_kind(prod, "PodMonitoring")
    assert monitoring["spec"]["endpoints"][0]["port"] == "http"
    # nothing scrapes: no door for scrapers
    assert scrape not in _ingress(render(chart, {"networkPolicy": {"enabled": True}}))
    # a Prometheus Operator's Prometheus in its own namespace
    operator = render(
        chart,
        {
            "networkPolicy": {"enabled": True},
            "metrics": {"serviceMonitor": {"enabled": True}, "allowFromNamespaces": ["monitoring"]},
        },
    )
    assert {"ports": scrape["ports"], "from": [_namespace("monitoring")]} in _ingress(operator)
    assert [r for r in _ingress(operator) if _namespace("gmp-system") in r["from"]] == []
    for objects in (prod, operator):
        for policy in by_kind(objects, "NetworkPolicy"):
            kubernetes_validate.validate(policy, KUBE, strict=True)


def test_a_digest_pins_the_image(chart: helm_python.Chart) -> None:
    [deployment] = by_kind(render(chart, values("prod")), "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith("@" + values("prod")["image"]["digest"])
    [default] = by_kind(render(chart, {}), "Deployment")
    assert default["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.1.0")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"replicaCount": 0}, "replicaCount"),
        ({"replicaCount": "two"}, "replicaCount"),
        ({"replicas": 3}, "replicas"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"proxy": {"port": 80}}, "port"),
        ({"proxy": {"streams": []}}, "streams"),
        ({"ingress": {"backendTimeoutSec": 30}}, "backendTimeoutSec"),
        ({"auth": {"mode": "none"}}, "mode"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilegeEscalation"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"resources": {"limits": {"memory": None}}}, "memory"),
        ({"redis": {"nodes": ["no-port"]}}, "nodes"),
        ({"proxy": {"corsOrigins": ["*"]}}, "corsOrigins"),
        ({"metrics": {"allowFromNamespaces": ["GMP System"]}}, "allowFromNamespaces"),
    ],
)
def test_the_schema_rejects_bad_values_naming_them(
    chart: helm_python.Chart, bad: dict[str, Any], message: str
) -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    with pytest.raises(helm_python.HelmError) as info:
        chart.validate_schema(merged(defaults, bad))
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "autoscaling.minReplicas (5)"),
        ({"auth": {"hs256SecretName": ""}}, "exactly one of auth.hs256SecretName"),
        ({"auth": {"jwksSecretName": "jwks"}}, "exactly one of"),
        ({"ingress": {"enabled": True}}, "ingress.enabled needs ingress.host"),
        (
            {"ingress": {"enabled": True, "host": "h", "managedCertificate": False}},
            "ingress.enabled needs TLS",
        ),
        ({"redis": {"mode": "single"}}, "redis.mode single needs redis.url"),
    ],
)
def test_inconsistent_values_fail_with_the_fix(
    chart: helm_python.Chart, bad: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmError) as info:
        chart.render(bad, name="sse", namespace="agents")
    assert message in str(info.value)
