"""docker-compose.yml, brought up with Debian's docker-compose 1.29 on the image built
here: the TLS + ACL cluster forms, the proxy answers on 127.0.0.1, the smoke suite's
one-shot service passes; a second `up` keeps the credentials and passes again."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx

from devtools.engine import Engine
from devtools.image import BuiltImage

ROOT = Path(__file__).resolve().parents[2]


def _compose_command() -> list[str] | None:
    """Debian's docker-compose 1.29, or Compose v2 as a docker plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    for docker in ("/usr/bin/docker", shutil.which("docker")):
        if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                     check=False).returncode == 0:  # fmt: skip
            return [docker, "compose"]
    return None


COMPOSE = _compose_command()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_compose_up_forms_the_cluster_and_passes_the_smoke_suite(
    engine: Engine, image: BuiltImage, prefix: str
) -> None:
    assert COMPOSE is not None, "docker-compose is missing: run `make container-engine`"
    port = _free_port()
    env = {
        **engine.env(),
        "SSE_PROXY_PORT": str(port),
        "REDIS_PLATFORM_IMAGE": image.image,
        "COMPOSE_PROJECT_NAME": prefix,
    }

    def compose(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COMPOSE, "-f", str(ROOT / "docker-compose.yml"), *args],
            env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def ca_certificate() -> str:
        """The CA the init service generated, from the material volume."""
        return engine.run(
            ["run", "--rm", "-v", f"{prefix}_material:/m:ro", "--entrypoint", "cat",
             image.image, "/m/tls/ca.crt"]
        ).stdout  # fmt: skip

    def smoke_run() -> tuple[int, str]:
        up = compose("up", "-d", "--no-build")
        assert up.returncode == 0, up.stderr[-1500:] + compose("logs", "reconcile").stdout[-4000:]
        (container,) = compose("ps", "-a", "-q", "smoke").stdout.split()
        code = int(engine.run(["wait", container], timeout=600).stdout.strip())
        return code, engine.run(["logs", container], check=False).stdout

    try:
        started = time.monotonic()
        code, logs = smoke_run()
        first_s = time.monotonic() - started
        assert code == 0, f"smoke failed:\n{logs[-5000:]}\n{compose('logs').stdout[-5000:]}"
        summary = re.search(
            r"(\d+) passed, 0 failed, 0 errors, \d+ skipped \(0 not allowed\)", logs
        )
        assert summary and int(summary.group(1)) > 100, logs[-3000:]
        # the proxy is published on the host's loopback only
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status_code == 200
        ports = engine.run(["port", compose("ps", "-q", "proxy").stdout.strip()]).stdout
        assert ports.strip().endswith(f"127.0.0.1:{port}"), ports
        # the same credentials and certificates after a second `up`, and the gate passes
        ca_before = ca_certificate()
        compose("stop", timeout=120)
        code, logs = smoke_run()
        assert code == 0, f"smoke failed after a restart:\n{logs[-5000:]}"
        ca_after = ca_certificate()
        assert ca_before == ca_after and "BEGIN CERTIFICATE" in ca_before
        print(f"compose: first up to smoke passed in {first_s:.1f} s")
    finally:
        down = compose("down", "-v", "--remove-orphans", timeout=180)
        assert down.returncode == 0, down.stderr[-2000:]
