"""Google identities for the jobs, bound to their Kubernetes ServiceAccounts through
Workload Identity, each with object rights on the backup bucket only: backups write and
read back, the restore drill (with backups: its CronJob) reads and adds its run record,
and the smoke Job (the rollout gate) reads the newest backup's manifest to check its age.
The platform metrics (redis-ops-metrics) read exactly what the smoke Job reads, as the
same read-only identity through their own Kubernetes ServiceAccount."""

from __future__ import annotations

import pulumi
import pulumi_gcp.serviceaccount as serviceaccount
import pulumi_gcp.storage as storage

from infra.gcp.common import (
    BACKUP_ACCOUNT,
    BACKUP_KSA,
    DRILL_ACCOUNT,
    DRILL_KSA,
    DRILL_NAMESPACE,
    OPS_METRICS_KSA,
    SMOKE_ACCOUNT,
    SMOKE_KSA,
    Cloud,
)
from infra.gcp.storage import BackupBucket

# Backups add objects and read them back (manifests, verification); they never delete or
# replace one (old backups expire by the bucket's lifecycle rule).
BACKUP_ROLES = ("roles/storage.objectCreator", "roles/storage.objectViewer")
# The drill reads a backup and writes its run record (runs/drill/<rank>-<ok|failed>.json,
# a new object every time: never a replacement, which would need objects.delete).
DRILL_ROLES = ("roles/storage.objectCreator", "roles/storage.objectViewer")
SMOKE_ROLES = ("roles/storage.objectViewer",)


class Identities(pulumi.ComponentResource):
    backup: serviceaccount.Account
    #: the restore drill CronJob's identity (infra/k8s/drill.py), when there are backups
    drill: serviceaccount.Account | None
    #: the smoke Job's identity (and the platform metrics'), when there are backups to read
    smoke: serviceaccount.Account | None

    def __init__(
        self,
        resource_name: str,
        cloud: Cloud,
        bucket: BackupBucket,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("redis-platform:gcp:Identities", resource_name, None, opts)
        namespace = cloud.settings.namespace
        self.backup = self._identity(
            cloud,
            bucket,
            BACKUP_ACCOUNT,
            BACKUP_ROLES,
            cloud.workload_member(namespace, BACKUP_KSA),
        )
        self.drill = None
        self.smoke = None
        if cloud.settings.backup.enabled:
            self.drill = self._identity(
                cloud,
                bucket,
                DRILL_ACCOUNT,
                DRILL_ROLES,
                cloud.workload_member(DRILL_NAMESPACE, DRILL_KSA),
            )
            self.smoke = self._identity(
                cloud,
                bucket,
                SMOKE_ACCOUNT,
                SMOKE_ROLES,
                cloud.workload_member(namespace, SMOKE_KSA),
                also={OPS_METRICS_KSA: cloud.workload_member(namespace, OPS_METRICS_KSA)},
            )
        self.register_outputs(
            {
                "backup": self.backup.email,
                "drill": self.drill.email if self.drill else None,
                "smoke": self.smoke.email if self.smoke else None,
            }
        )

    def _identity(
        self,
        cloud: Cloud,
        bucket: BackupBucket,
        account_id: str,
        roles: tuple[str, ...],
        workload: str,
        also: dict[str, str] | None = None,
    ) -> serviceaccount.Account:
        """The account, its roles on the bucket, and who may act as it: `workload`, and
        the members in `also` (Kubernetes ServiceAccount name -> its member)."""
        account = serviceaccount.Account(
            account_id,
            account_id=account_id,
            display_name=f"redis-platform {account_id} ({cloud.settings.environment})",
            opts=cloud.opts(self),
        )
        member = account.email.apply(lambda email: f"serviceAccount:{email}")
        for role in roles:
            storage.BucketIAMMember(
                f"{account_id}-{role.removeprefix('roles/storage.')}",
                bucket=bucket.name,
                role=role,
                member=member,
                opts=cloud.opts(self),
            )
        bindings = {f"{account_id}-workload-identity": workload}
        bindings |= {f"{account_id}-workload-identity-{k}": m for k, m in (also or {}).items()}
        for name, member_of in bindings.items():
            serviceaccount.IAMMember(
                name,
                service_account_id=account.name,
                role="roles/iam.workloadIdentityUser",
                member=member_of,
                opts=cloud.opts(self),
            )
        return account
