"""The manifest: what a backup holds, written last so that its presence means 'complete'."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from redisops import __version__

MANIFEST = "manifest.json"
LATEST = "latest.json"
BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")


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


class Latest(BaseModel):
    """`latest.json` at the location's root: the newest complete backup, for cheap
    freshness checks (alerts, the smoke suite)."""

    id: str
    completed_at: dt.datetime
    keys: int
    size: int


def new_id(now: dt.datetime, taken: set[str]) -> str:
    base = now.strftime("%Y%m%dT%H%M%SZ")
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate
