"""Every Cloud Storage request the backup, drill and smoke identities make is one the roles
the Pulumi program grants them allow, and finding the newest backup costs a bounded
number of requests however many backups the bucket holds.

gcp-storage-emulator enforces no IAM, so nothing here trusts it to: the real `redisops`
commands run against it through a recording reverse proxy, each request is mapped to the
IAM permission Google documents for it, and that permission must be in a role granted,
in the recorded plan of the dev stack, to the Google service account the job's
Kubernetes ServiceAccount is bound to (Workload Identity).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.k8s import drill
from redisops.backup.catalog import IDS_END
from redisops.backup.manifest import INDEX, id_base, index_name
from redisops.local.twin import Twin
from tests.conftest import free_base_port, requires_redis
from tests.infra import harness
from tests.integration.backups import fill
from tests.integration.gcs import RecordingProxy, Request, emulator, env_with

REDISOPS = [sys.executable, "-m", "redisops"]
SWITCH = "DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA"

# ---- what Google documents --------------------------------------------------------------

# Request shape -> (JSON API method, IAM permissions it needs), from "IAM permissions for
# JSON methods" (cloud.google.com/storage/docs/access-control/iam-json). An upload that
# replaces an existing object also needs storage.objects.delete (added where recorded).
# The bucket is uniform (no ACLs), so no object getIamPolicy/setIamPolicy applies.
REQUEST_PERMISSIONS: list[tuple[str, str, str, frozenset[str]]] = [
    ("GET", r"/storage/v1/b/{bucket}", "buckets.get", frozenset({"storage.buckets.get"})),
    ("PATCH", r"/storage/v1/b/{bucket}", "buckets.patch", frozenset({"storage.buckets.update"})),
    ("GET", r"/storage/v1/b/{bucket}/iam", "buckets.getIamPolicy",
     frozenset({"storage.buckets.getIamPolicy"})),
    ("GET", r"/storage/v1/b/{bucket}/o", "objects.list", frozenset({"storage.objects.list"})),
    ("GET", r"/storage/v1/b/{bucket}/o/.+", "objects.get", frozenset({"storage.objects.get"})),
    ("GET", r"/download/storage/v1/b/{bucket}/o/.+", "objects.get (media)",
     frozenset({"storage.objects.get"})),
    ("POST", r"/upload/storage/v1/b/{bucket}/o", "objects.insert",
     frozenset({"storage.objects.create"})),
    ("PUT", r"/upload/storage/v1/b/{bucket}/o", "objects.insert (resumable session)",
     frozenset({"storage.objects.create"})),
    # Cancelling a resumable upload: the session URI is its own authorisation.
    ("DELETE", r"/upload/storage/v1/b/{bucket}/o", "cancel a resumable upload", frozenset()),
    ("DELETE", r"/storage/v1/b/{bucket}/o/.+", "objects.delete",
     frozenset({"storage.objects.delete"})),
    ("PATCH", r"/storage/v1/b/{bucket}/o/.+", "objects.patch",
     frozenset({"storage.objects.get", "storage.objects.update"})),
    ("POST", r"/storage/v1/b/{bucket}/o/.+/(rewriteTo|copyTo)/b/.+", "objects.rewrite",
     frozenset({"storage.objects.get", "storage.objects.create"})),
]  # fmt: skip

# Predefined roles -> their permissions, from "IAM roles for Cloud Storage"
# (cloud.google.com/storage/docs/access-control/iam-roles). Neither holds
# storage.buckets.get, nor storage.objects.delete (so neither may replace an object).
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "roles/storage.objectCreator": frozenset(
        {
            "orgpolicy.policy.get",
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
            "storage.objects.create",
            "storage.managedFolders.create",
            "storage.multipartUploads.create",
            "storage.multipartUploads.abort",
            "storage.multipartUploads.listParts",
        }
    ),
    "roles/storage.objectViewer": frozenset(
        {
            "resourcemanager.projects.get",
            "resourcemanager.projects.list",
            "storage.folders.get",
            "storage.folders.list",
            "storage.managedFolders.get",
            "storage.managedFolders.list",
            "storage.objects.get",
            "storage.objects.list",
        }
    ),
}


def needs(request: Request, bucket: str) -> tuple[str, frozenset[str]]:
    """The JSON API method a request is and the permissions it needs on `bucket`."""
    for method, pattern, name, permissions in REQUEST_PERMISSIONS:
        if request.method == method and re.fullmatch(
            pattern.format(bucket=re.escape(bucket)), request.path
        ):
            if request.replaces:
                return f"{name}, replacing an object", permissions | {"storage.objects.delete"}
            return name, permissions
    raise AssertionError(
        f"{request}: not in REQUEST_PERMISSIONS (another bucket, or a method to look up in "
        "Google's table of JSON API permissions)"
    )


# ---- what the Pulumi program grants -----------------------------------------------------


@dataclass(frozen=True)
class Identity:
    name: str
    namespace: str
    service_account: str  # the Kubernetes ServiceAccount the job runs as
    roles: frozenset[str]  # roles on the backup bucket, through Workload Identity

    @property
    def permissions(self) -> frozenset[str]:
        unknown = self.roles - ROLE_PERMISSIONS.keys()
        assert not unknown, f"{self.name}: roles {sorted(unknown)} missing in ROLE_PERMISSIONS"
        return frozenset().union(*(ROLE_PERMISSIONS[r] for r in self.roles))


def bucket_roles(plan: harness.Plan, namespace: str, service_account: str) -> frozenset[str]:
    """Roles on the bucket of the Google account `namespace/service_account` may act as."""
    workload = f".svc.id.goog[{namespace}/{service_account}]"
    emails = {
        r.inputs["serviceAccountId"].rsplit("/", 1)[1]
        for r in plan.of_type("gcp:serviceaccount/iAMMember:IAMMember")
        if r.inputs["role"] == "roles/iam.workloadIdentityUser"
        and r.inputs["member"].endswith(workload)
    }
    return frozenset(
        r.inputs["role"]
        for r in plan.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
        if r.inputs["member"] in {f"serviceAccount:{e}" for e in emails}
    )


@dataclass(frozen=True)
class Granted:
    bucket: str
    location: str
    backup_args: list[str]  # the backup CronJob's arguments
    drill_args: list[str]  # the restore-drill CronJob's arguments
    identities: dict[str, Identity]


def granted(plan: harness.Plan) -> Granted:
    (bucket,) = {r.inputs["name"] for r in plan.of_type("gcp:storage/bucket:Bucket")}
    (cronjob,) = plan.kube("CronJob", "redis-backup")
    job = cronjob.manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    args = list(job["containers"][0]["args"])
    (drill_cronjob,) = plan.kube("CronJob", drill.CRONJOB)
    drill_pod = drill_cronjob.manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    smoke_job = harness.unwrap(plan.outputs["smokeJob"][0])
    workloads = {
        "backup": (cronjob.manifest["metadata"]["namespace"], job["serviceAccountName"]),
        "drill": (drill_cronjob.manifest["metadata"]["namespace"], drill_pod["serviceAccountName"]),
        "smoke": (
            smoke_job["metadata"]["namespace"],
            smoke_job["spec"]["template"]["spec"]["serviceAccountName"],
        ),
    }
    identities = {
        name: Identity(name, ns, sa, bucket_roles(plan, ns, sa))
        for name, (ns, sa) in workloads.items()
    }
    drill_args = list(drill_pod["containers"][0]["args"])
    return Granted(bucket, args[args.index("--to") + 1], args, drill_args, identities)


# ---- the operations, recorded ----------------------------------------------------------


@dataclass
class Run:
    identity: str
    operation: str
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    requests: list[Request]
    seconds: float


CLUSTER_FLAGS = ("--node", "--ca", "--cert", "--key", "--user", "--password-file")
HISTORY = 60  # older complete backups seeded for the second round
MAX_AGE_S = "3600"
#: requests to find and check the newest complete backup, however many exist
LATEST_BOUND = 4


def as_local(args: list[str], state_dir: Path) -> list[str]:
    """A job's arguments with its cluster access replaced by the twin's."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in CLUSTER_FLAGS:
            skip = True
        else:
            kept.append(arg)
    return [*kept, "--target", "local", "--state-dir", str(state_dir)]


def unindexed(created: str) -> str:
    """The id of the copy of backup `created` that `seed_history` writes a second later
    without an index entry (its index write failed, or an older redisops wrote it)."""
    when = dt.datetime.strptime(created[:16], "%Y%m%dT%H%M%SZ") + dt.timedelta(seconds=1)
    return when.strftime("%Y%m%dT%H%M%SZ")


def forged(created: str, oldest: str) -> str:
    """An index entry under a rank newer than every backup that names the oldest one."""
    rank = index_name("29991231T235959Z").split("/")[1].partition("_")[0]
    return f"{INDEX}/{rank}_{oldest}.json"


def seed_history(emulator_url: str, bucket: str, prefix: str, count: int) -> None:
    """`count` older copies of the newest backup, hourly; a complete copy a second newer
    without an index entry; two newer backups still in progress (shards, no manifest);
    and a forged index entry (`forged`) naming the oldest: a bucket with history, written
    straight to the emulator (not through the proxy)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        credentials=AnonymousCredentials(),
        project="seed",
        client_options={"api_endpoint": emulator_url},
    )
    gcs = client.bucket(bucket)
    manifests = [
        b.name
        for b in client.list_blobs(bucket, prefix=f"{prefix}/")
        if b.name.endswith("/manifest.json")
    ]
    (template,) = manifests
    manifest = json.loads(gcs.blob(template).download_as_bytes())
    shards = {s["object"]: gcs.blob(f"{prefix}/{manifest['id']}/{s['object']}").download_as_bytes()
              for s in manifest["shards"]}  # fmt: skip
    newest = dt.datetime.strptime(manifest["id"][:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)

    def write(backup_id: str, with_manifest: bool, shift: dt.timedelta) -> None:
        for name, data in shards.items():
            gcs.blob(f"{prefix}/{backup_id}/{name}").upload_from_string(data)
        if with_manifest:
            copy = dict(manifest, id=backup_id)
            for key in ("started_at", "completed_at"):
                copy[key] = (dt.datetime.fromisoformat(manifest[key]) + shift).isoformat()
            gcs.blob(f"{prefix}/{backup_id}/manifest.json").upload_from_string(json.dumps(copy))

    for hours in range(1, count + 1):
        shift = dt.timedelta(hours=-hours)
        write((newest + shift).strftime("%Y%m%dT%H%M%SZ"), True, shift)
    write(unindexed(manifest["id"]), True, dt.timedelta(seconds=1))
    for minutes in (1, 2):
        shift = dt.timedelta(minutes=minutes)
        write((newest + shift).strftime("%Y%m%dT%H%M%SZ"), False, shift)
    oldest = (newest - dt.timedelta(hours=count)).strftime("%Y%m%dT%H%M%SZ")
    gcs.blob(f"{prefix}/{forged(manifest['id'], oldest)}").upload_from_string("{}")


@pytest.fixture(scope="module")
def plan_grants() -> Granted:
    return granted(harness.run("dev"))


@pytest.fixture(scope="module")
def recorded(
    plan_grants: Granted, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Run]]:
    """Each operation as its job runs it, recorded: round 1 with one backup in the
    bucket, round 2 (`…@history`) after seeding HISTORY more."""
    requires_redis()
    root = tmp_path_factory.mktemp("iam")
    location = plan_grants.location
    prefix = location.removeprefix(f"gs://{plan_grants.bucket}/")
    source = Twin(root / "source")
    target = Twin(root / "target")
    runs: dict[str, Run] = {}
    try:
        assert source.up(base_port=free_base_port(3), replicas=0, sse_proxy=False).healthy
        fill(source, 500)
        assert target.up(base_port=free_base_port(4), shards=4, replicas=0, sse_proxy=False).healthy
        with emulator(plan_grants.bucket) as url, RecordingProxy(url) as proxy:
            env = env_with(STORAGE_EMULATOR_HOST=proxy.url, TMPDIR=str(root))

            def run(identity: str, operation: str, args: list[str]) -> None:
                started = time.monotonic()
                proc = subprocess.run([*REDISOPS, *args], capture_output=True, text=True,
                                      timeout=600, check=False, env=env)  # fmt: skip
                runs[f"{identity}-{operation}"] = Run(
                    identity, operation, args, proc.returncode, proc.stdout, proc.stderr,
                    proxy.take(settle_s=0.2), round(time.monotonic() - started, 2),
                )  # fmt: skip

            restore = ["restore", "--from", location, "--backup", "latest", "--force",
                       "--target", "local", "--state-dir", str(target.layout.root),
                       "--json"]  # fmt: skip
            status = ["backup", "status", "--from", location, "--max-age", MAX_AGE_S, "--json"]
            run("backup", "create", as_local(plan_grants.backup_args, source.layout.root))
            for identity in ("backup", "drill", "smoke"):
                run(identity, "status", status)
            for identity in ("backup", "drill"):
                run(identity, "list", ["backup", "list", "--from", location, "--json"])
                run(
                    identity, "verify", ["backup", "verify", "latest", "--from", location, "--json"]
                )
            run("backup", "prune", ["backup", "prune", "--from", location, "--keep-last", "1",
                                    "--keep-days", "1"])  # fmt: skip
            run("drill", "restore", restore)
            run("drill", "drill", plan_grants.drill_args)  # the CronJob's, as declared

            seed_history(url, plan_grants.bucket, prefix, HISTORY)
            run("smoke", "status@history", status)
            run("backup", "list@history", ["backup", "list", "--from", location, "--json"])
            run("drill", "verify@history", ["backup", "verify", "latest", "--from", location])
            run("drill", "restore@history", restore)
        yield runs
    finally:
        target.down(purge=True)
        source.down(purge=True)


OPERATIONS = [
    "backup-create", "backup-status", "backup-list", "backup-verify", "backup-prune",
    "drill-status", "drill-list", "drill-verify", "drill-restore", "drill-drill",
    "smoke-status",
    "smoke-status@history", "backup-list@history", "drill-verify@history", "drill-restore@history",
]  # fmt: skip
EXPECTED_EXIT = {"backup-prune": 2}  # GCS pruning is the lifecycle rule's job


@pytest.mark.parametrize("operation", OPERATIONS)
def test_each_operation_uses_only_permissions_its_identity_is_granted(
    recorded: dict[str, Run], plan_grants: Granted, operation: str
) -> None:
    run = recorded[operation]
    identity = plan_grants.identities[run.identity]
    assert run.returncode == EXPECTED_EXIT.get(operation, 0), run.stderr[-2000:]
    assert operation == "backup-prune" or run.requests, "no request recorded: not through GCS?"
    missing = []
    for request in run.requests:
        method, permissions = needs(request, plan_grants.bucket)
        lacking = permissions - identity.permissions
        if lacking:
            missing.append(f"{request} [{method}] needs {', '.join(sorted(lacking))}")
    assert not missing, (
        f"{run.operation} as {run.identity} ({identity.namespace}/{identity.service_account}, "
        f"roles {sorted(identity.roles) or 'none'}) would be refused:\n  " + "\n  ".join(missing)
    )


def test_a_backup_never_replaces_an_object(recorded: dict[str, Run]) -> None:
    """Each upload asks GCS to refuse it if the name exists (ifGenerationMatch=0): the
    emulator ignores the condition, GCS enforces it, and replacing would need
    storage.objects.delete, which the backup identity lacks."""
    uploads = [r for r in recorded["backup-create"].requests if r.upload_name is not None]
    # three shards, the manifest, the index entry, the run's record (redisops.backup.runs)
    assert len(uploads) == 3 + 2 + 1
    assert sum("/runs/backup/" in (r.upload_name or "") for r in uploads) == 1
    for request in uploads:
        assert request.query.get("ifGenerationMatch") == ["0"], request
        assert not request.replaces, request


def created_id(recorded: dict[str, Run]) -> str:
    backup_id: str = json.loads(recorded["backup-create"].stdout)["id"]
    return backup_id


def test_the_newest_backup_is_found_with_a_bounded_number_of_requests(
    recorded: dict[str, Run], plan_grants: Granted
) -> None:
    """With history, the newest complete backup is a copy without an index entry, and a
    forged entry ranked above all names the oldest: neither changes the answer or its
    cost."""
    root = plan_grants.location.removeprefix(f"gs://{plan_grants.bucket}/")
    one, history = recorded["smoke-status"], recorded["smoke-status@history"]
    for run in (one, history):
        assert json.loads(run.stdout)["fresh"], run.stdout
    assert json.loads(one.stdout)["latest"] == created_id(recorded)
    assert json.loads(history.stdout)["latest"] == unindexed(created_id(recorded))
    assert len(history.requests) <= LATEST_BOUND, "\n".join(map(str, history.requests))
    assert len(history.requests) == len(one.requests)
    # The emulator answers every listing in one page; GCS pages by 1,000 names. So no
    # listing may cover the whole location: only a few names, one backup's objects, or
    # the backups from the newest genuine index entry's second on (on GCS: that backup,
    # and newer ones the index does not name yet; the emulator ignores the offsets).
    start = f"{root}/{id_base(created_id(recorded))}"
    ranged = 0
    for request in history.requests:
        if request.is_list:
            prefix = request.query.get("prefix", [""])[0]
            one_backup = re.fullmatch(rf"{re.escape(root)}/\d{{8}}T\d{{6}}Z(-\d+)?/", prefix)
            few = int(request.query.get("maxResults", ["1000"])[0]) <= 10
            newest_on = request.query.get("startOffset") == [start] and request.query.get(
                "endOffset"
            ) == [f"{root}/{IDS_END}"]
            ranged += bool(newest_on)
            assert one_backup or few or newest_on, f"{request}: lists more than it needs"
    assert ranged == 1, "\n".join(map(str, history.requests))


def test_restoring_latest_restores_the_newest_complete_backup(recorded: dict[str, Run]) -> None:
    assert json.loads(recorded["drill-restore"].stdout)["backup"] == created_id(recorded)
    restored = json.loads(recorded["drill-restore@history"].stdout)["backup"]
    assert restored == unindexed(created_id(recorded))
    assert f"backup {restored}: verified" in recorded["drill-verify@history"].stdout


@pytest.mark.parametrize("operation", ["drill-verify", "drill-restore"])
def test_restoring_latest_costs_the_same_requests_with_a_long_history(
    recorded: dict[str, Run], operation: str
) -> None:
    one, history = recorded[operation], recorded[f"{operation}@history"]
    assert len(history.requests) == len(one.requests), "\n".join(map(str, history.requests))


def test_listing_reads_each_manifest_once(recorded: dict[str, Run]) -> None:
    run = recorded["backup-list@history"]
    answer = json.loads(run.stdout)
    listed = answer["backups"]
    assert len(listed) == HISTORY + 4
    assert [b["id"] for b in listed] == sorted(b["id"] for b in listed)
    assert sum(b["complete"] for b in listed) == HISTORY + 2
    assert len(run.requests) <= len(listed) + 3, "\n".join(map(str, run.requests))
    (problem,) = answer["problems"]
    assert problem.startswith(forged(created_id(recorded), listed[0]["id"])), problem


def test_the_client_fetches_no_bucket_metadata_in_the_background(
    plan_grants: Granted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """google-cloud-storage 3.x fetches a bucket's metadata (storage.buckets.get) in a
    background thread on ordinary object requests unless told not to."""
    from redisops.backup.storage import open_storage

    with emulator(plan_grants.bucket) as url, RecordingProxy(url) as proxy:
        # Whatever turns the fetch off must be the code's doing, not the environment's.
        for name in [n for n in os.environ if n.startswith("DISABLE_GCS_PYTHON_CLIENT")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv(SWITCH, "")
        monkeypatch.delenv(SWITCH)  # undone afterwards: the variable is absent again
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        storage = open_storage(plan_grants.location)
        storage.write_text("probe/x.json", "{}")
        assert storage.read_text("probe/x.json") == "{}"
        storage.children()
        requests = proxy.take(settle_s=1.0)
    bucket_gets = [r for r in requests if r.path == f"/storage/v1/b/{plan_grants.bucket}"]
    assert not bucket_gets, bucket_gets
