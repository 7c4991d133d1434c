"""Every mistake a user can make gets exit code 2 and one line naming it and the fix."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_base_port

REDISOPS = [sys.executable, "-m", "redisops"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REDISOPS, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        # No terminal: output must still be one plain line.
        stdin=subprocess.DEVNULL,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--shards", "2"], "--shards: must be at least 3"),
        (["--replicas", "-1"], "--replicas: must be 0 or more"),
        (["--node-timeout", "10"], "--node-timeout-ms: must be between 200 and 60000"),
        (["--base-port", "65000"], "--base-port: ports 65000-65005"),
    ],
)
def test_invalid_options_exit_2_and_create_nothing(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    state = tmp_path / "state"
    proc = run("local", "up", "--state-dir", str(state), *args)
    assert proc.returncode == 2
    assert expected in one_error_line(proc)
    assert not state.exists()


def test_a_port_in_use_exits_2_naming_the_port(tmp_path: Path) -> None:
    base = free_base_port(6)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", base + 2))
        blocker.listen()
        proc = run("local", "up", "--state-dir", str(tmp_path / "s"), "--base-port", str(base))
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert f"port {base + 2} on 127.0.0.1 is in use" in line and "--base-port" in line
    # Nothing was started or written: no redis-server answers, no twin left behind.
    for port in (base, base + 1):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert not (tmp_path / "s" / "state.json").exists()


def test_missing_redis_server_exits_2_with_the_install_command(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin")}
    proc = run("local", "up", "--state-dir", str(tmp_path / "s"), env=env)
    assert proc.returncode == 2
    assert "redis-server not found" in one_error_line(proc)
    assert "apt-get install" in one_error_line(proc)


def test_changing_the_base_port_of_an_existing_twin_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir()
    (state / "state.json").write_text('{"version": 1, "settings": {"base_port": 7000}}')
    proc = run("local", "up", "--state-dir", str(state), "--base-port", "7100")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "--base-port: this twin was created with 7000" in line and "down --purge" in line


def test_unreadable_state_exits_2_and_is_left_alone(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir()
    (state / "state.json").write_text("{ this is not json")
    for args in (["local", "up"], ["local", "status"], ["reconcile", "--target", "local"]):
        proc = run(*args, "--state-dir", str(state))
        assert proc.returncode == 2, (args, proc.stderr)
        assert "is unreadable" in one_error_line(proc)
    assert (state / "state.json").read_text() == "{ this is not json"
    # The way out the message names works even with the damaged file.
    proc = run("local", "down", "--purge", "--state-dir", str(state))
    assert proc.returncode == 0, proc.stderr
    assert not state.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["local", "status"],
        ["smoke", "--target", "local"],
        ["reconcile", "--target", "local"],
        ["local", "start-node", "7000"],
    ],
)
def test_commands_without_a_twin_say_how_to_start_one(tmp_path: Path, args: list[str]) -> None:
    proc = run(*args, "--state-dir", str(tmp_path / "none"))
    assert proc.returncode == 2
    assert "make up" in one_error_line(proc)


def test_reconcile_without_target_lists_what_is_missing() -> None:
    proc = run("reconcile")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "--node" in line and "--shards" in line and "--target local" in line


def test_unknown_targets_are_refused(tmp_path: Path) -> None:
    proc = run("smoke", "--target", "mars", "--state-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "use local (the twin) or kubernetes" in one_error_line(proc)


def test_malformed_option_values_are_usage_errors() -> None:
    proc = run("local", "up", "--shards", "three")
    assert proc.returncode == 2
    assert "--shards" in proc.stderr


BACKUP = "file:///tmp/redisops-no-such-location/20261126T013000Z"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # the twin supplies its own shape, nodes, certificates and credentials
        (
            ["reconcile", "--target", "local", "--shards", "4"],
            "--shards: not used with --target local",
        ),
        (
            ["reconcile", "--target", "local", "--replicas", "2"],
            "--replicas: not used with --target local",
        ),
        (["reconcile", "--target", "local", "--node", "127.0.0.1:7000"], "--node: not used"),
        (["reconcile", "--target", "local", "--acl-file", "/etc/hosts"], "--acl-file: not used"),
        (
            ["reconcile", "--target", "local", "--reload-tls", "--expect-node-cert", "/etc/hosts"],
            "--expect-node-cert: not used with --target local",
        ),
        (
            ["reconcile", "--target", "local", "--ca", "ca.crt", "--password-file", "p"],
            "--ca, --password-file: not used with --target local",
        ),
        # what only a TLS reload reads
        (
            [
                "reconcile",
                "--node",
                "127.0.0.1:7000",
                "--shards",
                "3",
                "--replicas",
                "0",
                "--ca",
                "ca.crt",
                "--password-file",
                "p",
                "--expect-node-cert",
                "n.crt",
            ],
            "--expect-node-cert: used only with --reload-tls",
        ),
        (
            [
                "reconcile",
                "--node",
                "127.0.0.1:7000",
                "--shards",
                "3",
                "--replicas",
                "0",
                "--ca",
                "ca.crt",
                "--password-file",
                "p",
                "--replication-password-file",
                "r",
            ],
            "--replication-password-file: used only with --reload-tls",
        ),
        (
            [
                "reconcile",
                "--node",
                "127.0.0.1:7000",
                "--shards",
                "3",
                "--replicas",
                "0",
                "--ca",
                "ca.crt",
                "--password-file",
                "p",
                "--cert",
                "c.crt",
            ],
            "--cert and --key go together",
        ),
        (
            ["backup", "create", "--target", "local", "--node", "127.0.0.1:7000"],
            "--node: not used with --target local",
        ),
        (
            ["restore", "--target", "local", "--user", "admin"],
            "--user: not used with --target local",
        ),
        (
            [
                "backup",
                "create",
                "--to",
                "file:///tmp/x",
                "--node",
                "127.0.0.1:7000",
                "--ca",
                "c",
                "--password-file",
                "p",
                "--key",
                "k.key",
            ],
            "--cert and --key go together",
        ),
        (
            ["backup", "verify", "20261127T000000Z", "--from", BACKUP],
            "--from names backup 20261126T013000Z",
        ),
        (
            ["restore", "--from", BACKUP, "--backup", "latest", "--target", "local"],
            "--from names backup",
        ),
        (
            ["backup", "status", "--target", "local", "--json", "--prometheus"],
            "--json and --prometheus",
        ),
        (["backup", "list", "--target", "mars", "--from", "file:///tmp/x"], "--target 'mars'"),
        (
            ["drill", "restore", "--target", "local", "--shards", "5"],
            "--shards: not used with --target local",
        ),
        (
            ["smoke", "--target", "local", "--target-file", "t.json"],
            "--target-file: not used with --target local",
        ),
        (
            ["local", "up", "--no-sse-proxy", "--proxy-port", "8800"],
            "--proxy-port: not used with --no-sse-proxy",
        ),
    ],
)
def test_an_option_the_mode_would_ignore_is_refused(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    state = tmp_path / "none"
    if args[:2] == ["local", "up"]:  # should it start anyway, not on anyone's ports
        args = [*args, "--base-port", str(free_base_port(6))]
    try:
        proc = run(*args, "--state-dir", str(state))
    finally:
        if state.exists():
            run("local", "down", "--purge", "--state-dir", str(state))
    assert proc.returncode == 2, proc.stderr
    assert expected in one_error_line(proc)
