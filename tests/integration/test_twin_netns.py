"""The twin on separate hosts (`redisops local up --hosts netns`): every node, the SSE
proxy and two client hosts in network namespaces of their own, the same rendering, TLS
and reconcile as on loopback; `down` removes every namespace and link, also what a
crashed run left. Needs root (CI runs as root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from redisops.errors import ConfigError
from redisops.local import netns
from redisops.local.settings import TwinSettings
from redisops.local.twin import Twin
from tests.conftest import free_base_port, free_port, requires_redis

REDISOPS = [sys.executable, "-m", "redisops"]


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run the tests as root (CI does)")


def net_namespace(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twin]:
    requires_redis()
    needs_root()
    twin = Twin(tmp_path_factory.mktemp("netns-twin"))
    try:
        report = twin.up(hosts="netns", base_port=free_base_port(6), proxy_port=free_port())
        assert report.healthy, report.findings
        yield twin
    finally:
        twin.down(purge=True)


def test_every_node_and_the_proxy_run_on_a_host_of_their_own(twin: Twin) -> None:
    status = twin.status()
    assert status["healthy"], status
    network = status["network"]
    assert network["mode"] == "netns"
    nodes = status["nodes"]
    addresses = {n["host"] for n in nodes}
    assert len(addresses) == len(nodes) == 6 and "127.0.0.1" not in addresses
    namespaces = {net_namespace(n["pid"]) for n in nodes}
    proxy_pid = status["sse_proxy"]["pid"]
    assert len(namespaces | {net_namespace(proxy_pid)}) == 7  # each its own
    assert net_namespace(os.getpid()) not in namespaces
    hosts = network["hosts"]
    assert {"proxy", "client-a", "client-b"} <= set(hosts)
    assert status["sse_proxy"]["url"] == f"http://{hosts['proxy']['address']}:" + str(
        status["settings"]["proxy_port"]
    )


def test_the_certificate_names_each_node_s_address_and_clients_verify_it(twin: Twin) -> None:
    """A client on another host reaches a node by its address with the certificate checked
    (redis-cli over TLS as monitoring, from the client-a namespace)."""
    status = twin.status()
    node = status["nodes"][0]
    client = status["network"]["hosts"]["client-a"]["namespace"]
    tls = status["tls"]
    password = Path(status["users"]["monitoring"]["password_file"]).read_text().strip()
    argv = ["ip", "netns", "exec", client, "redis-cli", "--tls", "--cacert", tls["ca"],
            "--cert", tls["clients"]["monitoring"]["cert"],
            "--key", tls["clients"]["monitoring"]["key"],
            "-h", node["host"], "-p", str(node["port"]), "--user", "monitoring",
            "--no-auth-warning", "PING"]  # fmt: skip
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "REDISCLI_AUTH": password},
    )
    assert done.stdout.strip() == "PONG", done


def test_the_smoke_suite_passes_against_it(twin: Twin, tmp_path: Path) -> None:
    done = subprocess.run(
        [*REDISOPS, "smoke", "--target", "local", "--state-dir", str(twin.layout.root),
         "--report-dir", str(tmp_path), "--json", "-k", "health or acl or tls or stream"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = json.loads((tmp_path / "smoke-report.json").read_text())
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    assert report["counts"]["passed"] > 50, report["counts"]


def test_the_hosts_mode_of_a_twin_cannot_change(twin: Twin) -> None:
    with pytest.raises(ConfigError, match=r"--hosts: this twin was created with 'netns'"):
        twin.up(hosts="loopback")


def test_down_after_a_crash_removes_every_namespace_and_link(tmp_path: Path) -> None:
    """A run killed before its clean-up leaves processes and namespaces; `redisops local
    down` (a new process, reading only the state directory) removes all of them."""
    requires_redis()
    needs_root()
    state = tmp_path / "crashed"
    base = free_base_port(6)
    up = [*REDISOPS, "local", "up", "--hosts", "netns", "--state-dir", str(state),
          "--base-port", str(base), "--no-sse-proxy", "--json"]  # fmt: skip
    done = subprocess.run(up, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    settings = TwinSettings.model_validate(json.loads(done.stdout)["status"]["settings"])
    assert settings.network_id is not None
    mine = f"{netns.PREFIX}{settings.network_id}"
    assert any(ns.startswith(mine) for ns in netns.namespaces())
    down = [*REDISOPS, "local", "down", "--state-dir", str(state)]
    done = subprocess.run(down, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not [ns for ns in netns.namespaces() if ns.startswith(mine)]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert mine not in links
    subprocess.run([*down, "--purge"], capture_output=True, timeout=120, check=True)


def test_a_bad_hosts_mode_is_refused_by_name(tmp_path: Path) -> None:
    done = subprocess.run(
        [*REDISOPS, "local", "up", "--hosts", "vm", "--state-dir", str(tmp_path / "t")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--hosts" in done.stderr and "'loopback' or 'netns'" in done.stderr, done.stderr
    assert not (tmp_path / "t").exists()  # nothing written


def test_without_root_netns_is_refused_with_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requires_redis()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigError, match=r"need root.*loopback twin"):
        Twin(tmp_path / "t").up(hosts="netns", base_port=free_base_port(6))
