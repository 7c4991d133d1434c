"""Shared test helpers: free ports, and twins started and stopped by the tests."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from redisops.local import process
from redisops.local.settings import BUS_OFFSET
from redisops.local.twin import Twin


def free_base_port(count: int) -> int:
    """A base port such that base..base+count-1 and their bus ports (+10000) are free, all
    below the kernel's ephemeral range."""
    return process.free_base_port("127.0.0.1", count, BUS_OFFSET)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def requires_redis() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server / redis-cli missing: run `make redis-server` first")


@pytest.fixture(scope="session")
def session_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twin]:
    """One 3 x 1 twin for the whole run; tests leave it as they found it."""
    requires_redis()
    root = tmp_path_factory.mktemp("session-twin")
    twin = Twin(root)
    report = twin.up(base_port=free_base_port(6), proxy_port=free_port())
    assert report.healthy, report.findings
    yield twin
    twin.down(purge=False)


@pytest.fixture
def own_twin(tmp_path: Path) -> Iterator[Twin]:
    """A twin of the test's own (not started); stopped by PID afterwards."""
    requires_redis()
    twin = Twin(tmp_path / "twin")
    yield twin
    twin.down(purge=False)
