"""The backup bucket: uniform access, public access prevention enforced, versioning, an
optional retention policy (locked only when asked), deletion after the retention days,
and an optional customer-managed key."""

from __future__ import annotations

import pulumi
import pulumi_gcp.kms as kms
import pulumi_gcp.storage as storage

from infra.gcp.common import DAY_S, Cloud

# Versions replaced or deleted are kept this long (undo an accidental overwrite).
NONCURRENT_DAYS = 7


class BackupBucket(pulumi.ComponentResource):
    bucket: storage.Bucket
    name: pulumi.Output[str]

    def __init__(
        self, resource_name: str, cloud: Cloud, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("redis-platform:gcp:BackupBucket", resource_name, None, opts)
        settings = cloud.gcp.bucket
        encryption = None
        depends_on: list[pulumi.Resource] = []
        self.key: kms.CryptoKey | None = None
        if settings.cmek is not None:
            cmek = settings.cmek
            ring = kms.KeyRing(
                "key-ring", name=cmek.key_ring, location=cmek.location, opts=cloud.opts(self)
            )
            self.key = kms.CryptoKey(
                "key",
                name=cmek.key,
                key_ring=ring.id,
                rotation_period=f"{cmek.rotation_days * DAY_S}s",
                purpose="ENCRYPT_DECRYPT",
                labels=cloud.labels,
                opts=cloud.opts(self, protect=True),
            )
            # Cloud Storage encrypts with the key as its own service agent.
            agent = storage.get_project_service_account_output(
                project=cloud.gcp.project, opts=pulumi.InvokeOutputOptions(provider=cloud.provider)
            )
            grant = kms.CryptoKeyIAMMember(
                "storage-agent-uses-key",
                crypto_key_id=self.key.id,
                role="roles/cloudkms.cryptoKeyEncrypterDecrypter",
                member=agent.email_address.apply(lambda e: f"serviceAccount:{e}"),
                opts=cloud.opts(self),
            )
            depends_on.append(grant)
            encryption = {"default_kms_key_name": self.key.id}
        retention = None
        if settings.retention_policy_days is not None:
            retention = {
                "retention_period": str(settings.retention_policy_days * DAY_S),
                "is_locked": settings.lock_retention,
            }
        self.bucket = storage.Bucket(
            "bucket",
            name=settings.name,
            location=settings.location,
            storage_class="STANDARD",
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            versioning={"enabled": True},
            retention_policy=retention,
            encryption=encryption,
            lifecycle_rules=[
                {
                    "action": {"type": "Delete"},
                    "condition": {"age": cloud.settings.backup.retention_days},
                },
                {
                    "action": {"type": "Delete"},
                    "condition": {"days_since_noncurrent_time": NONCURRENT_DAYS},
                },
            ],
            labels=cloud.labels,
            force_destroy=False,
            opts=cloud.opts(
                self, depends_on=depends_on, protect=cloud.settings.environment == "prod"
            ),
        )
        self.name = self.bucket.name
        self.register_outputs({"name": self.bucket.name, "url": self.bucket.url})
