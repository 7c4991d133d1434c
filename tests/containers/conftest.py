"""Fixtures of the container tests: the engine, the image built from this tree, the
recorded dev plan with its image references resolving to that image."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devtools import engine as engines
from devtools.image import BuiltImage, build_image
from tests.infra import harness


@pytest.fixture(scope="session")
def engine() -> Iterator[engines.Engine]:
    """The container engine (started for this session when none runs, then stopped)."""
    found = engines.start()
    try:
        yield found
    finally:
        engines.stop(found)


@pytest.fixture(scope="session")
def image(engine: engines.Engine) -> BuiltImage:
    """The platform image built from this tree (cached when nothing changed)."""
    return build_image(engine, progress=lambda step: print(f"image: {step}"))


@pytest.fixture(scope="session")
def dev_plan() -> harness.Plan:
    return harness.run("dev")


@pytest.fixture(scope="session")
def dev_settings() -> Any:
    return harness.settings("dev")


@pytest.fixture(scope="session")
def platform_image(engine: engines.Engine, image: BuiltImage, dev_settings: Any) -> Iterator[str]:
    """The plan's platform image reference, resolving to the image built here (what a
    registry push by digest would make it on GKE); untagged again at the end, so it never
    shadows the registry's image on a developer's engine."""
    ref: str = dev_settings.platform_image
    engine.run(["tag", image.image, ref])
    try:
        yield ref
    finally:
        engine.run(["rmi", "--no-prune", ref], check=False)


@pytest.fixture
def prefix() -> str:
    """A name prefix this test owns for its containers, volumes and network."""
    return f"rp{os.getpid()}-{uuid.uuid4().hex[:6]}"
