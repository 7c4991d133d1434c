"""`redisops restore`: a backup into a cluster of any shape, verified.

1. Every shard's RDB is downloaded and checked against the manifest (size, SHA-256)
   before the target is touched: a corrupt backup changes nothing.
2. The target must hold no keys, unless `--force`, which empties it first.
3. Copy path (any topology): each RDB is loaded into a scratch `redis-server` on a unix
   socket and every key is copied into the target with DUMP/RESTORE, pipelined, TTLs
   kept, shards in parallel. (The twin has a faster path for an identical shard count:
   `redisops.local.restore`.)
4. Verification: the target's key count against the backup's, and a sample of keys
   compared by logical digest.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import redis
from pydantic import BaseModel

from redisops.backup.catalog import fetch_verified
from redisops.backup.digest import key_digest
from redisops.backup.manifest import Manifest
from redisops.backup.storage import Storage
from redisops.client import Credentials, Endpoint, TlsClient, connect, connect_cluster
from redisops.errors import ConfigError, OperationError

logger = logging.getLogger("redisops.restore")

SCAN_COUNT = 1000
Progress = Callable[[str, int], None]  # (phase, units done)


class RestoreReport(BaseModel):
    backup: str
    method: str
    shards_in_backup: int
    keys_in_backup: int
    keys_with_ttl: int
    keys_restored: int
    keys_expired: int
    bytes: int
    sample_checked: int
    sample_mismatches: list[str]
    rto_s: float
    copy_s: float

    @property
    def verified(self) -> bool:
        # Keys with a TTL may expire between the snapshot and the restore.
        allowance = max(self.keys_expired, self.keys_with_ttl)
        count_ok = self.keys_in_backup - allowance <= self.keys_restored <= self.keys_in_backup
        return count_ok and not self.sample_mismatches

    @property
    def keys_per_s(self) -> float:
        return self.keys_restored / self.copy_s if self.copy_s else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.rto_s if self.rto_s else 0.0


@dataclass
class Target:
    """Where to restore: the cluster's nodes, TLS, and the admin credentials (RESTORE of
    arbitrary keys and FLUSHALL are admin rights)."""

    endpoints: Sequence[Endpoint]
    tls: TlsClient
    admin: Credentials


@dataclass
class ShardCopy:
    shard: int
    keys: int = 0
    expired: int = 0
    sample: list[bytes] = field(default_factory=list)


# ---- scratch servers ---------------------------------------------------------------


@contextlib.contextmanager
def scratch_server(rdb: Path, workdir: Path, timeout: float = 600.0) -> Iterator[redis.Redis]:
    """A throwaway redis-server that loads `rdb`, reachable only by a unix socket."""
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.replace(rdb, workdir / "dump.rdb")
    socket_path = workdir / "redis.sock"
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port", "0",
            "--unixsocket", str(socket_path),
            "--unixsocketperm", "700",
            "--dir", str(workdir),
            "--dbfilename", "dump.rdb",
            "--appendonly", "no",
            "--save", "",
            "--maxmemory", "0",
            "--daemonize", "no",
            "--logfile", str(workdir / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(
        unix_socket_path=str(socket_path), decode_responses=False, driver_info=None
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log = (workdir / "redis.log").read_text(errors="replace").strip().splitlines()
                raise OperationError(f"the scratch server could not load {rdb.name}: {log[-1:]}")
            try:
                client.ping()
                break
            except (redis.BusyLoadingError, redis.ConnectionError):
                if time.monotonic() > deadline:
                    raise OperationError(f"loading {rdb.name} took over {timeout:.0f} s") from None
                time.sleep(0.05)
        yield client
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---- the copy --------------------------------------------------------------------


def _copy_shard(
    shard: int,
    source: redis.Redis,
    target: Target,
    sample_size: int,
    progress: Progress,
) -> ShardCopy:
    result = ShardCopy(shard)
    dest = connect_cluster(
        target.endpoints, target.tls, target.admin, timeout=30.0, decode_responses=False
    )
    seen = 0
    rng = random.Random(shard)
    try:
        cursor = 0
        while True:
            cursor, keys = source.scan(cursor, count=SCAN_COUNT)
            if keys:
                read = source.pipeline(transaction=False)
                for key in keys:
                    read.dump(key)
                    read.pttl(key)
                values = read.execute()
                write = dest.pipeline()
                batch = 0
                for i, raw in enumerate(keys):
                    key = raw if isinstance(raw, bytes) else str(raw).encode()
                    payload, ttl = values[2 * i], values[2 * i + 1]
                    if payload is None or ttl == -2:
                        result.expired += 1  # expired since the snapshot
                        continue
                    # REPLACE: SCAN may return a key twice; the payload is the same.
                    write.restore(key, max(int(ttl), 0), payload, replace=True)
                    batch += 1
                    seen += 1
                    if len(result.sample) < sample_size:
                        result.sample.append(key)
                    elif rng.random() < sample_size / seen:
                        result.sample[rng.randrange(sample_size)] = key
                if batch:
                    write.execute()
                result.keys += batch
                progress("keys", batch)
            if cursor == 0:
                return result
    finally:
        dest.close()


def primaries(target: Target) -> list[Endpoint]:
    try:
        client = connect_cluster(target.endpoints, target.tls, target.admin, timeout=10.0)
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        raise OperationError(
            f"cannot reach the target cluster ({exc}); is it running? "
            "(the twin: `redisops local up`)"
        ) from exc
    try:
        return [Endpoint(host=n.host, port=n.port) for n in client.get_primaries()]
    finally:
        client.close()


def count_keys(target: Target) -> int:
    total = 0
    for endpoint in primaries(target):
        client = connect(endpoint, target.tls, target.admin, timeout=10.0)
        try:
            total += int(client.dbsize())
        finally:
            client.close()
    return total


def empty_target(target: Target, force: bool) -> None:
    existing = count_keys(target)
    if existing and not force:
        raise ConfigError(
            f"the target holds {existing} keys; restore into an empty cluster, or pass "
            "--force to empty it first (FLUSHALL on every primary)"
        )
    if existing:
        logger.warning("--force: emptying the target (%d keys)", existing)
        for endpoint in primaries(target):
            client = connect(endpoint, target.tls, target.admin, timeout=60.0)
            try:
                client.flushall()
            finally:
                client.close()


def fetch_all(
    storage: Storage, manifest: Manifest, workdir: Path, progress: Progress
) -> list[Path]:
    """Download and check every shard; nothing is restored unless all are intact."""
    paths: list[Path] = []
    problems: list[str] = []
    with ThreadPoolExecutor(max_workers=len(manifest.shards)) as pool:
        futures = []
        for entry in manifest.shards:
            path = workdir / f"shard-{entry.shard}.rdb"
            paths.append(path)
            futures.append(pool.submit(fetch_verified, storage, manifest, entry.shard, path))
        for future in futures:
            check = future.result()
            progress("fetched", 1)
            problems += [f"shard {check.shard}: {p}" for p in check.problems]
    if problems:
        raise OperationError(
            f"backup {manifest.id} failed its checks, nothing was restored: " + "; ".join(problems)
        )
    return paths


def verify_sample(
    sources: dict[int, redis.Redis], samples: dict[int, list[bytes]], target: Target
) -> tuple[int, list[str]]:
    dest = connect_cluster(target.endpoints, target.tls, target.admin, decode_responses=False)
    checked = 0
    mismatches: list[str] = []
    try:
        for shard, keys in samples.items():
            for key in keys:
                expected = key_digest(sources[shard], key)
                if expected is None:
                    continue  # expired in the meantime
                checked += 1
                if key_digest(dest, key) != expected:
                    mismatches.append(key.decode(errors="replace")[:80])
    finally:
        dest.close()
    return checked, mismatches


def restore(
    storage: Storage,
    manifest: Manifest,
    target: Target,
    *,
    force: bool = False,
    sample_size: int = 200,
    progress: Progress | None = None,
    workdir: Path | None = None,
) -> RestoreReport:
    """Restore `manifest` into `target` by copying keys; verify; report."""
    report = progress or (lambda phase, n: None)
    started = time.monotonic()
    if shutil.which("redis-server") is None:
        raise ConfigError("restore needs redis-server for its scratch servers; install it")
    with tempfile.TemporaryDirectory(prefix="redisops-restore-", dir=workdir) as tmp:
        paths = fetch_all(storage, manifest, Path(tmp), report)
        empty_target(target, force)
        copy_started = time.monotonic()
        with contextlib.ExitStack() as stack:
            sources = {
                entry.shard: stack.enter_context(
                    scratch_server(paths[entry.shard], Path(tmp) / f"scratch-{entry.shard}")
                )
                for entry in manifest.shards
            }
            per_shard = max(1, sample_size // len(sources))
            with ThreadPoolExecutor(max_workers=len(sources)) as pool:
                futures = [
                    pool.submit(_copy_shard, shard, client, target, per_shard, report)
                    for shard, client in sources.items()
                ]
                copies = [f.result() for f in futures]
            copy_s = time.monotonic() - copy_started
            restored = count_keys(target)
            checked, mismatches = verify_sample(
                sources, {c.shard: c.sample for c in copies}, target
            )
    return RestoreReport(
        backup=manifest.id,
        method="copy",
        shards_in_backup=len(manifest.shards),
        keys_in_backup=manifest.keys,
        keys_with_ttl=manifest.expires,
        keys_restored=restored,
        keys_expired=sum(c.expired for c in copies),
        bytes=manifest.size,
        sample_checked=checked,
        sample_mismatches=mismatches,
        rto_s=round(time.monotonic() - started, 3),
        copy_s=round(copy_s, 3),
    )
