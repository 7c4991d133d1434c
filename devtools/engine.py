"""The container engine the image build and the plan run use.

An engine that already answers (`DOCKER_HOST`, or the system's socket) is used as it is.
Otherwise, on a machine with Debian's `docker.io` and root, a private `dockerd` is started
with its own data root (so built images stay cached between runs) and no iptables or
default bridge (containers only ever join user-defined networks made by the caller);
`stop()` stops only an engine this module started, and unmounts what it leaves behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path(os.environ.get("REDIS_PLATFORM_ENGINE_ROOT", "/var/lib/redis-platform/engine"))
SYSTEM_SOCKET = Path("/var/run/docker.sock")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class EngineError(Exception):
    """The container engine is missing, cannot start, or refused a command."""


def docker_client() -> str:
    """Debian's docker client: a newer client elsewhere on PATH may refuse BuildKit with
    this daemon (it looks for a buildx plugin that does not exist here)."""
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).exists():
            return candidate
    raise EngineError(
        "no docker client: install Debian's docker.io (`make container-engine`) or Docker"
    )


@dataclass
class Engine:
    """A reachable engine: `host` is what `DOCKER_HOST` must say to reach it."""

    host: str
    root: Path | None = None
    #: the dockerd this process started (and so must stop), if any
    pid: int | None = None
    client: str = field(default_factory=docker_client)

    @property
    def started_here(self) -> bool:
        return self.pid is not None

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def run(
        self,
        args: Sequence[str],
        *,
        check: bool = True,
        input: bytes | None = None,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`docker <args>`, text output captured; a failure raises EngineError with stderr."""
        proc = subprocess.run(
            [self.client, *args],
            env={**self.env(), **(env or {})},
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise EngineError(
                f"docker {' '.join(args[:3])} failed ({proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        return proc

    def inspect(self, kind: str, name: str) -> dict[str, Any] | None:
        """`docker <kind> inspect name` as a dict, or None when it does not exist."""
        proc = self.run([kind, "inspect", name], check=False)
        if proc.returncode != 0:
            return None
        data: list[dict[str, Any]] = json.loads(proc.stdout)
        return data[0] if data else None

    def has_image(self, ref: str) -> bool:
        return self.inspect("image", ref) is not None


def _answers(host: str) -> bool:
    try:
        proc = subprocess.run(
            [docker_client(), "version", "--format", "{{.Server.Version}}"],
            env={**os.environ, "DOCKER_HOST": host},
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (subprocess.TimeoutExpired, EngineError):
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


def private_socket(root: Path) -> Path:
    return root / "docker.sock"


def find(root: Path = DEFAULT_ROOT) -> Engine | None:
    """An engine that already answers, without starting one."""
    candidates = []
    if os.environ.get("DOCKER_HOST"):
        candidates.append(os.environ["DOCKER_HOST"])
    candidates += [f"unix://{private_socket(root)}", f"unix://{SYSTEM_SOCKET}"]
    for host in candidates:
        if _answers(host):
            return Engine(host=host, root=root if str(root) in host else None)
    return None


def start(root: Path = DEFAULT_ROOT) -> Engine:
    """The engine that answers, or a private dockerd started under `root` (needs root)."""
    found = find(root)
    if found is not None:
        return found
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not Path(dockerd).exists():
        raise EngineError(
            "no container engine answers and dockerd is not installed: "
            "run `make container-engine` (Debian's docker.io) or set DOCKER_HOST"
        )
    if os.geteuid() != 0:
        raise EngineError(
            "no container engine answers, and starting dockerd needs root: "
            "run as root, start Docker yourself, or set DOCKER_HOST"
        )
    root.mkdir(parents=True, exist_ok=True)
    sock = private_socket(root)
    sock.unlink(missing_ok=True)
    _unmount_leftovers(root)
    log = (root / "dockerd.log").open("ab")
    proc = subprocess.Popen(
        [
            dockerd,
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
            f"--data-root={root / 'root'}",
            f"--exec-root={root / 'exec'}",
            f"--pidfile={root / 'dockerd.pid'}",
            f"--host=unix://{sock}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    engine = Engine(host=f"unix://{sock}", root=root, pid=proc.pid)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EngineError(
                f"dockerd exited with {proc.returncode} at start; see {root / 'dockerd.log'}"
            )
        if _answers(engine.host):
            return engine
        time.sleep(0.5)
    stop(engine)
    raise EngineError(
        f"dockerd did not answer within {START_TIMEOUT_S:.0f} s; see {root}/dockerd.log"
    )


def stop(engine: Engine) -> None:
    """Stop the engine if this process started it (by PID), and clean its mounts."""
    if engine.pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(engine.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(engine.pid, os.WNOHANG)
        except ChildProcessError:
            waited = engine.pid if not _alive(engine.pid) else 0
        if waited:
            break
        time.sleep(0.2)
    else:
        os.kill(engine.pid, signal.SIGKILL)
    engine.pid = None
    if engine.root is not None:
        _unmount_leftovers(engine.root)


def _is_dockerd(pid: int) -> bool:
    """A stale pidfile may name another process by now."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _unmount_leftovers(root: Path) -> None:
    """dockerd leaves an nsfs mount of its default network namespace behind."""
    exec_root = str(root / "exec")
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    for line in mounts:
        target = line.split()[1]
        if target.startswith(exec_root):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)


def stop_private(root: Path = DEFAULT_ROOT) -> bool:
    """Stop the private dockerd under `root` by its pidfile (`start()` in an earlier
    process); True when one was running."""
    pidfile = root / "dockerd.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return False
    if not _alive(pid) or not _is_dockerd(pid):
        return False
    stop(Engine(host=f"unix://{private_socket(root)}", root=root, pid=pid))
    return True
