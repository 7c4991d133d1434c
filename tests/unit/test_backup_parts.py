"""Backup building blocks: RDB headers, storage, manifests, pruning, the drill Job."""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
from pathlib import Path

import kubernetes_validate
import pytest

from redisops.backup import catalog
from redisops.backup.drill_job import as_dict, drill_job
from redisops.backup.manifest import (
    INDEX,
    MANIFEST,
    Manifest,
    ShardBackup,
    id_from_index,
    id_order,
    index_name,
    new_id,
)
from redisops.backup.rdb import NeedMore, RdbFormatError, StreamInspector, parse_header
from redisops.backup.storage import FileStorage, GcsStorage, open_storage
from redisops.errors import ConfigError, OperationError


def rdb_string(text: bytes) -> bytes:
    assert len(text) < 64
    return bytes([len(text)]) + text


def fake_rdb(keys: int, expires: int, offset: int = 12345) -> bytes:
    aux = b""
    for k, v in ((b"redis-ver", b"7.0.15"), (b"repl-offset", str(offset).encode())):
        aux += b"\xfa" + rdb_string(k) + rdb_string(v)
    aux += b"\xfa" + rdb_string(b"redis-bits") + b"\xc0\x40"  # int8-encoded 64
    db = b"\xfe\x00" + b"\xfb" + bytes([0x40 | (keys >> 8), keys & 0xFF]) + bytes([expires])
    return b"REDIS0010" + aux + db + b"\x00" + rdb_string(b"k") + rdb_string(b"v") + b"\xff"


def test_the_header_gives_version_offset_and_key_counts() -> None:
    header = parse_header(fake_rdb(keys=300, expires=7))
    assert header.version == 10
    assert header.redis_version == "7.0.15"
    assert header.repl_offset == 12345
    assert header.aux["redis-bits"] == "64"
    assert (header.keys, header.expires) == (300, 7)


def test_an_empty_dataset_has_no_db_section() -> None:
    header = parse_header(
        b"REDIS0010" + b"\xfa" + rdb_string(b"redis-ver") + rdb_string(b"7") + b"\xff"
    )
    assert header.keys == 0


def test_partial_headers_ask_for_more_and_garbage_is_refused() -> None:
    data = fake_rdb(5, 0)
    with pytest.raises(NeedMore):
        parse_header(data[:20])
    with pytest.raises(RdbFormatError, match="no REDIS magic"):
        parse_header(b"NOTREDIS0" + data[9:])


def test_the_inspector_hashes_everything_and_finds_the_header_across_chunks() -> None:
    data = fake_rdb(42, 1) + bytes(range(256)) * 100
    inspector = StreamInspector()
    for i in range(0, len(data), 7):
        inspector.feed(data[i : i + 7])
    assert inspector.header is not None and inspector.header.keys == 42
    assert inspector.size == len(data)
    assert inspector.hexdigest == hashlib.sha256(data).hexdigest()


def test_32_bit_lengths_parse() -> None:
    db = b"\xfe\x00\xfb\x80" + struct.pack(">I", 70000) + b"\x00"
    header = parse_header(b"REDIS0010" + db + b"\xff")
    assert header.keys == 70000


def test_file_storage_writes_atomically_and_stays_inside_its_root(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    with storage.writer("a/obj") as sink:
        sink.write(b"hello")
        assert not (tmp_path / "a" / "obj").exists()  # visible only once complete
    assert storage.read_text("a/obj") == "hello"
    assert (tmp_path / "a" / "obj").stat().st_mode & 0o777 == 0o600

    def interrupted() -> None:
        with storage.writer("a/broken") as sink:
            sink.write(b"half")
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        interrupted()
    assert not storage.exists("a/broken")
    assert not list((tmp_path / "a").glob("*.part"))
    with pytest.raises(ConfigError, match="leaves the backup location"):
        storage.writer("../escape")
    with pytest.raises(OperationError, match="does not exist"):
        storage.reader("a/missing")


def test_gcs_names_an_object_that_exists_already() -> None:
    from google.api_core import exceptions as gexc

    def refused() -> None:
        raise gexc.PreconditionFailed("conditionNotMet")

    storage = GcsStorage("bucket", "prefix")
    with pytest.raises(OperationError, match=r"write a/manifest\.json: the object exists already"):
        storage._call("write a/manifest.json", refused)


@pytest.mark.parametrize(
    ("location", "kind"),
    [("file:///var/backups/redis", FileStorage), ("gs://bucket/prod/redis", GcsStorage)],
)
def test_locations_open_the_right_backend(location: str, kind: type) -> None:
    storage = open_storage(location)
    assert isinstance(storage, kind)
    assert storage.url == location


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("s3://b/p", "expected gs://bucket/prefix or file:///dir"),
        ("file://relative", "file:///absolute/dir"),
        ("gs:///nobucket", "gs://bucket/prefix"),
        ("/plain/path", "expected gs://"),
    ],
)
def test_bad_locations_are_refused(location: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_storage(location)


def test_ids_sort_by_time_and_never_collide() -> None:
    now = dt.datetime(2026, 11, 26, 1, 30, 0, tzinfo=dt.UTC)
    first = new_id(now, set())
    assert first == "20261126T013000Z"
    assert new_id(now, {first}) == "20261126T013000Z-2"
    assert new_id(now, {first, "20261126T013000Z-2"}) == "20261126T013000Z-3"


def manifest(backup_id: str, when: dt.datetime) -> Manifest:
    shard = ShardBackup(
        shard=0, slots=[(0, 16383)], node_id="n" * 40, address="h:1", role="replica",
        primary_id="p" * 40, object="shard-0.rdb", size=1, sha256="0" * 64, keys=1,
        expires=0, repl_offset=1, redis_version="7.0.15", seconds=0.1,
    )  # fmt: skip
    return Manifest(id=backup_id, source="t", started_at=when, completed_at=when, shards=[shard])


def make_backup(
    storage: FileStorage,
    when: dt.datetime,
    complete: bool = True,
    indexed: bool = False,
    backup_id: str | None = None,
) -> str:
    backup_id = backup_id or new_id(when, set(storage.children()))
    storage.write_text(f"{backup_id}/shard-0.rdb", "x")
    if complete:
        storage.write_text(f"{backup_id}/{MANIFEST}", manifest(backup_id, when).model_dump_json())
        if indexed:
            storage.write_text(index_name(backup_id), "{}")
    return backup_id


def test_index_names_list_the_newest_backup_first() -> None:
    ids = ["20251231T235959Z", "20261126T013000Z", "20261126T013000Z-2",
           "20261126T013000Z-10", "20261126T013001Z", "20270101T000000Z"]  # fmt: skip
    assert sorted(ids, key=id_order) == ids
    names = [index_name(i) for i in ids]
    assert sorted(names) == names[::-1]
    assert all(n.startswith(f"{INDEX}/") for n in names)
    assert [id_from_index(n) for n in names] == ids
    assert id_from_index(f"{INDEX}/junk.json") is None
    with pytest.raises(ValueError, match="not a backup id"):
        index_name("../x")


def test_the_index_leads_to_the_newest_backup_that_still_checks_out(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    now = dt.datetime.now(dt.UTC)
    old, good, broken = (
        make_backup(storage, now - dt.timedelta(hours=h), indexed=True) for h in (3, 2, 1)
    )
    running = make_backup(storage, now, complete=False)
    (tmp_path / broken / "shard-0.rdb").write_text("truncated")  # size differs
    assert catalog.newest_complete(storage).id == good  # type: ignore[union-attr]
    assert catalog.resolve(storage, "latest").id == good
    state = catalog.freshness(storage, 3 * 3600)
    assert state.fresh and state.latest is not None and state.latest.id == good
    listed = {e.id: e for e in catalog.list_backups(storage)}
    assert [i for i, e in listed.items() if e.complete] == [old, good]
    assert "9 bytes, the manifest says 1" in str(listed[broken].problem)
    assert "no manifest" in str(listed[running].problem)
    with pytest.raises(OperationError, match="incomplete"):
        catalog.resolve(storage, broken)
    with pytest.raises(OperationError, match="not found"):
        catalog.resolve(storage, "20200101T000000Z")


def test_backups_written_before_the_index_are_found_by_their_names(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    now = dt.datetime.now(dt.UTC)
    older = make_backup(storage, now - dt.timedelta(hours=2))
    newest = make_backup(storage, now - dt.timedelta(hours=1))
    make_backup(storage, now, complete=False)
    assert older < newest
    assert catalog.resolve(storage, "latest").id == newest


class RangeRecorder(FileStorage):
    """A directory location that remembers which name ranges were listed."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ranges: list[tuple[str, str | None]] = []

    def tree(self, start: str = "", end: str | None = None) -> dict[str, dict[str, int]]:
        self.ranges.append((start, end))
        return super().tree(start, end)


def test_a_complete_backup_newer_than_the_newest_indexed_one_is_the_latest(
    tmp_path: Path,
) -> None:
    """Its index write failed after its manifest, or an older redisops wrote it: the index
    is only where the search starts."""
    storage = RangeRecorder(tmp_path)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    make_backup(storage, now - dt.timedelta(hours=3), indexed=True)
    indexed = make_backup(storage, now - dt.timedelta(hours=2), indexed=True)
    unindexed = make_backup(storage, now - dt.timedelta(hours=1))
    make_backup(storage, now, complete=False)
    newest = [e.id for e in catalog.list_backups(storage) if e.complete][-1]
    assert newest == unindexed
    assert catalog.resolve(storage, "latest").id == unindexed
    state = catalog.freshness(storage, 5400)
    assert state.latest is not None and state.latest.id == unindexed and state.fresh
    storage.ranges.clear()
    assert catalog.newest_complete(storage).id == unindexed  # type: ignore[union-attr]
    # One listing from the newest indexed backup on, not of the whole location.
    assert storage.ranges == [(indexed, ":")]
    # A newer directory that does not check out is passed over for the indexed one.
    (tmp_path / unindexed / "shard-0.rdb").write_text("truncated")
    assert catalog.resolve(storage, "latest").id == indexed


def test_a_newer_backup_of_the_same_second_is_found_after_the_indexed_one(
    tmp_path: Path,
) -> None:
    """`…Z-10` is newer than `…Z-2` but sorts before it as a name: the listing starts at
    the second, not at the indexed id."""
    storage = FileStorage(tmp_path)
    when = dt.datetime(2026, 11, 26, 1, 30, tzinfo=dt.UTC)
    make_backup(storage, when, indexed=True, backup_id="20261126T013000Z-2")
    make_backup(storage, when, backup_id="20261126T013000Z-10")
    make_backup(storage, when - dt.timedelta(hours=1), indexed=True)
    assert catalog.resolve(storage, "latest").id == "20261126T013000Z-10"


def test_an_index_entry_whose_rank_is_not_that_of_its_id_is_ignored_and_reported(
    tmp_path: Path,
) -> None:
    """Anyone who may add objects can add `index/<newest rank>_<old id>.json`: it must not
    make an old backup the latest, nor move where the search starts."""
    storage = RangeRecorder(tmp_path)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    old = make_backup(storage, now - dt.timedelta(days=2), indexed=True)
    newest = make_backup(storage, now - dt.timedelta(hours=1), indexed=True)
    rank = index_name("29991231T235959Z").split("/")[1].partition("_")[0]
    forged = f"{INDEX}/{rank}_{old}.json"
    storage.write_text(forged, "{}")
    storage.write_text(f"{INDEX}/{rank}_not-an-id.json", "{}")
    assert catalog.resolve(storage, "latest").id == newest
    storage.ranges.clear()
    assert catalog.freshness(storage, 7200).latest.id == newest  # type: ignore[union-attr]
    assert storage.ranges == [(newest, ":")]
    survey = catalog.survey(storage)
    assert [e.id for e in survey.backups] == [old, newest]
    assert len(survey.problems) == 2, survey.problems
    assert any(forged in p and f"not that of backup {old}" in p for p in survey.problems)
    assert any("not-an-id" in p for p in survey.problems)


def test_file_storage_lists_a_name_range_as_gcs_offsets_do(tmp_path: Path) -> None:
    """start inclusive, end exclusive, compared as whole names (`X-10/…` < `X-2/…` <
    `X/…`)."""
    storage = FileStorage(tmp_path)
    for name in ("20261126T013000Z/a", "20261126T013000Z-2/a", "20261126T013000Z-10/a",
                 "20261126T013001Z/a", "20261126T012959Z/a", "index/1_x.json"):  # fmt: skip
        storage.write_text(name, "x")
    assert sorted(storage.tree("20261126T013000Z", ":")) == [
        "20261126T013000Z", "20261126T013000Z-10", "20261126T013000Z-2", "20261126T013001Z",
    ]  # fmt: skip
    assert sorted(storage.tree("", "20261126T013000Z")) == ["20261126T012959Z"]
    assert sorted(storage.tree("20261126T013000Z-2/b", None)) == [
        "20261126T013000Z", "20261126T013001Z", "index",
    ]  # fmt: skip
    assert storage.tree() == {n: storage.objects(n) for n in storage.children()}


def test_pruning_removes_the_index_entries_of_what_it_deletes(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    now = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    ids = [make_backup(storage, now - dt.timedelta(days=d), indexed=True) for d in (30, 20, 1)]
    catalog.prune(storage, keep_last=1, keep_days=7, now=now)
    assert storage.children() == [ids[2], INDEX]
    assert list(storage.names(INDEX, 10)) == [index_name(ids[2]).split("/")[1]]


def test_prune_keeps_the_newest_n_and_everything_younger(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    now = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    days = [30, 20, 10, 5, 1]
    ids = [make_backup(storage, now - dt.timedelta(days=d)) for d in days]
    stale_incomplete = make_backup(storage, now - dt.timedelta(days=25, hours=1), complete=False)
    plan = catalog.prune(storage, keep_last=2, keep_days=7, now=now, dry_run=True)
    assert sorted(plan.delete) == sorted([ids[0], ids[1], ids[2], stale_incomplete])
    assert plan.keep == ids[3:]
    assert len(storage.children()) == 6  # a dry run
    catalog.prune(storage, keep_last=2, keep_days=7, now=now)
    assert storage.children() == ids[3:]


def test_prune_never_deletes_everything_nor_the_newest_incomplete(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    now = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    old = make_backup(storage, now - dt.timedelta(days=90))
    running = make_backup(storage, now - dt.timedelta(days=80), complete=False)
    plan = catalog.prune(storage, keep_last=1, keep_days=0, now=now, dry_run=True)
    assert plan.delete == [] and plan.keep == [old, running]
    with pytest.raises(ConfigError, match="at least 1"):
        catalog.prune(storage, keep_last=0, keep_days=1)


def test_prune_refuses_gcs() -> None:
    with pytest.raises(ConfigError, match="lifecycle"):
        catalog.prune(open_storage("gs://b/p"), 1, 1)


def test_resolve_names_what_is_wrong(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    with pytest.raises(OperationError, match="no complete backup"):
        catalog.resolve(storage, "latest")
    now = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    done = make_backup(storage, now)
    partial = make_backup(storage, now + dt.timedelta(hours=1), complete=False)
    assert catalog.resolve(storage, "latest").id == done
    with pytest.raises(OperationError, match="incomplete"):
        catalog.resolve(storage, partial)
    with pytest.raises(ConfigError, match="not a backup id"):
        catalog.resolve(storage, "../../etc")


def test_freshness_and_its_metrics(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    assert not catalog.freshness(storage, 60).fresh
    make_backup(storage, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30))
    assert catalog.freshness(storage, 3600).fresh
    stale = catalog.freshness(storage, 60)
    assert not stale.fresh and 1700 < (stale.age_s or 0) < 1900
    assert f'redis_backup_fresh{{location="file://{tmp_path}"}} 0' in stale.prometheus()


def test_the_drill_job_is_a_valid_restricted_kubernetes_job() -> None:
    job = as_dict(
        drill_job(
            namespace="redis-drill",
            image="europe-docker.pkg.dev/p/r/redis-platform@sha256:" + "a" * 64,
            location="gs://backups/prod",
            service_account="restore-drill",
            scratch_shards=4,
            max_backup_age_s=7200,
        )
    )
    kubernetes_validate.validate(job, "1.33", strict=True)
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["ttlSecondsAfterFinished"] > 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "restore-drill"
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["limits"]["memory"] == "4Gi"
    assert container["args"][:4] == ["drill", "restore", "--from", "gs://backups/prod"]
    assert container["args"][-2:] == ["--max-age", "7200"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/work"}
    assert job["metadata"]["namespace"] == "redis-drill"
