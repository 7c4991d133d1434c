"""The Google Cloud Storage backend against gcp-storage-emulator (the real GCS client)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from redisops.local.twin import Twin
from tests.conftest import free_base_port, free_port, requires_redis
from tests.integration.backups import fill, total_keys

REDISOPS = [sys.executable, "-m", "redisops"]
BUCKET = "redis-backups"


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    port = free_port()
    binary = shutil.which("gcp-storage-emulator") or str(
        Path(sys.executable).parent / "gcp-storage-emulator"
    )
    proc = subprocess.Popen(
        [
            binary,
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "-q",
            "--default-bucket",
            BUCKET,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            assert time.monotonic() < deadline, "the GCS emulator did not start"
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def env_with(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORAGE_EMULATOR", "GOOGLE"))}
    # Never wait for a metadata server that is not there.
    env.update(GCE_METADATA_HOST="127.0.0.1:1", GCE_METADATA_IP="127.0.0.1:1", **values)
    return env


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


def test_a_missing_bucket_is_named(emulator: str, twin: Twin) -> None:
    env = env_with(STORAGE_EMULATOR_HOST=emulator)
    proc = cli("backup", "create", "--target", "local", "--state-dir", str(twin.layout.root),
               "--to", "gs://no-such-bucket/x", env=env)  # fmt: skip
    assert proc.returncode == 1
    assert "bucket no-such-bucket does not exist" in proc.stderr


def test_an_unreachable_storage_endpoint_is_a_clear_error(twin: Twin) -> None:
    env = env_with(STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{free_port()}")
    proc = cli("backup", "list", "--from", f"gs://{BUCKET}/x", env=env)
    assert proc.returncode == 1
    assert f"gs://{BUCKET}/x" in proc.stderr and "failed" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_credentials_say_how_to_provide_them(twin: Twin, tmp_path: Path) -> None:
    env = env_with(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / "gcloud"))
    proc = cli("backup", "list", "--from", f"gs://{BUCKET}/x", env=env)
    assert proc.returncode == 2, proc.stderr
    assert "no Google credentials" in proc.stderr
    assert "Workload Identity" in proc.stderr
