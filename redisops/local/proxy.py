"""The twin's SSE proxy: the same `sse_proxy` program production runs, as a local process.

`redisops` does not import the proxy: it writes the proxy's JSON settings, starts
`python -m sse_proxy --config ...` and talks to it over HTTP. It also keeps a development
token signed with the twin's HS256 secret.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from redisops import acl, tokens
from redisops.errors import ConfigError, OperationError
from redisops.local import process
from redisops.local.settings import HOST, PROXY_HOST, TwinLayout, TwinSettings
from redisops.tls import write_private

DEV_TOKEN_TTL_S = 30 * 86400
RENEW_TOKEN_BEFORE_S = 7 * 86400
GRACE_S = 5.0


class TwinProxy:
    """Files and process of the twin's proxy."""

    def __init__(self, layout: TwinLayout) -> None:
        self.layout = layout
        self.root = layout.root / "sse-proxy"

    @property
    def config_file(self) -> Path:
        return self.root / "config.json"

    @property
    def pidfile(self) -> Path:
        return self.root / "proxy.pid"

    @property
    def logfile(self) -> Path:
        return self.root / "proxy.log"

    @property
    def secret_file(self) -> Path:
        return self.layout.secrets / "sse-jwt.secret"

    @property
    def token_file(self) -> Path:
        return self.layout.secrets / "sse-dev.token"

    @staticmethod
    def url(settings: TwinSettings) -> str:
        return f"http://{settings.proxy_host}:{settings.proxy_port}"

    # ---- configuration -------------------------------------------------------------

    def ensure_credentials(self) -> str:
        """The HS256 secret (made once) and a development token (renewed before expiry)."""
        if not self.secret_file.exists():
            write_private(self.secret_file, (secrets.token_urlsafe(48) + "\n").encode())
        secret = self.secret_file.read_text().strip()
        token = self.token_file.read_text().strip() if self.token_file.exists() else ""
        if tokens.expires_in(token) < RENEW_TOKEN_BEFORE_S:
            token = tokens.mint(secret, "local-dev", ["*"], ["*"], DEV_TOKEN_TTL_S)
            write_private(self.token_file, (token + "\n").encode())
        return token

    def settings_json(self, settings: TwinSettings) -> dict[str, Any]:
        tls = self.layout.tls
        return {
            "host": settings.proxy_host,
            "port": settings.proxy_port,
            "redis_mode": "cluster",
            "redis_nodes": [f"{e.host}:{e.port}" for e in settings.endpoints],
            "redis_tls": True,
            "redis_tls_ca_file": str(tls.ca_cert),
            "redis_tls_cert_file": str(tls.client_cert(acl.READER)),
            "redis_tls_key_file": str(tls.client_key(acl.READER)),
            "reader_username": acl.READER,
            "reader_password_file": str(self.layout.password_file(acl.READER)),
            "publisher_username": acl.PUBLISHER,
            "publisher_password_file": str(self.layout.password_file(acl.PUBLISHER)),
            "streams": list(settings.streams),
            "jwt_secret_file": str(self.secret_file),
            "shutdown_grace_s": GRACE_S,
            "max_connections": settings.proxy_max_connections,
            "log_json": True,
        }

    def write_config(self, settings: TwinSettings) -> bool:
        """Write the proxy's settings; True when they changed."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = json.dumps(self.settings_json(settings), indent=2) + "\n"
        if self.config_file.exists() and self.config_file.read_text() == text:
            return False
        self.config_file.write_text(text)
        return True

    # ---- process -------------------------------------------------------------------

    def running_pid(self) -> int | None:
        pid = process.read_pid(self.pidfile)
        if (
            pid is not None
            and "sse_proxy" in process.cmdline(pid)
            and str(self.config_file) in process.cmdline(pid)
        ):
            return pid
        return None

    def start(self, settings: TwinSettings, timeout: float = 20.0) -> int:
        network = settings.network()
        if network is None and process.port_in_use(HOST, settings.proxy_port, wait=3.0):
            raise ConfigError(
                f"port {settings.proxy_port} on {HOST} (the SSE proxy) is in use by another "
                "process; stop it or choose another --proxy-port"
            )
        offset = self.logfile.stat().st_size if self.logfile.exists() else 0
        on_host = network[PROXY_HOST].argv() if network is not None else []
        pid = process.start_daemon(
            [*on_host, sys.executable, "-m", "sse_proxy", "--config", str(self.config_file)],
            self.logfile,
            self.pidfile,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.exited(pid):
                break
            if self.ready(settings):
                return pid
            time.sleep(0.1)
        tail = self.logfile.read_text(errors="replace")[offset:].strip().splitlines()[-3:]
        raise OperationError(
            f"the SSE proxy did not become ready on port {settings.proxy_port}: "
            f"{' | '.join(tail) or 'no output'}; see {self.logfile}"
        )

    def stop(self) -> int | None:
        pid = self.running_pid()
        if pid is not None:
            process.terminate(pid, GRACE_S + 5.0)
        self.pidfile.unlink(missing_ok=True)
        return pid

    def ready(self, settings: TwinSettings) -> bool:
        try:
            url = f"{self.url(settings)}/readyz"  # http://127.0.0.1:<port>, or its host's
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def status(self, settings: TwinSettings) -> dict[str, Any]:
        pid = self.running_pid()
        token = self.token_file.read_text().strip() if self.token_file.exists() else None
        return {
            "enabled": settings.sse_proxy,
            "url": self.url(settings),
            "pid": pid,
            "running": pid is not None,
            "ready": pid is not None and self.ready(settings),
            "token": token,
            "token_file": str(self.token_file),
            "jwt_secret_file": str(self.secret_file),
            "config_file": str(self.config_file),
            "log_file": str(self.logfile),
        }
