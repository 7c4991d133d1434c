"""HTTP surface of the proxy: SSE subscriptions, publishing, health, readiness, metrics.

`GET /v1/streams/{stream}` is a plain ASGI endpoint: each event is written with one
`send`, with no per-chunk machinery in between, because thousands of clients share one
process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sse_proxy import idempotency, metrics, sse
from sse_proxy.auth import Authenticator, AuthError, Principal, error_body
from sse_proxy.backend import REDIS_FAILURES, Backend, FunctionMissing, OutcomeUnknown
from sse_proxy.hub import Hub, Join, StreamReader, Subscriber
from sse_proxy.settings import ProxySettings
from sse_proxy.sse import EntryId, parse_entry_id

logger = logging.getLogger("sse_proxy")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# /metrics asks Redis for readiness and the readers' lag at most this often.
MEASURE_EVERY_S = 1.0
STREAM_NAME = re.compile(r"^[A-Za-z0-9_.:{}\-]{1,256}$")
SUBSCRIPTION = re.compile(r"^/v1/streams/([^/]+)$")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class HttpError(Exception):
    """A request the proxy refuses; rendered as JSON {error, reason, detail}."""

    def __init__(
        self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        kind = {
            400: "bad_request",
            404: "not_found",
            413: "payload_too_large",
            422: "unprocessable",
            503: "unavailable",
        }.get(self.status, "error")
        return JSONResponse(
            {"error": kind, "reason": self.reason, "detail": self.detail},
            status_code=self.status,
            headers=self.headers,
        )


class Proxy:
    """The running proxy: settings, Redis backend, stream hub, authenticator."""

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self.auth = Authenticator(settings)
        self.backend = Backend(settings)
        self.hub = Hub(settings, self.backend)

    # ---- checks shared by both stream endpoints ------------------------------------------

    def check_stream(self, stream: str) -> None:
        if not STREAM_NAME.match(stream) or not self.settings.serves(stream):
            raise HttpError(
                404,
                "unknown_stream",
                f"stream {stream[:80]!r} is not served here; served patterns: "
                f"{', '.join(self.settings.served_patterns)}",
            )

    def principal(self, request: Request) -> Principal:
        try:
            return self.auth.authenticate(request.headers, request.cookies, request.query_params)
        except AuthError as exc:
            metrics.AUTH_FAILURES.labels(exc.reason).inc()
            raise

    def check_available(self) -> None:
        if self.hub.draining:
            raise HttpError(
                503, "draining", "this instance is shutting down; retry", {"Retry-After": "1"}
            )


def _start_position(request: Request) -> EntryId | None:
    """Last-Event-ID (header, then query) wins over `from`; None means 'only new entries'."""
    resume = request.headers.get("last-event-id")
    source = "Last-Event-ID"
    if resume is None:
        resume, source = request.query_params.get("last_event_id"), "?last_event_id"
    if resume is None:
        start = request.query_params.get("from", "now")
        if start == "now":
            return None
        if start == "earliest":
            return (0, 0)
        resume, source = start, "?from"
    try:
        return parse_entry_id(resume.strip())
    except ValueError as exc:
        raise HttpError(
            400,
            "bad_position",
            f"{source}: {exc}; use an id this proxy sent, or from=now|earliest",
        ) from exc


def _auth_response(error: AuthError) -> Response:
    headers = {
        "WWW-Authenticate": f'Bearer error="invalid_token", error_description="{error.reason}"'
    }
    return Response(
        error_body(error),
        status_code=error.status,
        media_type="application/json",
        headers=headers if error.status == 401 else None,
    )


class StreamEndpoint:
    """GET /v1/streams/{stream}: the SSE subscription (a plain ASGI app)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.origins = {o.encode() for o in proxy.settings.cors_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        proxy = self.proxy
        request = Request(scope, receive)
        stream = request.path_params["stream"]
        try:
            proxy.check_stream(stream)
            principal = proxy.principal(request)
            if not principal.may_subscribe(stream):
                raise AuthError(403, "stream_not_allowed", f"the token does not grant {stream!r}")
            after = _start_position(request)
            proxy.check_available()
            if proxy.hub.connections >= proxy.settings.max_connections:
                metrics.REJECTED.labels("limit").inc()
                await self._come_back(
                    scope,
                    send,
                    "too_many_connections",
                    f"this instance serves {proxy.settings.max_connections} connections; "
                    "retrying shortly",
                    random.randint(2000, 10000),
                )
                return
            reader = await proxy.hub.reader(stream)
        except AuthError as exc:
            await self._refuse(_auth_response(exc), scope, receive, send)
            return
        except HttpError as exc:
            await self._refuse(exc.response(), scope, receive, send)
            return
        except REDIS_FAILURES as exc:
            metrics.REDIS_ERRORS.labels("subscribe").inc()
            metrics.REJECTED.labels("redis").inc()
            logger.warning("subscribing to %s failed: %s: %s", stream, type(exc).__name__, exc)
            await self._come_back(
                scope,
                send,
                "redis_unavailable",
                "cannot read the stream now: Redis is unavailable; retrying shortly",
                random.randint(1500, 3000),
            )
            return
        metrics.REQUESTS.labels("GET", "subscribe", "200").inc()
        del request  # its parsed headers and cookies are not needed for hours of streaming
        await self._stream(scope, receive, send, reader, after)

    def _cors(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        origin = next((v for k, v in scope["headers"] if k == b"origin"), None)
        if origin is None or origin not in self.origins:
            return []
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        ]

    async def _come_back(
        self, scope: Scope, send: Send, reason: str, detail: str, retry_ms: int
    ) -> None:
        """A temporary refusal the way EventSource retries: browsers and Node treat any
        non-200 answer as final, but come back after `retry:` when a 200 stream ends. The
        `unavailable` event (no id: the client's position stays) says why. Counted as the
        503 it means (`sse_requests_total{status="503"}`, so the 5xx alert sees it)."""
        metrics.REQUESTS.labels("GET", "subscribe", "503").inc()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    *SSE_HEADERS,
                    (b"retry-after", str(max(1, retry_ms // 1000)).encode()),
                    *self._cors(scope),
                ],
            }
        )
        body = sse.retry(retry_ms) + sse.control_event(
            "unavailable", {"reason": reason, "detail": detail, "retry_ms": retry_ms}
        )
        await send(_last(body))

    async def _refuse(self, response: Response, scope: Scope, receive: Receive, send: Send) -> None:
        metrics.REQUESTS.labels("GET", "subscribe", str(response.status_code)).inc()
        response.raw_headers.extend(self._cors(scope))
        await response(scope, receive, send)

    async def _stream(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        reader: StreamReader,
        after: EntryId | None,
    ) -> None:
        proxy = self.proxy
        settings = proxy.settings
        hub = proxy.hub
        stream = reader.stream
        join = reader.join(after)
        sub = join.subscriber
        sub.task = asyncio.current_task()
        hub.connections += 1
        metrics.CLIENTS.labels(reader.pattern).inc()
        watcher = asyncio.ensure_future(_until_disconnect(receive))
        watcher.add_done_callback(lambda _: sub.close("gone"))
        try:
            head = {
                "type": "http.response.start",
                "status": 200,
                "headers": SSE_HEADERS + self._cors(scope),
            }
            await _write(sub, send, head)
            preamble = sse.retry(settings.retry_ms) + sse.comment(f"stream {stream}")
            # Every connection gets its position at once (from=now: where live starts).
            position = join.live_from if after is None else after
            preamble += sse.position_event(sse.format_entry_id(position))
            if after is not None and after > (0, 0):
                preamble += await self._gap(stream, after)
            await _write(sub, send, _chunk(preamble))
            await self._catch_up(send, stream, after, join)
            await self._live(send, sub)
        except asyncio.CancelledError:
            if sub.state != "stuck":
                raise
            # The watchdog cut a client that stopped reading. Returning without completing
            # the response makes the server close the connection.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            metrics.CUTOFFS.labels(reader.pattern).inc()
            logger.info("cut off a client of %s that stopped reading", stream)
        except REDIS_FAILURES as exc:
            metrics.REDIS_ERRORS.labels("catch_up").inc()
            logger.warning("catch-up on %s failed: %s; the client will resume", stream, exc)
            with contextlib.suppress(Exception):
                await _write(sub, send, _last(sse.retry(settings.retry_ms)))
        finally:
            watcher.cancel()
            reader.leave(sub)
            hub.connections -= 1
            metrics.CLIENTS.labels(reader.pattern).dec()

    async def _gap(self, stream: str, after: EntryId) -> bytes:
        info = await self.proxy.backend.info(stream)
        if not info.lost_after(after):
            return b""
        oldest = sse.format_entry_id(info.first) if info.first else None
        return sse.control_event("gap", {"requested": sse.format_entry_id(after), "oldest": oldest})

    async def _catch_up(self, send: Send, stream: str, after: EntryId | None, join: Join) -> None:
        sub = join.subscriber
        if join.backlog is not None:
            if join.backlog:
                await _write(sub, send, _chunk(b"".join(join.backlog)))
            return
        assert after is not None
        page_size = self.proxy.settings.catchup_page
        cursor = after
        while cursor < join.live_from and sub.state == "live":
            entries = await self.proxy.backend.page(stream, cursor, join.live_from, page_size)
            if not entries:
                break
            chunk = b"".join(sse.entry_event(eid, fields) for eid, fields in entries)
            await _write(sub, send, _chunk(chunk))
            cursor = parse_entry_id(entries[-1][0])
            if len(entries) < page_size:
                break

    async def _live(self, send: Send, sub: Subscriber) -> None:
        settings = self.proxy.settings
        while True:
            batch = await sub.next_batch()
            if sub.state == "gone":
                return
            if batch:
                await _write(sub, send, _chunk(batch[0] if len(batch) == 1 else b"".join(batch)))
            if sub.state == "overflow":
                overflow = sse.control_event(
                    "overflow",
                    {"detail": "client fell behind; reconnect with Last-Event-ID to resume"},
                )
                await _write(sub, send, _last(overflow + sse.retry(settings.retry_ms)))
                return
            if sub.state == "closing":
                # Shutting down: come back (to another instance) soon, with Last-Event-ID.
                come_back = sse.retry(random.randint(250, max(500, settings.retry_ms)))
                await _write(sub, send, _last(come_back))
                return


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _chunk(data: bytes) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": True}


def _last(data: bytes) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": False}


async def _write(sub: Subscriber, send: Send, message: Message) -> None:
    """Send, under the hub's watchdog (it cancels writes stuck past the write timeout)."""
    sub.write_started = time.monotonic()
    await send(message)
    sub.write_started = None
    sub.last_write = time.monotonic()


# ---- the other endpoints -------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HttpError(413, "payload_too_large", f"body of {length} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HttpError(413, "payload_too_large", f"body over the {limit}-byte limit")
    return bytes(body)


def _fields(body: bytes) -> dict[str, str]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise HttpError(400, "bad_json", f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise HttpError(
            400, "bad_event", 'the body must be a non-empty JSON object of strings, e.g. {"a": "b"}'
        )
    for key, value in data.items():
        if not key:
            raise HttpError(400, "bad_event", "field names must not be empty")
        if not _utf8(key):
            raise HttpError(
                400,
                "bad_event",
                f"field name {key.encode('utf-8', 'backslashreplace')[:60]!r} holds a lone "
                "surrogate (\\ud800-\\udfff without its pair), which is not UTF-8; send "
                "the character's full pair or leave it out",
            )
        if not isinstance(value, str):
            raise HttpError(
                400,
                "bad_event",
                f"field {key[:60]!r} is {type(value).__name__}; every value must be a string "
                "(encode structured payloads as a JSON string)",
            )
        if not _utf8(value):
            raise HttpError(
                400,
                "bad_event",
                f"field {key[:60]!r} holds a lone surrogate (\\ud800-\\udfff without its "
                "pair), which is not UTF-8; send the character's full pair or leave it out",
            )
    return data


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _idempotency_key(request: Request) -> str | None:
    try:
        return idempotency.header_key(request.headers.getlist(idempotency.HEADER))
    except idempotency.BadKey as exc:
        raise HttpError(400, "bad_idempotency_key", str(exc)) from exc


def _claim(stream: str, key: str, fields: dict[str, str], window_s: int) -> idempotency.Claim:
    try:
        return idempotency.claim(stream, key, fields, window_s)
    except idempotency.BadKey as exc:
        raise HttpError(400, "bad_idempotency_key", str(exc)) from exc


def _outcome_unknown(claim: idempotency.Claim | None) -> HttpError:
    if claim is None:
        advice = (
            "retrying may publish it twice; to publish exactly once, send an "
            f"{idempotency.HEADER} header (a new one per event) and retry with the same one"
        )
    else:
        advice = (
            f"retry with the same {idempotency.HEADER} within {claim.window_s} s: if it was "
            "published, the answer is 200 with its id, else it is published now"
        )
    return HttpError(
        503,
        "publish_outcome_unknown",
        f"the event may or may not have been published (Redis did not answer); {advice}",
        {"Retry-After": "1"},
    )


def build_app(settings: ProxySettings) -> Starlette:
    proxy = Proxy(settings)

    async def publish(request: Request) -> Response:
        stream = request.path_params["stream"]
        claim: idempotency.Claim | None = None
        try:
            proxy.check_stream(stream)
            principal = proxy.principal(request)
            if not principal.may_publish(stream):
                raise AuthError(
                    403, "publish_not_allowed", f"the token may not publish to {stream!r}"
                )
            proxy.check_available()
            key = _idempotency_key(request)
            fields = _fields(await _read_body(request, settings.max_payload_bytes))
            if key is not None:
                claim = _claim(stream, key, fields, settings.idempotency_window_s)
            published = await proxy.backend.publish(
                stream, fields, settings.retention_for(stream), claim
            )
        except AuthError as exc:
            return _auth_response(exc)
        except HttpError as exc:
            return exc.response()
        except idempotency.KeyReused as exc:
            return HttpError(422, "idempotency_key_reused", str(exc)).response()
        except FunctionMissing as exc:
            metrics.REDIS_ERRORS.labels("publish").inc()
            logger.error("POST to %s: %s", stream, exc)
            return HttpError(
                503,
                "publish_function_missing",
                "the entry was not added: the publish function is not loaded on the stream's "
                "shard: run `redisops reconcile`",
                {"Retry-After": "30"},
            ).response()
        except OutcomeUnknown as exc:
            metrics.REDIS_ERRORS.labels("publish").inc()
            logger.warning("POST to %s: outcome unknown: %s", stream, exc)
            return _outcome_unknown(claim).response()
        except REDIS_FAILURES as exc:
            metrics.REDIS_ERRORS.labels("publish").inc()
            logger.warning("POST to %s: not added: %s: %s", stream, type(exc).__name__, exc)
            return HttpError(
                503,
                "redis_unavailable",
                "the entry was not added: Redis is unavailable",
                {"Retry-After": "1"},
            ).response()
        if published.created:
            metrics.PUBLISHED.labels(settings.pattern_of(stream)).inc()
        body = {"id": published.entry_id, "stream": stream}
        # 200: an earlier request with this Idempotency-Key added the entry.
        return JSONResponse(body, status_code=201 if published.created else 200)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readiness(timeout: float) -> list[str]:
        """What keeps this process from serving (empty: ready); Redis gets `timeout`."""
        problems: list[str] = []
        if proxy.hub.draining:
            problems.append("draining")
        # /readyz is public behind the load balancer: the problems name no Redis node
        # (redis-py's errors do); the log has the details.
        try:
            await asyncio.wait_for(proxy.backend.ping(), timeout)
        except REDIS_FAILURES as exc:  # TimeoutError is an OSError
            logger.warning("readiness: Redis unreachable: %s: %s", type(exc).__name__, exc)
            problems.append("redis: unreachable")
        for name, reader in proxy.hub.readers.items():
            if not reader.alive:
                logger.warning("readiness: reader %s: %s", name, reader.error or "stopped")
                problems.append(f"reader {name}: not reading")
        return problems

    async def readyz(request: Request) -> Response:
        problems = await readiness(2.0)
        body = {
            "status": "ready" if not problems else "not_ready",
            "problems": problems,
            "readers": len(proxy.hub.readers),
            "clients": proxy.hub.connections,
        }
        return JSONResponse(body, status_code=200 if not problems else 503)

    measured = {"at": -MEASURE_EVERY_S}

    async def metrics_endpoint(request: Request) -> Response:
        # Gauges of this moment: readiness as /readyz sees it, the readers' lag as Redis
        # sees it, connections against the limit. Redis gets half a second: a scrape
        # must answer within its timeout (1 s on the twin) even while Redis stalls. At
        # most once a second, however often /metrics is asked.
        now = time.monotonic()
        if now - measured["at"] >= MEASURE_EVERY_S:
            measured["at"] = now
            problems, _ = await asyncio.gather(readiness(0.5), proxy.hub.measure_lag(0.5))
            metrics.READY.set(0 if problems else 1)
        metrics.CONNECTIONS.set(proxy.hub.connections)
        metrics.CONNECTIONS_LIMIT.set(proxy.settings.max_connections)
        proxy.hub.update_gauges()
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not proxy.auth.enabled:
            logger.warning(
                "authorization is DISABLED (auth_mode=disabled): every client may read and "
                "publish every served stream"
            )
        await proxy.backend.start()
        proxy.hub.start()
        logger.info(
            "serving streams %s on %s:%s",
            ", ".join(settings.served_patterns),
            settings.host,
            settings.port,
        )
        try:
            yield
        finally:
            proxy.hub.drain()
            await proxy.hub.close()
            await proxy.backend.close()

    routes = [
        Route("/v1/streams/{stream}", StreamEndpoint(proxy), methods=["GET"]),
        Route("/v1/streams/{stream}/events", publish, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    middleware = [Middleware(RequestMetrics)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_credentials=True,
                allow_methods=["GET", "POST"],
                allow_headers=[
                    "Authorization",
                    "Content-Type",
                    "Last-Event-ID",
                    idempotency.HEADER,
                ],
                max_age=600,
            )
        )
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.proxy = proxy
    return app


class ProxyApp:
    """The ASGI entry point: subscriptions go straight to their endpoint, everything else
    through Starlette (routing, CORS, request metrics).

    Each event of each client passes through `send`; every middleware layer would wrap
    it, so the subscription path has none (it counts its requests and answers CORS
    itself; preflight requests still reach the CORS middleware).
    """

    def __init__(self, settings: ProxySettings) -> None:
        self.app = build_app(settings)
        self.proxy: Proxy = self.app.state.proxy
        self.stream = StreamEndpoint(self.proxy)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = SUBSCRIPTION.match(scope["path"])
            if match:
                scope["path_params"] = {"stream": match.group(1)}
                await self.stream(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RequestMetrics:
    """Counts requests by route and status (cheap: only the response start is looked at)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/v1/streams/"):
            route = "publish" if path.endswith("/events") else "subscribe"
        elif path in ("/healthz", "/readyz", "/metrics"):
            route = path[1:]
        else:
            route = "other"

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                metrics.REQUESTS.labels(method, route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)
