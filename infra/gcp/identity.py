"""Google identities for the jobs, bound to their Kubernetes ServiceAccounts through
Workload Identity, each with object rights on the backup bucket only."""

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
    Cloud,
)
from infra.gcp.storage import BackupBucket

# Backups add objects and read them back (manifests, verification); they never delete or
# replace one (old backups expire by the bucket's lifecycle rule).
BACKUP_ROLES = ("roles/storage.objectCreator", "roles/storage.objectViewer")
DRILL_ROLES = ("roles/storage.objectViewer",)


class Identities(pulumi.ComponentResource):
    backup: serviceaccount.Account
    drill: serviceaccount.Account

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
        self.drill = self._identity(
            cloud,
            bucket,
            DRILL_ACCOUNT,
            DRILL_ROLES,
            cloud.workload_member(DRILL_NAMESPACE, DRILL_KSA),
        )
        self.register_outputs({"backup": self.backup.email, "drill": self.drill.email})

    def _identity(
        self,
        cloud: Cloud,
        bucket: BackupBucket,
        account_id: str,
        roles: tuple[str, ...],
        workload: str,
    ) -> serviceaccount.Account:
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
        serviceaccount.IAMMember(
            f"{account_id}-workload-identity",
            service_account_id=account.name,
            role="roles/iam.workloadIdentityUser",
            member=workload,
            opts=cloud.opts(self),
        )
        return account
