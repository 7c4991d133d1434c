"""What every GCP component is built from, and the names they agree on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp.provider as gcp_provider

from infra.k8s.common import DRILL_KSA as DRILL_KSA
from infra.k8s.common import DRILL_NAMESPACE as DRILL_NAMESPACE
from infra.settings import GcpSettings, StackSettings

DAY_S = 86400
BACKUP_ACCOUNT = "redis-backup"
DRILL_ACCOUNT = "redis-drill"
SMOKE_ACCOUNT = "redis-smoke"
NODE_ACCOUNT = "redis-nodes"
# Kubernetes ServiceAccounts the Google identities are bound to (infra/k8s/jobs.py,
# infra/k8s/drill.py: the drill's, in its scratch namespace DRILL_NAMESPACE).
BACKUP_KSA = "redis-backup"
SMOKE_KSA = "redis-smoke"
OPS_METRICS_KSA = "redis-ops-metrics"  # infra/k8s/monitoring.py


@dataclass(frozen=True)
class Cloud:
    """The validated settings and the explicit GCP provider."""

    settings: StackSettings
    provider: gcp_provider.Provider
    #: the project's APIs this layer needs; every resource waits for them
    apis: tuple[pulumi.Resource, ...] = ()

    @property
    def gcp(self) -> GcpSettings:
        assert self.settings.gcp is not None
        return self.settings.gcp

    @property
    def labels(self) -> dict[str, str]:
        return {"app": "redis-platform", "environment": self.settings.environment}

    def opts(self, parent: pulumi.Resource, **extra: Any) -> pulumi.ResourceOptions:
        depends_on = [*self.apis, *extra.pop("depends_on", [])]
        return pulumi.ResourceOptions(
            parent=parent, provider=self.provider, depends_on=depends_on, **extra
        )

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


def required_apis(stack: StackSettings) -> list[str]:
    """The Google APIs the declared resources need, for a fresh project."""
    from infra.gcp.network import needs_private_google_dns

    settings = stack.gcp
    assert settings is not None
    apis = [
        "compute.googleapis.com",
        "container.googleapis.com",  # creating or reading the cluster
        "iam.googleapis.com",
        "storage.googleapis.com",
        "secretmanager.googleapis.com",
        "monitoring.googleapis.com",
    ]
    if settings.bucket.cmek is not None:
        apis.append("cloudkms.googleapis.com")
    if settings.registry is not None:
        apis.append("artifactregistry.googleapis.com")
    if settings.gke.create or settings.ci is not None:
        apis.append("cloudresourcemanager.googleapis.com")  # project IAM members
    if settings.ci is not None:
        # GitHub's token exchanged (Security Token Service), then the deployer's token
        apis += ["sts.googleapis.com", "iamcredentials.googleapis.com"]
    zone = settings.alerting is not None and settings.alerting.dns_zone
    private_dns = settings.gke.create and needs_private_google_dns(stack.network.google_apis_cidrs)
    if zone or private_dns:
        apis.append("dns.googleapis.com")
    return apis


class ProjectApis(pulumi.ComponentResource):
    """Enables the APIs (and leaves them enabled on destroy: other users may rely on them)."""

    def __init__(
        self, resource_name: str, cloud: Cloud, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        import pulumi_gcp.projects as projects

        super().__init__("redis-platform:gcp:ProjectApis", resource_name, None, opts)
        apis = required_apis(cloud.settings)
        self.services = tuple(
            projects.Service(
                api.split(".")[0],
                service=api,
                disable_on_destroy=False,
                disable_dependent_services=False,
                opts=cloud.opts(self),
            )
            for api in apis
        )
        self.register_outputs({"apis": apis})
