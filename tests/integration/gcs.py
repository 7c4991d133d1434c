"""Google Cloud Storage without a cloud: gcp-storage-emulator, and a recording reverse
proxy in front of it that keeps every HTTP request the real client makes.

The emulator enforces no IAM, so tests prove permissions from the requests themselves:
the proxy records method, path and query of each request (and, for an upload, whether
it would replace an existing object, which needs `storage.objects.delete` on GCS).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.conftest import free_port


@contextlib.contextmanager
def emulator(bucket: str) -> Iterator[str]:
    """gcp-storage-emulator on 127.0.0.1 (in memory) holding `bucket`; yields its URL.
    Stopped by its PID."""
    port = free_port()
    binary = shutil.which("gcp-storage-emulator") or str(
        Path(sys.executable).parent / "gcp-storage-emulator"
    )
    proc = subprocess.Popen(
        [binary, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "-q",
         "--default-bucket", bucket],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the GCS emulator did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def env_with(**values: str) -> dict[str, str]:
    """The environment for a `redisops` subprocess: no Google settings of the caller's,
    never waiting for a metadata server, plus `values`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STORAGE_EMULATOR", "GOOGLE", "DISABLE_GCS_PYTHON_CLIENT"))
    }
    env.update(GCE_METADATA_HOST="127.0.0.1:1", GCE_METADATA_IP="127.0.0.1:1", **values)
    return env


@dataclass(frozen=True)
class Request:
    """One HTTP request as the client sent it."""

    method: str
    path: str  # decoded, without the query
    query: dict[str, list[str]]
    status: int
    #: an upload that starts a new object: its name, and whether it existed already
    upload_name: str | None = None
    replaces: bool = False

    @property
    def is_list(self) -> bool:
        return self.method == "GET" and self.path.endswith("/o") and "/b/" in self.path

    def __str__(self) -> str:
        query = "&".join(f"{k}={v[0]}" for k, v in sorted(self.query.items()))
        text = f"{self.method} {self.path}" + (f"?{query}" if query else "")
        if self.upload_name is not None:
            text += f" (object {self.upload_name}{', replacing it' if self.replaces else ''})"
        return text


class RecordingProxy:
    """A reverse proxy to the emulator on 127.0.0.1 that records each request."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._requests: list[Request] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                query = parse_qs(split.query)
                name = proxy._starts_upload(self.command, split.path, query, body)
                replaces = name is not None and proxy._exists(split.path, name)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    # Recorded before the client sees the answer: nothing is missed when
                    # the client exits right after it.
                    proxy._record(
                        Request(self.command, unquote(split.path), query, response.status,
                                name, replaces)
                    )  # fmt: skip
                    self.send_response(response.status)
                    for key, value in response.getheaders():
                        if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    @staticmethod
    def _starts_upload(
        method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> str | None:
        """The object name when this request starts an upload (media, multipart, or the
        first request of a resumable one); continuation requests carry upload_id."""
        if method != "POST" or not path.startswith("/upload/") or "upload_id" in query:
            return None
        if "name" in query:
            return query["name"][0]
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            meta = json.loads(body or b"{}")
            if isinstance(meta, dict) and "name" in meta:
                return str(meta["name"])
        start = body.find(b'"name"')  # multipart: the JSON part comes first
        if start >= 0:
            with contextlib.suppress(ValueError):
                text = body[start:].split(b"\r\n", 1)[0].decode()
                return str(json.loads("{" + text.rstrip("}") + "}")["name"])
        return "?"

    def _exists(self, upload_path: str, name: str) -> bool:
        bucket = upload_path.split("/b/", 1)[1].split("/", 1)[0]
        connection = http.client.HTTPConnection(*self.upstream, timeout=10)
        try:
            connection.request("GET", f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}")
            response = connection.getresponse()
            response.read()
            return response.status == 200
        finally:
            connection.close()

    def take(self, settle_s: float = 0.0) -> list[Request]:
        """The requests recorded so far (after `settle_s` for stragglers), and forget them."""
        if settle_s:
            time.sleep(settle_s)
        with self._lock:
            taken, self._requests = self._requests, []
        return taken
