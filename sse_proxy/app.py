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
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import redis.exceptions
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sse_proxy import metrics, sse
from sse_proxy.auth import Authenticator, AuthError, Principal, error_body
from sse_proxy.backend import Backend
from sse_proxy.hub import Hub, Join, StreamReader, Subscriber
from sse_proxy.settings import ProxySettings
from sse_proxy.sse import EntryId, parse_entry_id

logger = logging.getLogger("sse_proxy")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

STREAM_NAME = re.compile(r"^[A-Za-z0-9_.:{}\-]{1,256}$")
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
    resume = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    source = "Last-Event-ID"
    if resume is None:
        start = request.query_params.get("from", "now")
        if start == "now":
            return None
        if start == "earliest":
            return (0, 0)
        resume, source = start, "from"
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
    """GET /v1/streams/{stream}: the SSE subscription."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

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
                raise HttpError(
                    503,
                    "too_many_connections",
                    f"this instance serves {proxy.settings.max_connections} connections; "
                    "retry shortly",
                    {"Retry-After": str(random.randint(2, 10))},
                )
            reader = await proxy.hub.reader(stream)
        except AuthError as exc:
            await _auth_response(exc)(scope, receive, send)
            return
        except HttpError as exc:
            await exc.response()(scope, receive, send)
            return
        except (redis.exceptions.RedisError, OSError) as exc:
            metrics.REDIS_ERRORS.labels("subscribe").inc()
            metrics.REJECTED.labels("redis").inc()
            await HttpError(
                503, "redis_unavailable", f"cannot read the stream now: {exc}", {"Retry-After": "2"}
            ).response()(scope, receive, send)
            return
        await self._stream(scope, receive, send, reader, after)

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
        hub.connections += 1
        metrics.CLIENTS.labels(stream).inc()
        watcher = asyncio.create_task(_watch_disconnect(receive, sub))
        timeout = settings.write_timeout_s
        try:
            await asyncio.wait_for(
                send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS}),
                timeout,
            )
            preamble = sse.retry(settings.retry_ms) + sse.comment(f"stream {stream}")
            if after is not None and after > (0, 0):
                preamble += await self._gap(stream, after)
            await asyncio.wait_for(_body(send, preamble), timeout)
            await self._catch_up(send, stream, after, join)
            await self._live(send, sub)
        except TimeoutError:
            # The client stopped reading: cut it off. Returning without completing the
            # response makes the server close the connection.
            metrics.CUTOFFS.labels(stream).inc()
            logger.info("cut off a client of %s that stopped reading", stream)
        except (redis.exceptions.RedisError, OSError) as exc:
            metrics.REDIS_ERRORS.labels("catch_up").inc()
            logger.warning("catch-up on %s failed: %s; the client will resume", stream, exc)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(_end(send, sse.retry(settings.retry_ms)), timeout)
        finally:
            watcher.cancel()
            reader.leave(sub)
            hub.connections -= 1
            metrics.CLIENTS.labels(stream).dec()

    async def _gap(self, stream: str, after: EntryId) -> bytes:
        info = await self.proxy.backend.info(stream)
        if not info.lost_after(after):
            return b""
        oldest = sse.format_entry_id(info.first) if info.first else None
        return sse.control_event("gap", {"requested": sse.format_entry_id(after), "oldest": oldest})

    async def _catch_up(self, send: Send, stream: str, after: EntryId | None, join: Join) -> None:
        timeout = self.proxy.settings.write_timeout_s
        if join.backlog is not None:
            if join.backlog:
                await asyncio.wait_for(_body(send, b"".join(join.backlog)), timeout)
            return
        assert after is not None
        page_size = self.proxy.settings.catchup_page
        cursor = after
        while cursor < join.live_from and join.subscriber.state == "live":
            entries = await self.proxy.backend.page(stream, cursor, join.live_from, page_size)
            if not entries:
                break
            chunk = b"".join(sse.entry_event(eid, fields) for eid, fields in entries)
            await asyncio.wait_for(_body(send, chunk), timeout)
            cursor = parse_entry_id(entries[-1][0])
            if len(entries) < page_size:
                break

    async def _live(self, send: Send, sub: Subscriber) -> None:
        settings = self.proxy.settings
        timeout = settings.write_timeout_s
        while True:
            batch = await sub.next_batch(settings.heartbeat_s)
            if sub.state == "gone":
                return
            if batch:
                await asyncio.wait_for(_body(send, b"".join(batch)), timeout)
            if sub.state == "overflow":
                overflow = sse.control_event(
                    "overflow",
                    {"detail": "client fell behind; reconnect with Last-Event-ID to resume"},
                )
                await asyncio.wait_for(_end(send, overflow + sse.retry(settings.retry_ms)), timeout)
                return
            if sub.state == "closing":
                # Shutting down: come back (to another instance) soon, with Last-Event-ID.
                come_back = sse.retry(random.randint(250, max(500, settings.retry_ms)))
                await asyncio.wait_for(_end(send, come_back), timeout)
                return
            if not batch:
                await asyncio.wait_for(_body(send, sse.HEARTBEAT), timeout)


async def _body(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _end(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": False})


async def _watch_disconnect(receive: Receive, sub: Subscriber) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            sub.close("gone")
            sub.state = "gone"
            return


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
        if not isinstance(value, str):
            raise HttpError(
                400,
                "bad_event",
                f"field {key[:60]!r} is {type(value).__name__}; every value must be a string "
                "(encode structured payloads as a JSON string)",
            )
    return data


def build_app(settings: ProxySettings) -> Starlette:
    proxy = Proxy(settings)

    async def publish(request: Request) -> Response:
        stream = request.path_params["stream"]
        try:
            proxy.check_stream(stream)
            principal = proxy.principal(request)
            if not principal.may_publish(stream):
                raise AuthError(
                    403, "publish_not_allowed", f"the token may not publish to {stream!r}"
                )
            proxy.check_available()
            fields = _fields(await _read_body(request, settings.max_payload_bytes))
            entry_id = await proxy.backend.publish(stream, fields, settings.retention_for(stream))
        except AuthError as exc:
            return _auth_response(exc)
        except HttpError as exc:
            return exc.response()
        except (redis.exceptions.RedisError, OSError) as exc:
            metrics.REDIS_ERRORS.labels("publish").inc()
            return HttpError(
                503, "redis_unavailable", f"the entry was not added: {exc}", {"Retry-After": "1"}
            ).response()
        metrics.PUBLISHED.labels(stream).inc()
        return JSONResponse({"id": entry_id, "stream": stream}, status_code=201)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problems: list[str] = []
        if proxy.hub.draining:
            problems.append("draining")
        try:
            await asyncio.wait_for(proxy.backend.ping(), 2.0)
        except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
            problems.append(f"redis: {type(exc).__name__}: {exc}")
        for name, reader in proxy.hub.readers.items():
            if not reader.alive:
                problems.append(f"reader {name}: {reader.error or 'stopped'}")
        body = {
            "status": "ready" if not problems else "not_ready",
            "problems": problems,
            "readers": len(proxy.hub.readers),
            "clients": proxy.hub.connections,
        }
        return JSONResponse(body, status_code=200 if not problems else 503)

    async def metrics_endpoint(request: Request) -> Response:
        metrics.READERS.set(len(proxy.hub.readers))
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not proxy.auth.enabled:
            logger.warning(
                "authorization is DISABLED (auth_mode=disabled): every client may read and "
                "publish every served stream"
            )
        await proxy.backend.start()
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
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
                max_age=600,
            )
        )
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.proxy = proxy
    return app


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
