"""Looking at the function libraries a twin's nodes hold."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from redisops import acl, functions
from redisops.client import Endpoint, connect
from redisops.local.settings import HOST
from redisops.local.twin import Twin

REDISOPS = [sys.executable, "-m", "redisops"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REDISOPS, *args], capture_output=True, text=True, timeout=600, check=False
    )


@contextmanager
def node(twin: Twin, port: int, role: str = acl.ADMIN) -> Iterator[redis.Redis]:
    client = connect(
        Endpoint(host=HOST, port=port), twin.client_tls(role), twin.credentials(role), timeout=10
    )
    try:
        yield client
    finally:
        client.close()


def libraries(twin: Twin, port: int) -> dict[str, str | None]:
    with node(twin, port) as client:
        return functions.libraries(client.execute_command("FUNCTION", "LIST", "WITHCODE"))


def ports(twin: Twin, role: str) -> list[int]:
    return [n["port"] for n in twin.status()["nodes"] if n["role"] == role]


def wait_libraries(
    twin: Twin, port: int, expected: dict[str, str | None], timeout: float = 10
) -> None:
    """Replicas get FUNCTION LOAD/DELETE through replication, a moment later."""
    deadline = time.monotonic() + timeout
    while libraries(twin, port) != expected:
        assert time.monotonic() < deadline, f":{port} holds {list(libraries(twin, port))}"
        time.sleep(0.05)


def everywhere(twin: Twin) -> None:
    """Every node, primaries and replicas, holds exactly the platform's library."""
    for port in twin.settings().ports:
        wait_libraries(twin, port, {functions.LIBRARY: functions.CODE})
