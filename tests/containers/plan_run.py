"""The recorded dev plan, run as containers of the image built here.

Every pod the plan declares runs as declared (devtools/pods.py maps each field). What a
machine without Kubernetes or Google Cloud cannot provide is replaced, and only that;
`REPLACED` lists it and the README repeats it:
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from devtools import pods
from infra.k8s import common, drill
from tests.infra import harness

BUCKET_MOUNT = "/bucket"
BUCKET_LOCATION = f"file://{BUCKET_MOUNT}/redis"
REPLACED = {
    "backup location": "gs://<bucket>/redis becomes file:///bucket/redis on a volume the "
    "backup, smoke and drill pods share (no Cloud Storage, no Workload Identity here)",
    "reconcile --zones-from-kubernetes": "dropped: pod zones come from the API server, and "
    "there is none (nodes are placed without zones)",
    "smoke target can_disrupt": "false, as in prod: the disruptive check deletes a pod "
    "through the API server; the plan run deletes and recreates one itself instead",
    "exporter sidecar": "not run: oliver006/redis_exporter cannot be pulled here (the twin "
    "runs Debian's build of it in the alert drills)",
    "Services": "DNS aliases on the pods they select (no ClusterIP, no readiness gating)",
    "NetworkPolicies": "not enforced (no CNI here); checked on the recorded objects only",
    "drill namespace": "the drill CronJob's pod runs beside the others, not in redis-drill "
    "(it reaches only the bucket, which is a volume here)",
}


def objects(plan: harness.Plan, chart: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Secrets and ConfigMaps pods mount, the smoke target pointing at the bucket
    volume and declaring no disruption."""
    found = [r.manifest for r in plan.kube("Secret") + plan.kube("ConfigMap")]
    found += [o for o in chart if o["kind"] in ("Secret", "ConfigMap")]
    result = []
    for obj in found:
        obj = copy.deepcopy(obj)
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "redis-smoke-target":
            target = json.loads(obj["data"]["target.json"])
            target["backups"]["location"] = BUCKET_LOCATION
            target["can_disrupt"] = False
            obj["data"]["target.json"] = json.dumps(target)
        result.append(obj)
    return result


def with_bucket(spec: Mapping[str, Any], *, read_only: bool) -> dict[str, Any]:
    """A Job pod spec with the bucket volume and every gs:// location pointed at it."""
    result = copy.deepcopy(dict(spec))
    result["volumes"] = [
        *result.get("volumes", []),
        {"name": "bucket", "persistentVolumeClaim": {"claimName": "bucket"}},
    ]
    for container in result["containers"]:
        container["args"] = [
            BUCKET_LOCATION if str(a).startswith("gs://") else a for a in container["args"]
        ]
        container["volumeMounts"] = [
            *container.get("volumeMounts", []),
            {"name": "bucket", "mountPath": BUCKET_MOUNT, "readOnly": read_only},
        ]
    return result


def declared_jobs(plan: harness.Plan, settings: Any) -> dict[str, dict[str, Any]]:
    """Every Job pod the platform runs, as declared: the plan's reconcile Job, backup
    CronJob and restore-drill CronJob (the Job `redisops drill job-spec` prints, sized by
    the stack), and the smoke Job spec it exports."""
    (reconcile,) = plan.kube("Job")
    smoke, _ = plan.outputs["smokeJob"]
    return {
        "reconcile": pods.job_spec(reconcile.manifest),
        "backup": pods.job_spec(plan.one("CronJob", "redis-backup")),
        "smoke": pods.job_spec(smoke),
        "drill": pods.job_spec(plan.one("CronJob", drill.CRONJOB)),
    }


def job_pods(plan: harness.Plan, settings: Any) -> dict[str, dict[str, Any]]:
    """The Job pods as the plan run starts them (REPLACED): the bucket volume instead of
    Cloud Storage, reconcile without the API server's zones."""
    jobs = declared_jobs(plan, settings)
    (container,) = jobs["reconcile"]["containers"]
    container["args"] = [a for a in container["args"] if a != "--zones-from-kubernetes"]
    return {
        "reconcile": jobs["reconcile"],
        "backup": with_bucket(jobs["backup"], read_only=False),
        "smoke": with_bucket(jobs["smoke"], read_only=True),
        # the drill records its outcome next to the backups (objectCreator on GKE)
        "drill": with_bucket(jobs["drill"], read_only=False),
    }


def redis_pods(plan: harness.Plan, settings: Any) -> list[tuple[str, dict[str, Any], list[str]]]:
    """(pod name, spec, DNS names) of each StatefulSet pod: hostname and subdomain as the
    StatefulSet controller sets them, the headless name and the client Service's."""
    statefulset = plan.one("StatefulSet", common.STATEFULSET)
    template = statefulset["spec"]["template"]["spec"]
    ns, domain = settings.namespace, settings.cluster_domain
    result = []
    for i in range(int(statefulset["spec"]["replicas"])):
        name = f"{common.STATEFULSET}-{i}"
        spec = copy.deepcopy(template) | {"hostname": name, "subdomain": common.HEADLESS}
        # what the StatefulSet controller adds for each volumeClaimTemplate
        for claim in statefulset["spec"].get("volumeClaimTemplates", []):
            claim_name = claim["metadata"]["name"]
            spec["volumes"].append(
                {
                    "name": claim_name,
                    "persistentVolumeClaim": {"claimName": f"{claim_name}-{name}"},
                }
            )
        aliases = [
            f"{name}.{common.HEADLESS}.{ns}.svc.{domain}",
            f"{common.CLIENT_SERVICE}.{ns}.svc.{domain}",
        ]
        result.append((name, spec, aliases))
    return result


def ops_metrics_pod(plan: harness.Plan) -> dict[str, Any]:
    """The platform metrics Deployment's pod, reading the bucket's stand-in."""
    (deployment,) = [r.manifest for r in plan.kube("Deployment")
                     if r.manifest["metadata"]["name"] == "redis-ops-metrics"]  # fmt: skip
    return with_bucket(deployment["spec"]["template"]["spec"], read_only=True)


def proxy_pod(chart: list[dict[str, Any]], settings: Any) -> tuple[dict[str, Any], list[str]]:
    (deployment,) = [o for o in chart if o["kind"] == "Deployment"]
    (service,) = [o for o in chart if o["kind"] == "Service"]
    name = service["metadata"]["name"]
    alias = f"{name}.{settings.namespace}.svc.{settings.cluster_domain}"
    return copy.deepcopy(deployment["spec"]["template"]["spec"]), [alias]
