"""A small SSE client for the smoke suite, the tests and the benchmark.

`Parser` follows the EventSource parsing rules of the HTML Living Standard (§ 9.2.5
"Parsing an event stream", § 9.2.6 "Interpreting an event stream"); `Subscription` reads
a stream in a background thread and, like a browser's EventSource, reconnects with
`Last-Event-ID` when the server ends the stream.

Not httpx-sse: it dispatches blocks without data (comments, `retry:`, `event:` alone, and
every blank line once an id was seen), takes `retry` through `int()` (`+5`, ` 5`, `٣`),
keeps a leading BOM and decodes with the response's charset; its events cannot tell an
empty `data:` (an event) from no data (none), so no layer on top can repair it. It also
reads only httpx responses, while `Subscription` needs a socket it can close from another
thread.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Event:
    """One dispatched event: what a browser's `MessageEvent` carries, plus the block's own id.

    `last_event_id` is the spec's `lastEventId` (the last `id` seen, carried over by events
    without one); `id` is the `id` field of this event's own block, None when it had none
    (the proxy's `gap` and `overflow` events), which tells stream entries from the rest.
    """

    event: str = "message"
    data: str = ""
    id: str | None = None
    last_event_id: str = ""
    received: float = 0.0  # time.time() when parsed

    def json(self) -> Any:
        return json.loads(self.data)


_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class Parser:
    """Incremental parser: feed bytes, get complete events (and `retry` updates).

    One parser serves one event source across its connections: call `new_stream()` when a
    connection starts. `last_id` is the event source's last event ID string (what a
    reconnection sends as `Last-Event-ID`; empty means none) and `retry_ms` its reconnection
    time. A new stream's last event ID buffer starts from `last_id`, as Chromium's
    EventSourceParser does, where the spec's text starts it empty (with which the `retry:`
    block that opens a reconnection would forget the position).
    """

    def __init__(self, last_id: str | None = None, retry_ms: int | None = None) -> None:
        self.last_id = last_id or ""
        self.retry_ms = retry_ms
        self.comments = 0
        self.new_stream()

    def new_stream(self) -> None:
        """A new connection: whatever the last one left incomplete is discarded."""
        self._head: bytes | None = b""  # the stream's first bytes, until a BOM is ruled out
        self._line = bytearray()  # the line being received
        self._after_cr = False  # the previous chunk ended in CR: a leading LF completes it
        self._data: list[str] = []
        self._event = ""
        self._id_buffer = self.last_id
        self._block_id: str | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        if self._head is not None:
            head = self._head + chunk
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._head = head  # maybe a BOM cut short: wait for more
                return []
            self._head = None
            chunk = head.removeprefix(_BOM)
        if not chunk:
            return []
        start = 1 if self._after_cr and chunk.startswith(b"\n") else 0
        # A CR ends its line at once; an LF right after it (next chunk) is not a new line.
        self._after_cr = chunk.endswith(b"\r")
        events: list[Event] = []
        for match in _LINE_END.finditer(chunk, start):
            self._line += chunk[start : match.start()]
            event = self._process(self._line.decode("utf-8", errors="replace"))
            self._line.clear()
            if event is not None:
                events.append(event)
            start = match.end()
        self._line += chunk[start:]
        return events

    def _process(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id_buffer = self._block_id = value
        elif name == "retry" and value.isascii() and value.isdigit():  # ASCII digits only
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        self.last_id = self._id_buffer
        block_id, self._block_id = self._block_id, None
        if not self._data:  # no data field: nothing to fire, and the type is dropped
            self._event = ""
            return None
        event = Event(
            event=self._event or "message",
            data="\n".join(self._data),
            id=block_id,
            last_event_id=self.last_id,
            received=time.time(),
        )
        self._data, self._event = [], ""
        return event


class Response:
    """A streamed HTTP/1.1 GET over a socket this object owns, so `close()` from any
    thread ends a blocked read at once (which httpx's sync client cannot do)."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        raw = socket.create_connection((parts.hostname, port), timeout=timeout)
        if parts.scheme == "https":
            raw = ssl.create_default_context().wrap_socket(raw, server_hostname=parts.hostname)
        self.sock = raw
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        head = [f"GET {target or '/'} HTTP/1.1", f"Host: {parts.netloc}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        self._pending = b""
        status_line, self.headers = self._read_head()
        self.status = int(status_line.split()[1])
        self.sock.settimeout(None)
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.body_prefix = self._pending

    def _read_head(self) -> tuple[str, dict[str, str]]:
        while b"\r\n\r\n" not in self._pending:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed before the response head")
            self._pending += data
        head, self._pending = self._pending.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return lines[0], headers

    def iter_body(self) -> Iterator[bytes]:
        """The body as it arrives (chunked transfer encoding removed)."""
        buffer = self.body_prefix
        while True:
            if not self.chunked:
                if buffer:
                    yield buffer
                    buffer = b""
                data = self.sock.recv(65536)
                if not data:
                    return
                buffer = data
                continue
            while b"\r\n" in buffer:
                size_text, rest = buffer.split(b"\r\n", 1)
                size = int(size_text.split(b";")[0], 16)
                if size == 0:
                    return
                if len(rest) < size + 2:
                    break
                yield rest[:size]
                buffer = rest[size + 2 :]
            data = self.sock.recv(65536)
            if not data:
                return
            buffer += data

    def read_all(self) -> bytes:
        return b"".join(self.iter_body())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class Subscription:
    """Reads `url` in a thread; collects events; reconnects like EventSource if asked."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        last_event_id: str | None = None,
        reconnect: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.token = token
        self.reconnect = reconnect
        self.timeout = timeout
        self.events: list[Event] = []
        self.positions: list[Event] = []  # the proxy's `position` events (one per connection)
        self.statuses: list[int] = []
        self.body = b""  # the body of a refusal (non-200)
        self.errors: list[str] = []
        self.connections = 0
        self.parser = Parser(last_id=last_event_id)
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._response: Response | None = None
        self._thread = threading.Thread(target=self._run, name="sse-subscription", daemon=True)

    def __enter__(self) -> Subscription:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, wait: bool = True) -> None:
        if self._thread.is_alive() or self._stop.is_set():
            return
        self._thread.start()
        if wait and not self.connected.wait(self.timeout):
            raise TimeoutError(f"no response from {self.url}: {self.errors[-1:]}")

    def close(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            response.close()
        self._thread.join(timeout=5)

    def entries(self) -> list[Event]:
        """Events that carry an entry id (not gap/overflow/control events)."""
        with self._lock:
            return [e for e in self.events if e.id is not None]

    def wait_for(self, check: Callable[[list[Event]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if check(list(self.events)):
                    return True
            time.sleep(0.01)
        with self._lock:
            return check(list(self.events))

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.parser.last_id:  # as EventSource: no header for an empty last event ID
            headers["Last-Event-ID"] = self.parser.last_id
        return headers

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = Response(self.url, self._headers(), self.timeout)
                self._response = response
                self.statuses.append(response.status)
                self.connections += 1
                self.connected.set()
                if response.status != 200:
                    self.body = response.read_all()
                    return
                self.parser.new_stream()
                for chunk in response.iter_body():
                    events = self.parser.feed(chunk)
                    if events:
                        with self._lock:
                            for event in events:  # an app listens to entries, not positions
                                (
                                    self.positions if event.event == "position" else self.events
                                ).append(event)
            except (OSError, ValueError) as exc:
                if not self._stop.is_set():
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                if self._response is not None:
                    self._response.close()
                    self._response = None
            if not self.reconnect:
                return
            self._stop.wait((self.parser.retry_ms or 1000) / 1000)
