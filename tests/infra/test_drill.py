"""The restore drill as the stacks declare it (infra/k8s/drill.py): a CronJob in the scratch
namespace redis-drill running exactly the Job `redisops drill job-spec` prints, as the
drill's own Google identity, behind default-deny policies that let it reach DNS and Google
APIs only; its schedule checked against the alert that watches it; nothing of it without
backups."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
from typer.testing import CliRunner

from infra.k8s import common, network
from infra.k8s.drill import CRONJOB, POD_SELECTOR
from redisops.backup import drill_job
from redisops.cli import app
from tests.infra import harness
from tests.infra.harness import error_of

KUBE = "1.33"
DRILL_NS = common.DRILL_NAMESPACE
WORKLOAD_IDENTITY = "iam.gke.io/gcp-service-account"


def in_drill_namespace(plan: harness.Plan) -> list[harness.Registration]:
    return [
        r
        for r in plan.kubernetes_objects
        if r.manifest["metadata"].get("namespace") == DRILL_NS
        or (r.inputs.get("kind") == "Namespace" and r.object_name == DRILL_NS)
    ]


def cronjob(plan: harness.Plan) -> dict[str, Any]:
    found = [r.manifest for r in plan.kube("CronJob", CRONJOB)]
    assert len(found) == 1, found
    assert found[0]["metadata"]["namespace"] == DRILL_NS
    return found[0]


def drill_pod(plan: harness.Plan) -> dict[str, Any]:
    template: dict[str, Any] = cronjob(plan)["spec"]["jobTemplate"]["spec"]["template"]
    return template


def job_spec_cli(settings: Any, **extra: str) -> dict[str, Any]:
    """What the runbook's `redisops drill job-spec` prints for this stack."""
    args = ["drill", "job-spec", "--namespace", DRILL_NS, "--image", settings.platform_image,
            "--from", settings.backup.location, "--service-account", common.DRILL_KSA,
            "--max-age", str(settings.backup.max_age_s)]  # fmt: skip
    for option, value in extra.items():
        args += [f"--{option}", value]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    printed: dict[str, Any] = json.loads(result.stdout)
    return printed


# ---- what is declared ------------------------------------------------------------------


def test_the_scratch_namespace_is_restricted_like_the_platforms(
    plan: harness.Plan, settings: Any
) -> None:
    drill = plan.one("Namespace", DRILL_NS)
    main = plan.one("Namespace", settings.namespace)
    assert drill["metadata"]["labels"] == main["metadata"]["labels"]
    assert drill["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # it waits for the rollout check as the platform's namespace does
    (registration,) = [r for r in plan.kube("Namespace") if r.object_name == DRILL_NS]
    (platform,) = [r for r in plan.kube("Namespace") if r.object_name == settings.namespace]
    assert set(platform.dependencies) <= set(registration.dependencies)


def test_the_drill_acts_as_its_google_identity(plan: harness.Plan, settings: Any) -> None:
    (account,) = [
        r.manifest for r in in_drill_namespace(plan) if r.inputs["kind"] == "ServiceAccount"
    ]
    assert account["metadata"]["name"] == common.DRILL_KSA
    assert account["automountServiceAccountToken"] is False
    email = plan.outputs["drillServiceAccount"][0]
    assert email.startswith("redis-drill@")
    assert account["metadata"]["annotations"] == {WORKLOAD_IDENTITY: email}
    assert drill_pod(plan)["spec"]["serviceAccountName"] == common.DRILL_KSA
    # the Google side: that Kubernetes ServiceAccount may act as the account (and only it)
    bindings = [
        r.inputs
        for r in plan.of_type("gcp:serviceaccount/iAMMember:IAMMember")
        if r.inputs["serviceAccountId"].endswith(f"/{email}")
    ]
    assert bindings == [
        {
            "serviceAccountId": f"projects/{harness.PROJECT_ID}/serviceAccounts/{email}",
            "role": "roles/iam.workloadIdentityUser",
            "member": f"serviceAccount:{settings.gcp.project}.svc.id.goog"
            f"[{DRILL_NS}/{common.DRILL_KSA}]",
        }
    ]


def test_the_cronjob_runs_the_drill_on_its_schedule(plan: harness.Plan, settings: Any) -> None:
    manifest = cronjob(plan)
    kubernetes_validate.validate(manifest, KUBE, strict=True)
    spec = manifest["spec"]
    assert spec["schedule"] == settings.backup.drill_schedule
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["timeZone"] == "Etc/UTC"
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0  # a failed drill is a finding
    assert job["activeDeadlineSeconds"] == settings.backup.drill_resources.timeout_minutes * 60
    (container,) = job["template"]["spec"]["containers"]
    assert container["image"] == settings.platform_image  # the image every Job runs
    size = settings.backup.drill_resources
    assert container["resources"] == {
        "requests": {"cpu": size.cpu, "memory": size.memory},
        "limits": {"memory": size.memory},
    }
    (work,) = job["template"]["spec"]["volumes"]
    assert work["emptyDir"] == {"sizeLimit": size.scratch_size}


def test_the_cronjob_is_the_job_redisops_drill_job_spec_prints(
    plan: harness.Plan, settings: Any
) -> None:
    """One definition: the runbook's command and the CronJob build the same Job."""
    printed = job_spec_cli(settings)
    template = drill_pod(plan)
    (container,) = template["spec"]["containers"]
    (cli_container,) = printed["spec"]["template"]["spec"]["containers"]
    assert container["args"] == cli_container["args"]
    assert container["args"][:2] == ["drill", "restore"]
    args = container["args"]
    # --max-age: the backups' own limit (the schedule's longest gap plus slack)
    assert args[args.index("--max-age") + 1] == str(settings.backup.max_age_s)
    if settings.environment == "prod":
        assert settings.backup.max_age_s == 5400  # what the runbook says
    # the rest of the Job is the builder's too, with the stack's pod size
    size = settings.backup.drill_resources
    built = drill_job.as_dict(
        drill_job.drill_job(
            namespace=DRILL_NS,
            image=settings.platform_image,
            location=settings.backup.location,
            service_account=common.DRILL_KSA,
            max_backup_age_s=settings.backup.max_age_s,
            cpu=size.cpu,
            memory=size.memory,
            scratch_size=size.scratch_size,
            deadline_s=size.timeout_minutes * 60,
        )
    )
    assert cronjob(plan)["spec"]["jobTemplate"]["spec"] == built["spec"]
    if size == type(size)():  # the CLI's defaults: the printed Job is the CronJob's
        assert cronjob(plan)["spec"]["jobTemplate"]["spec"] == printed["spec"]


def test_the_drill_pod_is_restricted_like_the_other_jobs(plan: harness.Plan) -> None:
    pod = drill_pod(plan)["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"] == common.RESTRICTED_CONTAINER
    assert pod["securityContext"] == common.restricted_pod(common.PLATFORM_UID)
    backup = plan.one("CronJob", "redis-backup")["spec"]["jobTemplate"]["spec"]["template"]
    assert pod["securityContext"] == backup["spec"]["securityContext"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TMPDIR"] == env["HOME"] == "/work"  # the read-only root has no temp dir


def test_the_drill_records_its_run_where_the_metrics_read_it(
    plan: harness.Plan, settings: Any
) -> None:
    """`drill restore --from L` writes runs/drill/... under L (redisops.backup.runs); the
    platform metrics read L (`--backups`) into redisops_drill_last_* for the alerts."""
    (container,) = drill_pod(plan)["spec"]["containers"]
    args = container["args"]
    location = args[args.index("--from") + 1]
    metrics = plan.one("Deployment", common.OPS_METRICS)["spec"]["template"]["spec"]
    metrics_args = metrics["containers"][0]["args"]
    assert metrics_args[metrics_args.index("--backups") + 1] == location
    assert location == settings.backup.location
    # and the drill's identity may add that record (objectCreator) and read the backup
    email = plan.outputs["drillServiceAccount"][0]
    roles = {
        r.inputs["role"]
        for r in plan.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
        if r.inputs["member"] == f"serviceAccount:{email}"
    }
    assert roles == {"roles/storage.objectCreator", "roles/storage.objectViewer"}
    # a weekly drill plus its run time stays inside the overdue alert's window
    minutes = (
        settings.backup.drill_interval_minutes + settings.backup.drill_resources.timeout_minutes
    )
    assert minutes < settings.monitoring.drill_max_age_days * 24 * 60


# ---- its network -------------------------------------------------------------------------


def _policies(plan: harness.Plan, namespace: str) -> dict[str, dict[str, Any]]:
    return {
        r.object_name: r.manifest
        for r in plan.kube("NetworkPolicy")
        if r.manifest["metadata"]["namespace"] == namespace
    }


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the only form these policies use
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_the_scratch_namespace_denies_all_but_dns_and_google_apis(
    plan: harness.Plan, settings: Any
) -> None:
    drill = _policies(plan, DRILL_NS)
    main = _policies(plan, settings.namespace)
    assert set(drill) == {"default-deny", "allow-dns", "allow-google-apis"}
    for policy in drill.values():
        kubernetes_validate.validate(policy, KUBE, strict=True)
    # written as the platform namespace's flows are (the same builders)
    assert drill["default-deny"]["spec"] == main["default-deny"]["spec"]
    assert drill["allow-dns"]["spec"] == main["allow-dns"]["spec"]
    google = drill["allow-google-apis"]["spec"]
    assert google["egress"] == main["backup-to-google-apis"]["spec"]["egress"]
    assert google["podSelector"] == POD_SELECTOR
    # what the drill's pods may reach: DNS, Google APIs and the metadata server; nothing in
    labels = drill_pod(plan)["metadata"]["labels"]
    selecting = [p["spec"] for p in drill.values() if _selects(p["spec"]["podSelector"], labels)]
    assert len(selecting) == 3
    assert not [rule for spec in selecting for rule in spec.get("ingress", [])]
    addresses = {
        (peer["ipBlock"]["cidr"], port["port"])
        for spec in selecting
        for rule in spec.get("egress", [])
        for peer in rule["to"]
        if "ipBlock" in peer
        for port in rule["ports"]
    }
    expected = {(cidr, 443) for cidr in settings.network.google_apis_cidrs}
    assert addresses == expected | set(network.METADATA_SERVER)
    pods = [
        peer
        for spec in selecting
        for rule in spec.get("egress", [])
        for peer in rule["to"]
        if "ipBlock" not in peer
    ]
    assert pods == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]


def test_every_object_of_the_scratch_namespace(plan: harness.Plan) -> None:
    kinds = sorted((r.inputs["kind"], r.object_name) for r in in_drill_namespace(plan))
    assert kinds == [
        ("CronJob", CRONJOB),
        ("Namespace", DRILL_NS),
        ("NetworkPolicy", "allow-dns"),
        ("NetworkPolicy", "allow-google-apis"),
        ("NetworkPolicy", "default-deny"),
        ("ServiceAccount", common.DRILL_KSA),
    ]
    for registration in in_drill_namespace(plan):
        kubernetes_validate.validate(registration.manifest, KUBE, strict=True)


# ---- without backups, and without the GCP layer -------------------------------------------


def test_without_backups_no_drill() -> None:
    plan = harness.run("dev", {"backup": {"enabled": False}})
    assert in_drill_namespace(plan) == []
    assert not plan.kube("CronJob")
    assert plan.outputs["drillServiceAccount"][0] is None
    accounts = {r.inputs["accountId"] for r in plan.of_type("gcp:serviceaccount/account:Account")}
    assert "redis-drill" not in accounts
    members = {r.inputs["member"] for r in plan.of_type("gcp:serviceaccount/iAMMember:IAMMember")}
    assert not [m for m in members if f"[{DRILL_NS}/" in m]


def test_without_the_gcp_layer_the_drill_acts_as_the_configured_account() -> None:
    overrides = {
        "gcp": None,
        "network": {"apiServerCidrs": ["172.16.0.0/28"]},
        "backup": {
            "location": "gs://bkt/redis",
            "gcpServiceAccount": "backup@p.iam.gserviceaccount.com",
            "smokeServiceAccount": "smoke@p.iam.gserviceaccount.com",
            "drillServiceAccount": "drill@p.iam.gserviceaccount.com",
        },
    }
    plan = harness.run("dev", overrides)
    (account,) = [
        r.manifest for r in in_drill_namespace(plan) if r.inputs["kind"] == "ServiceAccount"
    ]
    assert account["metadata"]["annotations"] == {
        WORKLOAD_IDENTITY: "drill@p.iam.gserviceaccount.com"
    }
    args = drill_pod(plan)["spec"]["containers"][0]["args"]
    assert args[args.index("--from") + 1] == "gs://bkt/redis"


# ---- the schedule's checks ------------------------------------------------------------------


def backup_of(stack: str, **changes: Any) -> dict[str, Any]:
    backup: dict[str, Any] = json.loads(harness.stack_config(stack)["redis-platform:backup"])
    return {"backup": {**backup, **changes}}


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (backup_of("prod", drillSchedule="30 4 * * 7"), "day of week as 0-6"),
        (backup_of("prod", drillSchedule="weekly"), "a schedule has 5 fields"),
        (backup_of("prod", drillSchedule="0 4 31 2 *"), "it never runs"),
        # monthly drills against the 8-day alert window
        (
            backup_of("prod", drillSchedule="0 4 1 * *"),
            "'0 4 1 * *' leaves up to 31 days between two drills (and a drill may run 60 "
            "minutes), not less than monitoring.drillMaxAgeDays (8 days): "
            "RedisRestoreDrillOverdue would fire between drills that pass",
        ),
        # a week exactly: the drill's own run time tips it over
        (
            {**backup_of("prod"), "monitoring": {"drillMaxAgeDays": 7}},
            "leaves up to 7 days between two drills",
        ),
        # a long run counts too
        (
            backup_of(
                "prod",
                drillSchedule="0 4 * * 0",
                drillResources={"timeoutMinutes": 24 * 60},
            )
            | {"monitoring": {"drillMaxAgeDays": 8}},
            "a drill may run 1440 minutes",
        ),
    ],
)
def test_a_drill_schedule_that_would_miss_its_alert_is_refused(
    overrides: dict[str, Any], says: str
) -> None:
    message = error_of("prod", overrides)
    assert "redis-platform:backup.drillSchedule:" in message, message
    assert says in message, message


def test_the_fix_the_message_names_is_accepted() -> None:
    message = error_of("prod", backup_of("prod", drillSchedule="0 4 1 * *"))
    assert 'weekly: "30 4 * * 0"' in message and "raise monitoring.drillMaxAgeDays" in message
    harness.settings("prod", backup_of("prod", drillSchedule="30 4 * * 0"))
    harness.settings(
        "prod",
        {**backup_of("prod", drillSchedule="0 4 1 * *"), "monitoring": {"drillMaxAgeDays": 40}},
    )
    # drill alerts off: any valid schedule
    harness.settings(
        "prod",
        {**backup_of("prod", drillSchedule="0 4 1 1 *"), "monitoring": {"drillMaxAgeDays": 0}},
    )


def test_daily_drills_are_fine() -> None:
    settings = harness.settings("dev", backup_of("dev", drillSchedule="@daily"))
    assert settings.backup.drill_interval_minutes == 24 * 60


@pytest.mark.parametrize(
    ("overrides", "key", "says"),
    [
        (
            {"backup": {"enabled": False, "drillSchedule": "30 4 * * 0"}},
            "backup.drillSchedule",
            "no effect with backup.enabled false",
        ),
        (
            backup_of("dev", drillServiceAccount="x@y.iam.gserviceaccount.com"),
            "backup.drillServiceAccount",
            "creates this identity (redis-drill@",
        ),
        (
            backup_of("dev", drillResources={"memory": "4GB"}),
            "backup.drillResources.memory",
            "String should match pattern",
        ),
    ],
)
def test_drill_setting_mistakes_name_the_key(
    overrides: dict[str, Any], key: str, says: str
) -> None:
    message = error_of("dev", overrides)
    assert f"redis-platform:{key}:" in message, message
    assert says in message, message
