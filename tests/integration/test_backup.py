"""Backups and restores against real twins: round trips, corruption, consistency, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from redisops.backup import catalog
from redisops.backup.manifest import MANIFEST
from redisops.backup.storage import open_storage
from redisops.local.twin import Twin
from tests.conftest import free_base_port, requires_redis
from tests.integration.backups import cluster, differences, fill, total_keys

REDISOPS = [sys.executable, "-m", "redisops"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REDISOPS, *args], capture_output=True, text=True, timeout=600, check=False, env=env
    )


def up(root: Path, shards: int = 3, replicas: int = 1) -> Twin:
    twin = Twin(root)
    report = twin.up(
        shards=shards,
        replicas=replicas,
        base_port=free_base_port(shards * (1 + replicas)),
        sse_proxy=False,
        maxmemory="512mb",
    )
    assert report.healthy, report.findings
    return twin


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twin]:
    """A 3 x 1 twin holding ~100k keys of every type."""
    requires_redis()
    twin = up(tmp_path_factory.mktemp("backup-source") / "twin")
    fill(twin, 100_000)
    yield twin
    twin.down(purge=True)


@pytest.fixture(scope="module")
def backup_dir(source: Twin, tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"file://{tmp_path_factory.mktemp('backups')}"


@pytest.fixture(scope="module")
def first_backup(source: Twin, backup_dir: str) -> dict[str, Any]:
    proc = cli(
        "backup", "create", "--target", "local", "--state-dir", str(source.layout.root),
        "--to", backup_dir, "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest: dict[str, Any] = json.loads(proc.stdout)
    return manifest


def test_a_backup_records_each_shard_from_a_replica(
    source: Twin, first_backup: dict[str, Any]
) -> None:
    shards = first_backup["shards"]
    assert len(shards) == 3
    assert sum(s["keys"] for s in shards) == total_keys(source)
    assert sum(s["expires"] for s in shards) > 0
    slots = sorted(lo for s in shards for lo, _ in s["slots"])
    assert slots[0] == 0
    assert sum(hi - lo + 1 for s in shards for lo, hi in s["slots"]) == 16384
    for shard in shards:
        assert shard["role"] == "replica"
        assert shard["redis_version"] == "7.0.15"
        assert shard["repl_offset"] > 0
        assert len(shard["sha256"]) == 64


def test_verify_passes_and_list_shows_it_complete(
    first_backup: dict[str, Any], backup_dir: str
) -> None:
    proc = cli("backup", "verify", first_backup["id"], "--from", backup_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and all(s["keys"] is not None for s in report["shards"])
    listed = json.loads(cli("backup", "list", "--from", backup_dir, "--json").stdout)
    assert [b["id"] for b in listed["backups"] if b["complete"]] == [first_backup["id"]]


def test_restore_into_a_different_topology_is_complete_and_identical(
    source: Twin, first_backup: dict[str, Any], backup_dir: str, tmp_path: Path
) -> None:
    target = up(tmp_path / "four", shards=4, replicas=0)
    try:
        proc = cli(
            "restore", "--from", backup_dir, "--backup", first_backup["id"],
            "--target", "local", "--state-dir", str(target.layout.root), "--json",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["method"] == "copy"
        assert report["verified"] and report["sample_mismatches"] == []
        assert report["keys_restored"] == total_keys(source) == total_keys(target)
        print(f"copy restore: {report['keys_restored']} keys, RTO {report['rto_s']} s")
        assert differences(source, target) == []
        client = cluster(target)
        try:
            assert 3500 < client.ttl("ttl:1") <= 3600  # TTLs kept
            groups = client.xinfo_groups("stream:3")
            assert groups[0]["name"] == "workers" and groups[0]["pending"] == 7
        finally:
            client.close()
    finally:
        target.down(purge=True)


def test_restore_into_the_same_topology_takes_the_fast_path(
    source: Twin, first_backup: dict[str, Any], backup_dir: str, tmp_path: Path
) -> None:
    target = up(tmp_path / "same")
    try:
        target_client = cluster(target)
        target_client.set("already-here", "1")
        target_client.close()
        refused = cli(
            "restore", "--from", backup_dir, "--target", "local",
            "--state-dir", str(target.layout.root),
        )  # fmt: skip
        assert refused.returncode == 2
        assert "pass --force" in refused.stderr
        assert total_keys(target) == 1  # nothing changed
        proc = cli(
            "restore", "--from", backup_dir, "--target", "local", "--force",
            "--state-dir", str(target.layout.root), "--json",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["method"] == "fast" and report["verified"]
        assert total_keys(target) == total_keys(source)
        assert differences(source, target) == []
        assert target.status()["healthy"]
        assert target.up().actions == []  # a normal, fully formed twin afterwards
    finally:
        target.down(purge=True)


def test_a_flipped_byte_is_caught_by_verify_and_refused_by_restore(
    source: Twin, first_backup: dict[str, Any], backup_dir: str, tmp_path: Path
) -> None:
    location = tmp_path / "copy"
    subprocess.run(["cp", "-r", backup_dir.removeprefix("file://"), str(location)], check=True)
    rdb = location / first_backup["id"] / "shard-1.rdb"
    data = bytearray(rdb.read_bytes())
    data[len(data) // 2] ^= 0x01
    rdb.write_bytes(bytes(data))
    proc = cli("backup", "verify", "latest", "--from", f"file://{location}", "--json")
    assert proc.returncode == 1
    shards = json.loads(proc.stdout)["shards"]
    assert [s["ok"] for s in shards] == [True, False, True]
    assert "SHA-256 differs" in shards[1]["problems"][0]

    target = up(tmp_path / "victim", shards=3, replicas=0)
    try:
        client = cluster(target)
        client.set("precious", "data")
        client.close()
        proc = cli(
            "restore", "--from", f"file://{location}", "--target", "local", "--force",
            "--state-dir", str(target.layout.root),
        )  # fmt: skip
        assert proc.returncode == 1
        assert "nothing was restored" in proc.stderr and "shard 1" in proc.stderr
        client = cluster(target)
        assert client.get("precious") == "data"  # --force did not even empty it
        client.close()
    finally:
        target.down(purge=True)


def test_a_backup_without_manifest_is_invisible_to_list_and_restore(
    source: Twin, backup_dir: str, tmp_path: Path
) -> None:
    proc = cli(
        "backup", "create", "--target", "local", "--state-dir", str(source.layout.root),
        "--to", backup_dir, "--json",
    )  # fmt: skip
    second = json.loads(proc.stdout)["id"]
    storage = open_storage(backup_dir)
    manifest = Path(backup_dir.removeprefix("file://")) / second / MANIFEST
    manifest.rename(manifest.with_suffix(".hidden"))
    try:
        entries = {e.id: e for e in catalog.list_backups(storage)}
        assert not entries[second].complete
        assert "no manifest" in (entries[second].problem or "")
        assert catalog.resolve(storage, "latest").id != second
        proc = cli("restore", "--from", backup_dir, "--backup", second, "--target", "local",
                   "--state-dir", str(source.layout.root))  # fmt: skip
        assert proc.returncode == 1
        assert "incomplete" in proc.stderr
        listed = cli("backup", "list", "--from", backup_dir)
        assert "incomplete" in listed.stdout
    finally:
        manifest.with_suffix(".hidden").rename(manifest)


def test_a_backup_during_continuous_writes_restores_consistently_per_shard(
    tmp_path: Path,
) -> None:
    twin = up(tmp_path / "busy")
    stop = threading.Event()
    tags = [f"{{t{i}}}" for i in range(12)]

    def write() -> None:
        client = cluster(twin)
        n = 0
        try:
            while not stop.is_set():
                for tag in tags:
                    pipe = client.pipeline(transaction=True)  # one slot per tag: a MULTI
                    pipe.rpush(f"seq:{tag}", n)
                    pipe.set(f"last:{tag}", n)
                    pipe.execute()
                n += 1
        finally:
            client.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        try:
            time.sleep(1.0)
            location = f"file://{tmp_path / 'backups'}"
            proc = cli("backup", "create", "--target", "local", "--state-dir",
                       str(twin.layout.root), "--to", location)  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            time.sleep(0.5)
        finally:
            stop.set()
            writer.join()
        target = up(tmp_path / "restored", shards=4, replicas=0)
        try:
            proc = cli("restore", "--from", location, "--target", "local", "--state-dir",
                       str(target.layout.root), "--json")  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            client = cluster(target)
            try:
                for tag in tags:
                    length = client.llen(f"seq:{tag}")
                    last = client.get(f"last:{tag}")
                    assert last is not None and length > 0
                    assert length == int(last) + 1, f"{tag}: list and counter disagree"
            finally:
                client.close()
        finally:
            target.down(purge=True)
    finally:  # a failed backup must not leave the busy twin running
        twin.down(purge=True)


def test_drill_restores_into_a_scratch_twin_with_another_shard_count(source: Twin) -> None:
    proc = cli("drill", "restore", "--target", "local", "--state-dir", str(source.layout.root),
               "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["scratch_shards"] == 4 and report["backup_shards"] == 3
    assert report["restore"]["keys_restored"] == total_keys(source)
    assert report["rpo_s"] < 60
    print(f"drill: RTO {report['restore']['rto_s']} s, backup {report['backup_s']} s")


def test_prune_keeps_the_newest_and_the_young(source: Twin, tmp_path: Path) -> None:
    location = f"file://{tmp_path / 'prunable'}"
    ids = []
    for _ in range(3):
        proc = cli("backup", "create", "--target", "local", "--state-dir",
                   str(source.layout.root), "--to", location, "--json")  # fmt: skip
        ids.append(json.loads(proc.stdout)["id"])
    dry = json.loads(
        cli(
            "backup",
            "prune",
            "--from",
            location,
            "--keep-last",
            "1",
            "--keep-days",
            "0",
            "--dry-run",
            "--json",
        ).stdout
    )
    assert dry["delete"] == ids[:2] and dry["keep"] == ids[2:]
    assert len(catalog.list_backups(open_storage(location))) == 3
    done = cli("backup", "prune", "--from", location, "--keep-last", "1", "--keep-days", "0")
    assert done.returncode == 0
    assert [e.id for e in catalog.list_backups(open_storage(location))] == ids[2:]
    kept = cli("backup", "prune", "--from", location, "--keep-last", "0", "--keep-days", "0")
    assert kept.returncode == 2 and "at least 1" in kept.stderr


def test_a_backup_only_adds_objects_and_indexes_itself_last(source: Twin, tmp_path: Path) -> None:
    """GKE's backup account may add objects but never replace one: a backup writes each
    object once, its index entry after its manifest, and status/verify find it by the
    index."""
    directory = tmp_path / "append-only"
    location = f"file://{directory}"
    ids = []
    for _ in range(2):
        proc = cli("backup", "create", "--target", "local", "--state-dir",
                   str(source.layout.root), "--to", location, "--json")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        ids.append(json.loads(proc.stdout)["id"])
    assert not (directory / "latest.json").exists()
    entries = sorted(p.name for p in (directory / "index").iterdir())
    assert [name.split("_")[1].removesuffix(".json") for name in entries] == ids[::-1]
    for backup_id in ids:
        manifest = directory / backup_id / MANIFEST
        (entry,) = (directory / "index").glob(f"*_{backup_id}.json")
        assert entry.stat().st_mtime_ns >= manifest.stat().st_mtime_ns
    status = cli("backup", "status", "--from", location, "--max-age", "3600", "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["latest"] == ids[-1]
    assert cli("backup", "verify", "latest", "--from", location).returncode == 0


def test_freshness_is_reported_for_alerts_and_scripts(
    first_backup: dict[str, Any], backup_dir: str, tmp_path: Path
) -> None:
    fresh = cli("backup", "status", "--from", backup_dir, "--max-age", "3600", "--json")
    assert fresh.returncode == 0
    assert json.loads(fresh.stdout)["fresh"] is True
    stale = cli("backup", "status", "--from", backup_dir, "--max-age", "0")
    assert stale.returncode == 1
    metrics = cli("backup", "status", "--from", backup_dir, "--prometheus").stdout
    assert "redis_backup_last_success_timestamp_seconds{" in metrics
    assert "redis_backup_fresh{" in metrics
    empty = cli("backup", "status", "--from", f"file://{tmp_path / 'nothing'}")
    assert empty.returncode == 1 and "no complete backup" in empty.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["backup", "verify", "20990101T000000Z"], 1, "not found"),
        (["backup", "verify", "yesterday"], 2, "not a backup id"),
        (["backup", "list", "--from", "s3://bucket/x"], 2, "expected gs://bucket/prefix"),
        (["backup", "list", "--from", "file://relative/dir"], 2, "file:///absolute/dir"),
        (["backup", "list"], 2, "--from (or --to) is required"),
        (["backup", "create", "--to", "file:///tmp/x"], 2, "--node, --ca, --password-file"),
        (
            [
                "restore",
                "--target",
                "local",
                "--state-dir",
                "/nonexistent",
                "--from",
                "file:///nonexistent",
            ],
            1,
            "no complete backup",
        ),
    ],
)
def test_bad_input_is_named_and_changes_nothing(
    backup_dir: str, args: list[str], code: int, message: str
) -> None:
    if "--from" not in args and args[:2] == ["backup", "verify"]:
        args = [*args, "--from", backup_dir]
    before = sorted(os.listdir(backup_dir.removeprefix("file://")))
    proc = cli(*args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert sorted(os.listdir(backup_dir.removeprefix("file://"))) == before


def test_a_cluster_with_uncovered_slots_is_not_backed_up(tmp_path: Path) -> None:
    twin = up(tmp_path / "broken", shards=3, replicas=0)
    try:
        victim = twin.settings().ports[1]
        twin.kill_node(victim)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            views = twin.views(twin.settings())
            if all(v is None or v.cluster_state == "fail" for v in views.values()):
                break
            time.sleep(0.2)
        location = tmp_path / "b"
        proc = cli("backup", "create", "--target", "local", "--state-dir",
                   str(twin.layout.root), "--to", f"file://{location}")  # fmt: skip
        assert proc.returncode == 1
        assert "slots have no live primary" in proc.stderr and "would miss data" in proc.stderr
        # Nothing but the run's record, which says it failed (RedisBackupFailed reads it).
        written = [p.relative_to(location) for p in location.rglob("*") if p.is_file()]
        assert [str(p.parent) for p in written] == ["runs/backup"], written
        assert written[0].name.endswith("-failed.json")
    finally:
        twin.down(purge=True)


def test_digests_tell_values_apart(source: Twin) -> None:
    from redisops.backup.digest import key_digest

    client = cluster(source, decode=False)
    try:
        client.set("digest:a", "1")
        client.set("digest:b", "1")
        client.set("digest:c", "2")
        client.expire("digest:b", 100)
        a, b, c = (key_digest(client, k) for k in (b"digest:a", b"digest:b", b"digest:c"))
        assert a != b  # a TTL counts
        assert a != c
        assert key_digest(client, b"digest:none") is None
    finally:
        client.delete("digest:a", "digest:b", "digest:c")
        client.close()
    assert isinstance(redis.__version__, str)
