"""Monitoring in the recorded plans: every alert of `redisops.alerts` as a Cloud Monitoring
alert policy carrying the same expression, duration and severity as its Prometheus
rendering, routed by severity; the on-call dashboard; the platform metrics Deployment
with its identity, PodMonitoring and policies; the PrometheusRule where asked for; and the
settings that drive them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from infra.alerting import alert_params, in_cluster_params
from infra.k8s import common, network
from infra.k8s import tls as tls_names
from infra.k8s.monitoring import RULE_NAME
from redisops import alerts, dashboards
from redisops.backup.storage import NO_BUCKET_METADATA
from redisops.errors import ConfigError
from tests.infra import harness

KUBE = "1.33"
POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
UPTIME_POLICY = "uptime-alert"  # infra/gcp/edge.py: not one of redisops.alerts' PromQL alerts


def cloud_policies(plan: harness.Plan) -> dict[str, dict[str, Any]]:
    """alert name -> the inputs of its recorded AlertPolicy (the PromQL ones)."""
    found = [r for r in plan.of_type(POLICY) if r.name != UPTIME_POLICY]
    by_name = {r.name.removeprefix("alert-"): r.inputs for r in found}
    assert len(by_name) == len(found), "two policies for one alert"
    return by_name


def seconds(duration: str) -> int:
    """A Prometheus duration (30s, 5m, 1h) or a Cloud Monitoring one (300s) in seconds."""
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, duration
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


# ---- the parameters ----------------------------------------------------------------------


def test_alert_parameters_follow_the_stack(stack: str, settings: Any) -> None:
    params = alert_params(settings)
    assert params.expected_nodes == settings.redis.shards * (1 + settings.redis.replicas)
    assert params.replicas == settings.redis.replicas
    assert params.backup_max_age_s == settings.backup.max_age_s
    assert params.drill_max_age_s == 8 * 86400  # the default; prod says so explicitly
    assert params.runbook_base == "runbooks"
    assert params.scale == 1.0  # production clock
    if stack == "prod":
        assert params.backup_max_age_s == (60 + 30) * 60  # hourly backups plus 30 min slack


def test_the_job_names_are_the_labels_managed_prometheus_gives(
    plan: harness.Plan, settings: Any
) -> None:
    # GMP labels every series it scrapes with job = the PodMonitoring's name
    params = alert_params(settings)
    planned = {r.object_name for r in plan.kube("PodMonitoring")}
    chart = {
        o["metadata"]["name"] for o in harness.chart_objects(plan) if o["kind"] == "PodMonitoring"
    }
    assert planned == {params.redis_job, params.ops_job}
    assert chart == {params.proxy_job}


def test_no_backups_no_backup_or_drill_alerts() -> None:
    params = alert_params(harness.settings("dev", {"backup": {"enabled": False}}))
    assert params.backup_max_age_s is None and params.drill_max_age_s is None
    names = {a.name for a in alerts.selected(params)}
    assert not {n for n in names if n.startswith(("RedisBackup", "RedisRestoreDrill"))}
    assert "RedisTlsCertificateExpiringSoon" in names  # certificates are still watched


def test_drill_alerts_can_be_turned_off_and_runbooks_linked_elsewhere() -> None:
    base = "https://github.com/example/redis-platform/blob/main/runbooks"
    params = alert_params(
        harness.settings(
            "dev", {"monitoring": {"drillMaxAgeDays": 0, "runbookBaseUrl": base + "/"}}
        )
    )
    assert params.drill_max_age_s is None
    names = {a.name for a in alerts.selected(params)}
    assert "RedisBackupStale" in names and "RedisRestoreDrillOverdue" not in names
    policy = next(p for p in alerts.cloud_policies(params) if p["name"] == "RedisNodeDown")
    assert f"Runbook: {base}/RedisNodeDown.md" in policy["documentation"]["content"]


# ---- Cloud Monitoring --------------------------------------------------------------------


def test_one_alert_policy_per_alert_and_the_dashboard(
    stack: str, plan: harness.Plan, settings: Any
) -> None:
    params = alert_params(settings)
    policies = cloud_policies(plan)
    assert set(policies) == {a.name for a in alerts.selected(params)}
    assert len(policies) >= 20
    for name, policy in policies.items():
        assert policy["displayName"] == name
        (condition,) = policy["conditions"]
        assert "conditionPrometheusQueryLanguage" in condition, name
        assert policy["userLabels"] == {"app": "redis-platform", "environment": stack}
    (dashboard,) = plan.of_type("gcp:monitoring/dashboard:Dashboard")
    layout = json.loads(dashboard.inputs["dashboardJson"])
    assert layout["displayName"] == f"redis-platform {stack}"
    queries = [
        t["widget"]["xyChart"]["dataSets"][0]["timeSeriesQuery"]["prometheusQuery"]
        for t in layout["mosaicLayout"]["tiles"]
    ]
    assert queries == [panel.query for panel in dashboards.panels(params)]
    assert all(f'job="{params.redis_job}"' in q for q in queries[:8])


def test_cloud_policies_carry_the_prometheus_rules(plan: harness.Plan, settings: Any) -> None:
    """The two renderings of the alerts hold the same alerts, expressions, thresholds,
    durations and severities: the Cloud Monitoring policies in the plan against the rule
    file the twin's Prometheus (and promtool) runs."""
    params = alert_params(settings)
    (group,) = alerts.rule_groups(params)["groups"]
    rules = {rule["alert"]: rule for rule in group["rules"]}
    policies = cloud_policies(plan)
    assert set(policies) == set(rules)
    for name, policy in policies.items():
        rule = rules[name]
        promql = policy["conditions"][0]["conditionPrometheusQueryLanguage"]
        assert promql["query"] == rule["expr"], name
        assert seconds(promql["duration"]) == seconds(rule.get("for", "0s")), name
        assert promql["labels"] == rule["labels"], name
        assert (promql["ruleGroup"], promql["alertRule"]) == (group["name"], name)
        assert seconds(promql["evaluationInterval"]) == seconds(group["interval"])
        severity = rule["labels"]["severity"]
        assert policy["severity"] == {"page": "CRITICAL", "ticket": "WARNING"}[severity], name
        assert rule["annotations"]["runbook_url"] in policy["documentation"]["content"], name
        # only this stack's series: every selector names its cluster and namespace
        selectors = promql["query"].count('job="')
        scope = f',cluster="{settings.gcp.gke.name}",namespace="{settings.namespace}"'
        assert promql["query"].count(scope) == selectors > 0, name


def test_pages_and_tickets_go_to_their_channels(
    stack: str, plan: harness.Plan, settings: Any
) -> None:
    alerting = settings.gcp.alerting
    policies = cloud_policies(plan)
    routed: dict[str, set[tuple[str, ...]]] = {"page": set(), "ticket": set()}
    for name, policy in policies.items():
        severity = alerts.BY_NAME[name].severity
        routed[severity].add(tuple(policy["notificationChannels"]))
    if stack == "prod":  # a pager and a ticket queue
        assert routed == {
            "page": {("projects/redis-platform-prod/notificationChannels/1234567890",)},
            "ticket": {("projects/redis-platform-prod/notificationChannels/2345678901",)},
        }
    else:  # dev names one channel for both
        assert routed["page"] == routed["ticket"] == {alerting.notification_channels}
    assert routed["page"] == {alerting.channels("page")}
    assert routed["ticket"] == {alerting.channels("ticket")}


def test_alert_policies_only_with_gcp_alerting() -> None:
    gcp = json.loads(harness.stack_config("dev")["redis-platform:gcp"])
    del gcp["alerting"]
    plan = harness.run("dev", {"gcp": gcp})
    assert not plan.of_type(POLICY)
    assert not plan.of_type("gcp:monitoring/dashboard:Dashboard")
    # the platform metrics are collected anyway (PodMonitoring), for whatever evaluates them
    assert plan.kube("Deployment", common.OPS_METRICS)


# ---- the platform metrics (redisops metrics serve) ----------------------------------------


def _ops(plan: harness.Plan) -> dict[str, Any]:
    return plan.one("Deployment", common.OPS_METRICS)


def test_the_platform_metrics_deployment(plan: harness.Plan, settings: Any) -> None:
    deployment = _ops(plan)
    kubernetes_validate.validate(deployment, KUBE, strict=True)
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    # not a Redis client: the label that opens the Redis client port is absent
    assert common.CLIENT_LABEL.items() - labels.items()
    (container,) = pod["containers"]
    assert container["image"] == settings.platform_image
    assert container["command"] == ["redisops"]
    args = container["args"]
    assert args[:4] == ["metrics", "serve", "--listen", f"0.0.0.0:{common.OPS_METRICS_PORT}"]
    certs = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--cert")
    assert set(certs) == {"node", "ca"}
    assert args[args.index("--backups") + 1] == settings.backup.location
    # the certificates it reads are the mounted node Secret's (never its key)
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "node-cert"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == "node-cert"]
    assert volume["secret"]["secretName"] == tls_names.NODE_SECRET
    files = {
        item["key"]: f"{mount['mountPath']}/{item['path']}" for item in volume["secret"]["items"]
    }
    assert files == {"tls.crt": certs["node"], "ca.crt": certs["ca"]}
    assert {v["name"] for v in pod["volumes"]} == {"node-cert", "work"}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env[NO_BUCKET_METADATA] == "true"  # its identity holds no storage.buckets.get
    assert env["TMPDIR"] == env["HOME"] == "/work"  # the read-only root has no temp dir
    # restricted, read-only root, bounded memory, no API token
    security = container["securityContext"]
    assert security == common.RESTRICTED_CONTAINER
    assert pod["securityContext"]["runAsUser"] == common.PLATFORM_UID
    assert pod["automountServiceAccountToken"] is False
    assert container["resources"]["limits"]["memory"]
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe["path"] == "/metrics" and ports[probe["port"]] == common.OPS_METRICS_PORT
    if settings.gcp.gke.create:
        assert pod["nodeSelector"] == {common.POOL_LABEL: "system"}


def test_the_platform_metrics_read_backups_as_the_read_only_identity(
    plan: harness.Plan,
) -> None:
    account = plan.one("ServiceAccount", common.OPS_METRICS)
    kubernetes_validate.validate(account, KUBE, strict=True)
    assert account["automountServiceAccountToken"] is False
    email = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert email == plan.outputs["smokeServiceAccount"][0]  # objectViewer on the bucket only
    assert _ops(plan)["spec"]["template"]["spec"]["serviceAccountName"] == common.OPS_METRICS
    roles = {
        r.inputs["role"]
        for r in plan.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
        if r.inputs["member"] == f"serviceAccount:{email}"
    }
    assert roles == {"roles/storage.objectViewer"}


def test_without_backups_the_platform_metrics_watch_certificates_only() -> None:
    plan = harness.run("dev", {"backup": {"enabled": False}})
    args = _ops(plan)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--backups" not in args and args.count("--cert") == 2
    account = plan.one("ServiceAccount", common.OPS_METRICS)
    assert not account["metadata"].get("annotations")
    policies = {r.object_name for r in plan.kube("NetworkPolicy")}
    assert "ops-metrics" in policies and "ops-metrics-to-google-apis" not in policies


def test_the_platform_metrics_are_scraped(plan: harness.Plan) -> None:
    monitoring = plan.one("PodMonitoring", common.OPS_METRICS)
    assert monitoring["apiVersion"] == "monitoring.googleapis.com/v1"
    template = _ops(plan)["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert monitoring["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitoring["spec"]["endpoints"]
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    assert ports[endpoint["port"]] == common.OPS_METRICS_PORT
    policies = {r.object_name: r.manifest for r in plan.kube("NetworkPolicy")}
    for name in ("ops-metrics", "ops-metrics-to-google-apis"):
        kubernetes_validate.validate(policies[name], KUBE, strict=True)
    assert policies["ops-metrics"]["spec"]["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": network.GMP_NAMESPACE}
                    }
                }
            ],
            "ports": [{"port": common.OPS_METRICS_PORT, "protocol": "TCP"}],
        }
    ]


# ---- PrometheusRule ------------------------------------------------------------------------


def test_no_prometheus_rule_by_default(plan: harness.Plan) -> None:
    assert not plan.kube("PrometheusRule")


def test_a_prometheus_rule_renders_the_same_alerts(tmp_path: Path) -> None:
    overrides = {"monitoring": {"prometheusRule": True}}
    plan = harness.run("dev", overrides)
    params = in_cluster_params(harness.settings("dev", overrides))
    (registration,) = plan.kube("PrometheusRule")
    assert registration.type == "kubernetes:monitoring.coreos.com/v1:PrometheusRule"
    rule = registration.manifest
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == RULE_NAME
    assert rule["metadata"]["namespace"] == "redis"
    assert rule["spec"] == alerts.rule_groups(params)
    (namespace,) = plan.kube("Namespace", "redis")
    assert namespace.urn in registration.dependencies
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: `make monitoring` installs Debian's prometheus")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule["spec"]))
    checked = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts.selected(params))} rules found" in checked.stdout


# ---- settings ------------------------------------------------------------------------------


def _alerting(**changes: Any) -> dict[str, Any]:
    gcp: dict[str, Any] = json.loads(harness.stack_config("prod")["redis-platform:gcp"])
    alerting = {**gcp["alerting"], **changes}
    gcp["alerting"] = {k: v for k, v in alerting.items() if v is not None}
    return {"gcp": gcp}


@pytest.mark.parametrize(
    ("overrides", "key", "says"),
    [
        (
            {"monitoring": {"drillMaxAgeDays": -1}},
            "monitoring.drillMaxAgeDays",
            "or 0 to turn the drill alerts off",
        ),
        (
            {"monitoring": {"drillMaxAgeDays": 400}},
            "monitoring.drillMaxAgeDays",
            "e.g. 8 for weekly drills",
        ),
        (
            {"monitoring": {"runbookBaseUrl": "/srv/runbooks pages"}},
            "monitoring.runbookBaseUrl",
            "neither an http(s) URL nor a repository path",
        ),
        ({"monitoring": {"prometheusRules": True}}, "monitoring.prometheusRules", "a typo?"),
        (
            _alerting(pageChannels=[]),
            "gcp.alerting.pageChannels",
            "would notify no one; list channels, or remove the key",
        ),
        (
            _alerting(ticketChannels=["ops@example.com"]),
            "gcp.alerting.ticketChannels",
            "projects/<project>/notificationChannels/<id>",
        ),
        (
            _alerting(ticketChannels=None),
            "gcp.alerting",
            "notificationChannels is required (at least one channel) unless both",
        ),
    ],
)
def test_monitoring_mistakes_name_the_key_and_the_fix(
    overrides: dict[str, Any], key: str, says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        harness.settings("prod", overrides)
    lines = [
        line for line in str(caught.value).splitlines() if line.startswith(f"redis-platform:{key}:")
    ]
    assert lines, str(caught.value)
    assert says in lines[0], lines[0]


def test_one_severity_may_be_routed_apart() -> None:
    pager = "projects/redis-platform-prod/notificationChannels/99"
    settings = harness.settings(
        "prod",
        _alerting(
            pageChannels=[pager],
            ticketChannels=None,
            notificationChannels=["projects/redis-platform-prod/notificationChannels/1"],
        ),
    )
    alerting = settings.gcp.alerting
    assert alerting.channels("page") == (pager,)
    assert alerting.channels("ticket") == ("projects/redis-platform-prod/notificationChannels/1",)
