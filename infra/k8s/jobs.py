"""The platform's jobs: reconcile after each change, backups on a schedule, and the smoke
Job's spec for the launcher that runs it after every rollout.

All run the platform image (`redisops`), mount only the Secrets of the roles they act as,
and carry the label that lets them reach the Redis client port.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s import credentials as creds
from infra.k8s import tls as tls_names
from infra.k8s.common import (
    PLATFORM_UID,
    RESTRICTED_CONTAINER,
    STATEFULSET,
    Platform,
    job_labels,
    meta,
    restricted_pod,
)
from infra.k8s.redis_cluster import pod_endpoints
from infra.settings import StackSettings
from redisops import acl, functions

ROOT = "/etc/redis-platform"
TLS_DIR = f"{ROOT}/tls"
NODE_CERT_DIR = f"{ROOT}/node"
USERS_DIR = f"{ROOT}/users"
WORK = "/work"  # an emptyDir: the root filesystem is read-only
RECONCILE_TIMEOUT_S = 600
# The kubelet refreshes mounted Secrets about once a minute.
MOUNT_SETTLE_S = 120
SMOKE_TARGET_CONFIG_MAP = "redis-smoke-target"
SMOKE_JOB_CONFIG_MAP = "redis-smoke-job"
# Roles whose credentials the smoke suite gets: its own, the stream roles, and the
# read-only operational ones (the ACL matrix probes each). Never admin or operator.
SMOKE_ROLES = (acl.SMOKE, acl.PUBLISHER, acl.READER, acl.MONITORING, acl.BACKUP)


def work_env() -> list[dict[str, Any]]:
    """HOME, TMPDIR and the CLI's state directory on the work emptyDir: on a read-only
    root it is the only writable place. Its mount point itself: an empty volume has no
    subdirectories, and Python finds no other temp directory."""
    return [
        {"name": "HOME", "value": WORK},
        {"name": "TMPDIR", "value": WORK},
        {"name": "REDISOPS_STATE_DIR", "value": f"{WORK}/state"},
    ]


def password_file(role: str) -> str:
    return f"{USERS_DIR}/{role}/password"


def _user_volumes(roles: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes = [
        {
            "name": f"user-{role}",
            "secret": {
                "secretName": creds.user_secret(role),
                "items": [{"key": "password", "path": "password"}],
                "defaultMode": 0o440,
            },
        }
        for role in roles
    ]
    mounts = [
        {"name": f"user-{role}", "mountPath": f"{USERS_DIR}/{role}", "readOnly": True}
        for role in roles
    ]
    return volumes, mounts


def job_pod(
    settings: StackSettings,
    component: str,
    args: list[str],
    roles: tuple[str, ...],
    *,
    service_account: str,
    token: bool,
    extra_volumes: list[dict[str, Any]] | None = None,
    extra_mounts: list[dict[str, Any]] | None = None,
    memory: str = "256Mi",
    work_size: str = "1Gi",
) -> dict[str, Any]:
    """A pod template running `redisops <args>` as a Redis client with the jobs' client
    certificate and the given roles' passwords."""
    user_volumes, user_mounts = _user_volumes(roles)
    container = {
        "name": component,
        "image": settings.platform_image,
        "command": ["redisops"],
        "args": args,
        "env": work_env(),
        "resources": {"requests": {"cpu": "100m", "memory": memory}, "limits": {"memory": memory}},
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [
            {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
            {"name": "work", "mountPath": WORK},
            *user_mounts,
            *(extra_mounts or []),
        ],
    }
    return {
        "metadata": {"labels": job_labels(component)},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": service_account,
            "automountServiceAccountToken": token,
            "enableServiceLinks": False,
            "securityContext": restricted_pod(PLATFORM_UID),
            "containers": [container],
            "volumes": [
                {
                    "name": "tls",
                    "secret": {
                        "secretName": tls_names.CLIENTS["jobs"],
                        "defaultMode": 0o440,
                    },
                },
                {"name": "work", "emptyDir": {"sizeLimit": work_size}},
                *user_volumes,
                *(extra_volumes or []),
            ],
        },
    }


def client_args(settings: StackSettings, role: str) -> list[str]:
    args: list[str] = []
    for endpoint in pod_endpoints(settings):
        args += ["--node", endpoint]
    return [
        *args,
        "--ca",
        f"{TLS_DIR}/ca.crt",
        "--cert",
        f"{TLS_DIR}/tls.crt",
        "--key",
        f"{TLS_DIR}/tls.key",
        "--user",
        role,
        "--password-file",
        password_file(role),
    ]


def reconcile_args(settings: StackSettings) -> list[str]:
    args = ["reconcile", *client_args(settings, acl.OPERATOR)]
    # client_args' --node entries are host:port; reconcile takes the same form.
    return [
        *args,
        "--shards",
        str(settings.redis.shards),
        "--replicas",
        str(settings.redis.replicas),
        "--acl-file",
        f"{ROOT}/acl/{creds.ACL_KEY}",
        "--reload-tls",
        "--admin-password-file",
        password_file(acl.ADMIN),
        "--replication-password-file",
        password_file(acl.REPLICATION),
        "--expect-node-cert",
        f"{NODE_CERT_DIR}/tls.crt",
        "--zones-from-kubernetes",
        "--settle",
        str(MOUNT_SETTLE_S),
        "--timeout",
        str(RECONCILE_TIMEOUT_S),
        "--json",
    ]


def backup_args(settings: StackSettings) -> list[str]:
    # The backup identity may add objects, never replace one: create writes only new ones.
    return ["backup", "create", "--to", settings.backup.url,
            *client_args(settings, acl.BACKUP), "--json"]  # fmt: skip


def smoke_target(settings: StackSettings, proxy_url: str | None) -> dict[str, Any]:
    """What the smoke suite needs to know inside the smoke Job (smoke_tests.targets)."""
    sse = None
    if proxy_url is not None:
        sse = {"url": proxy_url, "jwt_secret_file": f"{ROOT}/sse/secret"}
    return {
        "name": settings.environment,
        "shards": settings.redis.shards,
        "replicas": settings.redis.replicas,
        "node_timeout_ms": settings.redis.node_timeout_ms,
        "streams": list(settings.streams.patterns),
        "mutual_tls": settings.redis.tls_auth_clients == "yes",
        # Prod runs only non-destructive checks; dev also kills a primary.
        "can_disrupt": settings.environment != "prod",
        "namespace": settings.namespace,
        "nodes": [{"endpoint": e} for e in pod_endpoints(settings)],
        "tls": {
            "ca": f"{TLS_DIR}/ca.crt",
            "cert": f"{TLS_DIR}/tls.crt",
            "key": f"{TLS_DIR}/tls.key",
        },
        "users": {
            role: {"username": role, "password_file": password_file(role)} for role in SMOKE_ROLES
        },
        "sse_proxy": sse,
        "backups": (
            {"location": settings.backup.url, "max_age_s": settings.backup.max_age_s}
            if settings.backup.enabled
            else None
        ),
    }


def smoke_job(settings: StackSettings) -> dict[str, Any]:
    """The smoke Job, created by the rollout launcher (generateName: one per run)."""
    args = [
        "smoke",
        "--target",
        "kubernetes",
        "--target-file",
        f"{ROOT}/smoke/target.json",
        "--report-dir",
        f"{WORK}/reports",
        "--json",
    ]
    if settings.environment == "prod":
        args.append("--no-disruption")
    template = job_pod(
        settings,
        "smoke",
        args,
        SMOKE_ROLES,
        service_account="redis-smoke",
        # dev's crash check deletes a Redis pod through the API.
        token=settings.environment != "prod",
        extra_volumes=[
            {"name": "target", "configMap": {"name": SMOKE_TARGET_CONFIG_MAP}},
            {
                "name": "sse",
                "secret": {
                    "secretName": creds.JWT_SECRET,
                    "items": [{"key": "secret", "path": "secret"}],
                    "defaultMode": 0o440,
                },
            },
        ],
        extra_mounts=[
            {"name": "target", "mountPath": f"{ROOT}/smoke", "readOnly": True},
            {"name": "sse", "mountPath": f"{ROOT}/sse", "readOnly": True},
        ],
        memory="512Mi",
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "generateName": "redis-smoke-",
            "namespace": settings.namespace,
            "labels": job_labels("smoke"),
        },
        "spec": {
            "backoffLimit": 0,  # a failed gate is a finding, never retried quietly
            "activeDeadlineSeconds": 900,
            "ttlSecondsAfterFinished": 86400,
            "template": template,
        },
    }


def _grant(
    platform: Platform,
    parent: pulumi.Resource,
    resource_name: str,
    account: k8s.core.v1.ServiceAccount,
    name: str,
    rules: list[dict[str, Any]],
    cluster_wide: bool = False,
) -> None:
    """A Role (ClusterRole when cluster_wide) named `name` with `rules`, bound to the
    ServiceAccount `account`."""
    ns = platform.ns
    kind = "ClusterRole" if cluster_wide else "Role"
    metadata = meta(name, None if cluster_wide else ns, "jobs")
    role_type, binding_type = (
        (k8s.rbac.v1.ClusterRole, k8s.rbac.v1.ClusterRoleBinding)
        if cluster_wide
        else (k8s.rbac.v1.Role, k8s.rbac.v1.RoleBinding)
    )
    role = role_type(resource_name, metadata=metadata, rules=rules, opts=platform.opts(parent))
    binding_type(
        resource_name,
        metadata=metadata,
        role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
        subjects=[{"kind": "ServiceAccount", "name": account.metadata.name, "namespace": ns}],
        opts=platform.opts(parent, depends_on=[role, account]),
    )


def _service_account(
    platform: Platform,
    parent: pulumi.Resource,
    name: str,
    annotations: dict[str, Any] | None = None,
) -> k8s.core.v1.ServiceAccount:
    return k8s.core.v1.ServiceAccount(
        name,
        metadata=meta(name, platform.ns, "jobs", annotations=annotations or {}),
        automount_service_account_token=False,
        opts=platform.opts(parent),
    )


class Jobs(pulumi.ComponentResource):
    """The reconcile Job (named by a hash of what it enforces, so a change runs it again),
    the backup CronJob, and the smoke Job's spec with its RBAC and target file."""

    reconcile_job_name: pulumi.Output[str]
    smoke_job: dict[str, Any]

    def __init__(
        self,
        resource_name: str,
        platform: Platform,
        *,
        acl_digest: pulumi.Output[str],
        replication_digest: pulumi.Output[str],
        node_cert_pem: pulumi.Output[str],
        ca_cert_pem: pulumi.Output[str],
        proxy_url: str | None,
        depends_on: list[pulumi.Resource],
        backup_account: pulumi.Input[str] | None = None,
        smoke_account: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`backup_account` / `smoke_account`: the Google service accounts backups and the
        smoke Job act as (Workload Identity); default backup.gcpServiceAccount /
        backup.smokeServiceAccount from the stack."""
        super().__init__("redis-platform:k8s:Jobs", resource_name, None, opts)
        settings = platform.settings
        ns = platform.ns
        pods = [f"{STATEFULSET}-{i}" for i in range(settings.redis.pods)]

        # --- reconcile: may read its pods' nodes for their zones, nothing else --------
        reconcile_sa = _service_account(platform, self, "redis-reconcile")
        _grant(platform, self, "reconcile-pods", reconcile_sa, "redis-reconcile",
               [{"apiGroups": [""], "resources": ["pods"], "resourceNames": pods,
                 "verbs": ["get"]}])  # fmt: skip
        _grant(platform, self, "reconcile-nodes", reconcile_sa, f"redis-platform-{ns}-node-zones",
               [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
               cluster_wide=True)  # fmt: skip
        reconcile_roles = (acl.OPERATOR, acl.ADMIN, acl.REPLICATION)
        template = job_pod(
            settings,
            "reconcile",
            reconcile_args(settings),
            reconcile_roles,
            service_account="redis-reconcile",
            token=True,
            extra_volumes=[
                {"name": "acl", "secret": {"secretName": creds.ACL_SECRET, "defaultMode": 0o440}},
                {
                    "name": "node-cert",
                    "secret": {
                        "secretName": tls_names.NODE_SECRET,
                        "items": [{"key": "tls.crt", "path": "tls.crt"}],
                        "defaultMode": 0o440,
                    },
                },
            ],
            extra_mounts=[
                {"name": "acl", "mountPath": f"{ROOT}/acl", "readOnly": True},
                {"name": "node-cert", "mountPath": NODE_CERT_DIR, "readOnly": True},
            ],
        )
        shape = json.dumps(
            {
                "args": reconcile_args(settings),
                "image": settings.platform_image,
                # the function library reconcile loads: a new one must run it again
                "functions": hashlib.sha256(functions.CODE.encode()).hexdigest(),
            },
            sort_keys=True,
        )
        self.reconcile_job_name = pulumi.Output.all(
            acl_digest, replication_digest, node_cert_pem, ca_cert_pem
        ).apply(
            lambda parts: (
                "redis-reconcile-"
                + hashlib.sha256("\0".join([shape, *parts]).encode()).hexdigest()[:10]
            )
        )
        self.reconcile_job = k8s.batch.v1.Job(
            "reconcile",
            metadata={
                "name": self.reconcile_job_name,
                "namespace": ns,
                "labels": job_labels("reconcile"),
            },
            spec={
                # Pods may still be starting on the first run: retry with back-off.
                "backoffLimit": 6,
                "activeDeadlineSeconds": 1800,
                "template": template,
            },
            opts=platform.opts(
                self,
                depends_on=[*depends_on, reconcile_sa],
                delete_before_replace=True,
                custom_timeouts=pulumi.CustomTimeouts(create="35m", update="35m"),
            ),
        )

        # --- backups -----------------------------------------------------------------
        if settings.backup.enabled:
            annotations: dict[str, Any] = {}
            account = backup_account or settings.backup.gcp_service_account
            if account:
                annotations["iam.gke.io/gcp-service-account"] = account
            backup_sa = _service_account(platform, self, "redis-backup", annotations)
            interval_s = settings.backup.max_age_s - settings.backup.slack_minutes * 60
            k8s.batch.v1.CronJob(
                "backup",
                metadata=meta("redis-backup", ns, "backup"),
                spec={
                    "schedule": settings.backup.schedule,
                    "timeZone": "Etc/UTC",
                    "concurrencyPolicy": "Forbid",
                    "startingDeadlineSeconds": 600,
                    "successfulJobsHistoryLimit": 3,
                    "failedJobsHistoryLimit": 5,
                    "jobTemplate": {
                        "metadata": {"labels": job_labels("backup")},
                        "spec": {
                            "backoffLimit": 2,
                            "activeDeadlineSeconds": max(600, min(interval_s - 60, 6 * 3600)),
                            "template": job_pod(
                                settings,
                                "backup",
                                backup_args(settings),
                                (acl.BACKUP,),
                                service_account="redis-backup",
                                # Workload Identity needs no token mount.
                                token=False,
                                memory="512Mi",
                                work_size=settings.redis.storage_size,
                            ),
                        },
                    },
                },
                opts=platform.opts(self, depends_on=[backup_sa, *depends_on]),
            )

        # --- smoke: the spec, its target file and its rights -------------------------
        # With backups, the smoke Job reads the bucket (the newest backup's age) as its own
        # read-only Google identity.
        smoke_annotations: dict[str, Any] = {}
        smoke_gsa = smoke_account or settings.backup.smoke_service_account
        if settings.backup.enabled and smoke_gsa:
            smoke_annotations["iam.gke.io/gcp-service-account"] = smoke_gsa
        smoke_sa = _service_account(platform, self, "redis-smoke", smoke_annotations)
        if settings.environment != "prod":
            _grant(platform, self, "smoke-pods", smoke_sa, "redis-smoke",
                   [{"apiGroups": [""], "resources": ["pods"], "resourceNames": pods,
                     "verbs": ["get", "delete"]}])  # fmt: skip
        self.smoke_target = smoke_target(settings, proxy_url)
        k8s.core.v1.ConfigMap(
            "smoke-target",
            metadata=meta(SMOKE_TARGET_CONFIG_MAP, ns, "smoke"),
            data={"target.json": json.dumps(self.smoke_target, indent=2, sort_keys=True)},
            opts=platform.opts(self),
        )
        self.smoke_job = smoke_job(settings)
        k8s.core.v1.ConfigMap(
            "smoke-job",
            metadata=meta(SMOKE_JOB_CONFIG_MAP, ns, "smoke"),
            data={"job.json": json.dumps(self.smoke_job, indent=2, sort_keys=True)},
            opts=platform.opts(self),
        )
        self.register_outputs(
            {"reconcile_job_name": self.reconcile_job_name, "smoke_job": self.smoke_job}
        )
