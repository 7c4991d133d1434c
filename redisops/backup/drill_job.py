"""The restore drill on GKE: a Job in a scratch namespace that restores the newest backup
into a scratch cluster inside its own pod, verifies it and exits non-zero if it could not.

Only built and validated here (no cluster to run it on): `drill_job()` returns the
kubernetes client object, `submit()` creates it with a BatchV1Api.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s

LABELS = {
    "app.kubernetes.io/name": "redis-platform",
    "app.kubernetes.io/component": "restore-drill",
    "app.kubernetes.io/managed-by": "redisops",
}
WORK = "/work"  # an emptyDir: the root filesystem is read-only


def drill_job(
    *,
    namespace: str,
    image: str,
    location: str,
    service_account: str,
    name: str = "redis-restore-drill",
    scratch_shards: int = 4,
    max_backup_age_s: int | None = None,
    cpu: str = "1",
    memory: str = "4Gi",
    scratch_size: str = "20Gi",
    deadline_s: int = 3600,
    keep_finished_s: int = 86400,
) -> k8s.V1Job:
    """A Job running `redisops drill restore --from <location>` in `namespace`.

    The pod needs read access to the backup location (Workload Identity on the service
    account) and room for the backup twice (download + scratch servers) in an emptyDir.
    """
    args = [
        "drill",
        "restore",
        "--from",
        location,
        "--backup",
        "latest",
        "--shards",
        str(scratch_shards),
        "--json",
    ]
    if max_backup_age_s is not None:
        args += ["--max-age", str(max_backup_age_s)]
    container = k8s.V1Container(
        name="drill",
        image=image,
        command=["redisops"],
        args=args,
        env=[
            k8s.V1EnvVar(name="REDISOPS_STATE_DIR", value=f"{WORK}/scratch"),
            # The emptyDir's mount point itself: an empty volume has no subdirectories,
            # and on a read-only root Python finds no other temp directory.
            k8s.V1EnvVar(name="TMPDIR", value=WORK),
            k8s.V1EnvVar(name="HOME", value=WORK),
        ],
        resources=k8s.V1ResourceRequirements(
            requests={"cpu": cpu, "memory": memory},
            limits={"memory": memory},
        ),
        security_context=k8s.V1SecurityContext(
            run_as_non_root=True,
            read_only_root_filesystem=True,
            allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        volume_mounts=[k8s.V1VolumeMount(name="work", mount_path=WORK)],
    )
    pod = k8s.V1PodSpec(
        restart_policy="Never",
        service_account_name=service_account,
        automount_service_account_token=False,  # Workload Identity needs no token mount
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=10001,
            run_as_group=10001,
            fs_group=10001,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        containers=[container],
        volumes=[
            k8s.V1Volume(name="work", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=scratch_size))
        ],
    )
    return k8s.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, labels=dict(LABELS)),
        spec=k8s.V1JobSpec(
            backoff_limit=0,  # a failed drill is a finding, not something to retry quietly
            active_deadline_seconds=deadline_s,
            ttl_seconds_after_finished=keep_finished_s,
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=dict(LABELS)), spec=pod
            ),
        ),
    )


def as_dict(job: k8s.V1Job) -> dict[str, Any]:
    """The manifest as Kubernetes sees it (camelCase, no nulls)."""
    result: dict[str, Any] = k8s.ApiClient().sanitize_for_serialization(job)
    return result


def submit(batch: k8s.BatchV1Api, job: k8s.V1Job) -> Any:
    """Create the Job (in its namespace)."""
    if job.metadata is None or not job.metadata.namespace:
        raise ValueError("the Job has no namespace")
    return batch.create_namespaced_job(namespace=str(job.metadata.namespace), body=job)
