"""A real browser: Chromium's EventSource, the cookie flow, reconnection after a restart."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from redisops.local.twin import Twin
from tests.conftest import free_port
from tests.integration.proxies import admin, publisher, start_proxy, stop

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

PAGE = """<!doctype html>
<html><body>
<script>
  // What a frontend does: EventSource with credentials, the token in a cookie.
  window.received = [];
  window.errors = 0;
  const source = new EventSource("{proxy}/v1/streams/{stream}?from=earliest",
                                 {{ withCredentials: true }});
  source.onmessage = (event) => {{
    window.received.push({{ id: event.lastEventId, data: JSON.parse(event.data) }});
  }};
  source.onerror = () => {{ window.errors += 1; }};
</script>
</body></html>
"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


@contextmanager
def page_server(root: Path) -> Iterator[str]:
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_browser_eventsource_resumes_after_a_proxy_restart_with_each_event_once(
    session_twin: Twin, tmp_path: Path
) -> None:
    if shutil.which("chromium") is None:
        pytest.fail("Debian chromium is missing: run `make browser` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    stream = f"standup:browser-{uuid.uuid4().hex[:8]}"
    proxy_port = free_port()
    site = tmp_path / "site"
    site.mkdir()
    with page_server(site) as origin:
        options = {"cors_origins": [origin], "retry_ms": 500, "shutdown_grace_s": 3}
        proxy = start_proxy(session_twin, tmp_path, port=proxy_port, **options)
        (site / "index.html").write_text(PAGE.format(proxy=proxy.url, stream=stream))
        writer = publisher(session_twin)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                context = browser.new_context()
                context.add_cookies(
                    [{"name": "sse_token", "value": proxy.token(), "url": proxy.url}]
                )
                page = context.new_page()
                page.goto(f"{origin}/index.html")
                for i in range(5):
                    writer.xadd(stream, {"n": str(i)})
                page.wait_for_function("window.received.length === 5", timeout=10_000)

                stop(proxy.proc)  # the browser is told to come back, and finds nobody
                for i in range(5, 10):
                    writer.xadd(stream, {"n": str(i)})
                time.sleep(1.0)
                proxy = start_proxy(session_twin, tmp_path, port=proxy_port, **options)
                page.wait_for_function("window.received.length >= 10", timeout=20_000)
                time.sleep(0.5)  # anything duplicated would arrive now
                received = page.evaluate("window.received")
                errors = page.evaluate("window.errors")
                browser.close()
        finally:
            writer.close()
            stop(proxy.proc)
    client = admin(session_twin)
    try:
        entries: Any = client.xrange(stream, "-", "+")
        held = [str(entry_id) for entry_id, _ in entries]
    finally:
        client.close()
    assert [r["id"] for r in received] == held
    assert [r["data"]["n"] for r in received] == [str(i) for i in range(10)]
    assert errors >= 1  # it noticed the restart and reconnected by itself
