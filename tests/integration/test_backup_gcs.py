"""The Google Cloud Storage backend against gcp-storage-emulator (the real GCS client)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from redisops.backup import catalog
from redisops.backup.manifest import INDEX, id_base, index_name
from redisops.backup.storage import GcsStorage
from redisops.errors import OperationError
from redisops.local.twin import Twin
from tests.conftest import free_base_port, free_port, requires_redis
from tests.integration.backups import fill, total_keys
from tests.integration.gcs import RecordingProxy, env_with
from tests.integration.gcs import emulator as gcs_emulator

REDISOPS = [sys.executable, "-m", "redisops"]
BUCKET = "redis-backups"


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    with gcs_emulator(BUCKET) as url:
        yield url


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REDISOPS, *args], capture_output=True, text=True, timeout=300, check=False, env=env
    )


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twin]:
    requires_redis()
    twin = Twin(tmp_path_factory.mktemp("gcs") / "twin")
    assert twin.up(base_port=free_base_port(3), replicas=0, sse_proxy=False).healthy
    fill(twin, 5000)
    yield twin
    twin.down(purge=True)


def test_backup_list_verify_and_restore_through_gcs(
    emulator: str, twin: Twin, tmp_path: Path
) -> None:
    env = env_with(STORAGE_EMULATOR_HOST=emulator)
    location = f"gs://{BUCKET}/prod/redis"
    created = cli("backup", "create", "--target", "local", "--state-dir", str(twin.layout.root),
                  "--to", location, "--json", env=env)  # fmt: skip
    assert created.returncode == 0, created.stderr
    backup_id = json.loads(created.stdout)["id"]
    listed = json.loads(cli("backup", "list", "--from", location, "--json", env=env).stdout)
    assert [b["id"] for b in listed["backups"] if b["complete"]] == [backup_id]
    verified = cli("backup", "verify", "latest", "--from", location, "--json", env=env)
    assert verified.returncode == 0, verified.stderr
    status = cli("backup", "status", "--from", location, "--max-age", "600", env=env)
    assert status.returncode == 0

    target = Twin(tmp_path / "target")
    assert target.up(base_port=free_base_port(4), shards=4, replicas=0, sse_proxy=False).healthy
    try:
        restored = cli("restore", "--from", location, "--target", "local", "--state-dir",
                       str(target.layout.root), "--json", env=env)  # fmt: skip
        assert restored.returncode == 0, restored.stderr
        assert json.loads(restored.stdout)["verified"]
        assert total_keys(target) == total_keys(twin)
    finally:
        target.down(purge=True)
    pruned = cli("backup", "prune", "--from", location, "--keep-last", "1", "--keep-days", "1",
                 env=env)  # fmt: skip
    assert pruned.returncode == 2 and "lifecycle" in pruned.stderr


def test_latest_is_the_newest_complete_backup_whatever_the_index_says(
    emulator: str, twin: Twin
) -> None:
    """The newest backup's index write failed after its manifest, and an entry under its
    rank names the older backup (anyone who may add objects can write one): status and
    verify latest name the newest complete backup, in three requests, the listing
    starting at the older backup's second (its genuine entry), and `backup list` reports
    the forged entry. gcp-storage-emulator ignores startOffset/endOffset (it answers with
    every object under the prefix): that they are sent is checked here, the range is
    filtered again on the client."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    prefix = "index-behind"
    location = f"gs://{BUCKET}/{prefix}"
    env = env_with(STORAGE_EMULATOR_HOST=emulator)
    ids = []
    for _ in range(2):
        created = cli("backup", "create", "--target", "local", "--state-dir",
                      str(twin.layout.root), "--to", location, "--json", env=env)  # fmt: skip
        assert created.returncode == 0, created.stderr
        ids.append(json.loads(created.stdout)["id"])
    older, newest = ids
    client = storage.Client(
        credentials=AnonymousCredentials(), project="test",
        client_options={"api_endpoint": emulator},
    )  # fmt: skip
    bucket = client.bucket(BUCKET)
    entry = index_name(newest)
    bucket.blob(f"{prefix}/{entry}").delete()  # as if its write had failed
    forged = f"{INDEX}/{entry.split('/')[1].partition('_')[0]}_{older}.json"
    bucket.blob(f"{prefix}/{forged}").upload_from_string("{}")

    with RecordingProxy(emulator) as proxy:
        env = env_with(STORAGE_EMULATOR_HOST=proxy.url)
        status = cli("backup", "status", "--from", location, "--max-age", "600", "--json",
                     env=env)  # fmt: skip
        requests = proxy.take(settle_s=0.2)
        verified = cli("backup", "verify", "latest", "--from", location, "--json", env=env)
        listed = cli("backup", "list", "--from", location, "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["latest"] == newest
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["backup"] == newest
    assert len(requests) == 3, "\n".join(map(str, requests))
    (ranged,) = [r for r in requests if r.is_list and "startOffset" in r.query]
    assert ranged.query["startOffset"] == [f"{prefix}/{id_base(older)}"]
    assert ranged.query["endOffset"] == [f"{prefix}/:"]
    assert ranged.query["prefix"] == [f"{prefix}/"]
    problems = json.loads(listed.stdout)["problems"]
    assert len(problems) == 1 and problems[0].startswith(forged), problems
    assert f"not that of backup {older}" in problems[0]
    table = cli("backup", "list", "--from", location, env=env_with(STORAGE_EMULATOR_HOST=emulator))
    assert forged in table.stdout and "ignored" in table.stdout


def test_a_missing_bucket_is_named(emulator: str, twin: Twin) -> None:
    env = env_with(STORAGE_EMULATOR_HOST=emulator)
    proc = cli("backup", "create", "--target", "local", "--state-dir", str(twin.layout.root),
               "--to", "gs://no-such-bucket/x", env=env)  # fmt: skip
    assert proc.returncode == 1
    assert "bucket no-such-bucket does not exist" in proc.stderr
    for args in (["backup", "status"], ["backup", "list"], ["backup", "verify", "latest"]):
        read = cli(*args, "--from", "gs://no-such-bucket/x", env=env)
        assert read.returncode == 1, read.stderr
        assert "bucket no-such-bucket does not exist" in read.stderr, read.stderr


def test_an_unreachable_storage_endpoint_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the real client retries an unreachable service for its deadline (30 s in the jobs;
    # 2 s here), then the location and what failed are named
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    storage = GcsStorage(BUCKET, "x", deadline=2.0)
    with pytest.raises(OperationError) as failed:
        catalog.list_backups(storage)
    assert f"gs://{BUCKET}/x" in str(failed.value) and "failed" in str(failed.value)


def test_missing_credentials_say_how_to_provide_them(twin: Twin, tmp_path: Path) -> None:
    env = env_with(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"))
    proc = cli("backup", "list", "--from", f"gs://{BUCKET}/x", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "no Google credentials" in proc.stderr
    assert "Workload Identity" in proc.stderr
