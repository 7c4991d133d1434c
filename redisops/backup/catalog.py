"""What a backup location holds: list, verify, prune, freshness."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from redisops.backup.manifest import (
    BACKUP_ID,
    INDEX,
    MANIFEST,
    Manifest,
    id_base,
    id_from_index,
    id_named_by_index,
    id_order,
    index_name,
)
from redisops.backup.rdb import StreamInspector
from redisops.backup.storage import CHUNK, FileStorage, ObjectMissing, Storage
from redisops.errors import ConfigError, OperationError


@dataclass
class BackupEntry:
    id: str
    manifest: Manifest | None
    objects: dict[str, int]
    problem: str | None = None

    @property
    def complete(self) -> bool:
        return self.manifest is not None


# How many index entries one listing asks for: the newest is normally the one.
INDEX_PAGE = 5
# Backup ids begin with a digit and ":" sorts right after "9": the names in [id, ":") are
# those of the backup directories from that id on, and none of the index's.
IDS_END = ":"


def _judge_manifest(
    storage: Storage, backup_id: str, objects: dict[str, int]
) -> tuple[Manifest | None, str | None]:
    """The manifest of `backup_id` if the backup is complete: a readable manifest of that
    id, and every shard object it names present with its size."""
    if MANIFEST not in objects:
        return None, "no manifest: interrupted or in progress"
    try:
        manifest = Manifest.model_validate_json(storage.read_text(f"{backup_id}/{MANIFEST}"))
    except ObjectMissing:
        return None, "no manifest: interrupted or in progress"
    except (ValidationError, ValueError) as exc:
        return None, f"unreadable manifest: {str(exc).splitlines()[0]}"
    if manifest.id != backup_id:
        return None, f"the manifest is of backup {manifest.id}"
    for shard in manifest.shards:
        if shard.object not in objects:
            return None, f"{shard.object} is missing"
        if objects[shard.object] != shard.size:
            return None, (
                f"{shard.object} is {objects[shard.object]} bytes, the manifest says {shard.size}"
            )
    return manifest, None


def _entry(storage: Storage, backup_id: str) -> BackupEntry:
    """One backup, judged: two requests on GCS (its objects, its manifest)."""
    objects = storage.objects(backup_id)
    manifest, problem = _judge_manifest(storage, backup_id, objects)
    return BackupEntry(backup_id, manifest, objects, problem)


@dataclass
class Survey:
    """What a location holds: its backups, oldest first, and what is wrong beside them."""

    backups: list[BackupEntry]
    problems: list[str]  # index entries that are ignored or name no complete backup


def survey(storage: Storage) -> Survey:
    """Every backup directory, oldest first (complete only with a readable manifest and
    the shard objects it names), and the index checked against them. One listing of the
    location, then one read per manifest."""
    tree = storage.tree()
    entries = {}
    for name in sorted((n for n in tree if BACKUP_ID.match(n)), key=id_order):
        manifest, problem = _judge_manifest(storage, name, tree[name])
        entries[name] = BackupEntry(name, manifest, tree[name], problem)
    problems = []
    for name in sorted(tree.get(INDEX, {})):
        problem = _index_problem(name, entries)
        if problem is not None:
            problems.append(f"{INDEX}/{name}: {problem}")
    return Survey(list(entries.values()), problems)


def _index_problem(name: str, entries: dict[str, BackupEntry]) -> str | None:
    named = id_named_by_index(name)
    if named is None:
        return "not an index entry (<rank>_<backup id>.json); ignored"
    if id_from_index(name) is None:
        return (
            f"its rank is not that of backup {named} (whose entry is {index_name(named)}); "
            "ignored when finding the newest backup. Not written by redisops: remove it"
        )
    if named not in entries:
        return f"backup {named} is not in the location (expired or deleted)"
    if not entries[named].complete:
        return f"backup {named} is incomplete ({entries[named].problem})"
    return None


def list_backups(storage: Storage) -> list[BackupEntry]:
    """Every backup directory, oldest first (`survey` without the index's problems)."""
    return survey(storage).backups


def _newest_in(storage: Storage, start: str, end: str) -> Manifest | None:
    """The newest complete backup among the directories whose names sort in [start, end):
    one listing of that range (objects and sizes), then a manifest read per directory that
    has one, newest first, until one checks out."""
    tree = storage.tree(start, end)
    for backup_id in sorted((n for n in tree if BACKUP_ID.match(n)), key=id_order, reverse=True):
        manifest, _ = _judge_manifest(storage, backup_id, tree[backup_id])
        if manifest is not None:
            return manifest
    return None


def _indexed(storage: Storage) -> Iterator[str]:
    """The backups the index names, newest first, read a page at a time as consumed;
    entries whose name is not their id's rank are passed over (`id_from_index`)."""
    for name in storage.names(INDEX, INDEX_PAGE):
        backup_id = id_from_index(name)
        if backup_id is not None:
            yield backup_id


def newest_complete(storage: Storage) -> Manifest | None:
    """The newest complete backup, in a number of requests that does not grow with the
    number of backups (normally three on GCS: the index's first page, one listing, one
    manifest).

    The index's newest entry X is where the search starts, not its answer: one listing
    covers every backup from X's second on, so that a newer complete backup without an
    entry (its index write failed after its manifest, or an older redisops wrote it) is
    still the newest. Only when nothing there checks out does the search go on below X,
    from the next entry; below the last entry (or without any: backups written before the
    index existed) the rest of the location is listed in one go."""
    end = IDS_END
    for backup_id in _indexed(storage):
        start = id_base(backup_id)
        if start >= end:
            continue  # its second is in a range listed already
        found = _newest_in(storage, start, end)
        if found is not None:
            return found
        end = start
    return _newest_in(storage, "", end)


def resolve(storage: Storage, backup: str) -> Manifest:
    """A complete backup by id, or 'latest'."""
    if backup != "latest" and not BACKUP_ID.match(backup):
        raise ConfigError(f"backup {backup!r}: not a backup id (like 20261126T013000Z) or 'latest'")
    if backup == "latest":
        manifest = newest_complete(storage)
        if manifest is None:
            raise OperationError(f"{storage.url}: no complete backup to restore")
        return manifest
    entry = _entry(storage, backup)
    if not entry.objects:
        raise OperationError(
            f"backup {backup} not found in {storage.url}; `redisops backup list` shows what "
            "is there"
        )
    if entry.manifest is None:
        raise OperationError(
            f"backup {backup} in {storage.url} is incomplete ({entry.problem}); "
            "choose a complete one (`redisops backup list`)"
        )
    return entry.manifest


@dataclass
class ShardCheck:
    shard: int
    object: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    keys_read: int | None = None


def fetch_verified(storage: Storage, manifest: Manifest, shard: int, target: Path) -> ShardCheck:
    """Download one shard's RDB to `target`, checking size and SHA-256 on the way."""
    entry = manifest.shards[shard]
    check = ShardCheck(shard, entry.object, True)
    inspector = StreamInspector()
    with storage.reader(f"{manifest.id}/{entry.object}") as source, target.open("wb") as sink:
        while True:
            chunk = source.read(CHUNK)
            if not chunk:
                break
            inspector.feed(chunk)
            sink.write(chunk)
    if inspector.size != entry.size:
        check.problems.append(f"size {inspector.size} bytes, the manifest says {entry.size}")
    if inspector.hexdigest != entry.sha256:
        check.problems.append("SHA-256 differs from the manifest: the object is corrupt")
    check.ok = not check.problems
    return check


def check_rdb(path: Path) -> tuple[bool, int | None, str]:
    """`redis-check-rdb`: (ok, keys read, last line of its report)."""
    proc = subprocess.run(
        ["redis-check-rdb", str(path)], capture_output=True, text=True, timeout=600, check=False
    )
    output = proc.stdout + proc.stderr
    match = re.search(r"(\d+) keys read", output)
    keys = int(match.group(1)) if match else None
    lines = [line for line in output.splitlines() if line.strip()]
    return proc.returncode == 0 and "RDB looks OK" in output, keys, lines[-1] if lines else ""


def verify(storage: Storage, manifest: Manifest) -> list[ShardCheck]:
    """Every shard: size, SHA-256, redis-check-rdb, and its key count against the manifest."""
    checks = []
    with tempfile.TemporaryDirectory(prefix="redisops-verify-") as tmp:
        for entry in manifest.shards:
            path = Path(tmp) / entry.object
            check = fetch_verified(storage, manifest, entry.shard, path)
            if check.ok:
                ok, keys, last = check_rdb(path)
                check.keys_read = keys
                if not ok:
                    check.problems.append(f"redis-check-rdb: {last}")
                elif keys is not None and entry.keys >= 0 and keys != entry.keys:
                    check.problems.append(f"{keys} keys read, the manifest says {entry.keys}")
                check.ok = not check.problems
            path.unlink(missing_ok=True)
            checks.append(check)
    return checks


@dataclass
class Freshness:
    location: str
    latest: Manifest | None
    max_age_s: float | None
    now: dt.datetime

    @property
    def age_s(self) -> float | None:
        return None if self.latest is None else self.latest.age_s(self.now)

    @property
    def fresh(self) -> bool:
        if self.latest is None:
            return False
        return self.max_age_s is None or (self.age_s or 0) <= self.max_age_s

    def prometheus(self) -> str:
        label = f'location="{self.location}"'
        lines = [
            "# HELP redis_backup_last_success_timestamp_seconds Completion time of the newest "
            "complete backup.",
            "# TYPE redis_backup_last_success_timestamp_seconds gauge",
        ]
        stamp = self.latest.completed_at.timestamp() if self.latest else 0
        lines.append(f"redis_backup_last_success_timestamp_seconds{{{label}}} {stamp:.3f}")
        lines += [
            "# HELP redis_backup_fresh 1 when the newest complete backup is younger than the "
            "allowed age.",
            "# TYPE redis_backup_fresh gauge",
            f"redis_backup_fresh{{{label}}} {1 if self.fresh else 0}",
        ]
        return "\n".join(lines) + "\n"


def freshness(storage: Storage, max_age_s: float | None) -> Freshness:
    """The newest complete backup and whether it is young enough (`newest_complete`:
    normally three requests on GCS, however many backups the location holds)."""
    return Freshness(storage.url, newest_complete(storage), max_age_s, dt.datetime.now(dt.UTC))


@dataclass
class PrunePlan:
    keep: list[str]
    delete: list[str]


def prune(
    storage: Storage,
    keep_last: int,
    keep_days: float,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> PrunePlan:
    """Delete complete backups beyond the newest `keep_last` that are older than
    `keep_days`, and incomplete ones older than `keep_days` (filesystem only)."""
    if not isinstance(storage, FileStorage):
        raise ConfigError(
            f"{storage.url}: prune works on file:// locations; GCS backups expire by the "
            "bucket's lifecycle rule (set by the Pulumi program)"
        )
    if keep_last < 1:
        raise ConfigError("--keep-last must be at least 1: prune never deletes every backup")
    if keep_days < 0:
        raise ConfigError("--keep-days must be 0 or more")
    now = now or dt.datetime.now(dt.UTC)
    cutoff = now - dt.timedelta(days=keep_days)
    entries = list_backups(storage)
    complete = [e for e in entries if e.manifest is not None]
    newest = {e.id for e in complete[-keep_last:]}
    plan = PrunePlan([], [])
    for entry in entries:
        if entry.manifest is not None:
            old = entry.manifest.completed_at < cutoff
            (plan.delete if entry.id not in newest and old else plan.keep).append(entry.id)
        else:
            started = _id_time(entry.id)
            old = started is not None and started < cutoff
            newest_dir = entry.id == entries[-1].id
            (plan.delete if old and not newest_dir else plan.keep).append(entry.id)
    if not dry_run:
        for backup_id in plan.delete:
            storage.remove(index_name(backup_id))  # first: never an entry without a backup
            storage.remove(backup_id)
    return plan


def _id_time(backup_id: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None
