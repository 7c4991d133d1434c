"""GKE: a new regional Standard cluster with its node pools, or an existing cluster; either
way a Kubernetes provider built from it (kubeconfig through gke-gcloud-auth-plugin)."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_gcp.container as container
import pulumi_gcp.projects as projects
import pulumi_gcp.serviceaccount as serviceaccount

from infra.gcp.common import NODE_ACCOUNT, Cloud
from infra.gcp.network import PODS_RANGE, SERVICES_RANGE, Network
from infra.k8s.common import POOL_LABEL, REDIS_TAINT_KEY, REDIS_TAINT_VALUE
from infra.settings import NodePool

# What GKE nodes need and nothing more (GKE's "least privilege node service account").
NODE_ROLES = (
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/autoscaling.metricsWriter",
)
# Redis nodes run nothing else: pods without this toleration stay off them.
REDIS_TAINT = {"key": REDIS_TAINT_KEY, "value": REDIS_TAINT_VALUE, "effect": "NO_SCHEDULE"}


def kubeconfig(name: str, endpoint: str, ca_certificate: str) -> str:
    """A kubeconfig for the cluster that authenticates with gke-gcloud-auth-plugin (no
    static credential in it)."""
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "gke-gcloud-auth-plugin",
            "installHint": "gcloud components install gke-gcloud-auth-plugin",
            "provideClusterInfo": True,
        }
    }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": f"https://{endpoint}",
                    "certificate-authority-data": ca_certificate,
                },
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "users": [{"name": name, "user": user}],
    }
    return json.dumps(config, indent=2)  # JSON is YAML


class GkeCluster(pulumi.ComponentResource):
    """Regional Standard cluster: Dataplane V2 (NetworkPolicies enforced), Workload
    Identity, private nodes, authorized networks for the control plane, shielded nodes, a
    release channel and maintenance window, Managed Prometheus; pools system, redis
    (dedicated by taint and label, one node per zone and more), proxy (autoscaling)."""

    kubeconfig: pulumi.Output[str]
    node_account: serviceaccount.Account

    def __init__(
        self,
        resource_name: str,
        cloud: Cloud,
        network: Network,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("redis-platform:gcp:GkeCluster", resource_name, None, opts)
        gcp, gke = cloud.gcp, cloud.gcp.gke
        assert gke.node_pools is not None  # settings require pools when creating
        self.node_account = serviceaccount.Account(
            "node-account",
            account_id=NODE_ACCOUNT,
            display_name="GKE nodes of redis-platform",
            opts=cloud.opts(self),
        )
        for role in NODE_ROLES:
            projects.IAMMember(
                f"node-{role.removeprefix('roles/').replace('.', '-')}",
                project=gcp.project,
                role=role,
                member=self.node_account.email.apply(lambda e: f"serviceAccount:{e}"),
                opts=cloud.opts(self),
            )
        window = gke.maintenance_window
        self.cluster = container.Cluster(
            "cluster",
            name=gke.name,
            location=gcp.region,
            node_locations=list(gcp.zones),
            network=network.network.id,
            subnetwork=network.subnet.id,
            networking_mode="VPC_NATIVE",
            ip_allocation_policy={
                "cluster_secondary_range_name": PODS_RANGE,
                "services_secondary_range_name": SERVICES_RANGE,
            },
            datapath_provider="ADVANCED_DATAPATH",  # Dataplane V2 enforces NetworkPolicies
            workload_identity_config={"workload_pool": f"{gcp.project}.svc.id.goog"},
            private_cluster_config={
                "enable_private_nodes": True,
                "enable_private_endpoint": False,
                "master_ipv4_cidr_block": gke.master_cidr,
                "master_global_access_config": {"enabled": False},
            },
            master_authorized_networks_config={
                "cidr_blocks": [
                    {"cidr_block": n.cidr, "display_name": n.name}
                    for n in gke.master_authorized_networks
                ],
                "gcp_public_cidrs_access_enabled": False,
            },
            enable_shielded_nodes=True,
            release_channel={"channel": gke.release_channel},
            maintenance_policy={
                "recurring_window": {
                    "start_time": window.start,
                    "end_time": window.end,
                    "recurrence": window.recurrence,
                }
            },
            monitoring_config={
                "enable_components": ["SYSTEM_COMPONENTS"],
                "managed_prometheus": {"enabled": True},
            },
            logging_config={"enable_components": ["SYSTEM_COMPONENTS", "WORKLOADS"]},
            remove_default_node_pool=True,
            initial_node_count=1,
            deletion_protection=gke.deletion_protection,
            resource_labels=cloud.labels,
            opts=cloud.opts(self),
        )
        pools = gke.node_pools
        self.pools = {
            "system": self._pool(cloud, "system", pools.system, taint=None),
            "redis": self._pool(cloud, "redis", pools.redis, taint=REDIS_TAINT),
        }
        if cloud.settings.proxy.enabled:  # no idle proxy nodes when there is no proxy
            self.pools["proxy"] = self._pool(cloud, "proxy", pools.proxy, taint=None)
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(
                self.cluster.name,
                self.cluster.endpoint,
                self.cluster.master_auth.cluster_ca_certificate,
            ).apply(lambda v: kubeconfig(v[0], v[1], v[2]))
        )
        self.register_outputs({"name": self.cluster.name, "endpoint": self.cluster.endpoint})

    def _pool(
        self, cloud: Cloud, role: str, pool: NodePool, taint: dict[str, str] | None
    ) -> container.NodePool:
        scaling: dict[str, Any]
        if pool.max_nodes_per_zone is not None:
            scaling = {
                "autoscaling": {
                    "min_node_count": pool.nodes_per_zone,
                    "max_node_count": pool.max_nodes_per_zone,
                    "location_policy": "BALANCED",
                },
                "initial_node_count": max(pool.nodes_per_zone, 1),
            }
        else:
            scaling = {"node_count": pool.nodes_per_zone}
        return container.NodePool(
            f"pool-{role}",
            name=role,
            cluster=self.cluster.id,
            location=cloud.gcp.region,
            node_locations=list(cloud.gcp.zones),
            **scaling,
            management={"auto_repair": True, "auto_upgrade": True},
            # One node at a time, a new one first: Redis pods move with their PDB.
            upgrade_settings={"max_surge": 1, "max_unavailable": 0},
            node_config={
                "machine_type": pool.machine_type,
                "disk_size_gb": pool.disk_size_gb,
                "disk_type": "pd-balanced",
                "image_type": "COS_CONTAINERD",
                "service_account": self.node_account.email,
                "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                "labels": {POOL_LABEL: role},
                "taints": [taint] if taint else [],
                "shielded_instance_config": {
                    "enable_secure_boot": True,
                    "enable_integrity_monitoring": True,
                },
                "workload_metadata_config": {"mode": "GKE_METADATA"},
                "metadata": {"disable-legacy-endpoints": "true"},
                "resource_labels": cloud.labels,
            },
            opts=cloud.opts(self),
        )


def existing_kubeconfig(cloud: Cloud) -> pulumi.Output[str]:
    """The kubeconfig of an existing cluster, read by name and location (no resources)."""
    gke = cloud.gcp.gke
    found = container.get_cluster_output(
        name=gke.name,
        location=gke.location or cloud.gcp.region,
        project=cloud.gcp.project,
        opts=pulumi.InvokeOutputOptions(provider=cloud.provider),
    )
    return pulumi.Output.secret(
        pulumi.Output.all(
            found.name, found.endpoint, found.master_auths[0].cluster_ca_certificate
        ).apply(lambda v: kubeconfig(v[0], v[1], v[2]))
    )
