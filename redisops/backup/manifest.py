"""The manifest: what a backup holds, written last so that its presence means 'complete'."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from redisops import __version__

MANIFEST = "manifest.json"
BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")
# `index/<rank>_<id>.json`, one object per complete backup, written after its manifest:
# listed in name order (the only order GCS lists in) the newest backup comes first, so
# finding it costs one short listing however many backups exist. A new name each time:
# identities that may add objects but not replace one can write it.
INDEX = "index"
_SUFFIX_DIGITS = 6


class ShardBackup(BaseModel):
    """One shard's RDB snapshot and what was true of it when it was taken."""

    model_config = ConfigDict(frozen=True)

    shard: int
    slots: list[tuple[int, int]]
    node_id: str
    address: str
    role: Literal["primary", "replica"]
    primary_id: str
    object: str
    size: int
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    keys: int = Field(description="keys at the fork (the RDB's RESIZEDB hint); -1 unknown")
    expires: int = Field(description="keys with a TTL at the fork")
    repl_offset: int | None
    redis_version: str | None
    seconds: float


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True)

    format: Literal[1] = 1
    id: str
    source: str
    started_at: dt.datetime
    completed_at: dt.datetime
    shards: list[ShardBackup]
    tool: str = f"redisops {__version__}"

    @property
    def keys(self) -> int:
        return sum(max(0, s.keys) for s in self.shards)

    @property
    def expires(self) -> int:
        return sum(s.expires for s in self.shards)

    @property
    def size(self) -> int:
        return sum(s.size for s in self.shards)

    def age_s(self, now: dt.datetime | None = None) -> float:
        now = now or dt.datetime.now(dt.UTC)
        return (now - self.completed_at).total_seconds()


class IndexEntry(BaseModel):
    """What an index object holds (its name alone says which backup is complete)."""

    id: str
    completed_at: dt.datetime
    keys: int
    size: int


def id_order(backup_id: str) -> tuple[str, int]:
    """Sort key of backup ids: time, then the collision counter (`-2` before `-10`)."""
    base, _, counter = backup_id.partition("-")
    return base, int(counter or 1)


def index_name(backup_id: str) -> str:
    """The index object of a backup: digits complemented, so that name order is newest
    first."""
    if not BACKUP_ID.match(backup_id):
        raise ValueError(f"not a backup id: {backup_id!r}")
    base, counter = id_order(backup_id)
    digits = base[:8] + base[9:15]
    limit = 10**_SUFFIX_DIGITS - 1
    rank = (
        "".join(str(9 - int(d)) for d in digits)
        + f"{limit - min(counter, limit):0{_SUFFIX_DIGITS}d}"
    )
    return f"{INDEX}/{rank}_{backup_id}.json"


def id_base(backup_id: str) -> str:
    """The second an id was taken in. Every id of that second (`…Z`, `…Z-2`, `…Z-10`)
    sorts as a name at or after it, and every id of a later second after those: `-`
    sorts before `/`, so `…Z-10/…` < `…Z-2/…` < `…Z/…` although `…Z` is the oldest."""
    return id_order(backup_id)[0]


def id_named_by_index(name: str) -> str | None:
    """The backup id in an index object's name, its rank unchecked (None if none)."""
    backup_id = name.rsplit("/", 1)[-1].removesuffix(".json").partition("_")[2]
    return backup_id if BACKUP_ID.match(backup_id) else None


def id_from_index(name: str) -> str | None:
    """The backup id an index object names, when the rank in its name is that id's; None
    otherwise. An entry under another backup's rank would be met out of order (anyone who
    may add objects can write `index/<newest rank>_<old id>.json`), so it is not one."""
    backup_id = id_named_by_index(name)
    if backup_id is None or index_name(backup_id).rsplit("/", 1)[1] != name.rsplit("/", 1)[-1]:
        return None
    return backup_id


def new_id(now: dt.datetime, taken: set[str]) -> str:
    base = now.strftime("%Y%m%dT%H%M%SZ")
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate
