"""One reader per stream, fanning out to every subscriber of that stream.

A reader holds one Redis connection (`XREAD BLOCK` from the last id it delivered), keeps
a ring of recent entries already encoded as SSE bytes, and pushes each new entry's bytes
to every subscriber's bounded buffer. A subscriber joins atomically (no await between
registering and reading the reader's position): everything after its start position up
to that point comes from the ring or from XRANGE pages, everything later from its
buffer, so it sees every entry once, in order. A subscriber whose buffer fills is cut
off (`overflow`) and resumes with Last-Event-ID; memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis
import redis.exceptions

from sse_proxy import metrics
from sse_proxy.backend import REDIS_FAILURES, Backend
from sse_proxy.settings import ProxySettings
from sse_proxy.sse import HEARTBEAT, EntryId, entry_event, format_entry_id, parse_entry_id

logger = logging.getLogger("sse_proxy.hub")

State = Literal["live", "overflow", "closing", "gone", "stuck"]


class Subscriber:
    """One client's bounded queue of encoded events.

    The reader pushes one chunk per batch it read (the batch's events, encoded once and
    shared by every subscriber). `limit` bounds the events waiting for this client; one
    batch is always accepted into an empty queue, so a client that keeps up is never cut
    off by a burst, and one that does not is cut off as soon as a second batch would
    pile up beyond the limit.

    No timers per client: the hub's ticker sends heartbeats to idle clients and cancels
    writers stuck in a write for longer than the write timeout.
    """

    __slots__ = (
        "beat",
        "buffer",
        "last_write",
        "limit",
        "pending",
        "skip_until",
        "state",
        "stream",
        "task",
        "waiter",
        "write_started",
    )

    def __init__(self, stream: str, limit: int) -> None:
        self.stream = stream
        self.limit = limit
        self.buffer: list[bytes] = []  # a list: thousands of idle clients hold one each
        self.pending = 0  # events in `buffer`
        # Set when the client asked to start after an entry the reader has not read yet.
        self.skip_until: EntryId | None = None
        # A future only while waiting (an asyncio.Event costs ~800 bytes per client).
        self.waiter: asyncio.Future[None] | None = None
        self.state: State = "live"
        self.beat = False
        self.task: asyncio.Task[object] | None = None  # the writer, for the watchdog
        self.write_started: float | None = None
        self.last_write = time.monotonic()

    def push(self, data: bytes, events: int = 1) -> bool:
        """Queue a chunk of `events` events; False (state overflow) when too far behind."""
        if self.state != "live":
            return False
        if self.pending and self.pending + events > self.limit:
            self.state = "overflow"
            self.buffer = []  # it resumes with Last-Event-ID; drop the references now
            self.pending = 0
            self._wake()
            return False
        self.buffer.append(data)
        self.pending += events
        self._wake()
        return True

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self, state: State) -> None:
        if self.state == "live":
            self.state = state
        self._wake()

    def heartbeat(self) -> None:
        if self.state == "live":
            self.beat = True
            self._wake()

    async def next_batch(self) -> list[bytes]:
        """Everything queued, or a heartbeat; waits while there is neither."""
        while not self.buffer and not self.beat and self.state == "live":
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        batch, self.buffer = self.buffer, []
        self.pending = 0
        if not batch and self.beat:
            batch = [HEARTBEAT]
        self.beat = False
        return batch


@dataclass
class Join:
    """What a new subscriber gets: its queue, and how to catch up to it."""

    subscriber: Subscriber
    live_from: EntryId  # the buffer holds entries after this id
    backlog: list[bytes] | None  # from the ring; None: page (after, live_from] with XRANGE


class StreamReader:
    """The single reader of one stream in this process."""

    def __init__(self, hub: Hub, stream: str) -> None:
        self.hub = hub
        self.stream = stream
        self.pattern = hub.settings.pattern_of(stream)  # the label of its metrics
        self.subscribers: set[Subscriber] = set()
        self.ring: deque[tuple[EntryId, bytes]] = deque(maxlen=hub.settings.ring_size)
        # Every entry with ring_floor < id <= position is in the ring.
        self.position: EntryId = (0, 0)
        self.ring_floor: EntryId = (0, 0)
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.linger: asyncio.TimerHandle | None = None
        self.last_contact = time.monotonic()
        self.error: str | None = None
        # How long the oldest entry not delivered yet has waited (0: caught up); measured
        # against Redis at scrape time (`Hub.measure_lag`), so a stalled reader shows.
        self.lag = 0.0

    @property
    def alive(self) -> bool:
        """Running and in touch with Redis recently (reconnecting briefly counts)."""
        settings = self.hub.settings
        recent = time.monotonic() - self.last_contact < settings.block_ms / 1000 + 30
        return self.task is not None and not self.task.done() and recent

    async def start(self, timeout: float) -> None:
        """Start reading; fail if the stream's position cannot be read within `timeout`."""
        self.task = asyncio.create_task(self._run(), name=f"reader:{self.stream}")
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            await self.stop()
            raise redis.exceptions.ConnectionError(
                f"cannot read stream {self.stream}: {self.error or 'no answer from Redis'}"
            ) from None

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def join(self, after: EntryId | None) -> Join:
        """Register a subscriber starting after `after` (None: only new entries).

        Must not await: the registration and the snapshot of the position are atomic.
        """
        sub = Subscriber(self.stream, self.hub.settings.client_buffer)
        self.subscribers.add(sub)
        self.hub.active.add(sub)
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        live_from = self.position
        if after is None or after == live_from:
            return Join(sub, live_from, [])
        if after > live_from:
            # The client already has entries the reader has not reached (it raced ahead,
            # e.g. resuming right after a reconnect): skip them as they arrive.
            sub.skip_until = after
            return Join(sub, live_from, [])
        if self.ring and after >= self.ring_floor:
            return Join(sub, live_from, [data for eid, data in self.ring if eid > after])
        return Join(sub, live_from, None)

    def leave(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        self.hub.active.discard(sub)
        sub.state = "gone"
        if not self.subscribers and self.linger is None:
            loop = asyncio.get_running_loop()
            self.linger = loop.call_later(
                self.hub.settings.reader_linger_s, self.hub.retire, self.stream
            )

    async def _run(self) -> None:
        settings = self.hub.settings
        backend = self.hub.backend
        conn: aioredis.Redis | None = None
        delay = 0.05
        try:
            while True:
                try:
                    if not self.ready.is_set():
                        self.position = await backend.last_id(self.stream)
                        self.ring_floor = self.position
                        self.last_contact = time.monotonic()
                        self.ready.set()
                    if conn is None:
                        conn = await backend.open_reader(self.stream)
                        delay = 0.05  # reached the stream's primary: start backing off anew
                        where = conn.connection_pool.connection_kwargs
                        logger.info(
                            "reader %s reads from %s:%s after %s",
                            self.stream,
                            where.get("host"),
                            where.get("port"),
                            format_entry_id(self.position),
                        )
                    reply = await asyncio.wait_for(
                        conn.xread(
                            {self.stream: format_entry_id(self.position)},
                            count=settings.read_count,
                            block=settings.block_ms,
                        ),
                        settings.block_ms / 1000 + 10,
                    )
                    self.last_contact = time.monotonic()
                    self.error = None
                    delay = 0.05
                    if reply:
                        self._deliver(_entries(reply))
                    elif not await backend.serves(conn, self.stream):
                        # Idle for a whole BLOCK: a node that turned replica (a primary back
                        # from a crash) can keep a blocked reader waiting without a word.
                        logger.info("reader %s: the stream moved; reconnecting", self.stream)
                        await _close(conn)
                        conn = None
                except asyncio.CancelledError:
                    raise
                except redis.exceptions.NoPermissionError as exc:
                    self.error = f"NOPERM: {exc}"
                    metrics.REDIS_ERRORS.labels("xread").inc()
                    logger.error(
                        "reader %s: the reader user may not read this stream (%s); check "
                        "that the proxy's streams match the ACL",
                        self.stream,
                        exc,
                    )
                    await asyncio.sleep(5)
                except REDIS_FAILURES as exc:  # TimeoutError is an OSError
                    # A failover (connection lost, MOVED, READONLY, CLUSTERDOWN) or a
                    # hiccup: reconnect to whoever holds the stream now, resume from the
                    # last delivered id.
                    self.error = f"{type(exc).__name__}: {exc}"
                    metrics.REDIS_ERRORS.labels("xread").inc()
                    logger.warning("reader %s: %s; reconnecting", self.stream, self.error)
                    if conn is not None:
                        await _close(conn)
                        conn = None
                    await asyncio.sleep(delay * (1 + random.random()))
                    delay = min(delay * 2, 0.8)
                    with contextlib.suppress(*REDIS_FAILURES):
                        await backend.refresh_topology()
                except Exception:
                    # A bug must not silence the stream for good: log it, count it, go on.
                    self.error = "internal error (see log)"
                    metrics.REDIS_ERRORS.labels("reader_internal").inc()
                    logger.exception("reader %s failed; restarting it", self.stream)
                    if conn is not None:
                        await _close(conn)
                        conn = None
                    await asyncio.sleep(1.0)
        finally:
            if conn is not None:
                await _close(conn)
            self.ready.set()

    def _deliver(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        fresh: list[tuple[EntryId, bytes]] = []
        for entry_id, fields in entries:
            eid = parse_entry_id(entry_id)
            if eid <= self.position:
                continue  # never twice, even if Redis hands an entry back after a failover
            data = entry_event(entry_id, fields)
            if not self.ring.maxlen:
                self.ring_floor = eid  # no ring: catch-up always pages from Redis
            else:
                if len(self.ring) == self.ring.maxlen:
                    self.ring_floor = self.ring[0][0]  # about to fall out of the ring
                self.ring.append((eid, data))
            self.position = eid
            fresh.append((eid, data))
        if not fresh:
            return
        # One chunk for the whole batch, shared by every subscriber: one write each.
        chunk = fresh[0][1] if len(fresh) == 1 else b"".join(data for _, data in fresh)
        count = len(fresh)
        cut = [sub for sub in self.subscribers if not self._push(sub, fresh, chunk, count)]
        for sub in cut:
            self.subscribers.discard(sub)
        if cut:
            metrics.CUTOFFS.labels(self.pattern).inc(len(cut))
        delivered = count * (len(self.subscribers))
        if delivered:
            metrics.DELIVERED.labels(self.pattern).inc(delivered)

    def _push(
        self, sub: Subscriber, fresh: list[tuple[EntryId, bytes]], chunk: bytes, count: int
    ) -> bool:
        skip = sub.skip_until
        if skip is None:
            return sub.push(chunk, count)
        if self.position >= skip:
            sub.skip_until = None
        wanted = [data for eid, data in fresh if eid > skip]
        return sub.push(b"".join(wanted), len(wanted)) if wanted else True


def _entries(reply: object) -> list[tuple[str, dict[str, str]]]:
    # RESP2 shape: [[stream, [(id, fields), ...]]]; RESP3 (dict): {stream: [[(id, fields)...]]}
    if isinstance(reply, dict):
        values = next(iter(reply.values()))
        return list(values[0] if values and isinstance(values[0], list) else values)
    assert isinstance(reply, list)
    return list(reply[0][1])


async def _close(conn: aioredis.Redis) -> None:
    with contextlib.suppress(Exception):
        await conn.aclose()


class Hub:
    """All stream readers of this process, and the connection count."""

    def __init__(self, settings: ProxySettings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        self.readers: dict[str, StreamReader] = {}
        self._starting: dict[str, asyncio.Future[StreamReader]] = {}
        self.connections = 0
        self.draining = False
        self.on_drain: list[Callable[[], None]] = []
        self.active: set[Subscriber] = set()  # every connected client, caught up or not
        self._ticker: asyncio.Task[None] | None = None
        metrics.declare_patterns(settings.served_patterns)

    def start(self) -> None:
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="hub-ticker")

    async def _tick(self) -> None:
        """Heartbeats for idle clients; cancel writers stuck past the write timeout."""
        settings = self.settings
        period = min(1.0, settings.heartbeat_s / 3, settings.write_timeout_s / 3)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for sub in list(self.active):
                started = sub.write_started
                if started is not None and now - started > settings.write_timeout_s:
                    sub.state = "stuck"
                    if sub.task is not None:
                        sub.task.cancel()
                elif now - sub.last_write >= settings.heartbeat_s:
                    sub.heartbeat()

    async def reader(self, stream: str) -> StreamReader:
        """The stream's reader, started on first use (concurrent first uses share it)."""
        reader = self.readers.get(stream)
        if reader is not None:
            return reader
        pending = self._starting.get(stream)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[StreamReader] = asyncio.get_running_loop().create_future()
        self._starting[stream] = future
        try:
            reader = StreamReader(self, stream)
            await reader.start(timeout=10.0)
            self.readers[stream] = reader
            future.set_result(reader)
            return reader
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved for waiters that never come
            raise
        finally:
            del self._starting[stream]

    def retire(self, stream: str) -> None:
        reader = self.readers.get(stream)
        if reader is not None and not reader.subscribers:
            del self.readers[stream]
            asyncio.get_running_loop().create_task(reader.stop())

    def drain(self) -> None:
        """Shutting down: every client is told to come back elsewhere."""
        if self.draining:
            return
        self.draining = True
        for sub in list(self.active):
            sub.close("closing")
        for callback in self.on_drain:
            callback()

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for reader in list(self.readers.values()):
            await reader.stop()
        self.readers.clear()

    def clients(self) -> int:
        return sum(len(r.subscribers) for r in self.readers.values())

    async def measure_lag(self, timeout: float = 2.0) -> None:
        """Ask Redis, for every reader, for the oldest entry after its position: the
        reader's lag is that entry's age. A reader whose stream cannot be asked keeps its
        last value (Redis being unreachable is the readiness alert's)."""

        async def one(reader: StreamReader) -> None:
            try:
                waiting = await asyncio.wait_for(
                    self.backend.first_after(reader.stream, reader.position), timeout
                )
            except REDIS_FAILURES:  # RedisError and OSError (TimeoutError) included
                return
            reader.lag = 0.0 if waiting is None else max(0.0, time.time() - waiting[0] / 1000)

        await asyncio.gather(*(one(r) for r in list(self.readers.values())))

    def update_gauges(self) -> None:
        """Set the gauges read at scrape time: readers, and each pattern's largest lag."""
        metrics.READERS.set(len(self.readers))
        lags = dict.fromkeys(self.settings.served_patterns, 0.0)
        for reader in self.readers.values():
            lags[reader.pattern] = max(lags.get(reader.pattern, 0.0), reader.lag)
        for pattern, lag in lags.items():
            metrics.READER_LAG.labels(pattern).set(lag)
