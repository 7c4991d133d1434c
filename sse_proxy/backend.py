"""The proxy's Redis connections: a fixed number, whatever the number of clients.

- one dedicated connection per stream reader, to the primary that holds the stream
  (`XREAD BLOCK` occupies a connection, so it cannot be shared);
- one shared client as `reader` for catch-up pages and stream metadata, and one as
  `publisher` for XADD; each is limited to `redis_concurrency` commands in flight.

Reads are retried across a failover. Writes are sent again only when that cannot append
twice: when Redis refused the command or it never left the proxy, or when it is the
idempotent publish function of a POST with an Idempotency-Key (`sse_proxy.idempotency`).
Otherwise a write whose reply was lost is reported as `OutcomeUnknown`, never silently
repeated.

Runs against Redis Cluster over TLS (the roles from `redisops.acl`) or a single `redis://`
node for development.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from redisops import functions
from redisops.errors import ConfigError
from sse_proxy import idempotency
from sse_proxy.idempotency import Claim, Published
from sse_proxy.settings import ProxySettings, RetentionRule
from sse_proxy.sse import EntryId, format_entry_id, parse_entry_id

logger = logging.getLogger("sse_proxy.backend")

Entry = tuple[str, dict[str, str]]

# What talking to Redis can raise: redis-py's cluster client has errors outside
# RedisError (e.g. "Redis Cluster cannot be connected" while every node is down).
REDIS_FAILURES: tuple[type[BaseException], ...] = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
    OSError,
)
# Failures after which sending the same command again is worth it (a failover, a
# reconnect); the others (NOPERM, OOM, WRONGTYPE, ...) would fail the same way again.
TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
    OSError,
)
# A publish is attempted once and up to this many times more (backoff 0.1 s .. 1 s, about
# 2.5 s in all: the first seconds of a failover).
PUBLISH_RETRIES = 5
# A publisher connection idle this long is PINGed before a write is sent on it: one that
# died quietly (a node restarted, a peer gone) is found before the write, not after.
PUBLISH_HEALTH_CHECK_S = 1.0

T = TypeVar("T")


class OutcomeUnknown(Exception):
    """A write was sent and its reply lost: it may or may not have been applied."""


class NotSent(redis.exceptions.ConnectionError):
    """A pooled connection failed its check before the command was written on it: the
    command never reached Redis."""


async def _check_before_send(
    conn: AbstractConnection, health_check: Callable[[], Awaitable[None]]
) -> None:
    # The server closed it (a restart, CLIENT KILL): seen without a round trip.
    reader = getattr(conn, "_reader", None)
    if reader is not None and reader.at_eof():
        await conn.disconnect()
        raise NotSent("the server had closed the pooled connection; nothing was sent")
    try:
        await health_check()  # a PING when idle past health_check_interval
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise NotSent(
            f"a pooled connection failed its health check ({exc}); nothing was sent"
        ) from exc


class CheckedConnection(Connection):
    """A connection that proves itself alive before each command (see NotSent)."""

    async def check_health(self) -> None:
        await _check_before_send(self, super().check_health)


class CheckedSSLConnection(SSLConnection):
    """CheckedConnection over TLS."""

    async def check_health(self) -> None:
        await _check_before_send(self, super().check_health)


def _checked(client: Any) -> Any:
    """Make every connection `client` opens a checked one. redis-py's cluster client takes
    no connection class: it is set where the client keeps its nodes' connection options."""
    if isinstance(client, RedisCluster):
        kwargs = client.connection_kwargs
        checked = (
            CheckedSSLConnection
            if issubclass(kwargs["connection_class"], SSLConnection)
            else CheckedConnection
        )
        kwargs["connection_class"] = checked
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = checked
    else:
        pool = client.connection_pool
        pool.connection_class = (
            CheckedSSLConnection
            if issubclass(pool.connection_class, SSLConnection)
            else CheckedConnection
        )
    return client


class FunctionMissing(Exception):
    """The stream's primary has no publish function: nobody ran `redisops reconcile` on
    this cluster (or since this shard's node joined)."""


def never_applied(exc: BaseException) -> bool:
    """Whether `exc` proves the command was not applied: Redis refused it (an error
    reply), or it was never sent (no connection could be made).

    Anything else (a connection lost or a read timing out after sending) may have
    followed the command's execution. Connect failures are told by redis-py's message;
    should it change, they count as uncertain, the safe side.
    """
    if isinstance(
        exc,
        (
            NotSent,
            redis.exceptions.ResponseError,
            redis.exceptions.RedisClusterException,
            redis.exceptions.BusyLoadingError,
            redis.exceptions.MaxConnectionsError,
            redis.exceptions.AuthenticationError,
        ),
    ):
        return True
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        message = str(exc)
        return message.startswith(("Error ", "Timeout ")) and " connecting to " in message
    return False


def _password(path: Path | None, role: str) -> str | None:
    if path is None:
        return None
    try:
        password = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{role}_password_file {path}: {exc.strerror}") from exc
    if not password:
        raise ConfigError(f"{role}_password_file {path} is empty")
    return password


class StreamInfo:
    """What catch-up needs to know about a stream's retained history."""

    def __init__(
        self, first: EntryId | None, length: int, added: int, max_deleted: EntryId
    ) -> None:
        self.first = first
        self.length = length
        self.added = added
        self.max_deleted = max_deleted

    def lost_after(self, after: EntryId) -> bool:
        """Whether entries after `after` may have been trimmed or deleted.

        Redis 7.0 counts added entries but records only XDEL in max-deleted-entry-id,
        so trimming shows as fewer entries than were ever added.
        """
        removed = self.added > self.length or self.max_deleted > (0, 0)
        return removed and (self.first is None or after < self.first)


class Backend:
    """Redis access for the proxy."""

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self._reader_password = _password(settings.reader_password_file, "reader")
        self._publisher_password = _password(settings.publisher_password_file, "publisher")
        self._reads = asyncio.Semaphore(settings.redis_concurrency)
        self._writes = asyncio.Semaphore(settings.redis_concurrency)
        self.reader: Any = None
        self.publisher: Any = None

    # ---- connection options --------------------------------------------------------

    def _tls(self) -> dict[str, Any]:
        s = self.settings
        if s.redis_mode == "single" or not s.redis_tls:
            return {}
        return {
            "ssl": True,
            "ssl_ca_certs": str(s.redis_tls_ca_file) if s.redis_tls_ca_file else None,
            "ssl_certfile": str(s.redis_tls_cert_file) if s.redis_tls_cert_file else None,
            "ssl_keyfile": str(s.redis_tls_key_file) if s.redis_tls_key_file else None,
            "ssl_cert_reqs": "required",
        }

    def _common(self, username: str, password: str | None) -> dict[str, Any]:
        return {
            "username": username if password else None,
            "password": password,
            "decode_responses": True,
            # Entries are bytes: a value that is not UTF-8 decodes losslessly (its bytes as
            # lone surrogates) instead of raising, and sse.entry_event encodes it as base64.
            "encoding_errors": "surrogateescape",
            "driver_info": None,
            "socket_connect_timeout": 3.0,
            "socket_timeout": 5.0,
            "health_check_interval": 0,
        }

    def _client(
        self, username: str, password: str | None, retry: Retry, health_check_interval: float = 0
    ) -> Any:
        s = self.settings
        options = self._common(username, password)
        options["retry"] = retry
        options["health_check_interval"] = health_check_interval
        if s.redis_mode == "single":
            assert s.redis_url is not None
            return aioredis.Redis.from_url(
                s.redis_url, max_connections=s.redis_concurrency, **options
            )
        nodes = [
            ClusterNode(host, int(port))
            for host, _, port in (n.rpartition(":") for n in s.redis_nodes)
        ]
        return RedisCluster(
            startup_nodes=nodes,
            max_connections=s.redis_concurrency,
            **options,
            **self._tls(),
        )

    async def start(self) -> None:
        s = self.settings
        # Clients connect lazily: the proxy starts (and says "not ready") while Redis is down.
        # The shared reader retries briefly across a failover (reads repeat safely; the
        # stream readers handle their own). The publisher never retries by itself: a
        # write whose reply was lost may have been applied (see `publish`).
        self.reader = self._client(
            s.reader_username,
            self._reader_password,
            Retry(ExponentialBackoff(cap=1.0, base=0.05), 5),
        )
        # Its connections are checked before each write (NotSent): after a node restart a
        # write on a dead pooled connection would otherwise have an unknown outcome.
        self.publisher = _checked(
            self._client(
                s.publisher_username,
                self._publisher_password,
                Retry(NoBackoff(), 0),
                health_check_interval=PUBLISH_HEALTH_CHECK_S,
            )
        )

    async def close(self) -> None:
        for client in (self.reader, self.publisher):
            if client is not None:
                await client.aclose()

    # ---- the per-stream reader connection -----------------------------------------------

    async def open_reader(self, stream: str) -> aioredis.Redis:
        """A dedicated connection to the primary serving `stream`, as the reader user."""
        s = self.settings
        options = self._common(s.reader_username, self._reader_password)
        options["retry"] = Retry(NoBackoff(), 0)
        # XREAD BLOCK waits up to block_ms; a dead peer is noticed a little later.
        options["socket_timeout"] = s.block_ms / 1000 + 5.0
        if s.redis_mode == "single":
            assert s.redis_url is not None
            return aioredis.Redis.from_url(s.redis_url, single_connection_client=True, **options)
        async with self._reads:
            # A keyed command routes through the cluster client, which follows MOVED and
            # refreshes its slot map after a failover; then its node is the primary.
            await self.reader.xlen(stream)
        node = self.reader.get_node_from_key(stream)
        return aioredis.Redis(
            host=node.host,
            port=node.port,
            single_connection_client=True,
            **options,
            **self._tls(),
        )

    async def serves(self, conn: aioredis.Redis, stream: str) -> bool:
        """Whether `conn` still talks to the primary of `stream`'s slot (asked anew)."""
        if self.settings.redis_mode == "single":
            return True
        async with self._reads:
            await self.reader.xlen(stream)  # routes through MOVED: the slot map is current
        node = self.reader.get_node_from_key(stream)
        where = conn.connection_pool.connection_kwargs
        return bool(where.get("host") == node.host and where.get("port") == node.port)

    async def refresh_topology(self) -> None:
        if isinstance(self.reader, RedisCluster):
            await self.reader.nodes_manager.initialize()

    # ---- shared commands --------------------------------------------------------------

    async def info(self, stream: str) -> StreamInfo:
        """The oldest retained id and whether entries were ever removed."""
        async with self._reads:
            try:
                raw = await self.reader.execute_command("XINFO", "STREAM", stream)
            except aioredis.ResponseError as exc:
                if "no such key" in str(exc).lower():
                    return StreamInfo(None, 0, 0, (0, 0))
                raise
        info = _pairs(raw)
        first = info.get("first-entry")
        return StreamInfo(
            parse_entry_id(first[0]) if first else None,
            int(info.get("length", 0)),
            int(info.get("entries-added", 0)),
            parse_entry_id(str(info.get("max-deleted-entry-id", "0-0"))),
        )

    async def last_id(self, stream: str) -> EntryId:
        async with self._reads:
            entries = await self.reader.xrevrange(stream, "+", "-", count=1)
        return parse_entry_id(entries[0][0]) if entries else (0, 0)

    async def first_after(self, stream: str, after: EntryId) -> EntryId | None:
        """The id of the oldest entry after `after`, or None when there is none."""
        async with self._reads:
            entries = await self.reader.xrange(stream, f"({format_entry_id(after)}", "+", count=1)
        return parse_entry_id(entries[0][0]) if entries else None

    async def page(self, stream: str, after: EntryId, until: EntryId, count: int) -> list[Entry]:
        """Entries with after < id <= until, oldest first, at most `count`."""
        async with self._reads:
            entries = await self.reader.xrange(
                stream, f"({format_entry_id(after)}", format_entry_id(until), count=count
            )
        return [(entry_id, dict(fields)) for entry_id, fields in entries]

    async def publish(
        self,
        stream: str,
        fields: dict[str, str],
        rule: RetentionRule | None,
        claim: Claim | None = None,
    ) -> Published:
        """XADD with the stream's retention: exactly once under `claim` (an
        Idempotency-Key), else at most once.

        Raises OutcomeUnknown when the entry may or may not have been added, and the Redis
        error when it was not.
        """
        maxlen = rule.maxlen if rule is not None else None
        minid = None
        if rule is not None and rule.max_age_s is not None:
            minid = f"{int(time.time() * 1000) - rule.max_age_s * 1000}-0"
        if claim is None:
            entry_id = await self._write(lambda: self._xadd(stream, fields, maxlen, minid))
            return Published(entry_id, created=True)
        args = idempotency.fcall_args(claim, fields, maxlen, minid)
        reply = await self._write(lambda: self._fcall(stream, args), idempotent=True)
        return idempotency.outcome(reply, claim)

    async def _xadd(
        self, stream: str, fields: dict[str, str], maxlen: int | None, minid: str | None
    ) -> str:
        if maxlen is None:
            entry_id = await self.publisher.xadd(
                stream, fields, minid=minid, approximate=minid is not None
            )
            return str(entry_id)
        entry_id = await self.publisher.xadd(stream, fields, maxlen=maxlen, approximate=True)
        if minid is not None:
            # The entry is in: a failure of this trim must not make the POST look failed.
            try:
                await self.publisher.xtrim(stream, minid=minid, approximate=True)
            except REDIS_FAILURES as exc:
                logger.warning("trimming %s by age failed (next POST trims): %s", stream, exc)
        return str(entry_id)

    async def _fcall(self, stream: str, args: list[Any]) -> Any:
        try:
            return await self.publisher.execute_command("FCALL", *args)
        except redis.exceptions.ResponseError as exc:
            if "function not found" not in str(exc).lower():
                raise
            if self.settings.redis_mode == "single":
                # Development: no reconcile runs against a single node. The FCALL applied
                # nothing, so load the library and call again.
                logger.info("loading function library %s into the node", functions.LIBRARY)
                await self.publisher.execute_command("FUNCTION", "LOAD", "REPLACE", functions.CODE)
                return await self.publisher.execute_command("FCALL", *args)
            # Never a script of the proxy's own instead: the publisher may not EVAL.
            raise FunctionMissing(
                f"the publish function {functions.PUBLISH_ONCE} is not loaded on the shard "
                f"of {stream}: run `redisops reconcile`"
            ) from exc

    async def _write(self, send: Callable[[], Awaitable[T]], idempotent: bool = False) -> T:
        """Send a write, again after failures that cannot have applied it, and, when
        `idempotent`, also after those that may have."""
        uncertain = False
        for attempt in range(PUBLISH_RETRIES + 1):
            try:
                async with self._writes:
                    await self._learn_slot_map()
                    return await send()
            except REDIS_FAILURES as exc:
                applied_maybe = not never_applied(exc)
                uncertain = uncertain or applied_maybe
                last = attempt == PUBLISH_RETRIES
                if last or not isinstance(exc, TRANSIENT) or (applied_maybe and not idempotent):
                    if uncertain:
                        raise OutcomeUnknown(f"{type(exc).__name__}: {exc}") from exc
                    raise
                logger.info("publish attempt %d failed (%s); trying again", attempt + 1, exc)
            await asyncio.sleep(min(1.0, 0.05 * 2 ** (attempt + 1)))
        raise AssertionError("unreachable")

    async def _learn_slot_map(self) -> None:
        """Before it knows the slot map (at start, after a connection error) redis-py
        sends a keyed command to any node; several at once then race with the MOVED
        replies and can lose a reply (an unknown outcome). Learning it sends no write."""
        if not isinstance(self.publisher, RedisCluster):
            return
        try:
            await self.publisher.initialize()
        except REDIS_FAILURES as exc:
            raise NotSent(f"cannot read the cluster's slot map ({exc}); nothing was sent") from exc

    async def ping(self) -> bool:
        async with self._reads:
            return bool(await self.reader.ping())


def _pairs(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return {str(k): v for k, v in raw.items()}
    items = list(raw)
    return {str(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}
