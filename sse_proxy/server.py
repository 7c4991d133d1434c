"""`sse-proxy`: run the proxy under uvicorn, draining clients on SIGTERM.

On SIGTERM the proxy stops accepting, answers /readyz with 503, tells every client to
come back (`retry:` then end of stream, so EventSource reconnects elsewhere with
Last-Event-ID), and exits within `shutdown_grace_s`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import sys
from pathlib import Path
from types import FrameType

import uvicorn

from redisops import log
from redisops.errors import RedisOpsError
from sse_proxy.app import Proxy, ProxyApp
from sse_proxy.protocol import BoundedHttpToolsProtocol
from sse_proxy.settings import ProxySettings, load_settings

logger = logging.getLogger("sse_proxy")


class _QuietCutoffs(logging.Filter):
    """A client cut off mid-stream is logged by the proxy; uvicorn's own line is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


class DrainingServer(uvicorn.Server):
    """uvicorn, plus: on the first SIGTERM/SIGINT, drain the SSE clients at once."""

    def __init__(self, config: uvicorn.Config, proxy: Proxy) -> None:
        super().__init__(config)
        self.proxy = proxy
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None and not self.proxy.hub.draining:
            logger.info("signal %s: draining %d client(s)", sig, self.proxy.hub.connections)
            self._loop.call_soon_threadsafe(self.proxy.hub.drain)
        super().handle_exit(sig, frame)


def _raise_fd_limit() -> None:
    # Thousands of SSE connections need as many descriptors as the hard limit allows.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(settings: ProxySettings) -> None:
    log.setup(names=("sse_proxy", "redisops", "uvicorn"), json_lines=settings.log_json)
    logging.getLogger("uvicorn.error").addFilter(_QuietCutoffs())
    _raise_fd_limit()
    app = ProxyApp(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        backlog=4096,
        timeout_keep_alive=5,
        server_header=False,
        proxy_headers=False,  # no X-Forwarded-* rewriting layer around every request
        http=BoundedHttpToolsProtocol,
    )
    DrainingServer(config, app.proxy).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sse-proxy", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("SSE_PROXY_CONFIG_FILE"),
        help="JSON settings file (SSE_PROXY_* variables override it)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        serve(settings)
    except RedisOpsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
