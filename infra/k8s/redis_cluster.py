"""The Redis Cluster: a StatefulSet of shards x (1 + replicas) pods, its Services, PDB.

redis.conf is rendered by `redisops.conf` exactly as the twin renders it (same NodeSpec
fields, pod paths); each pod adds its own DNS name on the command line, so one ConfigMap
serves every pod. Formation, healing, ACL loads and TLS reloads are the reconcile Job's
work: the StatefulSet only runs the servers.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s import credentials as creds
from infra.k8s import tls as tls_names
from infra.k8s.common import (
    BUS_PORT,
    CLIENT_SERVICE,
    EXPORTER_PORT,
    HEADLESS,
    REDIS_PORT,
    REDIS_SELECTOR,
    REDIS_UID,
    RESTRICTED_CONTAINER,
    STATEFULSET,
    Platform,
    labels,
    meta,
    pod_monitoring_spec,
    pool_placement,
    redis_client_endpoint,
    restricted_pod,
    service_host,
)
from infra.settings import StackSettings
from redisops import acl
from redisops.conf import NodeSpec, TlsFiles, render_redis_conf

CONFIG_MAP = "redis-cluster-config"
ROOT = "/etc/redis-platform"
DATA_DIR = "/data"
TLS_DIR = f"{ROOT}/tls"
SCRIPTS_DIR = f"{ROOT}/scripts"
USERS_DIR = f"{ROOT}/users"
EXPORTER_TLS_DIR = "/etc/redis-exporter/tls"
SCRIPTS = ("lib.sh", "start.sh", "liveness.sh", "readiness.sh", "pre-stop.sh")
# Roles whose passwords the Redis pod itself holds: the probes and the preStop handoff.
POD_ROLES = (acl.MONITORING, acl.OPERATOR)
HANDOFF_TIMEOUT_S = 20
# preStop handoff, then Redis's own shutdown (shutdown-timeout 10 s waits for replicas
# to catch up, then saves), with a margin.
TERMINATION_GRACE_S = HANDOFF_TIMEOUT_S + 10 + 30
ZONE_KEY = "topology.kubernetes.io/zone"
HOST_KEY = "kubernetes.io/hostname"


def node_spec(settings: StackSettings) -> NodeSpec:
    """The NodeSpec every pod runs (the pod's own hostname comes on the command line)."""
    redis = settings.redis
    return NodeSpec(
        port=REDIS_PORT,
        bind=("0.0.0.0",),  # noqa: S104 (a pod's own network namespace; NetworkPolicy guards)
        data_dir=DATA_DIR,
        tls=TlsFiles(
            ca_cert_file=f"{TLS_DIR}/ca.crt",
            cert_file=f"{TLS_DIR}/tls.crt",
            key_file=f"{TLS_DIR}/tls.key",
        ),
        tls_auth_clients=redis.tls_auth_clients,
        aclfile=f"{ROOT}/acl/{creds.ACL_KEY}",
        replication_include=f"{ROOT}/replication/{creds.REPLICATION_KEY}",
        cluster_node_timeout_ms=redis.node_timeout_ms,
        min_replicas_to_write=redis.min_replicas_to_write,
        min_replicas_max_lag_s=redis.min_replicas_max_lag_s,
        preferred_endpoint_type="hostname",
        maxmemory=redis.maxmemory,
        maxmemory_policy=redis.maxmemory_policy,
    )


def pod_dns_name(settings: StackSettings, pod: str) -> str:
    return service_host(settings, f"{pod}.{HEADLESS}")


def pod_endpoints(settings: StackSettings) -> list[str]:
    return [
        f"{pod_dns_name(settings, f'{STATEFULSET}-{i}')}:{REDIS_PORT}"
        for i in range(settings.redis.pods)
    ]


def script(name: str) -> str:
    return resources.files("infra.k8s").joinpath("scripts", name).read_text()


def config_data(settings: StackSettings) -> dict[str, str]:
    """The ConfigMap's content: redis.conf and the pod's scripts."""
    return {"redis.conf": render_redis_conf(node_spec(settings))} | {
        name: script(name) for name in SCRIPTS
    }


def _secret_volume(name: str, secret: str, items: list[str] | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"secretName": secret, "defaultMode": 0o440}
    if items:
        source["items"] = [{"key": k, "path": k} for k in items]
    return {"name": name, "secret": source}


def topology_spread(settings: StackSettings) -> list[dict[str, Any]]:
    hard = "DoNotSchedule" if settings.redis.zone_spread == "hard" else "ScheduleAnyway"
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": hard,
            "labelSelector": {"matchLabels": REDIS_SELECTOR},
        }
        for key in (ZONE_KEY, HOST_KEY)
    ]


def hold_seconds(settings: StackSettings) -> int:
    """How long a former primary waits before starting (scripts/start.sh): node-timeout
    for the failure to be agreed, as long again for the election, rounded up."""
    return -(-2 * settings.redis.node_timeout_ms // 1000)


def pod_spec(settings: StackSettings) -> dict[str, Any]:
    redis = settings.redis
    probe_env = [
        {"name": "REDIS_PORT", "value": str(REDIS_PORT)},
        {"name": "USERS_DIR", "value": USERS_DIR},
        {"name": "HANDOFF_TIMEOUT", "value": str(HANDOFF_TIMEOUT_S)},
    ]
    mounts = [
        {"name": "data", "mountPath": DATA_DIR},
        {"name": "conf", "mountPath": f"{ROOT}/conf", "readOnly": True},
        {"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True},
        {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
        {"name": "acl", "mountPath": f"{ROOT}/acl", "readOnly": True},
        {"name": "replication", "mountPath": f"{ROOT}/replication", "readOnly": True},
        *(
            {"name": f"user-{role}", "mountPath": f"{USERS_DIR}/{role}", "readOnly": True}
            for role in POD_ROLES
        ),
    ]

    def exec_probe(name: str, period: int, failures: int) -> dict[str, Any]:
        return {
            "exec": {"command": ["sh", f"{SCRIPTS_DIR}/{name}"]},
            "periodSeconds": period,
            "timeoutSeconds": 5,
            "failureThreshold": failures,
        }

    server = {
        "name": "redis",
        # One Redis build: the platform image's redis-server, which its backup tools read.
        "image": settings.redis_image,
        "command": ["sh", f"{SCRIPTS_DIR}/start.sh"],
        "args": [
            f"{ROOT}/conf/redis.conf",
            "--cluster-announce-hostname",
            pod_dns_name(settings, "$(POD_NAME)"),
        ],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "DATA_DIR", "value": DATA_DIR},
            {"name": "HOLD_SECONDS", "value": str(hold_seconds(settings))},
            *probe_env,
        ],
        "ports": [
            {"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"},
            {"name": "bus", "containerPort": BUS_PORT, "protocol": "TCP"},
        ],
        "resources": {
            "requests": {"cpu": redis.resources.cpu, "memory": redis.resources.memory},
            "limits": {"memory": redis.resources.memory},
        },
        # A large AOF may take minutes to load: the startup probe allows 10.
        "startupProbe": exec_probe("liveness.sh", 5, 120),
        "livenessProbe": exec_probe("liveness.sh", 10, 6),
        "readinessProbe": exec_probe("readiness.sh", 5, 2),
        "lifecycle": {"preStop": {"exec": {"command": ["sh", f"{SCRIPTS_DIR}/pre-stop.sh"]}}},
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": mounts,
    }
    exporter = {
        "name": "exporter",
        "image": redis.exporter_image,
        "env": [
            {"name": "REDIS_ADDR", "value": f"rediss://localhost:{REDIS_PORT}"},
            {"name": "REDIS_USER", "value": acl.MONITORING},
            {
                "name": "REDIS_PASSWORD",
                "valueFrom": {
                    "secretKeyRef": {"name": creds.user_secret(acl.MONITORING), "key": "password"}
                },
            },
            {"name": "REDIS_EXPORTER_TLS_CA_CERT_FILE", "value": f"{EXPORTER_TLS_DIR}/ca.crt"},
            {"name": "REDIS_EXPORTER_TLS_CLIENT_CERT_FILE", "value": f"{EXPORTER_TLS_DIR}/tls.crt"},
            {"name": "REDIS_EXPORTER_TLS_CLIENT_KEY_FILE", "value": f"{EXPORTER_TLS_DIR}/tls.key"},
            # The monitoring role has no CONFIG: skip the config metrics instead of failing.
            {"name": "REDIS_EXPORTER_CONFIG_COMMAND", "value": "-"},
            # Nor CLIENT SETNAME: every scrape would log NOPERM (and count in
            # RedisPermissionDenialsSpike).
            {"name": "REDIS_EXPORTER_SET_CLIENT_NAME", "value": "false"},
        ],
        "ports": [{"name": "metrics", "containerPort": EXPORTER_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "livenessProbe": {"httpGet": {"path": "/health", "port": "metrics"}, "periodSeconds": 30},
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "exporter-tls", "mountPath": EXPORTER_TLS_DIR, "readOnly": True}],
    }
    prepare = {
        "name": "prepare",
        "image": settings.platform_image,
        "command": ["redisops"],
        "args": ["node", "prepare", "--data-dir", DATA_DIR, "--my-ip", "$(POD_IP)"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
    }
    return {
        "securityContext": restricted_pod(REDIS_UID),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "topologySpreadConstraints": topology_spread(settings),
        **pool_placement(settings, "redis"),
        "initContainers": [prepare],
        "containers": [server, exporter],
        "volumes": [
            {
                "name": "conf",
                "configMap": {
                    "name": CONFIG_MAP,
                    "items": [{"key": "redis.conf", "path": "redis.conf"}],
                },
            },
            {
                "name": "scripts",
                "configMap": {
                    "name": CONFIG_MAP,
                    "defaultMode": 0o555,
                    "items": [{"key": name, "path": name} for name in SCRIPTS],
                },
            },
            _secret_volume("tls", tls_names.NODE_SECRET),
            _secret_volume("exporter-tls", tls_names.CLIENTS["exporter"]),
            _secret_volume("acl", creds.ACL_SECRET),
            _secret_volume("replication", creds.REPLICATION_SECRET),
            *(
                _secret_volume(f"user-{role}", creds.user_secret(role), ["password"])
                for role in POD_ROLES
            ),
        ],
    }


class RedisCluster(pulumi.ComponentResource):
    """StatefulSet (Parallel, PVCs, zone/host spread, probes, handoff on stop, exporter),
    headless and client Services, PodDisruptionBudget, optional PodMonitoring."""

    client_endpoint: str
    node_endpoints: list[str]

    def __init__(
        self,
        resource_name: str,
        platform: Platform,
        depends_on: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("redis-platform:k8s:RedisCluster", resource_name, None, opts)
        settings = platform.settings
        ns = platform.ns
        data = config_data(settings)
        self.config = k8s.core.v1.ConfigMap(
            "config",
            metadata=meta(CONFIG_MAP, ns, "redis"),
            data=data,
            opts=platform.opts(self),
        )
        service_ports = [
            {"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"},
            {"name": "bus", "port": BUS_PORT, "targetPort": "bus", "protocol": "TCP"},
        ]
        self.headless = k8s.core.v1.Service(
            "headless",
            metadata=meta(HEADLESS, ns, "redis"),
            spec={
                "clusterIP": "None",
                # Peers must resolve a pod's name before it is ready: formation, and the
                # start step that refreshes nodes.conf, need it.
                "publishNotReadyAddresses": True,
                "selector": REDIS_SELECTOR,
                "ports": service_ports,
            },
            opts=platform.opts(self),
        )
        self.client_service = k8s.core.v1.Service(
            "client",
            metadata=meta(CLIENT_SERVICE, ns, "redis"),
            spec={"type": "ClusterIP", "selector": REDIS_SELECTOR, "ports": service_ports[:1]},
            opts=platform.opts(self),
        )
        # Any change to redis.conf or the scripts rolls the pods; ACLs and certificates
        # are reloaded in place by the reconcile Job instead.
        config_hash = hashlib.sha256(
            "".join(f"{k}\0{v}\0" for k, v in sorted(data.items())).encode()
        ).hexdigest()
        template = {
            "metadata": {
                "labels": labels("redis", REDIS_SELECTOR),
                "annotations": {"redis-platform.io/config-sha256": config_hash},
            },
            "spec": pod_spec(settings),
        }
        self.statefulset = k8s.apps.v1.StatefulSet(
            "statefulset",
            metadata=meta(
                STATEFULSET,
                ns,
                "redis",
                # Pods are ready only once the reconcile Job formed the cluster, which
                # runs after this: Pulumi must not wait for readiness here.
                annotations={"pulumi.com/skipAwait": "true"},
            ),
            spec={
                "serviceName": HEADLESS,
                "replicas": settings.redis.pods,
                "podManagementPolicy": "Parallel",
                "updateStrategy": {"type": "RollingUpdate"},
                "selector": {"matchLabels": REDIS_SELECTOR},
                "persistentVolumeClaimRetentionPolicy": {
                    "whenDeleted": "Retain",
                    "whenScaled": "Retain",
                },
                "template": template,
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data", "labels": labels("redis", REDIS_SELECTOR)},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "storageClassName": settings.redis.storage_class,
                            "resources": {"requests": {"storage": settings.redis.storage_size}},
                        },
                    }
                ],
            },
            opts=platform.opts(self, depends_on=[self.config, self.headless, *depends_on]),
        )
        self.pdb = k8s.policy.v1.PodDisruptionBudget(
            "pdb",
            metadata=meta(STATEFULSET, ns, "redis"),
            spec={"maxUnavailable": 1, "selector": {"matchLabels": REDIS_SELECTOR}},
            opts=platform.opts(self),
        )
        if settings.monitoring.pod_monitoring:
            self.pod_monitoring = k8s.apiextensions.CustomResource(
                "pod-monitoring",
                api_version="monitoring.googleapis.com/v1",
                kind="PodMonitoring",
                metadata=meta(STATEFULSET, ns, "monitoring"),
                spec=pod_monitoring_spec(REDIS_SELECTOR),
                opts=platform.opts(self),
            )
        self.client_endpoint = redis_client_endpoint(settings)
        self.node_endpoints = pod_endpoints(settings)
        self.register_outputs(
            {"client_endpoint": self.client_endpoint, "node_endpoints": self.node_endpoints}
        )
