"""Run one page's script (redisops.runbooks.render_script) in one bash process.

bash runs with `-Eeuo pipefail`, the page's environment and the repository as its
working directory; its output goes to a log file as it is written. The script reports
to a control file (`block <i>`, `cmd <line>`, `fail <status> <line>`, `done`), which is
polled to enforce the per-block and per-page timeouts and, on failure, to name the page
line and the command that failed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from redisops.runbooks import CONTROL_ENV, Block, Command, Script

REPO = Path(__file__).resolve().parents[2]
POLL_S = 0.05
TAIL_LINES = 40
# Inherited variables that would make bash read files of their own, or change what the
# page's `redisops` commands act on.
_DROPPED_PREFIXES = ("BASH_FUNC_", "REDISOPS_")
_DROPPED = frozenset({"BASH_ENV", "ENV", "CDPATH", "GLOBIGNORE", "SHELLOPTS", "BASHOPTS"})
_SYNTAX = re.compile(r"line (\d+): (.*)")


@dataclass(frozen=True)
class Timeouts:
    block_s: float
    page_s: float


@dataclass
class Progress:
    """What the control file has said so far."""

    block: int | None = None
    block_started: float = 0.0
    blocks_started: int = 0
    last_line: int | None = None  # the last top-level command started, a page line
    failures: list[tuple[int, int]] = field(default_factory=list)  # (status, line)
    done: bool = False


@dataclass(frozen=True)
class Outcome:
    """How a page's script ended; `failure` is None when every block ran and exited 0."""

    source: str
    duration_s: float
    blocks_run: int
    blocks_total: int
    exit_code: int | None
    failure: str | None
    log: Path

    @property
    def ok(self) -> bool:
        return self.failure is None


def venv_bin() -> Path:
    """The bin directory of the Python running this (the project's virtualenv)."""
    return Path(sys.prefix) / "bin"


def page_env(state_dir: Path, control: Path) -> dict[str, str]:
    """The page's environment: ours minus what could redirect it, the target, the twin's
    state directory, and the virtualenv first on PATH. Never printed."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _DROPPED and not key.startswith(_DROPPED_PREFIXES)
    }
    env.update(
        REDISOPS_TARGET="local",
        REDISOPS_STATE_DIR=str(state_dir.absolute()),
        PATH=f"{venv_bin()}{os.pathsep}{env.get('PATH', os.defpath)}",
        PYTHONUNBUFFERED="1",
        COLUMNS="160",
    )
    env[CONTROL_ENV] = str(control)
    return env


def run_script(
    script: Script,
    *,
    state_dir: Path,
    work_dir: Path,
    timeouts: Timeouts,
    extra_env: Mapping[str, str] | None = None,
) -> Outcome:
    """Run `script` to its end, its first failure or a timeout; its output is in the log."""
    name = script.page.name
    work_dir.mkdir(parents=True, exist_ok=True)
    path, log, control = (work_dir / f"{name}{ext}" for ext in (".sh", ".log", ".ctl"))
    path.write_text(script.text)
    control.write_text("")
    started = time.monotonic()
    syntax = _syntax_error(path, script)
    if syntax is not None:
        log.write_text(syntax + "\n")
        return _outcome(script, started, Progress(), 2, syntax, log)
    env = {**page_env(state_dir, control), **(extra_env or {})}
    progress, code, timed_out = _supervise(path, log, control, env, timeouts)
    failure = _failure(script, progress, code, timed_out, timeouts)
    if failure is not None:
        failure = f"{failure}\n{_tail(log)}"
    return _outcome(script, started, progress, code, failure, log)


def _outcome(
    script: Script,
    started: float,
    progress: Progress,
    code: int | None,
    failure: str | None,
    log: Path,
) -> Outcome:
    return Outcome(
        source=script.page.source,
        duration_s=round(time.monotonic() - started, 2),
        blocks_run=progress.blocks_started,
        blocks_total=len(script.blocks),
        exit_code=code,
        failure=failure,
        log=log,
    )


def _syntax_error(path: Path, script: Script) -> str | None:
    """bash -n of the script: its message names a script line, which is the page line."""
    result = subprocess.run(
        ["bash", "-n", str(path)], capture_output=True, text=True, check=False, timeout=30
    )
    if result.returncode == 0:
        return None
    found = _SYNTAX.search(result.stderr)
    line, message = (int(found[1]), found[2]) if found else (1, result.stderr.strip())
    return f"{script.page.source}:{line}: bash: {message}"


def _supervise(
    path: Path, log: Path, control: Path, env: dict[str, str], timeouts: Timeouts
) -> tuple[Progress, int | None, str | None]:
    """Start bash in a process group of its own, follow the control file, stop the group
    on a timeout (and any background job the page left behind)."""
    progress = Progress()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "-Eeuo", "pipefail", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        reader = _ControlReader(control)
        started = time.monotonic()
        timed_out: str | None = None
        try:
            while proc.poll() is None:
                reader.update(progress)
                timed_out = _expired(progress, started, timeouts)
                if timed_out:
                    break
                time.sleep(POLL_S)
        finally:
            _stop_group(proc)
        reader.update(progress)
    return progress, None if timed_out else proc.returncode, timed_out


def _expired(progress: Progress, started: float, timeouts: Timeouts) -> str | None:
    now = time.monotonic()
    if now - started > timeouts.page_s:
        return "page"
    if progress.block is not None and now - progress.block_started > timeouts.block_s:
        return "block"
    return None


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the page's process group (ours: bash and what it started in it), then
    SIGKILL what is left after 5 s. Daemons (redis-server) left it with setsid."""
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _group_alive(proc):
            time.sleep(POLL_S)
        if not _group_alive(proc):
            break
    if proc.poll() is None:
        proc.wait(timeout=10)


def _group_alive(proc: subprocess.Popen[bytes]) -> bool:
    proc.poll()  # reap bash itself, so that only the rest of the group counts
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _ControlReader:
    """Reads the control file's new complete lines into a Progress."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def update(self, progress: Progress) -> None:
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            _record(progress, line.decode(errors="replace").split())


def _record(progress: Progress, words: list[str]) -> None:
    match words:
        case ["block", index] if index.isdigit():
            progress.block = int(index)
            progress.block_started = time.monotonic()
            progress.blocks_started += 1
        case ["cmd", line] if line.isdigit():
            progress.last_line = int(line) if int(line) > 1 else progress.last_line
        case ["fail", status, line] if status.isdigit() and line.isdigit():
            progress.failures.append((int(status), int(line)))
        case ["done"]:
            progress.done = True
        case _:
            pass


def _failure(
    script: Script,
    progress: Progress,
    code: int | None,
    timed_out: str | None,
    timeouts: Timeouts,
) -> str | None:
    """`<page>:<line>: <command> exited N` (or timed out, or stopped early); None when
    every block ran to its end."""
    if code == 0 and progress.done:
        return None
    where, command = _located(script, progress)
    if timed_out == "block":
        return (
            f"{where}: {command} still running after the block timeout of "
            f"{timeouts.block_s:g} s (block-timeout= in the page's runbook comment)"
        )
    if timed_out == "page":
        return (
            f"{where}: {command} still running after the page timeout of "
            f"{timeouts.page_s:g} s (timeout= in the page's runbook comment)"
        )
    if code == 0:
        return f"{where}: the page stopped early (exit 0) after {command}"
    message = f"{where}: {command} exited {code}"
    inner = _inner_failure(script, progress)
    if inner is not None and inner != script.command_at(progress.last_line or 0):
        return f"{message} (inside it: {script.page.source}:{inner.line}: {_quoted(inner)})"
    return message


def _located(script: Script, progress: Progress) -> tuple[str, str]:
    """The page line and the command the script was at (the last top-level command)."""
    source = script.page.source
    line = progress.last_line
    command = script.command_at(line) if line is not None else None
    if command is not None:
        return f"{source}:{command.line}", _quoted(command)
    block = _current_block(script, progress)
    if block is not None:
        return f"{source}:{block.line}", f"the ```sh {block.kind} block"
    return f"{source}:1", "the script's set-up"


def _inner_failure(script: Script, progress: Progress) -> Command | None:
    """The command where the ERR trap fired first (in a function, a subshell)."""
    for _status, line in progress.failures:
        command = script.command_at(line)
        if command is not None:
            return command
    return None


def _current_block(script: Script, progress: Progress) -> Block | None:
    if progress.block is None or progress.block >= len(script.blocks):
        return None
    return script.block_at(progress.block)


def _quoted(command: Command) -> str:
    return f"`{command.display}`"


def _tail(log: Path, lines: int = TAIL_LINES) -> str:
    text = log.read_text(errors="replace").rstrip("\n").splitlines()
    shown = "\n".join(f"    {line}" for line in text[-lines:])
    return f"  last {min(lines, len(text))} lines of output ({log}):\n{shown}"
