"""The smoke suite's `kubernetes` target: the smoke Job's target file (as infra/k8s/jobs.py
writes it), pointed at a twin's files, runs the non-disruptive suite for real; pod
deletion is checked on the call it makes (no API server here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from infra.k8s.jobs import SMOKE_ROLES
from redisops.client import Endpoint
from redisops.local.twin import Twin
from smoke_tests.targets import KubernetesTarget, TargetError

REDISOPS = [sys.executable, "-m", "redisops"]


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


def smoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REDISOPS, "smoke", "--target", "kubernetes", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_suite_passes_through_a_target_file(session_twin: Twin, tmp_path: Path) -> None:
    target = target_file_for(session_twin, tmp_path / "target.json")
    proc = smoke(
        "--target-file", str(target), "--no-disruption", "--report-dir", str(tmp_path), "--json"
    )
    report = json.loads(proc.stdout)
    failed = [t for t in report["tests"] if t["outcome"] in ("failed", "error")]
    assert proc.returncode == 0, f"{failed}\n{proc.stderr[-2000:]}"
    assert report["counts"]["passed"] > 100
    assert "sse_roundtrip_latency" in report["measurements"]
    skipped = [t["id"] for t in report["tests"] if t["outcome"] == "skipped"]
    # Skipped: crashes (--no-disruption), backups (none configured here), and running
    # commands as the roles the Job holds no password for (ACL DRYRUN still checks them).
    unheld = [r for r in ("admin", "operator", "replication") if r not in SMOKE_ROLES]
    for test_id in skipped:
        assert (
            "primary_crash" in test_id
            or "backup" in test_id
            or any(f"[{role} may" in test_id and "(run)" in test_id for role in unheld)
        ), test_id
    # the graceful failover (no crash) ran
    assert "graceful_failover_unavailability" in report["measurements"]
    assert session_twin.status()["healthy"]


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
