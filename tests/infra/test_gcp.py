"""The GCP layer in the recorded plan of dev, prod and prod into an existing cluster, and
the stack mistakes it refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.gcp.edge import ALERT, RUNBOOK
from infra.gcp.gke import NODE_ROLES
from infra.k8s.common import POOL_LABEL
from infra.settings import BROAD_ROLES, gke_allocatable_gib, machine_memory_gib, quantity_gib
from redisops import acl, alerts
from tests.infra import harness
from tests.infra.harness import error_of

_PLANS: dict[str, harness.Plan] = {}


def gcp_of(stack: str, **changes: Any) -> dict[str, Any]:
    gcp: dict[str, Any] = json.loads(harness.stack_config(stack)["redis-platform:gcp"])
    for key, value in changes.items():
        gcp[key] = {**gcp[key], **value} if isinstance(value, dict) else value
    return gcp


EXISTING = {
    # someone else's cluster: only what names it (the create-only keys would be refused)
    "gcp": gcp_of("prod")
    | {"gke": {"create": False, "name": "shared-gke", "location": "europe-west1"}},
    "network": {"apiServerCidrs": ["172.16.8.0/28"], "googleApisCidrs": ["199.36.153.8/30"]},
}


def plan_of(variant: str) -> harness.Plan:
    if variant not in _PLANS:
        if variant == "existing":
            _PLANS[variant] = harness.run("prod", EXISTING)
        else:
            _PLANS[variant] = harness.recorded(variant)
    return _PLANS[variant]


@pytest.fixture(params=["dev", "prod", "existing"])
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def plan(variant: str) -> harness.Plan:
    return plan_of(variant)


@pytest.fixture
def settings(variant: str) -> Any:
    return (
        harness.settings("prod", EXISTING) if variant == "existing" else harness.settings(variant)
    )


def one(plan: harness.Plan, type_: str, name: str | None = None) -> dict[str, Any]:
    found = [r for r in plan.of_type(type_) if name is None or r.name == name]
    assert len(found) == 1, f"{type_} {name}: {len(found)}"
    return found[0].inputs


def test_every_resource_waits_for_the_apis_it_needs(plan: harness.Plan, settings: Any) -> None:
    services = plan.of_type("gcp:projects/service:Service")
    enabled = {s.inputs["service"] for s in services}
    assert {"container.googleapis.com", "secretmanager.googleapis.com"} <= enabled
    assert ("cloudkms.googleapis.com" in enabled) == (settings.gcp.bucket.cmek is not None)
    assert all(s.inputs["disableOnDestroy"] is False for s in services)
    used = {r.type.split(":")[1].split("/")[0] for r in plan.resources if r.type.startswith("gcp:")}
    for api in ("compute", "container", "kms", "secretmanager", "artifactregistry", "dns"):
        if api in used:
            name = "cloudkms" if api == "kms" else api
            assert f"{name}.googleapis.com" in enabled, api
    urns = {s.urn for s in services}
    for resource in plan.resources:
        if resource.type.startswith("gcp:") and resource.custom and resource not in services:
            assert urns <= set(resource.dependencies), resource.name


def test_network_for_private_nodes(plan: harness.Plan, settings: Any) -> None:
    if not settings.gcp.gke.create:
        assert not plan.of_type("gcp:compute/network:Network")
        return
    assert one(plan, "gcp:compute/network:Network")["autoCreateSubnetworks"] is False
    subnet = one(plan, "gcp:compute/subnetwork:Subnetwork")
    vpc = settings.gcp.gke.vpc
    assert subnet["ipCidrRange"] == vpc.subnet_cidr
    assert subnet["privateIpGoogleAccess"] is True
    assert {r["rangeName"]: r["ipCidrRange"] for r in subnet["secondaryIpRanges"]} == {
        "pods": vpc.pods_cidr,
        "services": vpc.services_cidr,
    }
    nat = one(plan, "gcp:compute/routerNat:RouterNat")
    assert nat["sourceSubnetworkIpRangesToNat"] == "ALL_SUBNETWORKS_ALL_IP_RANGES"
    assert one(plan, "gcp:compute/router:Router")["region"] == settings.gcp.region


def test_private_google_apis_resolve_where_backups_may_only_reach_them(
    plan: harness.Plan, settings: Any
) -> None:
    zones = plan.of_type("gcp:dns/managedZone:ManagedZone")
    private_only = settings.network.google_apis_cidrs == ("199.36.153.8/30",)
    if not (private_only and settings.gcp.gke.create):
        assert not zones
        return
    (zone,) = zones
    assert zone.inputs["dnsName"] == "googleapis.com."
    assert zone.inputs["visibility"] == "private"
    records = {
        r.inputs["name"]: (r.inputs["type"], r.inputs["rrdatas"])
        for r in plan.of_type("gcp:dns/recordSet:RecordSet")
        if r.inputs["managedZone"] == zone.inputs["name"]
    }
    assert records == {
        "private.googleapis.com.": (
            "A",
            ["199.36.153.8", "199.36.153.9", "199.36.153.10", "199.36.153.11"],
        ),
        "*.googleapis.com.": ("CNAME", ["private.googleapis.com."]),
    }
    enabled = {s.inputs["service"] for s in plan.of_type("gcp:projects/service:Service")}
    assert "dns.googleapis.com" in enabled


def test_gke_cluster(plan: harness.Plan, settings: Any) -> None:
    gcp = settings.gcp
    if not gcp.gke.create:
        assert not [r for r in plan.resources if r.type.startswith("gcp:container/")]
        (invoke,) = [a for t, a in plan.invokes if t == "gcp:container/getCluster:getCluster"]
        assert (invoke["name"], invoke["location"]) == ("shared-gke", "europe-west1")
        return
    cluster = one(plan, "gcp:container/cluster:Cluster")
    assert cluster["location"] == gcp.region  # regional
    assert cluster["nodeLocations"] == list(gcp.zones)
    assert cluster["datapathProvider"] == "ADVANCED_DATAPATH"  # enforces NetworkPolicies
    assert cluster["workloadIdentityConfig"] == {"workloadPool": f"{gcp.project}.svc.id.goog"}
    private = cluster["privateClusterConfig"]
    assert private["enablePrivateNodes"] is True
    assert private["masterIpv4CidrBlock"] == gcp.gke.master_cidr
    authorized = cluster["masterAuthorizedNetworksConfig"]["cidrBlocks"]
    assert [b["cidrBlock"] for b in authorized] == [
        n.cidr for n in gcp.gke.master_authorized_networks
    ]
    assert cluster["enableShieldedNodes"] is True
    assert cluster["releaseChannel"] == {"channel": gcp.gke.release_channel}
    assert cluster["maintenancePolicy"]["recurringWindow"]["recurrence"].startswith("FREQ=")
    assert cluster["monitoringConfig"]["managedPrometheus"]["enabled"] is True
    assert cluster["removeDefaultNodePool"] is True
    assert cluster["deletionProtection"] is gcp.gke.deletion_protection
    pools = {r.name: r.inputs for r in plan.of_type("gcp:container/nodePool:NodePool")}
    assert set(pools) == {"pool-system", "pool-redis", "pool-proxy"}
    for name, pool in pools.items():
        config = pool["nodeConfig"]
        assert pool["nodeLocations"] == list(gcp.zones), name
        assert config["shieldedInstanceConfig"] == {
            "enableSecureBoot": True,
            "enableIntegrityMonitoring": True,
        }
        assert config["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
        assert config["serviceAccount"].startswith("redis-nodes@")
        assert config["labels"] == {POOL_LABEL: name.removeprefix("pool-")}
    redis = pools["pool-redis"]
    assert redis["nodeConfig"]["taints"] == [
        {"key": "dedicated", "value": "redis", "effect": "NO_SCHEDULE"}
    ]
    assert redis["nodeConfig"]["machineType"] == gcp.gke.node_pools.redis.machine_type
    assert redis["upgradeSettings"] == {"maxSurge": 1, "maxUnavailable": 0}
    proxy = pools["pool-proxy"]["autoscaling"]
    assert proxy["maxNodeCount"] == gcp.gke.node_pools.proxy.max_nodes_per_zone
    # the node account holds GKE's minimal node roles, nothing else on the project
    roles = {r.inputs["role"] for r in plan.of_type("gcp:projects/iAMMember:IAMMember")}
    assert roles == set(NODE_ROLES)


def test_an_existing_cluster_from_a_secret_kubeconfig() -> None:
    given = json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": []})
    plan = harness.run("prod", EXISTING, secret_config={"kubeconfig": given})
    (provider,) = plan.of_type("pulumi:providers:kubernetes")
    assert harness.is_secret(provider.raw["kubeconfig"])
    assert provider.inputs["kubeconfig"] == given
    assert not [t for t, _ in plan.invokes if t == "gcp:container/getCluster:getCluster"]
    assert not [r for r in plan.resources if r.type.startswith("gcp:container/")]
    assert plan.outputs["kubeconfig"] == (given, True)


def test_kubernetes_provider_comes_from_the_cluster(plan: harness.Plan) -> None:
    (provider,) = plan.of_type("pulumi:providers:kubernetes")
    assert harness.is_secret(provider.raw["kubeconfig"])
    config = json.loads(provider.inputs["kubeconfig"])
    (user,) = config["users"]
    assert user["user"] == {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "gke-gcloud-auth-plugin",
            "installHint": "gcloud components install gke-gcloud-auth-plugin",
            "provideClusterInfo": True,
        }
    }
    assert config["clusters"][0]["cluster"]["server"].startswith("https://")
    value, secret = plan.outputs["kubeconfig"]
    assert secret and value == provider.inputs["kubeconfig"]
    pools = {r.urn for r in plan.of_type("gcp:container/nodePool:NodePool")}
    assert pools <= set(provider.dependencies)  # workloads wait for their pools


def test_backup_bucket(plan: harness.Plan, settings: Any) -> None:
    bucket_settings = settings.gcp.bucket
    bucket = one(plan, "gcp:storage/bucket:Bucket")
    assert bucket["name"] == bucket_settings.name
    assert bucket["location"] == bucket_settings.location
    assert bucket["uniformBucketLevelAccess"] is True
    assert bucket["publicAccessPrevention"] == "enforced"
    assert bucket["versioning"] == {"enabled": True}
    delete_after = [
        r["condition"]["age"] for r in bucket["lifecycleRules"] if "age" in r["condition"]
    ]
    assert delete_after == [settings.backup.retention_days]
    if bucket_settings.retention_policy_days is None:
        assert "retentionPolicy" not in bucket
    else:
        assert bucket["retentionPolicy"] == {
            "retentionPeriod": str(bucket_settings.retention_policy_days * 86400),
            "isLocked": bucket_settings.lock_retention,
        }
    keys = plan.of_type("gcp:kms/cryptoKey:CryptoKey")
    if bucket_settings.cmek is None:
        assert not keys and "encryption" not in bucket
        return
    (key,) = keys
    assert bucket["encryption"] == {"defaultKmsKeyName": f"{key.name}-id"}
    (grant,) = plan.of_type("gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember")
    assert grant.inputs["role"] == "roles/cloudkms.cryptoKeyEncrypterDecrypter"
    assert grant.inputs["member"].startswith("serviceAccount:service-")
    (bucket_resource,) = plan.of_type("gcp:storage/bucket:Bucket")
    assert grant.urn in bucket_resource.dependencies  # the key is usable before the bucket


def test_identities_are_least_privilege(plan: harness.Plan, settings: Any) -> None:
    project = settings.gcp.project
    grants = {
        (r.inputs["member"], r.inputs["role"], r.inputs["bucket"])
        for r in plan.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
    }
    bucket = settings.gcp.bucket.name
    backup = "serviceAccount:redis-backup@mock-project.iam.gserviceaccount.com"
    drill = "serviceAccount:redis-drill@mock-project.iam.gserviceaccount.com"
    smoke = "serviceAccount:redis-smoke@mock-project.iam.gserviceaccount.com"
    assert grants == {
        (backup, "roles/storage.objectCreator", bucket),
        (backup, "roles/storage.objectViewer", bucket),
        # the drill reads a backup and adds its run record (runs/drill/...)
        (drill, "roles/storage.objectCreator", bucket),
        (drill, "roles/storage.objectViewer", bucket),
        # the rollout gate reads the newest backup's manifest (its age), nothing more;
        # the platform metrics read the same (as the same identity)
        (smoke, "roles/storage.objectViewer", bucket),
    }
    # who may act as which account (Workload Identity): each job its own, and the
    # platform metrics the smoke Job's read-only account through their own ServiceAccount
    workload = {
        (
            r.inputs["serviceAccountId"].rsplit("/", 1)[1].split("@")[0],
            r.inputs["role"],
            r.inputs["member"],
        )
        for r in plan.of_type("gcp:serviceaccount/iAMMember:IAMMember")
    }
    pool = f"serviceAccount:{project}.svc.id.goog"
    bound = "roles/iam.workloadIdentityUser"
    assert workload == {
        ("redis-backup", bound, f"{pool}[redis/redis-backup]"),
        ("redis-drill", bound, f"{pool}[redis-drill/redis-drill]"),
        ("redis-smoke", bound, f"{pool}[redis/redis-smoke]"),
        ("redis-smoke", bound, f"{pool}[redis/redis-ops-metrics]"),
    }


def test_no_broad_role_anywhere(plan: harness.Plan) -> None:
    roles = [
        r.inputs["role"] for r in plan.resources if "role" in r.inputs and r.type.startswith("gcp:")
    ]
    assert roles
    assert not set(roles) & BROAD_ROLES
    assert not [r for r in roles if r.endswith((".admin", "/owner", "/editor"))]


def test_role_passwords_in_secret_manager(plan: harness.Plan, settings: Any) -> None:
    secrets = {r.inputs["secretId"]: r for r in plan.of_type("gcp:secretmanager/secret:Secret")}
    env = settings.environment
    assert set(secrets) == {f"redis-{env}-{role}" for role in acl.ROLES}
    kube_password = {
        s.inputs["stringData"]["username"]: s.inputs["stringData"]["password"]
        for s in plan.kube("Secret")
        if s.object_name.startswith("redis-user-")
    }
    versions = {r.name: r for r in plan.of_type("gcp:secretmanager/secretVersion:SecretVersion")}
    for role in acl.ROLES:
        version = versions[f"secret-{role}-current"]
        assert harness.is_secret(version.raw["secretData"]), role
        assert version.inputs["secretData"] == kube_password[role]  # the active slot
    readers = {
        (r.inputs["secretId"], r.inputs["member"])
        for r in plan.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")
    }
    expected = {
        (f"redis-{env}-{role}", member)
        for role, members in settings.gcp.secret_manager.accessors.items()
        for member in members
    }
    assert readers == expected
    roles = {
        r.inputs["role"] for r in plan.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")
    }
    assert roles == {"roles/secretmanager.secretAccessor"}


def test_artifact_registry(plan: harness.Plan, settings: Any) -> None:
    repository = one(plan, "gcp:artifactregistry/repository:Repository")
    assert repository["format"] == "DOCKER"
    assert repository["dockerConfig"] == {"immutableTags": True}
    policies = {p["id"]: p for p in repository["cleanupPolicies"]}
    assert (
        policies["keep-recent"]["mostRecentVersions"]["keepCount"]
        == settings.gcp.registry.keep_recent
    )
    assert policies["delete-untagged"]["condition"]["tagState"] == "UNTAGGED"
    assert repository["cleanupPolicyDryRun"] is False
    url, _ = plan.outputs["registryUrl"]
    assert settings.platform_image.startswith(url + "/")  # the stack's image lives there
    readers = plan.of_type("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")
    if settings.gcp.gke.create:
        (reader,) = readers
        assert reader.inputs["role"] == "roles/artifactregistry.reader"
        assert reader.inputs["member"].startswith("serviceAccount:redis-nodes@")


def test_edge_and_uptime_alerting(plan: harness.Plan, settings: Any) -> None:
    proxy = settings.proxy
    addresses = plan.of_type("gcp:compute/globalAddress:GlobalAddress")
    uptime_alert = [
        r
        for r in plan.of_type("gcp:monitoring/alertPolicy:AlertPolicy")
        if r.name == "uptime-alert"
    ]
    if not (proxy.hostname and proxy.static_ip_name):
        # dev: alert policies (gcp.alerting), but no public name to probe
        assert not addresses and not uptime_alert
        assert not plan.of_type("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig")
        return
    (address,) = addresses
    assert address.inputs["name"] == proxy.static_ip_name
    chart = plan.of_type("kubernetes:helm.sh/v4:Chart")[0].inputs["values"]["ingress"]
    assert chart["staticIpName"] == proxy.static_ip_name and chart["host"] == proxy.hostname
    record = one(plan, "gcp:dns/recordSet:RecordSet", "dns")
    assert (record["name"], record["type"], record["rrdatas"]) == (
        f"{proxy.hostname}.",
        "A",
        ["203.0.113.10"],
    )
    check = one(plan, "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig")
    assert check["httpCheck"]["path"] == "/healthz" and check["httpCheck"]["useSsl"] is True
    assert check["monitoredResource"]["labels"]["host"] == proxy.hostname
    (policy,) = (r.inputs for r in uptime_alert)
    # it pages: the pager's channels, not the ticket queue's
    assert policy["notificationChannels"] == list(settings.gcp.alerting.channels("page"))
    assert policy["severity"] == "CRITICAL"
    condition = policy["conditions"][0]["conditionThreshold"]
    assert 'check_id="sse-proxy-healthz-1a2b"' in condition["filter"]
    # the alert defined outside redisops.alerts, with its page (tests/unit/test_runbooks.py
    # checks every alert's page exists)
    assert ALERT in alerts.EXTERNAL_ALERTS
    page = harness.ROOT / RUNBOOK
    assert (page.parent.name, page.name) == ("runbooks", f"{ALERT}.md") and page.is_file()
    assert policy["displayName"] == ALERT
    runbook = f"{settings.monitoring.runbook_base_url}/{ALERT}.md"
    assert f"Runbook: {runbook}" in policy["documentation"]["content"]


def test_workloads_land_on_their_pools(plan: harness.Plan, settings: Any) -> None:
    pod = plan.one("StatefulSet", "redis-cluster")["spec"]["template"]["spec"]
    values = plan.of_type("kubernetes:helm.sh/v4:Chart")[0].inputs["values"]
    if not settings.gcp.gke.create:  # someone else's cluster: no pools to aim at
        assert "nodeSelector" not in pod and values["nodeSelector"] == {}
        return
    assert pod["nodeSelector"] == {POOL_LABEL: "redis"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "redis", "effect": "NoSchedule"}
    ]
    assert values["nodeSelector"] == {POOL_LABEL: "proxy"}


def test_backups_use_the_created_identity_and_bucket(plan: harness.Plan, settings: Any) -> None:
    account = plan.one("ServiceAccount", "redis-backup")["metadata"]["annotations"]
    assert account["iam.gke.io/gcp-service-account"] == plan.outputs["backupServiceAccount"][0]
    assert settings.backup.location == f"gs://{settings.gcp.bucket.name}/redis"
    cron = plan.one("CronJob", "redis-backup")
    args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["backup", "create"]


def test_the_smoke_job_reads_backups_as_its_own_identity(plan: harness.Plan, settings: Any) -> None:
    account = plan.one("ServiceAccount", "redis-smoke")["metadata"]["annotations"]
    assert account["iam.gke.io/gcp-service-account"] == plan.outputs["smokeServiceAccount"][0]
    assert plan.outputs["smokeServiceAccount"][0].startswith("redis-smoke@")
    job = plan.outputs["smokeJob"][0]["spec"]["template"]["spec"]
    assert job["serviceAccountName"] == "redis-smoke"
    target = json.loads(plan.one("ConfigMap", "redis-smoke-target")["data"]["target.json"])
    assert target["backups"] == {
        "location": settings.backup.location,
        "max_age_s": settings.backup.max_age_s,
    }


def test_without_backups_the_smoke_job_gets_no_google_identity() -> None:
    plan = harness.run("dev", {"backup": {"enabled": False}})
    assert not plan.one("ServiceAccount", "redis-smoke")["metadata"].get("annotations")
    members = {
        r.inputs["member"] for r in plan.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
    }
    assert not [m for m in members if "redis-smoke@" in m]
    assert plan.outputs["smokeServiceAccount"][0] is None
    target = json.loads(plan.one("ConfigMap", "redis-smoke-target")["data"]["target.json"])
    assert target["backups"] is None


def test_secret_outputs_are_secret(plan: harness.Plan) -> None:
    for name, (value, secret) in plan.outputs.items():
        text = json.dumps(value, default=str)
        if any(s.strip() in text for s in plan.generated_secrets):
            assert secret, name
    assert plan.outputs["kubeconfig"][1] is True


# ---- stack mistakes -----------------------------------------------------------------------


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize(
    ("overrides", "key", "says"),
    [
        ({"gcp": _without(gcp_of("prod"), "project")}, "gcp.project", "is required"),
        (
            {"gcp": gcp_of("prod", zones=["europe-west1-b", "europe-west1-c"])},
            "gcp.zones",
            "three zones",
        ),
        (
            {"gcp": gcp_of("prod", zones=["europe-west1-b", "europe-west1-c", "us-east1-b"])},
            "gcp.zones",
            "not a zone of europe-west1",
        ),
        (
            {
                "gcp": gcp_of(
                    "prod", bucket={"cmek": {"keyRing": "r", "key": "k", "location": "us-east1"}}
                )
            },
            "gcp.bucket",
            "needs the key in the bucket's location",
        ),
        (
            {"gcp": gcp_of("prod", bucket={"lockRetention": True, "retentionPolicyDays": None})},
            "gcp.bucket",
            "locking is irreversible",
        ),
        (
            {"gcp": gcp_of("prod", bucket={"retentionPolicyDays": 90})},
            "gcp.bucket.retentionPolicyDays",
            "could not delete expired backups",
        ),
        ({"gcp": gcp_of("prod", gke={"nodePools": None})}, "gcp.gke", "nodePools is required"),
        (
            {
                "gcp": gcp_of(
                    "prod",
                    gke={
                        "nodePools": {
                            "redis": {"machineType": "n2-highmem-2", "nodesPerZone": 1},
                        }
                    },
                )
            },
            "gcp.gke.nodePools.redis",
            "3 Redis pods of 8Gi per node need 24.1 GiB; n2-highmem-2 leaves pods about 13.3 GiB",
        ),
        (
            {"gcp": gcp_of("prod", gke={"deletionProtection": False})},
            "gcp.gke.deletionProtection",
            "set it to true",
        ),
        (
            {"gcp": gcp_of("prod", gke={"masterCidr": "172.16.0.0/24"})},
            "gcp.gke.masterCidr",
            "must be a /28",
        ),
        (
            {
                "gcp": gcp_of(
                    "prod", gke={"vpc": {"subnetCidr": "10.32.0.0/20", "podsCidr": "10.32.0.0/14"}}
                )
            },
            "gcp.gke.vpc",
            "overlaps",
        ),
        (
            {
                "gcp": gcp_of(
                    "prod", secretManager={"accessors": {"reader": ["agents@example.com"]}}
                )
            },
            "gcp.secretManager.accessors",
            "not an IAM member",
        ),
        (
            {"gcp": gcp_of("prod", alerting={"notificationChannels": ["pagerduty"]})},
            "gcp.alerting.notificationChannels",
            "notificationChannels/<id>",
        ),
        (
            {"network": {"apiServerCidrs": ["10.0.0.0/28"]}},
            "network.apiServerCidrs",
            "leaves out the control plane",
        ),
        (
            {
                "backup": {
                    "schedule": "0 * * * *",
                    "retentionDays": 30,
                    "location": "gs://elsewhere/redis",
                }
            },
            "backup.location",
            "not in the bucket this stack creates",
        ),
        (
            {
                "backup": {
                    "schedule": "0 * * * *",
                    "retentionDays": 30,
                    "gcpServiceAccount": "x@y.iam.gserviceaccount.com",
                }
            },
            "backup.gcpServiceAccount",
            "creates this identity (redis-backup@",
        ),
        (
            {
                "backup": {
                    "schedule": "0 * * * *",
                    "retentionDays": 30,
                    "smokeServiceAccount": "x@y.iam.gserviceaccount.com",
                }
            },
            "backup.smokeServiceAccount",
            "creates this identity (redis-smoke@",
        ),
    ],
)
def test_gcp_mistakes_name_the_key_and_the_fix(
    overrides: dict[str, Any], key: str, says: str
) -> None:
    message = error_of("prod", overrides)
    assert f"redis-platform:{key}:" in message, message
    assert says in message, message


@pytest.mark.parametrize(
    ("quantity", "gib"),
    [("8Gi", 8.0), ("512Mi", 0.5), ("1G", 1e9 / 2**30), ("2048Ki", 2 / 1024), ("1.5Gi", 1.5)],
)
def test_memory_quantities(quantity: str, gib: float) -> None:
    assert quantity_gib(quantity) == pytest.approx(gib)


def test_machine_memory_and_what_gke_leaves() -> None:
    assert machine_memory_gib("n2-highmem-4") == 32
    assert machine_memory_gib("e2-standard-2") == 8
    assert machine_memory_gib("c3-highcpu-4") == 8
    assert machine_memory_gib("e2-custom-4-8192") is None  # not checked
    # GKE's reservation: 25 % of 4 GiB, 20 % of the next 4, 10 % of the next 8, 6 % above
    assert gke_allocatable_gib(32) == pytest.approx(32 - 1 - 0.8 - 0.8 - 0.96 - 100 / 1024)
    with pytest.raises(ValueError, match="not a memory quantity"):
        quantity_gib("8 GB")
