"""Which Redis images the StatefulSet may run: only what the backup tools can read."""

from __future__ import annotations

import pytest

from redisops import engine

PLATFORM = "europe-docker.pkg.dev/p/r/redis-platform@sha256:" + "0" * 64


@pytest.mark.parametrize(
    "image",
    [
        PLATFORM,
        "redis:7.0.15",
        "redis:7.0",
        "redis:7.0.15-bookworm@sha256:" + "1" * 64,
        "r.io/x/redis:7.0",
    ],
)
def test_images_whose_backups_the_tools_read_are_accepted(image: str) -> None:
    assert engine.image_problem(image, PLATFORM) is None


@pytest.mark.parametrize(
    ("image", "says"),
    [
        ("redis:7.2.5", "RDB format 11"),
        ("redis:7.4.1@sha256:" + "2" * 64, "RDB format 12"),
        ("valkey/valkey:8.1", "not a Redis image whose RDB format"),
        ("redis:9.0", "an RDB format unknown here"),
        ("redis", "names no Redis version"),
        ("redis@sha256:" + "3" * 64, "names no Redis version"),
        ("localhost:5000/redis", "names no Redis version"),
        ("redis:alpine3.19", "names no Redis version"),
        ("redis:6.2.14", "older than the platform's one Redis build"),
        ("redis:5.0", "older than"),
    ],
)
def test_images_newer_than_the_tools_or_unversioned_are_refused(image: str, says: str) -> None:
    problem = engine.image_problem(image, PLATFORM)
    assert problem is not None and says in problem
    assert "platformImage" in problem  # says how to fix it


def test_server_version_reads_redis_server_output() -> None:
    out = "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=c4b5"
    assert engine.server_version(out) == (7, 0)
    with pytest.raises(ValueError, match="not redis-server --version"):
        engine.server_version("valkey 8")
