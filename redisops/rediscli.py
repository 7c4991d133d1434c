"""Running `redis-cli` (slot migration, cluster checks, RDB snapshots) with TLS and a role.

The password goes through the REDISCLI_AUTH environment variable, never the command
line, so it does not show up in `ps` or in logged commands.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from redisops.client import Credentials, TlsClient
from redisops.errors import ConfigError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class CliResult:
    """What a redis-cli run printed, and how it ended."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def redis_cli_path() -> str:
    path = shutil.which("redis-cli")
    if path is None:
        raise ConfigError(
            "redis-cli not found on PATH; install it (Debian: apt-get install redis-tools)"
        )
    return path


def _argv(args: Sequence[str], tls: TlsClient, credentials: Credentials) -> list[str]:
    return [
        redis_cli_path(),
        *tls.redis_cli_args(),
        "--user",
        credentials.username,
        "--no-auth-warning",
        *args,
    ]


def _env(credentials: Credentials) -> dict[str, str]:
    env = dict(os.environ)
    env["REDISCLI_AUTH"] = credentials.password.get_secret_value()
    return env


def popen(args: Sequence[str], tls: TlsClient, credentials: Credentials) -> subprocess.Popen[bytes]:
    """Start redis-cli with binary stdout/stderr pipes (e.g. `--rdb -` to stream a dump)."""
    return subprocess.Popen(
        _argv(args, tls, credentials),
        env=_env(credentials),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run(
    args: Sequence[str],
    tls: TlsClient,
    credentials: Credentials,
    *,
    timeout: float = 120.0,
) -> CliResult:
    """Run `redis-cli <tls> --user <name> <args>` and capture its output."""
    try:
        proc = subprocess.run(
            _argv(args, tls, credentials),
            env=_env(credentials),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        return CliResult(tuple(args), -1, _text(exc.stdout), f"timed out after {timeout:.0f} s")
    # redis-cli colours --cluster output even when it is not a terminal.
    return CliResult(
        tuple(args), proc.returncode, _ANSI.sub("", proc.stdout), _ANSI.sub("", proc.stderr)
    )


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


def cluster_check(endpoint: str, tls: TlsClient, credentials: Credentials) -> CliResult:
    """`redis-cli --cluster check`: slots covered, nodes agree, no open slots."""
    result = run(["--cluster", "check", endpoint], tls, credentials, timeout=60)
    # redis-cli --cluster check exits 0 even on some errors; its [ERR] lines decide.
    if result.ok and "[ERR]" in result.stdout:
        return CliResult(result.args, 1, result.stdout, result.stderr)
    return result
