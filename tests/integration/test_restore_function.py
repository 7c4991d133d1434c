"""The platform's function library across backups and restores: a backup's RDB carries
it, and both restore paths end with it on every node, even from a backup taken without
it (reconcile loads it after the fast path; the copy path keeps the target's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from redisops import functions
from redisops.backup.restore import scratch_server
from redisops.local.twin import Twin
from tests.conftest import free_base_port, requires_redis
from tests.integration.backups import cluster
from tests.integration.libraries import cli, everywhere, node, ports, wait_libraries


def up(root: Path, shards: int = 3, replicas: int = 1) -> Twin:
    twin = Twin(root)
    report = twin.up(
        shards=shards,
        replicas=replicas,
        base_port=free_base_port(shards * (1 + replicas)),
        sse_proxy=False,
    )
    assert report.healthy, report.findings
    return twin


def backup(twin: Twin, to: str) -> dict[str, Any]:
    proc = cli(
        "backup", "create", "--target", "local", "--state-dir", str(twin.layout.root),
        "--to", to, "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest: dict[str, Any] = json.loads(proc.stdout)
    return manifest


@pytest.fixture(scope="module")
def backups(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """(location, id of a backup holding the library, id of one taken without it)."""
    requires_redis()
    source = up(tmp_path_factory.mktemp("function-source") / "twin")
    location = f"file://{tmp_path_factory.mktemp('function-backups')}"
    try:
        client = cluster(source)
        try:
            for i in range(300):
                client.set(f"key:{i}", str(i))
        finally:
            client.close()
        with_library = backup(source, location)["id"]
        # A cluster from before this library (or one whose library was deleted).
        for port in ports(source, "primary"):
            with node(source, port) as admin:
                admin.execute_command("FUNCTION", "DELETE", functions.LIBRARY)
        for port in source.settings().ports:
            wait_libraries(source, port, {})
        without = backup(source, location)["id"]
        yield location, with_library, without
    finally:
        source.down(purge=True)


def test_a_backup_carries_the_library_in_its_rdb(
    backups: tuple[str, str, str], tmp_path: Path
) -> None:
    location, with_library, _ = backups
    shards = sorted(Path(location.removeprefix("file://"), with_library).glob("*.rdb"))
    assert len(shards) == 3, list(Path(location.removeprefix("file://")).rglob("*"))
    for i, rdb in enumerate(shards):
        copy = tmp_path / f"shard-{i}.rdb"
        copy.write_bytes(rdb.read_bytes())
        with scratch_server(copy, tmp_path / f"scratch-{i}") as scratch:
            listed = scratch.execute_command("FUNCTION", "LIST", "WITHCODE")
            assert functions.libraries(listed) == {functions.LIBRARY: functions.CODE}


def restore(twin: Twin, location: str, backup_id: str) -> dict[str, Any]:
    proc = cli(
        "restore", "--from", location, "--backup", backup_id, "--target", "local", "--force",
        "--state-dir", str(twin.layout.root), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report["verified"], report
    return report


def test_the_fast_restore_of_a_backup_without_the_library_ends_with_it_everywhere(
    backups: tuple[str, str, str], tmp_path: Path
) -> None:
    location, _, without = backups
    target = up(tmp_path / "same")
    try:
        assert restore(target, location, without)["method"] == "fast"
        everywhere(target)
        assert target.up().actions == []
    finally:
        target.down(purge=True)


def test_the_copy_restore_into_another_shape_ends_with_the_library_everywhere(
    backups: tuple[str, str, str], tmp_path: Path
) -> None:
    location, with_library, _ = backups
    target = up(tmp_path / "four", shards=4, replicas=0)
    try:
        assert restore(target, location, with_library)["method"] == "copy"
        everywhere(target)
        assert target.up().actions == []
    finally:
        target.down(purge=True)
