"""Keyless deploys from GitHub Actions (`gcp.ci`): a Workload Identity pool, an OIDC
provider that accepts only the configured repository's tokens, and the deployer service
account those tokens may act as, with the roles `pulumi up` of this stack needs.

The roles are derived from what the stack declares: `declared_types` lists the resource
types the program creates for these settings (tests/infra checks it against the recorded
plan, both ways), and `ROLES_BY_TYPE` names the predefined role each type needs. No
primitive role (owner, editor, viewer), and no role the program does not need.

What the deployer cannot do: grant at the project level a role outside the program's own,
or Project IAM Admin to anyone (its own Project IAM Admin binding is conditional); so a
change of its own roles that adds one is applied by a project owner, as the first `pulumi
up` is. What it can: project-level Service Account Admin (it creates the workloads'
accounts and binds them) includes setting the IAM policy of every service account in the
project, so a stack gets a project of its own with no other privileged accounts (README).
"""

from __future__ import annotations

import json

import pulumi
import pulumi_gcp.artifactregistry as artifactregistry
import pulumi_gcp.iam as iam
import pulumi_gcp.projects as projects
import pulumi_gcp.serviceaccount as serviceaccount
import pulumi_gcp.storage as storage

from infra.gcp.common import Cloud
from infra.gcp.gke import NODE_ROLES
from infra.gcp.network import needs_private_google_dns
from infra.settings import CiSettings, StackSettings

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
KUBERNETES = "kubernetes:*"  # every Kubernetes object (and the chart): the cluster's API
PROJECT_IAM_ADMIN = "roles/resourcemanager.projectIamAdmin"

# resource type -> the predefined roles `pulumi up` needs to create, change and delete it.
ROLES_BY_TYPE: dict[str, tuple[str, ...]] = {
    # enabling the APIs the stack uses (never disabling: disableOnDestroy false)
    "gcp:projects/service:Service": ("roles/serviceusage.serviceUsageAdmin",),
    # the VPC, its subnet, the router and NAT, and the proxy's global static address
    "gcp:compute/network:Network": ("roles/compute.networkAdmin",),
    "gcp:compute/subnetwork:Subnetwork": ("roles/compute.networkAdmin",),
    "gcp:compute/router:Router": ("roles/compute.networkAdmin",),
    "gcp:compute/routerNat:RouterNat": ("roles/compute.networkAdmin",),
    "gcp:compute/globalAddress:GlobalAddress": ("roles/compute.networkAdmin",),
    # the private googleapis.com zone and the proxy's A record (no narrower role creates
    # zones)
    "gcp:dns/managedZone:ManagedZone": ("roles/dns.admin",),
    "gcp:dns/recordSet:RecordSet": ("roles/dns.admin",),
    # the cluster and its pools; and every Kubernetes object, including RBAC (Roles,
    # ClusterRoles and their bindings), which Kubernetes Engine Developer may not create
    "gcp:container/cluster:Cluster": ("roles/container.admin",),
    "gcp:container/nodePool:NodePool": ("roles/container.admin",),
    KUBERNETES: ("roles/container.admin",),
    # the backup bucket and its IAM (creating a bucket needs the project-level role)
    "gcp:storage/bucket:Bucket": ("roles/storage.admin",),
    "gcp:storage/bucketIAMMember:BucketIAMMember": ("roles/storage.admin",),
    # the bucket's customer-managed key and the storage agent's use of it
    "gcp:kms/keyRing:KeyRing": ("roles/cloudkms.admin",),
    "gcp:kms/cryptoKey:CryptoKey": ("roles/cloudkms.admin",),
    "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember": ("roles/cloudkms.admin",),
    # the jobs' and nodes' service accounts, and who may act as them (Workload Identity)
    "gcp:serviceaccount/account:Account": ("roles/iam.serviceAccountAdmin",),
    "gcp:serviceaccount/iAMMember:IAMMember": ("roles/iam.serviceAccountAdmin",),
    # the node account's project roles (conditional: see PROJECT_IAM_ADMIN below)
    "gcp:projects/iAMMember:IAMMember": (PROJECT_IAM_ADMIN,),
    # role passwords for clients outside GKE, their versions and readers
    "gcp:secretmanager/secret:Secret": ("roles/secretmanager.admin",),
    "gcp:secretmanager/secretVersion:SecretVersion": ("roles/secretmanager.admin",),
    "gcp:secretmanager/secretIamMember:SecretIamMember": ("roles/secretmanager.admin",),
    # the image repository (creating one needs the project-level role) and its readers
    "gcp:artifactregistry/repository:Repository": ("roles/artifactregistry.admin",),
    "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember": (
        "roles/artifactregistry.admin",
    ),
    # the alert policies, the dashboard and the proxy's uptime check
    "gcp:monitoring/alertPolicy:AlertPolicy": ("roles/monitoring.alertPolicyEditor",),
    "gcp:monitoring/dashboard:Dashboard": ("roles/monitoring.dashboardEditor",),
    "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig": (
        "roles/monitoring.uptimeCheckConfigEditor",
    ),
    # this file's pool and provider
    "gcp:iam/workloadIdentityPool:WorkloadIdentityPool": ("roles/iam.workloadIdentityPoolAdmin",),
    "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider": (
        "roles/iam.workloadIdentityPoolAdmin",
    ),
}
PRIMITIVE_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})


def declared_types(stack: StackSettings) -> set[str]:
    """The GCP resource types the program declares for `stack` (and KUBERNETES): what the
    components in infra/gcp create for these settings."""
    gcp = stack.gcp
    assert gcp is not None
    found = {
        KUBERNETES,
        "gcp:projects/service:Service",
        "gcp:storage/bucket:Bucket",
        # the jobs' identities, their bucket roles and Workload Identity bindings
        "gcp:serviceaccount/account:Account",
        "gcp:storage/bucketIAMMember:BucketIAMMember",
        "gcp:serviceaccount/iAMMember:IAMMember",
    }
    if gcp.bucket.cmek is not None:
        found |= {
            "gcp:kms/keyRing:KeyRing",
            "gcp:kms/cryptoKey:CryptoKey",
            "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember",
        }
    if gcp.gke.create:
        found |= {
            "gcp:compute/network:Network",
            "gcp:compute/subnetwork:Subnetwork",
            "gcp:compute/router:Router",
            "gcp:compute/routerNat:RouterNat",
            "gcp:container/cluster:Cluster",
            "gcp:container/nodePool:NodePool",
            "gcp:projects/iAMMember:IAMMember",
        }
        if needs_private_google_dns(stack.network.google_apis_cidrs):
            found |= {"gcp:dns/managedZone:ManagedZone", "gcp:dns/recordSet:RecordSet"}
    if gcp.secret_manager.enabled:
        found |= {
            "gcp:secretmanager/secret:Secret",
            "gcp:secretmanager/secretVersion:SecretVersion",
        }
        if any(gcp.secret_manager.accessors.values()):
            found.add("gcp:secretmanager/secretIamMember:SecretIamMember")
    if gcp.registry is not None:
        found.add("gcp:artifactregistry/repository:Repository")
        if gcp.gke.create or gcp.ci is not None:  # the nodes read, the deployer pushes
            found.add("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")
    alerting = gcp.alerting
    if alerting is not None:
        found |= {"gcp:monitoring/alertPolicy:AlertPolicy", "gcp:monitoring/dashboard:Dashboard"}
    proxy = stack.proxy
    if proxy.enabled and proxy.hostname and (proxy.static_ip_name or alerting):  # infra/gcp/edge
        if proxy.static_ip_name:
            found.add("gcp:compute/globalAddress:GlobalAddress")
            if alerting is not None and alerting.dns_zone:
                found.add("gcp:dns/recordSet:RecordSet")
        if alerting is not None:
            found.add("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig")
    if gcp.ci is not None:
        found |= {
            "gcp:iam/workloadIdentityPool:WorkloadIdentityPool",
            "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider",
            "gcp:projects/iAMMember:IAMMember",
        }
        if gcp.ci.state_bucket is not None:
            found.add("gcp:storage/bucketIAMMember:BucketIAMMember")
    return found


def deployer_roles(stack: StackSettings) -> list[str]:
    """The project roles the deployer holds: each needed by a type the stack declares."""
    return sorted({role for t in declared_types(stack) for role in ROLES_BY_TYPE[t]})


def grantable_roles(stack: StackSettings) -> list[str]:
    """The project roles the deployer may grant (its Project IAM Admin condition): those the
    program grants at the project level, the nodes' and its own, never Project IAM Admin
    (with it, the deployer could grant itself anything)."""
    granted = set(deployer_roles(stack))
    if stack.gcp is not None and stack.gcp.gke.create:
        granted |= set(NODE_ROLES)
    return sorted(granted - {PROJECT_IAM_ADMIN} - PRIMITIVE_ROLES)


def attribute_condition(ci: CiSettings) -> str:
    """The provider's condition (CEL): tokens of this repository only; with `environments`,
    only of those environments and from `branches` (the rollouts and the drill), or of
    `previewEnvironments` from any ref (pull-request previews). A token without the claim a
    term reads is refused (the condition errs)."""
    repository = f"assertion.repository == {json.dumps(ci.repository)}"
    rollout = []
    if ci.environments:
        rollout.append(f"assertion.environment in {json.dumps(list(ci.environments))}")
    if ci.branches:
        refs = [f"refs/heads/{branch}" for branch in ci.branches]
        rollout.append(f"assertion.ref in {json.dumps(refs)}")
    if not rollout:
        return repository  # any ref, any environment: previews add nothing to accept
    scope = " && ".join(rollout)
    if ci.preview_environments:
        previews = json.dumps(list(ci.preview_environments))
        scope = f"({scope}) || assertion.environment in {previews}"
    return f"{repository} && ({scope})"


ATTRIBUTE_MAPPING = {
    "google.subject": "assertion.sub",
    "attribute.actor": "assertion.actor",
    "attribute.repository": "assertion.repository",
    "attribute.repository_owner": "assertion.repository_owner",
    "attribute.ref": "assertion.ref",
}


class ContinuousDelivery(pulumi.ComponentResource):
    """The pool, the GitHub provider, the deployer account, `workloadIdentityUser` for the
    repository's principalSet on it, its project roles, and its rights on the node account
    (to create node pools that run as it), the image repository (to push) and the Pulumi
    state bucket."""

    provider_name: pulumi.Output[str]
    service_account: serviceaccount.Account

    def __init__(
        self,
        resource_name: str,
        cloud: Cloud,
        *,
        node_account: serviceaccount.Account | None,
        repository: artifactregistry.Repository | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("redis-platform:gcp:ContinuousDelivery", resource_name, None, opts)
        ci = cloud.gcp.ci
        assert ci is not None  # built only with gcp.ci
        project = cloud.gcp.project
        pool = iam.WorkloadIdentityPool(
            "pool",
            workload_identity_pool_id=ci.pool_id,
            display_name="GitHub Actions",
            description=f"GitHub Actions of {ci.repository}",
            opts=cloud.opts(self),
        )
        provider = iam.WorkloadIdentityPoolProvider(
            "provider",
            workload_identity_pool_id=pool.workload_identity_pool_id,
            workload_identity_pool_provider_id=ci.provider_id,
            display_name="GitHub",
            description=f"OIDC tokens of {ci.repository}",
            attribute_mapping=ATTRIBUTE_MAPPING,
            # required: without a condition any GitHub repository's token would be accepted
            attribute_condition=attribute_condition(ci),
            oidc={"issuer_uri": GITHUB_ISSUER},
            opts=cloud.opts(self),
        )
        self.service_account = serviceaccount.Account(
            "deployer",
            account_id=ci.service_account_id,
            display_name=f"redis-platform deployer ({cloud.settings.environment}, GitHub Actions)",
            opts=cloud.opts(self),
        )
        deployer = self.service_account.email.apply(lambda e: f"serviceAccount:{e}")
        # pool.name: projects/<number>/locations/global/workloadIdentityPools/<pool>
        repository_tokens = pool.name.apply(
            lambda name: (
                f"principalSet://iam.googleapis.com/{name}/attribute.repository/{ci.repository}"
            )
        )
        serviceaccount.IAMMember(
            "deployer-workload-identity",
            service_account_id=self.service_account.name,
            role="roles/iam.workloadIdentityUser",
            member=repository_tokens,
            opts=cloud.opts(self),
        )
        grantable = grantable_roles(cloud.settings)
        for role in deployer_roles(cloud.settings):
            condition = None
            if role == PROJECT_IAM_ADMIN:
                condition = {
                    "title": "only the roles the program grants",
                    "description": "no Project IAM Admin, no primitive role: the deployer "
                    "grants only the roles the program grants",
                    "expression": "api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', "
                    f"[]).hasOnly({json.dumps(grantable)})",
                }
            projects.IAMMember(
                f"deployer-{role.removeprefix('roles/').replace('.', '-')}",
                project=project,
                role=role,
                member=deployer,
                condition=condition,
                opts=cloud.opts(self),
            )
        if node_account is not None:
            # node pools run as the node account: creating one needs actAs on it, here only
            serviceaccount.IAMMember(
                "deployer-acts-as-nodes",
                service_account_id=node_account.name,
                role="roles/iam.serviceAccountUser",
                member=deployer,
                opts=cloud.opts(self),
            )
        registry = cloud.gcp.registry
        if repository is not None and registry is not None:
            # the release pipeline pushes the platform image by digest
            artifactregistry.RepositoryIamMember(
                "deployer-pushes-images",
                location=registry.location,
                repository=repository.repository_id,
                role="roles/artifactregistry.writer",
                member=deployer,
                opts=cloud.opts(self),
            )
        if ci.state_bucket is not None:
            # the Pulumi state (gs:// backend): objects only, on that bucket only
            storage.BucketIAMMember(
                "deployer-state",
                bucket=ci.state_bucket,
                role="roles/storage.objectAdmin",
                member=deployer,
                opts=cloud.opts(self),
            )
        self.provider_name = provider.name
        self.register_outputs(
            {"provider": self.provider_name, "serviceAccount": self.service_account.email}
        )
