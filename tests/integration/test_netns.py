"""Separate hosts on one machine (redisops.local.netns): real network namespaces on a
bridge, real TCP between them, cuts made and healed, addresses moved, and nothing left
behind — even after a crash. Needs root, as `make test` runs in CI."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from redisops.errors import ConfigError
from redisops.local import netns

SERVE = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen()
while True:
    c, peer = s.accept(); c.sendall(sys.argv[2].encode()); c.close()
"""
CONNECT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print(c.recv(100).decode())
except OSError as exc:
    print("unreachable", type(exc).__name__)
"""
PORT = 7100


@pytest.fixture
def network() -> Iterator[netns.Network]:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run the tests as root (CI does)")
    net = netns.Network(netns.free_network_id(), ["node-0", "node-1", "client"])
    servers: list[subprocess.Popen[bytes]] = []
    try:
        net.create(names={"node-0.twin.test": "node-0", "node-1.twin.test": "node-1"})
        for name in ("node-0", "node-1"):
            argv = net[name].argv(sys.executable, "-c", SERVE, str(PORT), name)
            servers.append(subprocess.Popen(argv))
        yield net
    finally:
        for server in servers:
            server.kill()
            server.wait()
        net.remove()


def reach(net: netns.Network, source: str | None, target: str, timeout: float = 1.0) -> str:
    """What `source` (None: the machine itself) gets from `target`'s server."""
    address = net[target].address
    argv = [sys.executable, "-c", CONNECT, address, str(PORT), str(timeout)]
    if source is not None:
        argv = net[source].argv(*argv)
    deadline = time.monotonic() + 5
    while True:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        if out == target or time.monotonic() > deadline or "TimeoutError" in out:
            return out
        time.sleep(0.1)  # the server may still be starting


def test_hosts_reach_each_other_and_the_machine_reaches_them(network: netns.Network) -> None:
    assert reach(network, "client", "node-0") == "node-0"
    assert reach(network, "node-1", "node-0") == "node-0"
    assert reach(network, None, "node-1") == "node-1"
    assert len({h.address for h in network.hosts.values()}) == 3
    for host in network.hosts.values():
        assert ipaddress.ip_address(host.address) in network.subnet


def test_each_host_resolves_the_names_of_its_own_etc_hosts(network: netns.Network) -> None:
    assert reach(network, "client", "node-1") == "node-1"  # its server is up
    by_name = CONNECT.replace("sys.argv[1]", "socket.gethostbyname(sys.argv[1])")
    argv = network["client"].argv(sys.executable, "-c", by_name, "node-1.twin.test", str(PORT), "1")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    assert out == "node-1"
    with pytest.raises(socket.gaierror):
        socket.gethostbyname("node-1.twin.test")  # the machine's own /etc/hosts is untouched


def test_a_cut_drops_traffic_both_ways_and_heal_restores_it(network: netns.Network) -> None:
    network.cut("node-0", "node-1")
    assert reach(network, "node-1", "node-0").startswith("unreachable")
    assert reach(network, "node-0", "node-1").startswith("unreachable")
    assert reach(network, "client", "node-0") == "node-0"  # the others are not cut
    network.heal()
    assert reach(network, "node-1", "node-0") == "node-0"


def test_a_partition_keeps_each_side_whole(network: netns.Network) -> None:
    network.partition(["node-0"])
    assert reach(network, "client", "node-0").startswith("unreachable")
    assert reach(network, "client", "node-1") == "node-1"
    assert reach(network, None, "node-0") == "node-0"  # the machine sees both sides
    with pytest.raises(ConfigError, match=r"no hosts \['nope'\]"):
        network.partition(["nope"])


def test_a_one_way_cut_is_asymmetric(network: netns.Network) -> None:
    network.cut_one_way("node-0", "node-1")  # node-0 ignores node-1, and sends it nothing
    assert reach(network, "node-1", "node-0").startswith("unreachable")
    assert reach(network, "client", "node-0") == "node-0"


def test_a_moved_host_answers_on_its_new_address_only(network: netns.Network) -> None:
    old = network["node-0"].address
    new = network.move("node-0")
    assert new != old and network["node-0"].address == new
    assert reach(network, "client", "node-0") == "node-0"
    argv = network["client"].argv(sys.executable, "-c", CONNECT, old, str(PORT), "1")
    gone = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    assert gone.startswith("unreachable"), gone


def test_nothing_is_left_after_remove_even_of_a_crashed_run() -> None:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run the tests as root (CI does)")
    net = netns.Network(netns.free_network_id(), ["a", "b"])
    net.create()
    sleeper = subprocess.Popen(net["a"].argv("sleep", "300"))  # a process the crash left
    # a crashed test leaves all of it; removing by the network's prefix finds it again
    removed = netns.remove(net.id)
    sleeper.wait(timeout=10)
    assert f"netns {net['a'].namespace}" in removed and f"link {net.bridge}" in removed
    assert not [ns for ns in netns.namespaces() if ns.startswith(f"rpn{net.id}")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"rpn{net.id}" not in links
    assert not (netns.NETNS_ETC / net["a"].namespace).exists()
    assert netns.remove(net.id) == []  # twice is safe


def test_remove_touches_only_its_own_network() -> None:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run the tests as root (CI does)")
    base = netns.free_network_id()
    mine, other = netns.Network(base, ["a"]), netns.Network(base + "0", ["a"])
    try:
        mine.create()
        other.create()  # its id starts with mine's: a prefix match would remove it too
        netns.remove(mine.id)
        assert other["a"].namespace in netns.namespaces()
    finally:
        netns.remove(mine.id)
        netns.remove(other.id)


@pytest.mark.parametrize(
    ("network_id", "hosts", "says"),
    [
        ("BAD", ["a"], "1-6 lower-case"),
        ("ok", ["node_0"], "distinct names"),
        ("ok", ["a", "a"], "distinct names"),
    ],
)
def test_bad_names_are_refused(network_id: str, hosts: list[str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        netns.Network(network_id, hosts)


def test_a_host_half_made_by_a_crash_is_made_whole_again() -> None:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run the tests as root (CI does)")
    net = netns.Network(netns.free_network_id(), ["a"])
    host = net["a"]
    try:
        # a crash between creating the veth pair and moving its end into the namespace
        subprocess.run(["ip", "netns", "add", host.namespace], check=True)
        subprocess.run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name",
                        f"{host.veth}p"], check=True)  # fmt: skip
        net.create()
        inside = subprocess.run(host.argv("ip", "-o", "-4", "addr", "show", "eth0"),
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert host.address in inside
    finally:
        net.remove()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert host.veth not in links


def test_etc_netns_files_of_namespaces_already_gone_are_removed_too() -> None:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run the tests as root (CI does)")
    network_id = netns.free_network_id()
    stale = netns.NETNS_ETC / f"{netns.PREFIX}{network_id}-node-0"  # left by a reboot
    stale.mkdir(parents=True)
    (stale / "hosts").write_text("127.0.0.1 localhost\n")
    other = netns.NETNS_ETC / "someone-elses"
    other.mkdir(parents=True, exist_ok=True)
    try:
        netns.remove(network_id)
        assert not stale.exists()
        assert other.exists()  # not ours: untouched
    finally:
        other.rmdir()
