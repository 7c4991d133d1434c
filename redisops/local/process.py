"""Starting and stopping the twin's processes (`redis-server`, the SSE proxy), always by PID."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from redisops.errors import ConfigError, OperationError

REDIS_SERVER_HINT = (
    "install it with `sudo apt-get install -y redis-server redis-tools` "
    "(or run `make up`, which does)"
)


def redis_server_path() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise ConfigError(f"redis-server not found on PATH; {REDIS_SERVER_HINT}")
    return path


def read_pid(pidfile: Path) -> int | None:
    try:
        text = pidfile.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {pidfile} ({exc.strerror}); check its permissions") from exc
    return int(text) if text.isdigit() else None


def cmdline(pid: int) -> str:
    """The process's command line ('' when it is gone or exiting)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def is_redis_process(pid: int, port: int) -> bool:
    """Whether `pid` is a live redis-server serving `port` (guards against PID reuse)."""
    line = cmdline(pid)
    # Redis rewrites its title to "redis-server 127.0.0.1:7000 [cluster]".
    return "redis-server" in line and f":{port}" in line


def running_pid(pidfile: Path, port: int) -> int | None:
    """The PID of the node's live process, or None (a stale pid file is ignored)."""
    pid = read_pid(pidfile)
    if pid is not None and is_redis_process(pid, port):
        return pid
    return None


def exited(pid: int) -> bool:
    """Whether `pid` has finished exiting (gone, or a zombie whose sockets are closed).

    An exiting process loses its command line before it closes its sockets, so
    `is_redis_process` turns false a moment before the ports are free.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state in ("Z", "X")


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections' local ports)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_base_port(host: str, count: int, bus_offset: int = 10000) -> int:
    """A base port with `count` free ports from it, and free bus ports above them, all
    below the ephemeral range: there, any outgoing connection on the machine could take a
    port between this check and redis-server's bind."""
    import random

    rng = random.Random()
    top = ephemeral_low() - bus_offset - count
    if top <= 10000:
        raise OperationError(
            f"the ephemeral port range starts at {ephemeral_low()}: no room below it for "
            f"{count} ports and their bus ports (+{bus_offset}); raise its start "
            "(net.ipv4.ip_local_port_range)"
        )
    for _ in range(500):
        base = rng.randrange(10000, top, 10)
        ports = [base + i for i in range(count)]
        if not any(_port_in_use(host, p) or _port_in_use(host, p + bus_offset) for p in ports):
            return base
    raise OperationError(f"no {count} free ports (and bus ports) found on {host}")


def port_in_use(host: str, port: int, wait: float = 0.0) -> bool:
    """Whether `port` cannot be bound; with `wait`, give a just-killed process time."""
    deadline = time.monotonic() + wait
    while _port_in_use(host, port):
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.05)
    return False


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def start(
    conf: Path,
    pidfile: Path,
    logfile: Path,
    port: int,
    timeout: float = 10.0,
    extra: tuple[str, ...] = (),
    prefix: tuple[str, ...] = (),
) -> int:
    """Start a daemonized redis-server and return its PID once it has written it.

    `extra` arguments override the config file (e.g. `--appendonly no` to load an RDB);
    `prefix` runs it through another command (`ip netns exec <host>`: on its own host).
    """
    pidfile.unlink(missing_ok=True)  # a stale file would be mistaken for success
    log_offset = logfile.stat().st_size if logfile.exists() else 0
    proc = subprocess.run(
        [*prefix, redis_server_path(), str(conf), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = running_pid(pidfile, port)
        if pid is not None:
            return pid
        if proc.returncode != 0:
            break
        time.sleep(0.02)
    reason = _log_tail(logfile, log_offset) or proc.stderr.strip() or proc.stdout.strip()
    raise OperationError(
        f"redis-server on port {port} did not start: {reason or 'no output'}; see {logfile}"
    )


def _log_tail(logfile: Path, offset: int) -> str:
    try:
        with logfile.open("rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    important = [line for line in lines if "#" in line or "FATAL" in line or "Error" in line]
    return " | ".join((important or lines)[-3:]).strip()


def stop(pid: int, port: int, timeout: float = 15.0) -> None:
    """SIGTERM (Redis saves and exits), then SIGKILL if it does not stop in time."""
    if is_redis_process(pid, port):
        terminate(pid, timeout)


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM, wait up to `timeout` for the exit, then SIGKILL (the caller checked the PID)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if _wait_gone(pid, timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, 5.0):
        raise OperationError(f"pid {pid} survived SIGKILL")


def start_daemon(
    argv: list[str],
    logfile: Path,
    pidfile: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start a long-running process detached from this one; record its PID. `env`
    (default: this process's) carries what must stay off the command line."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,  # not killed with the shell that ran `make up`
        )
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def kill(pid: int, port: int) -> None:
    """kill -9: a crash, for failover drills."""
    if is_redis_process(pid, port):
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exited(pid):
            return True
        time.sleep(0.02)
    return False
