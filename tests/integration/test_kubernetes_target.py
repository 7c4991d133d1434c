"""The smoke suite's `kubernetes` target: the smoke Job's target file (as infra/k8s/jobs.py
writes it), pointed at a twin's files, runs the non-disruptive suite for real, backup
freshness included (a gs:// location on gcp-storage-emulator holding a real backup of the
twin); pod deletion is checked on the call it makes (no API server here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.k8s.jobs import SMOKE_ROLES
from redisops.client import Endpoint
from redisops.local.twin import Twin
from smoke_tests.targets import KubernetesTarget, TargetError
from tests.integration.gcs import RecordingProxy, emulator, env_with

REDISOPS = [sys.executable, "-m", "redisops"]
BUCKET = "redis-platform-test-backups"
LOCATION = f"gs://{BUCKET}/redis"


@dataclass
class Bucket:
    """gcp-storage-emulator behind a recording proxy, holding one real backup of the
    session twin at LOCATION; `env` points a subprocess's Google client at it."""

    env: dict[str, str]
    proxy: RecordingProxy
    backup_id: str
    taken_at: float  # time.time() when the backup had completed


@pytest.fixture(scope="module")
def bucket(session_twin: Twin) -> Iterator[Bucket]:
    with emulator(BUCKET) as url, RecordingProxy(url) as proxy:
        env = env_with(STORAGE_EMULATOR_HOST=proxy.url)
        created = subprocess.run(
            [*REDISOPS, "backup", "create", "--target", "local",
             "--state-dir", str(session_twin.layout.root), "--to", LOCATION, "--json"],
            capture_output=True, text=True, timeout=300, check=False, env=env,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        proxy.take()
        yield Bucket(env, proxy, json.loads(created.stdout)["id"], time.time())


def target_file_for(twin: Twin, path: Path, **changes: Any) -> Path:
    """The shape `infra.k8s.jobs.smoke_target` writes, with the twin's addresses and files."""
    status = twin.status()
    settings = status["settings"]
    client = status["tls"]["clients"]["smoke"]
    proxy = status["sse_proxy"]
    spec: dict[str, Any] = {
        "name": "twin-as-kubernetes",
        "shards": settings["shards"],
        "replicas": settings["replicas"],
        "node_timeout_ms": settings["node_timeout_ms"],
        "streams": status["streams"],
        "mutual_tls": status["tls"]["mutual"],
        "can_disrupt": False,
        "namespace": "redis",
        "nodes": [{"endpoint": f"{n['host']}:{n['port']}"} for n in status["nodes"]],
        "tls": {"ca": status["tls"]["ca"], "cert": client["cert"], "key": client["key"]},
        # the roles the smoke Job mounts, no more
        "users": {role: status["users"][role] for role in SMOKE_ROLES},
        "sse_proxy": {"url": proxy["url"], "jwt_secret_file": proxy["jwt_secret_file"]},
        "backups": None,
    }
    spec.update(changes)
    path.write_text(json.dumps(spec))
    return path


def smoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REDISOPS, "smoke", "--target", "kubernetes", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
    )


def test_suite_passes_through_a_target_file(
    session_twin: Twin, bucket: Bucket, tmp_path: Path
) -> None:
    target = target_file_for(
        session_twin,
        tmp_path / "target.json",
        backups={"location": LOCATION, "max_age_s": 3600},
    )
    proc = smoke(
        "--target-file", str(target), "--no-disruption", "--report-dir", str(tmp_path), "--json",
        env=bucket.env,
    )  # fmt: skip
    report = json.loads(proc.stdout)
    failed = [t for t in report["tests"] if t["outcome"] in ("failed", "error")]
    assert proc.returncode == 0, f"{failed}\n{proc.stderr[-2000:]}"
    assert report["counts"]["passed"] > 100
    assert "sse_roundtrip_latency" in report["measurements"]
    skipped = [t["id"] for t in report["tests"] if t["outcome"] == "skipped"]
    # Skipped: crashes (--no-disruption), and running commands as the roles the Job holds
    # no password for (ACL DRYRUN still checks them). Backups are checked.
    unheld = [r for r in ("admin", "operator", "replication") if r not in SMOKE_ROLES]
    for test_id in skipped:
        assert "primary_crash" in test_id or any(
            f"[{role} may" in test_id and "(run)" in test_id for role in unheld
        ), test_id
    (backup_check,) = [t for t in report["tests"] if "newest_complete_backup" in t["id"]]
    assert backup_check["outcome"] == "passed", backup_check
    assert report["measurements"]["backup_age"]["value"] < 3600
    # It read the bucket with object requests only (the smoke identity is objectViewer;
    # tests/integration/test_backup_iam.py checks each request against the plan's grants).
    requests = bucket.proxy.take(settle_s=0.2)
    assert requests and all(r.path.startswith(f"/storage/v1/b/{BUCKET}/o") or
                            r.path.startswith(f"/download/storage/v1/b/{BUCKET}/o")
                            for r in requests), requests  # fmt: skip
    # the graceful failover (no crash) ran
    assert "graceful_failover_unavailability" in report["measurements"]
    assert session_twin.status()["healthy"]


@pytest.mark.parametrize(
    ("location", "says"),
    [
        (LOCATION, r"is \d+ s old \(allowed 1 s\)"),
        (f"gs://{BUCKET}/nothing-here", rf"no complete backup in gs://{BUCKET}/nothing-here"),
    ],
)
def test_the_gate_fails_when_the_newest_backup_is_too_old_or_missing(
    session_twin: Twin, bucket: Bucket, tmp_path: Path, location: str, says: str
) -> None:
    time.sleep(max(0.0, bucket.taken_at + 2 - time.time()))  # older than the 1 s allowed
    target = target_file_for(
        session_twin, tmp_path / "target.json", backups={"location": location, "max_age_s": 1}
    )
    proc = smoke("--target-file", str(target), "--no-disruption", "--report-dir",
                 str(tmp_path), "--json", "-k", "newest_complete_backup",
                 env=bucket.env)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    (check,) = report["tests"]
    assert check["outcome"] == "failed"
    assert re.search(says, check["message"]), check["message"]
    if location == LOCATION:
        assert bucket.backup_id in check["message"] and location in check["message"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "needs --target-file"),
        ("not json", "is not JSON"),
        ("[]", "must hold a JSON object"),
        ('{"name": "x"}', "lacks 'shards'"),
    ],
)
def test_bad_target_file_is_refused_with_the_reason(
    tmp_path: Path, content: str | None, says: str
) -> None:
    args = []
    if content is not None:
        path = tmp_path / "target.json"
        path.write_text(content)
        args = ["--target-file", str(path)]
    proc = smoke(*args)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_signing_secret_is_named(session_twin: Twin, tmp_path: Path) -> None:
    path = target_file_for(
        session_twin,
        tmp_path / "target.json",
        sse_proxy={"url": "http://127.0.0.1:1", "jwt_secret_file": str(tmp_path / "none")},
    )
    proc = smoke("--target-file", str(path))
    assert proc.returncode == 2
    assert "cannot read the SSE signing secret" in proc.stderr


class RecordingCoreApi:
    """Stands in for kubernetes.client.CoreV1Api: records the calls it gets."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def delete_namespaced_pod(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


def test_crashing_a_node_deletes_its_pod_without_grace(session_twin: Twin, tmp_path: Path) -> None:
    spec = json.loads(target_file_for(session_twin, tmp_path / "t.json").read_text())
    host = "redis-cluster-4.redis-cluster-headless.redis.svc.cluster.local"
    spec["nodes"] = [{"endpoint": f"{host}:6379"}]
    api = RecordingCoreApi()
    with pytest.raises(TargetError, match="does not allow crashing"):
        KubernetesTarget(spec, core_api=api).kill_node(Endpoint(host=host, port=6379))
    spec["can_disrupt"] = True
    target = KubernetesTarget(spec, core_api=api)
    target.kill_node(Endpoint(host=host, port=6379))
    target.restart_node(Endpoint(host=host, port=6379))  # the StatefulSet does it
    assert api.calls == [
        {"name": "redis-cluster-4", "namespace": "redis", "grace_period_seconds": 0}
    ]
    other = "redis-cluster-0.redis-cluster-headless.other.svc.cluster.local"
    with pytest.raises(TargetError, match="not in namespace redis"):
        target.kill_node(Endpoint(host=other, port=6379))
