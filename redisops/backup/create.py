"""`redisops backup create`: one RDB per shard, streamed to storage, manifest last.

Each shard's snapshot comes from a replica whose replication link is up (so the primary
does not fork under load), falling back to the primary, with `redis-cli --rdb -` as the
`backup` user over TLS. The RDB is hashed and inspected as it streams to storage; the
manifest is written only once every shard is stored, so a backup without one is
incomplete by definition.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import redis

from redisops import health, rediscli
from redisops.backup.manifest import (
    MANIFEST,
    IndexEntry,
    Manifest,
    ShardBackup,
    index_name,
    new_id,
)
from redisops.backup.rdb import StreamInspector
from redisops.backup.storage import CHUNK, Storage
from redisops.client import Credentials, Endpoint, TlsClient, connect
from redisops.cluster import ClusterNode, NodeView, parse_cluster_nodes, parse_info
from redisops.errors import ConfigError, OperationError
from redisops.health import Observation
from redisops.topology import DesiredNode

logger = logging.getLogger("redisops.backup")

Progress = Callable[[int, int], None]  # (shard, bytes just transferred)


@dataclass(frozen=True)
class ShardSource:
    """Where one shard's snapshot is taken from."""

    shard: int
    slots: tuple[tuple[int, int], ...]
    node: ClusterNode
    endpoint: Endpoint
    primary_id: str

    @property
    def role(self) -> str:
        return "primary" if self.node.node_id == self.primary_id else "replica"


def read_view(endpoints: Sequence[Endpoint], tls: TlsClient, creds: Credentials) -> NodeView:
    """The cluster as the first reachable node sees it: where to find every member."""
    errors: list[str] = []
    for endpoint in endpoints:
        client = connect(endpoint, tls, creds, timeout=3.0)
        try:
            nodes = parse_cluster_nodes(str(client.execute_command("CLUSTER", "NODES")))
            info = parse_info(str(client.execute_command("CLUSTER", "INFO")))
            return NodeView(nodes, info.get("cluster_state", "unknown"), info)
        except redis.AuthenticationError as exc:
            raise OperationError(
                f"{endpoint}: the {creds.username} credentials were refused ({exc})"
            ) from exc
        except (redis.RedisError, OSError) as exc:
            errors.append(f"{endpoint}: {exc}")
        finally:
            client.close()
    raise OperationError(f"no node reachable: {'; '.join(errors[:3])}")


def _endpoint(node: ClusterNode) -> Endpoint:
    return Endpoint(host=node.hostname or node.ip, port=node.port)


def observe_cluster(
    endpoints: Sequence[Endpoint], tls: TlsClient, creds: Credentials
) -> list[Observation]:
    """Every member the seeds know, read into the health model (redisops.health)."""
    seed = read_view(endpoints, tls, creds)
    members = [
        DesiredNode(endpoint=_endpoint(n))
        for n in seed.nodes
        if not n.handshake and "noaddr" not in n.flags
    ]
    try:
        return health.observe_as(members, tls, creds)
    except ConfigError as exc:
        raise OperationError(str(exc)) from exc


def choose_sources(observations: Sequence[Observation]) -> list[ShardSource]:
    """Per shard (ordered by first slot), a replica whose link is up, else the primary.

    Refused, as the health model judges it, when some slots have no live primary: a
    backup then would miss data."""
    members = health.members_of(observations)
    if not members:
        raise OperationError("no reachable node is part of a cluster; nothing to back up")
    uncovered = [f for f in health.slot_findings(observations) if f.code == "slots_uncovered"]
    if uncovered:
        raise OperationError(
            f"{uncovered[0].message}; a backup now would miss data — fix the cluster first "
            "(`redisops reconcile --plan` reports what is wrong)"
        )
    view = health.anchor_of(members).view
    assert view is not None
    links = {o.node_id: o.link_status for o in observations if o.node_id}
    primaries = sorted(health.serving_primaries(view), key=lambda n: n.slots[0][0])
    sources = []
    for index, primary in enumerate(primaries):
        chosen = next(
            (
                r
                for r in health.live_followers(view, primary.node_id)
                if not r.suspected and links.get(r.node_id) == "up"
            ),
            primary,
        )
        sources.append(
            ShardSource(index, primary.slots, chosen, _endpoint(chosen), primary.node_id)
        )
    return sources


def _snapshot(
    source: ShardSource,
    backup_id: str,
    storage: Storage,
    tls: TlsClient,
    creds: Credentials,
    progress: Progress,
) -> ShardBackup:
    started = time.monotonic()
    name = f"shard-{source.shard}.rdb"
    inspector = StreamInspector()
    proc = rediscli.popen(
        ["-h", source.endpoint.host, "-p", str(source.endpoint.port), "--rdb", "-"], tls, creds
    )
    stdout, errors = proc.stdout, proc.stderr
    if stdout is None or errors is None:
        raise OperationError("redis-cli was started without pipes")
    stderr: list[bytes] = []
    drain = threading.Thread(target=lambda: stderr.append(errors.read()), daemon=True)
    drain.start()
    try:
        with storage.writer(f"{backup_id}/{name}") as sink:
            while True:
                chunk = stdout.read(CHUNK)
                if not chunk:
                    break
                inspector.feed(chunk)
                sink.write(chunk)
                progress(source.shard, len(chunk))
            returncode = proc.wait(timeout=60)
            drain.join(timeout=10)
            message = b"".join(stderr).decode(errors="replace").strip().splitlines()
            if returncode != 0 or "Transfer finished with success" not in "\n".join(message):
                raise OperationError(
                    f"shard {source.shard} ({source.endpoint}): redis-cli --rdb failed: "
                    f"{' | '.join(message[-2:]) or f'exit {returncode}'}"
                )
            if inspector.header is None:
                raise OperationError(
                    f"shard {source.shard}: the snapshot is not a readable RDB "
                    f"({inspector.error or 'no header'})"
                )
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        raise
    header = inspector.header
    return ShardBackup(
        shard=source.shard,
        slots=[(lo, hi) for lo, hi in source.slots],
        node_id=source.node.node_id,
        address=str(source.endpoint),
        role="primary" if source.role == "primary" else "replica",
        primary_id=source.primary_id,
        object=name,
        size=inspector.size,
        sha256=inspector.hexdigest,
        keys=header.keys,
        expires=header.expires,
        repl_offset=header.repl_offset,
        redis_version=header.redis_version,
        seconds=round(time.monotonic() - started, 3),
    )


def create_backup(
    endpoints: Sequence[Endpoint],
    tls: TlsClient,
    creds: Credentials,
    storage: Storage,
    *,
    source: str,
    progress: Progress | None = None,
) -> Manifest:
    """Snapshot every shard in parallel into `storage`; return the committed manifest.

    Only new objects are written (shards, the manifest, then the backup's index entry),
    none is replaced: identities that may add objects but not replace or delete one (GKE's
    backup account) can run it, and so can buckets under a retention policy."""
    storage.check()
    sources = choose_sources(observe_cluster(endpoints, tls, creds))
    started = dt.datetime.now(dt.UTC)
    # Only ids of the same second can collide: list those, not every backup.
    backup_id = new_id(started, set(storage.children(started.strftime("%Y%m%dT%H%M%SZ"))))
    report = progress or (lambda shard, n: None)
    logger.info("backing up %d shard(s) to %s/%s", len(sources), storage.url, backup_id)
    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        futures = [
            pool.submit(_snapshot, s, backup_id, storage, tls, creds, report) for s in sources
        ]
        shards = [f.result() for f in futures]
    manifest = Manifest(
        id=backup_id,
        source=source,
        started_at=started,
        completed_at=dt.datetime.now(dt.UTC),
        shards=shards,
    )
    storage.write_text(f"{backup_id}/{MANIFEST}", manifest.model_dump_json(indent=2) + "\n")
    entry = IndexEntry(
        id=backup_id, completed_at=manifest.completed_at, keys=manifest.keys, size=manifest.size
    )
    storage.write_text(index_name(backup_id), entry.model_dump_json() + "\n")
    return manifest
