"""The composition root: read the stack's settings, build the components, export outputs.

`pulumi up -s dev|prod` runs this file. Nothing here decides how an object looks; the
components in infra/k8s do, from the validated settings (infra/settings.py).
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi.runtime import config as runtime_config

from infra import settings as stack_settings
from infra.k8s.common import Platform
from infra.k8s.credentials import ACL_SECRET, REPLICATION_SECRET, Credentials, user_secret
from infra.k8s.jobs import Jobs
from infra.k8s.namespace import Namespace
from infra.k8s.network import NetworkPolicies
from infra.k8s.redis_cluster import RedisCluster
from infra.k8s.sse_proxy import SseProxy, in_cluster_url
from infra.k8s.tls import ClusterTls
from redisops import acl


def stack_config() -> dict[str, Any]:
    """Every `redis-platform:*` key of the stack, JSON values decoded. Read as a whole (not
    key by key) so a misspelt key is an error instead of a silently ignored setting."""
    prefix = f"{stack_settings.PROJECT}:"
    merged = {**(runtime_config.get_config_env() or {}), **runtime_config.CONFIG.get()}
    result: dict[str, Any] = {}
    for key, raw in merged.items():
        if not key.startswith(prefix):
            continue
        try:
            result[key[len(prefix) :]] = json.loads(raw)
        except (TypeError, ValueError):
            result[key[len(prefix) :]] = raw
    return result


def main() -> None:
    settings = stack_settings.load(stack_config())
    provider = k8s.Provider(
        "kubernetes",
        context=settings.kube_context,
        enable_server_side_apply=True,
        delete_unreachable=False,
    )
    namespace = Namespace("namespace", settings.namespace, provider)
    platform = Platform(settings, provider, namespace.resource)
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
        node_cert_pem=tls.node_cert_pem,
        ca_cert_pem=tls.ca_cert_pem,
        proxy_url=in_cluster_url(settings) if settings.proxy.enabled else None,
        depends_on=[cluster.statefulset, cluster.headless, network, *secrets],
    )

    pulumi.export("namespace", namespace.name)
    pulumi.export("redisClientEndpoint", cluster.client_endpoint)
    pulumi.export("redisNodeEndpoints", cluster.node_endpoints)
    pulumi.export("caCertificate", tls.ca_cert_pem)
    pulumi.export(
        "secretNames",
        {
            "tls": tls.secret_names,
            "users": {role: user_secret(role) for role in acl.ROLES},
            "acl": ACL_SECRET,
            "replication": REPLICATION_SECRET,
        },
    )
    pulumi.export("proxyUrl", proxy_url)
    pulumi.export("reconcileJob", jobs.reconcile_job_name)
    pulumi.export("smokeJob", jobs.smoke_job)
    pulumi.export("backupLocation", settings.backup.location if settings.backup.enabled else None)


if __name__ == "__main__":
    main()
