"""The recorded plan of each stack, and its settings, for the tests of tests/infra that
check a property of both (a module may define its own, as test_plan does)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra import harness

STACKS = ("dev", "prod")


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def plan(stack: str) -> harness.Plan:
    return harness.recorded(stack)


@pytest.fixture
def settings(stack: str) -> Any:
    return harness.settings(stack)
