"""What every GCP component is built from, and the names they agree on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp.provider as gcp_provider

from infra.settings import GcpSettings, StackSettings

BACKUP_ACCOUNT = "redis-backup"
DRILL_ACCOUNT = "redis-drill"
NODE_ACCOUNT = "redis-nodes"
# The restore drill runs in a scratch namespace of this name (runbooks, `redisops drill`).
DRILL_NAMESPACE = "redis-drill"
# Kubernetes ServiceAccounts the Google identities are bound to (infra/k8s/jobs.py).
BACKUP_KSA = "redis-backup"
DRILL_KSA = "redis-drill"


@dataclass(frozen=True)
class Cloud:
    """The validated settings and the explicit GCP provider."""

    settings: StackSettings
    provider: gcp_provider.Provider

    @property
    def gcp(self) -> GcpSettings:
        assert self.settings.gcp is not None
        return self.settings.gcp

    @property
    def labels(self) -> dict[str, str]:
        return {"app": "redis-platform", "environment": self.settings.environment}

    def opts(self, parent: pulumi.Resource, **extra: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=parent, provider=self.provider, **extra)

    def workload_member(self, namespace: str, service_account: str) -> str:
        """The IAM member of a Kubernetes ServiceAccount under Workload Identity."""
        return f"serviceAccount:{self.gcp.project}.svc.id.goog[{namespace}/{service_account}]"


def provider(settings: GcpSettings) -> gcp_provider.Provider:
    return gcp_provider.Provider(
        "gcp",
        project=settings.project,
        region=settings.region,
        default_labels={"managed-by": "pulumi", "app": "redis-platform"},
    )
