"""The restore drill: a backup counts only once a restore from it has been proven.

Locally (`redisops drill restore --target local`): take a fresh backup of the twin,
restore it into a scratch twin with a different shard count, verify, tear the scratch
twin down, and report RPO and RTO. On GKE the same runs as a Job into a scratch
namespace (`drill_job.py`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from redisops import acl
from redisops.backup.catalog import freshness, resolve
from redisops.backup.create import create_backup
from redisops.backup.manifest import Manifest
from redisops.backup.restore import RestoreReport, restore
from redisops.backup.storage import Storage
from redisops.local import process
from redisops.local.restore import twin_target
from redisops.local.settings import HOST
from redisops.local.twin import Twin

Say = Callable[[str], None]


class DrillReport(BaseModel):
    backup_id: str
    backup_shards: int
    scratch_shards: int
    rpo_s: float  # age of the backup proven by this drill
    rpo_before_s: float | None = None  # local drill: age of the newest backup before it
    backup_s: float | None = None  # local drill: time to take the fresh backup
    max_age_s: float | None = None
    restore: RestoreReport
    ok: bool
    problems: list[str]


def _prove(
    storage: Storage,
    manifest: Manifest,
    scratch_shards: int,
    maxmemory: str,
    say: Say,
) -> RestoreReport:
    """Restore `manifest` into a scratch twin of `scratch_shards` shards; tear it down."""
    with tempfile.TemporaryDirectory(prefix="redisops-drill-") as tmp:
        scratch = Twin(Path(tmp) / "scratch")
        try:
            scratch.up(
                shards=scratch_shards,
                replicas=0,
                base_port=process.free_base_port(HOST, scratch_shards),
                sse_proxy=False,
                maxmemory=maxmemory,
            )
            say(f"scratch cluster: {scratch_shards} shards; restoring {manifest.id}")
            report = restore(storage, manifest, twin_target(scratch))
        finally:
            scratch.down(purge=True)
    say(
        f"restored {report.keys_restored} keys in {report.rto_s:.2f} s "
        f"({'verified' if report.verified else 'NOT verified'})"
    )
    return report


def _judge(report: RestoreReport, rpo_s: float, max_age_s: float | None) -> list[str]:
    problems = []
    if not report.verified:
        problems.append(
            f"restore not verified: {report.keys_restored} of {report.keys_in_backup} keys, "
            f"{len(report.sample_mismatches)} sampled keys differ"
        )
    if max_age_s is not None and rpo_s > max_age_s:
        problems.append(f"the newest backup is {rpo_s:.0f} s old (allowed {max_age_s:.0f} s)")
    return problems


def drill_backup(
    storage: Storage,
    backup: str = "latest",
    *,
    scratch_shards: int = 4,
    max_age_s: float | None = None,
    maxmemory: str = "0",
    say: Say = lambda _: None,
) -> DrillReport:
    """Prove an existing backup (the GKE drill Job runs this)."""
    manifest = resolve(storage, backup)
    rpo = manifest.age_s()
    say(f"proving backup {manifest.id} ({rpo:.0f} s old, {len(manifest.shards)} shards)")
    report = _prove(storage, manifest, scratch_shards, maxmemory, say)
    problems = _judge(report, rpo, max_age_s)
    return DrillReport(
        backup_id=manifest.id,
        backup_shards=len(manifest.shards),
        scratch_shards=scratch_shards,
        rpo_s=round(rpo, 1),
        max_age_s=max_age_s,
        restore=report,
        ok=not problems,
        problems=problems,
    )


def drill_local(
    twin: Twin,
    storage: Storage,
    *,
    max_age_s: float | None = None,
    say: Say = lambda _: None,
) -> DrillReport:
    """Back up the twin now, restore into a scratch twin with one shard more, verify."""
    settings = twin.settings()
    before = freshness(storage, None)
    say(
        "newest backup before the drill: "
        + (f"{before.latest.id}, {before.age_s:.0f} s old" if before.latest else "none")
    )
    started = time.monotonic()
    manifest = create_backup(
        settings.endpoints,
        twin.client_tls(acl.BACKUP),
        twin.credentials(acl.BACKUP),
        storage,
        source=f"local twin {twin.layout.root}",
    )
    backup_s = time.monotonic() - started
    say(f"backup {manifest.id}: {manifest.keys} keys, {manifest.size} bytes in {backup_s:.2f} s")
    scratch_shards = settings.shards + 1
    report = _prove(storage, manifest, scratch_shards, settings.maxmemory, say)
    rpo_before = before.age_s
    problems = _judge(report, 0.0, None)
    if max_age_s is not None and (rpo_before is None or rpo_before > max_age_s):
        problems.append(
            "before this drill, "
            + (
                "there was no backup"
                if rpo_before is None
                else f"the newest was {rpo_before:.0f} s old"
            )
            + f" (allowed {max_age_s:.0f} s)"
        )
    return DrillReport(
        backup_id=manifest.id,
        backup_shards=len(manifest.shards),
        scratch_shards=scratch_shards,
        rpo_s=round(manifest.age_s(), 1),
        rpo_before_s=None if rpo_before is None else round(rpo_before, 1),
        backup_s=round(backup_s, 3),
        max_age_s=max_age_s,
        restore=report,
        ok=not problems,
        problems=problems,
    )
