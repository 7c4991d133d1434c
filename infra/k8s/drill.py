"""The restore drill on a schedule: a CronJob in its own scratch namespace that restores the
newest backup into scratch servers inside its pod and verifies it (runbooks/restore-drill.md).

Its Job is the one `redisops drill job-spec` prints (redisops/backup/drill_job.py: one
definition). The drill writes its outcome next to the backups (`runs/drill/`), which
redis-ops-metrics turns into the metrics RedisRestoreDrillOverdue / Failed read. The
namespace admits nothing and lets the drill reach only DNS and Google APIs (Cloud Storage,
Workload Identity's metadata server).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s.common import DRILL_KSA, DRILL_NAMESPACE, Platform, meta
from infra.k8s.namespace import Namespace
from infra.k8s.network import NetworkPolicies, drill_policies
from infra.settings import StackSettings
from redisops.backup import drill_job

# The runbooks and the drill workflow start a run with `--from=cronjob/redis-restore-drill`.
CRONJOB = "redis-restore-drill"
GCP_ACCOUNT_ANNOTATION = "iam.gke.io/gcp-service-account"
# The pods the drill's Job starts, by the builder's own labels.
POD_SELECTOR = {
    "matchLabels": {"app.kubernetes.io/component": drill_job.LABELS["app.kubernetes.io/component"]}
}


def drill_manifest(settings: StackSettings) -> dict[str, Any]:
    """The drill's Job as `redisops drill job-spec` builds it, for this stack: its backup
    location and image, its service account, `--max-age` the backups' own limit (the
    schedule's longest gap plus slack: a drill of a stale backup proves little), and the
    stack's pod size."""
    size = settings.backup.drill_resources
    job = drill_job.drill_job(
        namespace=DRILL_NAMESPACE,
        image=settings.platform_image,
        location=settings.backup.url,
        service_account=DRILL_KSA,
        name=CRONJOB,
        max_backup_age_s=settings.backup.max_age_s,
        cpu=size.cpu,
        memory=size.memory,
        scratch_size=size.scratch_size,
        deadline_s=size.timeout_minutes * 60,
    )
    return drill_job.as_dict(job)


def drill_cronjob_spec(settings: StackSettings) -> dict[str, Any]:
    """The CronJob's spec: the drill's Job on `backup.drillSchedule`, one at a time."""
    job = drill_manifest(settings)
    return {
        "schedule": settings.backup.drill_schedule,
        "timeZone": "Etc/UTC",
        "concurrencyPolicy": "Forbid",
        # a weekly drill missed by a controller restart still runs within the hour
        "startingDeadlineSeconds": 3600,
        "successfulJobsHistoryLimit": 1,
        "failedJobsHistoryLimit": 2,
        "jobTemplate": {"metadata": {"labels": job["metadata"]["labels"]}, "spec": job["spec"]},
    }


class RestoreDrill(pulumi.ComponentResource):
    """Namespace `redis-drill` (Pod Security `restricted`, as the platform's), its
    ServiceAccount bound to the drill's Google identity, the CronJob, and its policies."""

    def __init__(
        self,
        resource_name: str,
        platform: Platform,
        *,
        gcp_account: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`gcp_account`: the Google service account the drill acts as (Workload Identity);
        default backup.drillServiceAccount."""
        super().__init__("redis-platform:k8s:RestoreDrill", resource_name, None, opts)
        settings = platform.settings
        namespace = Namespace(
            "drill-namespace",
            DRILL_NAMESPACE,
            platform.provider,
            gate=platform.gate,
            opts=pulumi.ResourceOptions(parent=self),
        )
        # everything below waits for the scratch namespace (and the rollout check)
        scratch = dataclasses.replace(platform, namespace=namespace.resource)
        annotations: dict[str, Any] = {}
        account = gcp_account or settings.backup.drill_service_account
        if account:
            annotations[GCP_ACCOUNT_ANNOTATION] = account
        service_account = k8s.core.v1.ServiceAccount(
            "drill-service-account",
            metadata=meta(DRILL_KSA, DRILL_NAMESPACE, "restore-drill", annotations=annotations),
            automount_service_account_token=False,  # Workload Identity needs no token
            opts=scratch.opts(self),
        )
        network = NetworkPolicies(
            "drill-network",
            scratch,
            specs=drill_policies(settings, POD_SELECTOR),
            namespace=DRILL_NAMESPACE,
            prefix="drill-",
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.cronjob = k8s.batch.v1.CronJob(
            "drill-cronjob",
            metadata=meta(CRONJOB, DRILL_NAMESPACE, "restore-drill"),
            spec=drill_cronjob_spec(settings),
            opts=scratch.opts(self, depends_on=[service_account, network]),
        )
        self.namespace = namespace.name
        self.register_outputs({"namespace": self.namespace, "cronjob": CRONJOB})
