"""The data guard around a page: known data before it, writes during it, all checked after.

Before the page: one key in every eighth of the hash slots (2,048 keys, so every shard
and every part of every shard holds some) and a stream of 500 entries. During the page a
writer thread SETs new keys and asks `WAIT 1 100` of the key's own primary (redis-py
sends WAIT to a default node unless told: `target_nodes`). A write is *acknowledged*
when a replica has it. After the page every seeded key, every stream entry and every
acknowledged write must be there with its value; writes that no replica acknowledged are
counted, not required.

Everything is written as the `smoke` role under its reserved prefix (`smoke:*`, the only
keys that role may touch), so the guard needs no wider rights than the smoke suite.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import redis
from redis.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from redisops import acl
from redisops.client import Endpoint, connect_cluster
from redisops.local.settings import HOST
from redisops.local.twin import Twin

GUARD_PREFIX = f"{acl.SMOKE_PREFIX}runbook:"
SEED_KEYS = 2048
STREAM_ENTRIES = 500
WRITE_INTERVAL_S = 0.01
READ_DEADLINE_S = 30.0
BATCH = 500

ClientFactory = Callable[[], RedisCluster]
T = TypeVar("T")


def twin_client(twin: Twin) -> RedisCluster:
    """A cluster client of the twin as the `smoke` role."""
    ports = twin.settings().ports
    return connect_cluster(
        [Endpoint(host=HOST, port=p) for p in ports],
        twin.client_tls(acl.SMOKE),
        twin.credentials(acl.SMOKE),
        timeout=2.0,
    )


def seed_keys(prefix: str, count: int = SEED_KEYS) -> list[str]:
    """`count` keys under `prefix`, one in each of `count` equal ranges of hash slots."""
    chosen: dict[int, str] = {}
    n = 0
    while len(chosen) < count:
        key = f"{prefix}seed:{n}"
        bucket = key_slot(key.encode()) * count // REDIS_CLUSTER_HASH_SLOTS
        chosen.setdefault(bucket, key)
        n += 1
    return [chosen[b] for b in range(count)]


@dataclass
class GuardCounts:
    """What the guard wrote and what it found afterwards."""

    seeded_keys: int = 0
    stream_entries: int = 0
    writes: int = 0  # SETs answered OK during the page
    writes_acked: int = 0  # of those, acknowledged by a replica (WAIT 1 100 >= 1)
    write_errors: int = 0  # SETs or WAITs that failed (e.g. during a failover)
    lost_seeded: int = 0
    lost_stream: int = 0
    lost_acked: int = 0
    lost_unacked: int = 0  # not acknowledged, so not promised
    examples: list[str] = field(default_factory=list)  # a few lost keys, for the message
    read_error: str | None = None  # set when the data could not be read back at all

    @property
    def keys_checked(self) -> int:
        return self.seeded_keys + self.writes

    @property
    def lost(self) -> int:
        """What the page lost of what was promised: seeded data and acknowledged writes."""
        return self.lost_seeded + self.lost_stream + self.lost_acked

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "keys_checked": self.keys_checked, "lost": self.lost}

    def describe_loss(self) -> str:
        parts = [
            f"{lost} of {total} {what}"
            for lost, total, what in (
                (self.lost_seeded, self.seeded_keys, "seeded keys"),
                (self.lost_stream, self.stream_entries, "stream entries"),
                (self.lost_acked, self.writes_acked, "acknowledged writes"),
            )
            if lost
        ]
        example = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
        return f"lost {', '.join(parts)}{example}"


class _Writer(threading.Thread):
    """SET + targeted WAIT 1 100, every WRITE_INTERVAL_S, until stopped."""

    def __init__(self, connect: ClientFactory, prefix: str) -> None:
        super().__init__(name="runbook-guard-writer", daemon=True)
        self.connect = connect
        self.prefix = prefix
        self.stopping = threading.Event()
        self.written: dict[str, str] = {}
        self.acked: set[str] = set()
        self.errors = 0

    def run(self) -> None:
        client: RedisCluster | None = None
        n = 0
        while not self.stopping.is_set():
            key, value = f"{self.prefix}w:{n}", f"w{n}"
            try:
                client = client or self.connect()
                self._write(client, key, value)
            except (redis.RedisError, OSError):
                # Reconnect with what the twin holds now: a page may rotate the password
                # or the certificates the old connection was made with.
                self.errors += 1
                if client is not None:
                    client.close()
                client = None
                self.stopping.wait(0.05)
            n += 1
            self.stopping.wait(WRITE_INTERVAL_S)
        if client is not None:
            client.close()

    def _write(self, client: RedisCluster, key: str, value: str) -> None:
        client.set(key, value)
        self.written[key] = value
        replicas = client.execute_command(
            "WAIT", 1, 100, target_nodes=client.get_node_from_key(key)
        )
        if int(replicas) >= 1:
            self.acked.add(key)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


class DataGuard:
    """Seed, write during, check after, clean up: one page's data under one random prefix."""

    def __init__(
        self, connect: ClientFactory, keys: int = SEED_KEYS, stream_entries: int = STREAM_ENTRIES
    ) -> None:
        self.connect = connect
        self.prefix = f"{GUARD_PREFIX}{secrets.token_hex(4)}:"
        self.stream = f"{self.prefix}stream"
        self.seeded = {key: secrets.token_hex(8) for key in seed_keys(self.prefix, keys)}
        self.stream_entries = stream_entries
        self.stream_ids: list[str] = []
        self.writer: _Writer | None = None

    def seed(self) -> None:
        client = self.connect()
        try:
            for chunk in _chunks(list(self.seeded.items())):
                pipe = client.pipeline(transaction=False)
                for key, value in chunk:
                    pipe.set(key, value)
                pipe.execute()
            pipe = client.pipeline(transaction=False)
            for n in range(self.stream_entries):
                pipe.xadd(self.stream, {"n": str(n)})
            self.stream_ids = [str(i) for i in pipe.execute()]
        finally:
            client.close()

    def start_writer(self) -> None:
        self.writer = _Writer(self.connect, self.prefix)
        self.writer.start()

    def stop_writer(self) -> None:
        if self.writer is not None:
            self.writer.stop()

    def check(self, deadline_s: float = READ_DEADLINE_S) -> GuardCounts:
        """Read everything back (retrying while the cluster settles) and count losses."""
        counts = self._written_counts()
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                self._compare(counts)
                counts.read_error = None
                return counts
            except (redis.RedisError, OSError) as exc:
                counts.read_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() > deadline:
                    return counts
                time.sleep(0.5)

    def cleanup(self) -> None:
        """Delete every key the guard wrote (best effort: a broken twin keeps them)."""
        keys = [*self.seeded, self.stream, *(self.writer.written if self.writer else ())]
        try:
            client = self.connect()
        except (redis.RedisError, OSError):
            return
        try:
            for chunk in _chunks(keys):
                pipe = client.pipeline(transaction=False)
                for key in chunk:
                    pipe.delete(key)
                pipe.execute()
        except (redis.RedisError, OSError):
            pass
        finally:
            client.close()

    def _written_counts(self) -> GuardCounts:
        writer = self.writer
        return GuardCounts(
            seeded_keys=len(self.seeded),
            stream_entries=len(self.stream_ids),
            writes=len(writer.written) if writer else 0,
            writes_acked=len(writer.acked) if writer else 0,
            write_errors=writer.errors if writer else 0,
        )

    def _compare(self, counts: GuardCounts) -> None:
        client = self.connect()
        try:
            missing = _missing(client, self.seeded)
            counts.lost_seeded = len(missing)
            written = dict(self.writer.written) if self.writer else {}
            acked = self.writer.acked if self.writer else set()
            lost_writes = _missing(client, written)
            acked_lost = [k for k in lost_writes if k in acked]
            counts.lost_acked = len(acked_lost)
            counts.lost_unacked = len(lost_writes) - len(acked_lost)
            entries = client.xrange(self.stream, "-", "+") or []
            present = {str(entry_id) for entry_id, _ in entries}
            lost_ids = [i for i in self.stream_ids if i not in present]
            counts.lost_stream = len(lost_ids)
            counts.examples = [
                *missing[:3],
                *acked_lost[:3],
                *(f"{self.stream} {i}" for i in lost_ids[:2]),
            ]
        finally:
            client.close()


def _missing(client: RedisCluster, expected: dict[str, str]) -> list[str]:
    """The keys of `expected` that are absent or hold another value."""
    missing: list[str] = []
    items = list(expected.items())
    for chunk in _chunks(items):
        pipe = client.pipeline(transaction=False)
        for key, _ in chunk:
            pipe.get(key)
        for (key, value), found in zip(chunk, pipe.execute(), strict=True):
            if found != value:
                missing.append(key)
    return missing


def _chunks(items: Sequence[T], size: int = BATCH) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
