"""Restoring into the twin: nodes restarted on their RDBs when the shard count matches,
the key-copying path otherwise."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from redisops import acl
from redisops.backup.catalog import check_rdb
from redisops.backup.manifest import Manifest
from redisops.backup.restore import (
    Progress,
    RestoreReport,
    Target,
    count_keys,
    fetch_all,
    restore,
    scratch_server,
    verify_sample,
)
from redisops.backup.storage import Storage
from redisops.client import connect
from redisops.errors import ConfigError, OperationError
from redisops.local import process
from redisops.local.twin import Twin
from redisops.reconcile import ReconcileOptions, reconcile
from redisops.topology import plan_layout


def twin_target(twin: Twin) -> Target:
    settings = twin.settings()
    return Target(
        endpoints=settings.endpoints,
        tls=twin.client_tls(acl.ADMIN),
        admin=twin.credentials(acl.ADMIN),
    )


def restore_into_twin(
    twin: Twin,
    storage: Storage,
    manifest: Manifest,
    *,
    force: bool = False,
    progress: Progress | None = None,
    sample_size: int = 200,
) -> RestoreReport:
    """The fast path when the twin has as many shards as the backup; else the copy path."""
    settings = twin.settings()
    if settings.shards != len(manifest.shards):
        return restore(
            storage,
            manifest,
            twin_target(twin),
            force=force,
            progress=progress,
            sample_size=sample_size,
        )
    return _fast(twin, storage, manifest, force=force, progress=progress, sample_size=sample_size)


def _fast(
    twin: Twin,
    storage: Storage,
    manifest: Manifest,
    *,
    force: bool,
    progress: Progress | None,
    sample_size: int,
) -> RestoreReport:
    report = progress or (lambda phase, n: None)
    started = time.monotonic()
    settings = twin.settings()
    target = twin_target(twin)
    with tempfile.TemporaryDirectory(prefix="redisops-restore-") as tmp:
        paths = fetch_all(storage, manifest, Path(tmp), report)
        for path in paths:
            ok, _, last = check_rdb(path)
            if not ok:
                raise OperationError(f"{path.name}: redis-check-rdb: {last}; nothing restored")
        existing = count_keys(target)
        if existing and not force:
            raise ConfigError(
                f"the twin holds {existing} keys; pass --force to replace them with the backup"
            )
        copy_started = time.monotonic()
        # Stop everything, wipe the nodes, and give each shard's primary its RDB.
        twin.down()
        for port in settings.ports:
            node_dir = twin.layout.node_dir(port)
            for name in ("nodes.conf", "dump.rdb"):
                (node_dir / name).unlink(missing_ok=True)
            shutil.rmtree(node_dir / "appendonlydir", ignore_errors=True)
        layout = plan_layout(settings.desired())
        for shard, path in zip(layout, paths, strict=True):
            shutil.copyfile(path, twin.layout.node_dir(shard.primary.endpoint.port) / "dump.rdb")
        # With appendonly on and no AOF yet, Redis would ignore dump.rdb: load it with
        # AOF off, then turn AOF on (which rewrites it from memory).
        for port in settings.ports:
            process.start(
                twin.layout.conf(port),
                twin.layout.pidfile(port),
                twin.layout.logfile(port),
                port,
                timeout=600,
                extra=("--appendonly", "no"),
            )
        twin.wait_responding(settings, timeout=600)
        formed = reconcile(
            settings.desired(),
            twin.client_tls(acl.OPERATOR),
            twin.credentials(acl.OPERATOR),
            ReconcileOptions(
                shard_slots=[[(lo, hi) for lo, hi in s.slots] for s in manifest.shards],
                timeout_s=600,  # replicas load their primaries' data before they settle
            ),
        )
        if not formed.healthy:
            raise OperationError(
                "the restored cluster did not form: "
                + "; ".join(f.message for f in formed.findings if f.severity == "error")
            )
        for port in settings.ports:
            admin = connect(settings.endpoint(port), target.tls, target.admin)
            try:
                admin.config_set("appendonly", "yes")
            finally:
                admin.close()
        twin.up()  # the proxy, and a reconcile that should find nothing to do
        copy_s = time.monotonic() - copy_started
        restored = count_keys(target)
        samples: dict[int, list[bytes]] = {}
        checked, mismatches = 0, []
        for entry, path in zip(manifest.shards, paths, strict=True):
            scratch_rdb = Path(tmp) / f"sample-{entry.shard}.rdb"
            shutil.copyfile(path, scratch_rdb)
            with scratch_server(scratch_rdb, Path(tmp) / f"scratch-{entry.shard}") as source:
                keys = [source.randomkey() for _ in range(max(1, sample_size // len(paths)))]
                samples = {entry.shard: [k for k in keys if isinstance(k, bytes)]}
                c, m = verify_sample({entry.shard: source}, samples, target)
                checked += c
                mismatches += m
    return RestoreReport(
        backup=manifest.id,
        method="fast",
        shards_in_backup=len(manifest.shards),
        keys_in_backup=manifest.keys,
        keys_with_ttl=manifest.expires,
        keys_restored=restored,
        keys_expired=0,
        bytes=manifest.size,
        sample_checked=checked,
        sample_mismatches=mismatches,
        rto_s=round(time.monotonic() - started, 3),
        copy_s=round(copy_s, 3),
    )
