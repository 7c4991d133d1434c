"""The one Redis build the platform runs: which engine writes the backups and which tools
read them.

The platform image carries Debian bookworm's `redis-server` package (7.0): the
StatefulSet runs it, the image's `redis-check-rdb` and scratch `redis-server` verify and
restore with it, and the twin runs the same package on the host. A snapshot is readable
only by an engine that knows its RDB format, so a stack whose Redis image writes a newer
format than the tools read is refused (`image_problem`).
"""

from __future__ import annotations

import re

#: major.minor of Debian bookworm's redis-server / redis-tools in the platform image
TOOLS_VERSION = (7, 0)
#: RDB format each Redis release line writes (Valkey numbers its releases differently and
#: is not in this table: an image of it is refused until it is added)
RDB_FORMAT = {
    (6, 0): 9,
    (6, 2): 9,
    (7, 0): 10,
    (7, 2): 11,
    (7, 4): 12,
    (8, 0): 12,
    (8, 2): 12,
}
TOOLS_RDB_FORMAT = RDB_FORMAT[TOOLS_VERSION]
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.\d+)?(?:-\S+)?$")


def parse_version(text: str) -> tuple[int, int] | None:
    """(major, minor) of an image tag that is a Redis version (`7.0`, `7.0.15`,
    `7.0.15-bookworm`); None for anything else (`alpine3.19`, `latest`)."""
    match = _VERSION.match(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def server_version(version_output: str) -> tuple[int, int]:
    """(major, minor) of `redis-server --version` (`Redis server v=7.0.15 sha=…`)."""
    match = re.search(r"v=(\d+)\.(\d+)", version_output)
    if match is None:
        raise ValueError(f"not redis-server --version output: {version_output!r}")
    return int(match.group(1)), int(match.group(2))


def image_tag(image: str) -> str | None:
    """The tag of `repository[:tag][@sha256:…]`, if any."""
    name = image.partition("@")[0]
    slash, colon = name.rfind("/"), name.rfind(":")
    return name[colon + 1 :] if colon > slash else None


def image_problem(image: str, platform_image: str) -> str | None:
    """Why the StatefulSet may not run `image`, or None.

    The platform image itself is always right (one build). Another image is accepted only
    when its tag names the same Redis release line as the tools (7.0). The tag is trusted:
    a digest pinned under a misleading tag cannot be checked here.
    """
    if image == platform_image:
        return None
    tag = image_tag(image)
    version = parse_version(tag) if tag else None
    repository = image.partition("@")[0].rsplit(":", 1)[0] if tag else image.partition("@")[0]
    if repository.rsplit("/", 1)[-1] != "redis":
        return (
            f"{image!r} is not a Redis image whose RDB format this repository knows "
            "(redisops/engine.py), so nothing proves the platform image's tools can read its "
            "backups; remove the key (the StatefulSet then runs platformImage, the one "
            "Redis build)"
        )
    if version is None:
        return (
            f"{image!r} names no Redis version in its tag, so nothing proves the platform "
            "image's redis-check-rdb and scratch redis-server can read its backups; remove "
            "the key (the StatefulSet then runs platformImage, the one Redis build)"
        )
    if version != TOOLS_VERSION:
        fmt = RDB_FORMAT.get(version)
        if version < TOOLS_VERSION:
            why = (
                "is older than the platform's one Redis build: the ACL file and the "
                "function library need Redis 7.0 features, and the tests prove only that build"
            )
        else:
            writes = f"RDB format {fmt}" if fmt else "an RDB format unknown here"
            why = (
                f"writes {writes}, newer than the platform image's tools read (RDB format "
                f"{TOOLS_RDB_FORMAT}): every backup would fail verify and restore"
            )
        return (
            f"{image!r} (Redis {version[0]}.{version[1]}) {why}. The platform runs Redis "
            f"{TOOLS_VERSION[0]}.{TOOLS_VERSION[1]} everywhere; remove the key so the "
            "StatefulSet runs platformImage, or change the tools in the Dockerfile first"
        )
    return None
