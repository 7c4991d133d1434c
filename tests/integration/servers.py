"""Single redis-server processes for tests that need a server unlike the twin's nodes."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import free_port


@contextmanager
def standalone_redis(workdir: Path, *args: str, tls_port: bool = False) -> Iterator[int]:
    """Start `redis-server` on 127.0.0.1 with extra arguments; yield its port; stop it by PID."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    port_args = ["--port", "0", "--tls-port", str(port)] if tls_port else ["--port", str(port)]
    proc = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            *port_args,
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(workdir / "redis.log"),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                log = (
                    (workdir / "redis.log").read_text() if (workdir / "redis.log").exists() else ""
                )
                raise RuntimeError(f"redis-server exited: {log[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def plain_client(port: int, username: str, password: str) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        username=username,
        password=password,
        decode_responses=True,
        driver_info=None,
        retry=Retry(NoBackoff(), 0),
    )
