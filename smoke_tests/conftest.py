"""Fixtures and options of the smoke suite (run with `redisops smoke --target ...`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smoke_tests import capabilities
from smoke_tests.capabilities import DECLARED, Declared
from smoke_tests.sse_client import Subscription
from smoke_tests.targets import Target, TargetError, load_target

# Checks run in this order: read-only ones first, disruptive ones last.
MODULE_ORDER = (
    "test_health",
    "test_tls",
    "test_acl",
    "test_backups",
    "test_failover",
    "test_streams",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("smoke", "redis-platform smoke suite")
    group.addoption("--target", default="local", help="local (the twin) or kubernetes")
    group.addoption("--state-dir", default=None, help="the twin's state directory")
    group.addoption(
        "--target-file", default=None, help="kubernetes: the target file the smoke Job mounts"
    )
    group.addoption(
        "--no-disruption",
        action="store_true",
        default=False,
        help="declare disruption absent: checks that crash nodes skip (and pass)",
    )
    group.addoption("--cert-min-days", type=float, default=14.0)
    group.addoption(
        "--graceful-failover-limit",
        type=float,
        default=5.0,
        help="fail when a graceful failover leaves writes failing longer (s); goal 0.5",
    )
    group.addoption(
        "--hard-failover-slack",
        type=float,
        default=10.0,
        help="fail when unavailability after a crash exceeds node-timeout + this (s); "
        "goal node-timeout + 1.5",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "disruptive: crashes nodes; only on targets that allow it")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = getattr(item, "module", None)
        name = module.__name__.rsplit(".", 1)[-1] if module else ""
        return MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER)

    items.sort(key=rank)


@pytest.fixture(scope="session")
def target(pytestconfig: pytest.Config) -> Target:
    state_dir = pytestconfig.getoption("--state-dir")
    target_file = pytestconfig.getoption("--target-file")
    try:
        loaded = load_target(
            pytestconfig.getoption("--target"),
            Path(state_dir) if state_dir else None,
            Path(target_file) if target_file else None,
        )
    except TargetError as exc:
        pytest.exit(f"cannot use the target: {exc}", returncode=2)
    no_disruption = bool(pytestconfig.getoption("--no-disruption"))
    pytestconfig.stash[DECLARED] = Declared.of(loaded, no_disruption=no_disruption)
    return loaded


@pytest.fixture(scope="session")
def declared(target: Target, pytestconfig: pytest.Config) -> Declared:
    """What the target declares absent; a check skips only through `declared.require`."""
    return pytestconfig.stash[DECLARED]


@pytest.fixture(scope="session")
def run_id() -> str:
    """Distinguishes this run's keys from any other run's."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def disruptive(declared: Declared) -> None:
    declared.require(capabilities.DISRUPTION)


Measure = Callable[..., None]


@pytest.fixture
def measure(record_property: Callable[[str, object], None]) -> Measure:
    """Record a measured number; it lands in the JUnit XML and the JSON report."""

    def _measure(name: str, value: float, unit: str = "s", goal: float | None = None) -> None:
        record_property(name, round(value, 4))
        record_property(f"{name}.unit", unit)
        if goal is not None:
            record_property(f"{name}.goal", goal)
            record_property(f"{name}.goal_met", value <= goal)

    return _measure


@pytest.fixture(scope="session")
def sse_canary(target: Target, run_id: str) -> Iterator[Subscription | None]:
    """An SSE subscription to a stream on the failover canary's shard, opened before the
    failover checks and kept open through them (None without a proxy)."""
    if target.sse is None:
        yield None
        return
    stream = f"smoke:sse:{{canary}}:{run_id}"
    sub = Subscription(f"{target.sse.url}/v1/streams/{stream}", token=target.sse.token)
    sub.start()
    yield sub
    sub.close()
