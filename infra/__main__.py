"""The composition root: read the stack's settings, build the components, export outputs.

`pulumi up -s dev|prod` runs this file. Nothing here decides how an object looks; the
components in infra/k8s do, from the validated settings (infra/settings.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi.runtime import config as runtime_config

from infra import settings as stack_settings
from infra.alerting import alert_params, in_cluster_params
from infra.k8s.common import Platform
from infra.k8s.credentials import ACL_SECRET, REPLICATION_SECRET, Credentials, user_secret
from infra.k8s.drill import RestoreDrill
from infra.k8s.jobs import Jobs
from infra.k8s.monitoring import OpsMetrics, PrometheusAlerts
from infra.k8s.namespace import Namespace
from infra.k8s.network import NetworkPolicies
from infra.k8s.redis_cluster import RedisCluster
from infra.k8s.sse_proxy import SseProxy, in_cluster_url
from infra.k8s.tls import ClusterTls, app_client_secrets
from redisops import acl
from redisops.errors import ConfigError


def rollout_gate(settings: stack_settings.StackSettings) -> pulumi.Output[pulumi.Resource]:
    """Resolves once the change from what the last rollout deployed (the stack's own
    `redisShape` output) is known to be safe; fails the update otherwise. Everything
    Kubernetes (and the certificates) waits for it, so a refused rollout changes nothing."""
    own = pulumi.StackReference(
        f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
    )

    def check(previous: Any) -> pulumi.Resource:
        problems = stack_settings.rollout_problems(settings.redis, previous)
        if problems:
            # RunError: Pulumi prints the message alone, without a traceback
            raise pulumi.RunError(
                "\n".join(f"{stack_settings.PROJECT}:{k}: {m}" for k, m in problems)
            )
        return own

    return own.get_output("redisShape").apply(check)


def stack_config() -> dict[str, Any]:
    """Every `redis-platform:*` key of the stack, read as a whole (not key by key) so a
    misspelt key is an error instead of a silently ignored setting."""
    merged = {**(runtime_config.get_config_env() or {}), **runtime_config.CONFIG.get()}
    return stack_settings.from_pulumi_config(merged)


class GoogleCloud:
    """The GCP layer's components, when the stack has a `gcp` section."""

    def __init__(self, settings: stack_settings.StackSettings) -> None:
        from infra.gcp import common, gke, identity, registry, storage

        assert settings.gcp is not None
        bare = common.Cloud(settings, common.provider(settings.gcp))
        apis = common.ProjectApis("apis", bare)
        self.cloud = dataclasses.replace(bare, apis=apis.services)
        self.cluster: gke.GkeCluster | None = None
        if settings.gcp.gke.create:
            from infra.gcp.network import Network

            network = Network("network", self.cloud)
            self.cluster = gke.GkeCluster("gke", self.cloud, network)
            self.kubeconfig = self.cluster.kubeconfig
        else:
            given = pulumi.Config(stack_settings.PROJECT).get_secret(stack_settings.KUBECONFIG_KEY)
            self.kubeconfig = given if given is not None else gke.existing_kubeconfig(self.cloud)
        self.bucket = storage.BackupBucket("backup-bucket", self.cloud)
        self.identities = identity.Identities("identities", self.cloud, self.bucket)
        self.registry_url: pulumi.Output[str] | None = None
        images: registry.Registry | None = None
        if settings.gcp.registry is not None:
            readers: list[pulumi.Input[str]] = []
            if self.cluster is not None:
                readers.append(
                    self.cluster.node_account.email.apply(lambda e: f"serviceAccount:{e}")
                )
            images = registry.Registry("registry", self.cloud, readers)
            self.registry_url = images.url
        self.delivery = None
        if settings.gcp.ci is not None:
            from infra.gcp.ci import ContinuousDelivery

            self.delivery = ContinuousDelivery(
                "ci",
                self.cloud,
                node_account=self.cluster.node_account if self.cluster else None,
                repository=images.repository if images else None,
            )
        if settings.gcp.alerting is not None:
            from infra.gcp.monitoring import Alerting

            Alerting("alerting", self.cloud, alert_params(settings))
        self.proxy_address: pulumi.Output[str] | None = None
        proxy = settings.proxy
        if proxy.enabled and proxy.hostname and (proxy.static_ip_name or settings.gcp.alerting):
            from infra.gcp.edge import Edge

            edge = Edge("edge", self.cloud)
            self.proxy_address = edge.address.address if edge.address else None

    def role_secrets(self, passwords: dict[str, pulumi.Output[str]]) -> dict[str, str]:
        from infra.gcp.secrets import RoleSecrets

        if not self.cloud.gcp.secret_manager.enabled:
            return {}
        return RoleSecrets("role-secrets", self.cloud, passwords).ids


def main() -> None:
    settings = stack_settings.load(stack_config())
    given_kubeconfig = pulumi.Config(stack_settings.PROJECT).get_secret(
        stack_settings.KUBECONFIG_KEY
    )
    if given_kubeconfig is not None and (settings.gcp is None or settings.gcp.gke.create):
        raise ConfigError(
            f"{stack_settings.PROJECT}:{stack_settings.KUBECONFIG_KEY}: is used only with "
            "gcp.gke.create false (an existing cluster); without a gcp section use "
            "kubeContext, with a created cluster the program builds its own; remove it "
            f"(`pulumi config rm {stack_settings.KUBECONFIG_KEY}`)"
        )
    google = GoogleCloud(settings) if settings.gcp is not None else None
    provider = k8s.Provider(
        "kubernetes",
        # the cluster the GCP layer made or found; else the current kubeconfig context
        kubeconfig=google.kubeconfig if google else None,
        context=None if google else settings.kube_context,
        enable_server_side_apply=True,
        delete_unreachable=False,
        # Workloads wait for the node pools they select (else the proxy's rollout could
        # time out while its pool is still being created).
        opts=pulumi.ResourceOptions(
            depends_on=list(google.cluster.pools.values()) if google and google.cluster else []
        ),
    )
    gate = rollout_gate(settings)
    namespace = Namespace("namespace", settings.namespace, provider, gate=gate)
    platform = Platform(settings, provider, namespace.resource, gate=gate)
    tls = ClusterTls("tls", platform)
    credentials = Credentials("credentials", platform)
    secrets = [
        tls.node.secret,
        *(issued.secret for issued in tls.clients.values()),
        credentials.acl_secret,
        credentials.replication_secret,
        *credentials.user_secrets.values(),
    ]
    network = NetworkPolicies("network", platform)
    cluster = RedisCluster("redis", platform, depends_on=secrets)
    proxy_url = None
    if settings.proxy.enabled:
        proxy = SseProxy(
            "sse-proxy", platform, depends_on=[*secrets, credentials.jwt_secret, cluster]
        )
        proxy_url = proxy.url
    jobs = Jobs(
        "jobs",
        platform,
        acl_digest=credentials.acl_digest,
        replication_digest=credentials.replication_digest,
        node_cert_pem=tls.node_cert_pem,
        ca_cert_pem=tls.ca_cert_pem,
        proxy_url=in_cluster_url(settings) if settings.proxy.enabled else None,
        depends_on=[cluster.statefulset, cluster.headless, network, *secrets],
        backup_account=google.identities.backup.email if google else None,
        smoke_account=(
            google.identities.smoke.email if google and google.identities.smoke else None
        ),
    )
    OpsMetrics(
        "ops-metrics",
        platform,
        depends_on=[tls.node.secret],
        gcp_account=google.identities.smoke.email if google and google.identities.smoke else None,
    )
    if settings.backup.enabled:
        drill = google.identities.drill if google else None
        RestoreDrill("restore-drill", platform, gcp_account=drill.email if drill else None)
    if settings.monitoring.prometheus_rule:
        PrometheusAlerts("prometheus-alerts", platform, in_cluster_params(settings))
    role_secrets = google.role_secrets(credentials.passwords) if google else {}

    # recorded only by a rollout that passed the check, for the next one to compare with
    pulumi.export("redisShape", gate.apply(lambda _: stack_settings.deployed_shape(settings.redis)))
    pulumi.export("namespace", namespace.name)
    # the image this rollout deployed: the pipeline sets it per rollout, so previews read it
    pulumi.export("platformImage", settings.platform_image)
    pulumi.export("redisClientEndpoint", cluster.client_endpoint)
    pulumi.export("redisNodeEndpoints", cluster.node_endpoints)
    pulumi.export("caCertificate", tls.ca_cert_pem)
    pulumi.export(
        "secretNames",
        {
            "tls": tls.secret_names,
            # namespace -> the client certificate Secret its Redis clients mount
            "clientTls": app_client_secrets(settings),
            "users": {role: user_secret(role) for role in acl.ROLES},
            "acl": ACL_SECRET,
            "replication": REPLICATION_SECRET,
        },
    )
    pulumi.export("proxyUrl", proxy_url)
    pulumi.export("reconcileJob", jobs.reconcile_job_name)
    pulumi.export("smokeJob", jobs.smoke_job)
    pulumi.export("backupLocation", settings.backup.location if settings.backup.enabled else None)
    if google is not None:
        pulumi.export("kubeconfig", google.kubeconfig)  # secret
        pulumi.export("backupServiceAccount", google.identities.backup.email)
        drill = google.identities.drill
        pulumi.export("drillServiceAccount", drill.email if drill else None)
        smoke = google.identities.smoke
        pulumi.export("smokeServiceAccount", smoke.email if smoke else None)
        pulumi.export("roleSecrets", role_secrets)
        pulumi.export("registryUrl", google.registry_url)
        pulumi.export("proxyAddress", google.proxy_address)
        if google.delivery is not None:
            # GitHub's variables GCP_WORKLOAD_IDENTITY_PROVIDER and GCP_SERVICE_ACCOUNT
            pulumi.export("ciWorkloadIdentityProvider", google.delivery.provider_name)
            pulumi.export("ciServiceAccount", google.delivery.service_account.email)


if __name__ == "__main__":
    main()
