"""Outcome records of the backup and drill runs, kept next to the backups.

A run that fails leaves no manifest, so the newest backup alone cannot tell "the backup
job failed" from "the backup job has not run yet". Every run of `redisops backup create`
and `redisops drill restore` therefore writes one small record whatever its outcome:
`runs/<kind>/<rank>-<ok|failed>.json`. Records are new objects only (the backup
identity may create objects, never replace them). The rank counts down with time, so a
listing in name order starts with the newest: `redisops metrics serve` reads one page
per scrape however many records the location holds (the bucket's lifecycle rule expires
old ones with the backups).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from redisops.backup.storage import Storage

Kind = Literal["backup", "drill"]
KINDS: tuple[Kind, ...] = ("backup", "drill")
PREFIX = "runs"
RANK_END = 10**17  # microseconds since 1970: good for three thousand years
NAME = re.compile(r"^(?P<rank>\d{17})-(?P<salt>[0-9a-f]{6})-(?P<outcome>ok|failed)\.json$")
PAGE = 20


@dataclass(frozen=True)
class RunRecord:
    kind: Kind
    ok: bool
    finished_at: dt.datetime


def record_name(finished_at: dt.datetime, ok: bool) -> str:
    us = int(finished_at.timestamp() * 1_000_000)
    return f"{RANK_END - us:017d}-{secrets.token_hex(3)}-{'ok' if ok else 'failed'}.json"


def record_run(storage: Storage, kind: Kind, ok: bool, detail: str = "") -> RunRecord:
    """Write one record (its body says what ran or why it failed; never a secret)."""
    now = dt.datetime.now(dt.UTC)
    body = json.dumps(
        {"kind": kind, "ok": ok, "finished_at": now.isoformat(), "detail": detail[:500]}
    )
    storage.write_text(f"{PREFIX}/{kind}/{record_name(now, ok)}", body)
    return RunRecord(kind, ok, now)


def _records(storage: Storage, kind: Kind) -> Iterator[RunRecord]:
    """Records of `kind`, newest first, a page at a time; foreign names passed over."""
    for name in storage.names(f"{PREFIX}/{kind}", PAGE):
        match = NAME.match(name.rsplit("/", 1)[-1])
        if match is None:
            continue
        us = RANK_END - int(match["rank"])
        finished = dt.datetime.fromtimestamp(us / 1_000_000, dt.UTC)
        yield RunRecord(kind, match["outcome"] == "ok", finished)


def latest(
    storage: Storage, kind: Kind, scan: int = PAGE
) -> tuple[RunRecord | None, RunRecord | None]:
    """(the newest record of `kind`, the newest successful one among the newest `scan`),
    from one listing (a longer run of failures than `scan` is an alert already)."""
    newest: RunRecord | None = None
    for i, record in enumerate(_records(storage, kind)):
        newest = newest or record
        if record.ok:
            return newest, record
        if i + 1 >= scan:
            break
    return newest, None


def latest_run(storage: Storage, kind: Kind) -> RunRecord | None:
    """The newest record of `kind`, or None when there is none."""
    return latest(storage, kind)[0]


def latest_success(storage: Storage, kind: Kind, scan: int = PAGE) -> RunRecord | None:
    """The newest successful record among the newest `scan` of `kind`."""
    return latest(storage, kind, scan)[1]
