"""SSE proxy processes for tests, against a twin's Redis, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
from redis.crc import key_slot

from redisops import acl
from redisops.client import Endpoint, connect, connect_cluster
from redisops.local.settings import HOST
from redisops.local.twin import Twin
from redisops.tokens import mint
from tests.conftest import free_port


@dataclass
class ProxyProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    secret: str
    config: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def token(
        self, streams: tuple[str, ...] = ("*",), publish: tuple[str, ...] = ("*",), ttl: int = 600
    ) -> str:
        return mint(self.secret, "test", streams, publish, ttl)

    def headers(self, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(**claims)}"}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def wait_ready(
    url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"proxy at {url} not ready")


def start_proxy(
    twin: Twin, workdir: Path, port: int | None = None, **overrides: Any
) -> ProxyProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    settings = {**twin.proxy.settings_json(twin.settings()), "port": port or free_port()}
    settings.update(overrides)
    config = workdir / f"proxy-{settings['port']}.json"
    config.write_text(json.dumps(settings))
    log = workdir / f"proxy-{settings['port']}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sse_proxy", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://{HOST}:{settings['port']}"
    try:
        wait_ready(url, proc=proc)
    except Exception:
        stop(proc)
        raise RuntimeError(f"proxy did not start:\n{log.read_text()[-2000:]}") from None
    secret = twin.proxy.secret_file.read_text().strip()
    return ProxyProcess(url, proc, log, secret, config)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


@contextmanager
def running_proxy(twin: Twin, workdir: Path, **overrides: Any) -> Iterator[ProxyProcess]:
    proxy = start_proxy(twin, workdir, **overrides)
    try:
        yield proxy
    finally:
        stop(proxy.proc)


def publisher(twin: Twin) -> redis.RedisCluster:
    port = twin.settings().ports[0]
    return connect_cluster(
        [Endpoint(host=HOST, port=port)],
        twin.client_tls(acl.PUBLISHER),
        twin.credentials(acl.PUBLISHER),
    )


def admin(twin: Twin) -> redis.RedisCluster:
    port = twin.settings().ports[0]
    return connect_cluster(
        [Endpoint(host=HOST, port=port)], twin.client_tls(acl.ADMIN), twin.credentials(acl.ADMIN)
    )


def node_admin(twin: Twin, port: int, timeout: float = 10.0) -> redis.Redis:
    """An admin connection to one node (no redirects followed)."""
    return connect(
        Endpoint(host=HOST, port=port),
        twin.client_tls(acl.ADMIN),
        twin.credentials(acl.ADMIN),
        timeout=timeout,
    )


def shard_of(twin: Twin, stream: str) -> tuple[int, int]:
    """(primary port, replica port) of the shard holding `stream`."""
    slot = key_slot(stream.encode())
    nodes = twin.status()["nodes"]
    primary = next(
        n
        for n in nodes
        if n["role"] == "primary" and any(lo <= slot <= hi for lo, hi in n["slots"])
    )
    replica = next(n for n in nodes if n["primary_id"] == primary["node_id"])
    return primary["port"], replica["port"]
