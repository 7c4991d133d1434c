"""`redisops smoke --stack` as CI runs it: the real command, the real kubernetes client,
against an API server this test plays on loopback (jobs and pods only). What the gate
does when the Job passes, and when CI cancels it (SIGTERM) while the Job still runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from redisops import smoke_launch as sl

NAMESPACE = "redis"
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"


class FakeApiServer:
    """Jobs and pods of one namespace, as the API server answers them. `finish_after`:
    reads of the Job before it completes (None: it never does); `log`: the pod's log."""

    def __init__(self, log: str, finish_after: int | None) -> None:
        self.log = log
        self.finish_after = finish_after
        self.requests: list[tuple[str, str]] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.reads = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                server.requests.append(("POST", path))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if path != JOBS:
                    return self._send(404, {"kind": "Status", "code": 404})
                server.jobs[body["metadata"]["name"]] = body
                return self._send(201, body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                server.requests.append(("GET", url.path))
                name = url.path.rsplit("/", 1)[-1]
                if url.path.startswith(JOBS + "/") and name in server.jobs:
                    server.reads += 1
                    done = server.finish_after is not None and server.reads > server.finish_after
                    status: dict[str, Any] = {"active": 1}
                    if done:
                        status = {
                            "succeeded": 1,
                            "conditions": [{"type": "Complete", "status": "True"}],
                        }
                    return self._send(200, {**server.jobs[name], "status": status})
                if url.path == PODS:
                    selector = parse_qs(url.query)["labelSelector"][0]
                    job_name = selector.removeprefix("job-name=")
                    ended = server.finish_after is not None and server.reads > server.finish_after
                    phase = "Succeeded" if ended else "Running"
                    pod = {
                        "metadata": {"name": f"{job_name}-x", "namespace": NAMESPACE},
                        "status": {"phase": phase},
                    }
                    return self._send(200, {"kind": "PodList", "items": [pod]})
                if url.path.startswith(PODS + "/") and url.path.endswith("/log"):
                    return self._send(200, server.log, "text/plain")
                return self._send(404, {"kind": "Status", "code": 404})

            def do_DELETE(self) -> None:
                path = urlsplit(self.path).path
                server.requests.append(("DELETE", path))
                server.jobs.pop(path.rsplit("/", 1)[-1], None)
                return self._send(200, {"kind": "Status", "status": "Success"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def deleted(self) -> list[str]:
        return [path.rsplit("/", 1)[-1] for method, path in self.requests if method == "DELETE"]


def smoke_job() -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"generateName": "redis-smoke-", "namespace": NAMESPACE},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "smoke", "image": "i", "args": ["smoke"]}],
                }
            },
        },
    }


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"namespace": NAMESPACE, "smokeJob": smoke_job()}))
    return {"outputs": outputs, "kubeconfig": tmp_path / "kubeconfig", "reports": tmp_path / "r"}


def gate(server: FakeApiServer, files: dict[str, Path], *extra: str) -> subprocess.Popen[str]:
    files["kubeconfig"].write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server.url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    env = {**os.environ, "KUBECONFIG": str(files["kubeconfig"])}
    argv = [sys.executable, "-m", "redisops", "smoke", "--stack", "dev",
            "--outputs-file", str(files["outputs"]), "--report-dir", str(files["reports"]),
            "--json", *extra]  # fmt: skip
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def test_a_passing_job_through_a_real_client_is_exit_0_with_its_reports(
    files: dict[str, Path],
) -> None:
    report = {"ok": True, "target": "kubernetes", "counts": {"failed": 0}}
    framed = "\n".join(sl.frame("smoke-report.json", json.dumps(report).encode()))
    with FakeApiServer(f"12 passed\n{framed}\n", finish_after=2) as server:
        proc = gate(server, files)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["exit_code"] == 0 and summary["deleted"] is True
    assert json.loads((files["reports"] / "smoke-report.json").read_text()) == report
    (name,) = server.deleted()
    assert name == summary["job"] and name.startswith("redis-smoke-")
    assert ("POST", JOBS) in server.requests


def test_a_cancelled_ci_job_sigterm_deletes_the_smoke_job_and_exits_2(
    files: dict[str, Path],
) -> None:
    with FakeApiServer("still running\n", finish_after=None) as server:
        proc = gate(server, files)
        deadline = time.monotonic() + 30
        while server.reads < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert server.reads >= 2, proc.communicate(timeout=5)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 2, stderr
    assert "interrupted" in stderr and "deleted" in stderr
    assert len(server.deleted()) == 1 and server.jobs == {}  # nothing left behind
