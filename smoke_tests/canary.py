"""A canary writer for failover checks: append, WAIT 1, record, every few milliseconds.

It talks to the primary of one slot directly (a plain connection, not a cluster client)
so that what it measures is the cluster's unavailability, not a client library's retry
policy; on MOVED or a dead connection it asks the cluster again where the slot lives.
Each write is `RPUSH key seq` followed by `WAIT 1 <ms>` on the same connection, so a
write counts as acknowledged only when a replica has it.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import redis
from redis.crc import key_slot

from redisops import acl
from redisops.client import Endpoint, connect
from smoke_tests.probes import cluster_client, primary_for_slot, role_credentials
from smoke_tests.targets import Target, TargetError


@dataclass
class Write:
    seq: int
    at: float  # time.monotonic() when the reply arrived
    acked: bool
    node: str


@dataclass
class CanaryLog:
    writes: list[Write] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)

    def acked_seqs(self) -> set[int]:
        return {w.seq for w in self.writes if w.acked}

    def successes_after(
        self, t: float, acked: bool = False, away_from: str | None = None
    ) -> list[Write]:
        return [
            w
            for w in self.writes
            if w.at > t and (w.acked or not acked) and (away_from is None or w.node != away_from)
        ]

    def unavailability(self, since: float) -> float:
        """Longest stretch without an accepted write that overlaps `since` or comes after.

        Measured between reply times of consecutive accepted writes, so it includes the
        failure detection, the election and the client finding the new primary.
        """
        times = [w.at for w in self.writes]
        before = [t for t in times if t <= since]
        after = [t for t in times if t > since]
        if not after:
            return float("inf")
        points = ([before[-1]] if before else [since]) + after
        return max(b - a for a, b in itertools.pairwise(points))


class Canary:
    """Writes to `key` from a background thread until stopped."""

    def __init__(
        self,
        target: Target,
        key: str,
        *,
        interval: float = 0.01,
        wait_ms: int = 100,
        timeout: float = 0.5,
    ) -> None:
        self.target = target
        self.key = key
        self.slot = key_slot(key.encode())
        self.interval = interval
        self.wait_ms = wait_ms
        self.timeout = timeout
        self.log = CanaryLog()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canary", daemon=True)
        self._lock = threading.Lock()
        self._seq = 0
        self.primary: Endpoint | None = None

    def __enter__(self) -> Canary:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def wait_for(
        self,
        count: int,
        *,
        acked: bool,
        after: float,
        timeout: float,
        away_from: str | None = None,
    ) -> bool:
        """Wait until `count` writes (acknowledged ones if `acked`, on another node than
        `away_from` if given) completed after `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                done = len(self.log.successes_after(after, acked=acked, away_from=away_from))
            if done >= count:
                return True
            time.sleep(0.01)
        return False

    def _connect(self) -> tuple[redis.Redis, Endpoint]:
        endpoint, _node_id = primary_for_slot(self.target, self.slot)
        client = connect(
            endpoint,
            self.target.tls(acl.SMOKE),
            role_credentials(self.target, acl.SMOKE),
            timeout=self.timeout,
        )
        return client, endpoint

    def _run(self) -> None:
        client: redis.Redis | None = None
        endpoint: Endpoint | None = None
        while not self._stop.is_set():
            try:
                if client is None:
                    client, endpoint = self._connect()
                    self.primary = endpoint
                self._seq += 1
                pipe = client.pipeline(transaction=False)
                pipe.rpush(self.key, self._seq)
                pipe.execute_command("WAIT", 1, self.wait_ms)
                _length, replicas = pipe.execute()
                with self._lock:
                    self.log.writes.append(
                        Write(self._seq, time.monotonic(), int(replicas) >= 1, str(endpoint))
                    )
            except (redis.RedisError, OSError, TargetError) as exc:
                with self._lock:
                    self.log.errors.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
                if client is not None:
                    client.close()
                client = None
            self._stop.wait(self.interval)
        if client is not None:
            client.close()

    def stored_seqs(self) -> set[int]:
        """What the cluster holds for the canary key (read from its current primary)."""
        client = cluster_client(self.target)
        try:
            values = client.lrange(self.key, 0, -1)
        finally:
            client.close()
        return {int(v) for v in values}

    def delete(self) -> None:
        client = cluster_client(self.target)
        try:
            client.delete(self.key)
        finally:
            client.close()
