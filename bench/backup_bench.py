"""Backup and restore throughput for about 1 GB of data on the twin.

    make bench-backup     # or: .venv/bin/python bench/backup_bench.py --gb 1

Fills a 3 x 1 twin, backs it up to a local directory (MB/s, keys/s), restores the backup
into a 4-shard twin (the copy path: DUMP/RESTORE of every key) and into a 3-shard twin
(the fast path: nodes restarted on their RDBs), and prints the numbers. Goals: backup
>= 100 MB/s; restore of 1 GB into a different topology <= 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from redisops import acl
from redisops.backup.create import create_backup
from redisops.backup.restore import restore
from redisops.backup.storage import open_storage
from redisops.client import Endpoint, connect_cluster
from redisops.local import process
from redisops.local.restore import restore_into_twin, twin_target
from redisops.local.settings import HOST
from redisops.local.twin import Twin

VALUE = 4096


def up(root: Path, shards: int, replicas: int, maxmemory: str) -> Twin:
    twin = Twin(root)
    report = twin.up(
        shards=shards,
        replicas=replicas,
        base_port=process.free_base_port(HOST, shards * (1 + replicas)),
        sse_proxy=False,
        maxmemory=maxmemory,
    )
    assert report.healthy, report.findings
    return twin


def fill(twin: Twin, keys: int) -> None:
    client = connect_cluster(
        [Endpoint(host=HOST, port=twin.settings().ports[0])],
        twin.client_tls(acl.ADMIN),
        twin.credentials(acl.ADMIN),
        timeout=60,
    )
    try:
        pipe = client.pipeline()
        for i in range(keys):
            pipe.set(f"bench:{i}", os.urandom(VALUE))
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    keys = int(args.gb * 1e9 / VALUE)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "keys": keys,
        "value_bytes": VALUE,
    }
    memory = f"{int(args.gb * 1000 / 3 * 1.6) + 64}mb"
    with tempfile.TemporaryDirectory(prefix="backup-bench-") as tmp:
        root = Path(tmp)
        source = up(root / "source", 3, 1, memory)
        try:
            started = time.monotonic()
            fill(source, keys)
            result["fill_s"] = round(time.monotonic() - started, 1)
            storage = open_storage(f"file://{root / 'backups'}")
            started = time.monotonic()
            manifest = create_backup(
                [Endpoint(host=HOST, port=p) for p in source.settings().ports],
                source.client_tls(acl.BACKUP),
                source.credentials(acl.BACKUP),
                storage,
                source="bench",
            )
            seconds = time.monotonic() - started
            result.update(
                rdb_mb=round(manifest.size / 1e6, 1),
                backup_s=round(seconds, 2),
                backup_mb_per_s=round(manifest.size / 1e6 / seconds, 1),
                backup_keys_per_s=round(manifest.keys / seconds),
            )
        finally:
            source.down(purge=True)
        copy_target = up(root / "copy", 4, 0, memory)
        try:
            report = restore(storage, manifest, twin_target(copy_target))
            result.update(
                copy_restore_rto_s=report.rto_s,
                copy_restore_copy_s=report.copy_s,
                copy_restore_keys_per_s=round(report.keys_per_s),
                copy_restore_mb_per_s=round(manifest.size / 1e6 / report.rto_s, 1),
                copy_restore_verified=report.verified,
            )
        finally:
            copy_target.down(purge=True)
        fast_target = up(root / "fast", 3, 1, memory)
        try:
            report = restore_into_twin(fast_target, storage, manifest)
            result.update(
                fast_restore_rto_s=report.rto_s,
                fast_restore_mb_per_s=round(manifest.size / 1e6 / report.rto_s, 1),
                fast_restore_verified=report.verified,
            )
        finally:
            fast_target.down(purge=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"  {key:26s} {value}")


if __name__ == "__main__":
    main()
