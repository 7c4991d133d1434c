"""Separate hosts on one machine: network namespaces on a bridge (`ip netns`, iproute2).

Each host is a network namespace with one veth into a bridge and its own address; the
machine itself has the bridge's first address, so tools on the host reach every host
directly. A cut between hosts is a pair of DROP rules inside the namespaces concerned
(each namespace has its own iptables tables), so nothing outside the namespaces this
module made is ever changed, and every rule vanishes with its namespace.

Everything made carries the prefix `rpn<id>` of one network: namespaces `rpn<id>-<host>`,
the bridge `rpn<id>br`, host-side veths `rpn<id>v<n>`, per-namespace files under
`/etc/netns/rpn<id>-<host>/` (`ip netns exec` mounts them over /etc: each host its own
/etc/hosts). `remove(network_id)` and `remove_all()` delete by that prefix only, so what a
crashed run left is removed by `redisops local down` of its twin (which knows its id).
Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from redisops.errors import ConfigError, OperationError

PREFIX = "rpn"
NETNS_ETC = Path("/etc/netns")
_ID = re.compile(r"^[a-z0-9]{1,6}$")
_HOST = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# 10.213.0.0/16 is this module's: one /24 per network (id hashed into the third octet)
SUPERNET = ipaddress.IPv4Network("10.213.0.0/16")


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{argv[0]} not found: install iproute2 and iptables "
            "(`sudo apt-get install -y iproute2 iptables`)"
        ) from exc
    if check and done.returncode != 0:
        raise OperationError(f"{' '.join(argv)}: {done.stderr.strip()[-300:]}")
    return done


def require_root() -> None:
    if os.geteuid() != 0:
        raise ConfigError(
            "separate hosts (network namespaces) need root: run as root, or use the "
            "loopback twin (the default)"
        )


@dataclasses.dataclass(frozen=True)
class Host:
    name: str  # the host's own name (node-0, proxy, client-a, …)
    namespace: str
    address: str  # its address on the bridge
    veth: str  # the host-side end

    def argv(self, *command: str) -> list[str]:
        """`command` run inside this host."""
        return ["ip", "netns", "exec", self.namespace, *command]


class Network:
    """One bridge and its hosts. `create` makes them; `remove` deletes all of it."""

    def __init__(self, network_id: str, hosts: Mapping[str, int] | Iterable[str]) -> None:
        """`hosts`: name -> its number on the /24 (2-254: the address's last octet, so a
        host keeps its address when others are added), or names, numbered from 2."""
        if not _ID.match(network_id):
            raise ConfigError(f"network id {network_id!r}: give 1-6 lower-case letters/digits")
        if isinstance(hosts, Mapping):
            numbers = dict(hosts)
        else:
            names = list(hosts)
            if len(set(names)) != len(names):
                raise ConfigError(f"host names {names}: give distinct names like node-0, proxy")
            numbers = {name: i + 2 for i, name in enumerate(names)}
        bad = [h for h in numbers if not _HOST.match(h)]
        if bad:
            raise ConfigError(f"host names {bad}: give distinct names like node-0, proxy")
        if len(set(numbers.values())) != len(numbers) or not all(
            2 <= n <= 254 for n in numbers.values()
        ):
            raise ConfigError(f"host numbers {numbers}: give each host its own number in 2-254")
        self.id = network_id
        self.subnet = subnet_of(network_id)
        self.gateway = str(self.subnet.network_address + 1)
        self.bridge = f"{PREFIX}{network_id}br"
        self.hosts = {
            name: Host(
                name,
                f"{PREFIX}{network_id}-{name}",
                str(self.subnet.network_address + number),
                f"{PREFIX}{network_id}v{number}",
            )
            for name, number in numbers.items()
        }

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    # ---- life cycle ----------------------------------------------------------------

    def create(self, names: dict[str, str] | None = None) -> None:
        """Make the bridge and every host (idempotent: what exists is kept). `names`: DNS
        name -> host name, written to every host's own /etc/hosts."""
        require_root()
        _refuse_dropped_forwarding()
        if not _exists_link(self.bridge):
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "addr", "replace", f"{self.gateway}/{self.subnet.prefixlen}",
              "dev", self.bridge])  # fmt: skip
        _run(["ip", "link", "set", self.bridge, "up"])
        existing = set(namespaces())
        for host in self.hosts.values():
            if host.namespace not in existing:
                _run(["ip", "netns", "add", host.namespace])
            inside = _run(host.argv("ip", "link", "show", "eth0"), check=False).returncode == 0
            if _exists_link(host.veth) and not inside:  # a crash between the two ends
                _run(["ip", "link", "del", host.veth])
            if not _exists_link(host.veth):
                peer = f"{host.veth}p"
                _run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", peer])
                _run(["ip", "link", "set", peer, "netns", host.namespace])
                _run(host.argv("ip", "link", "set", peer, "name", "eth0"))
                _run(["ip", "link", "set", host.veth, "master", self.bridge, "up"])
            _run(host.argv("ip", "addr", "replace", f"{host.address}/{self.subnet.prefixlen}",
                           "dev", "eth0"))  # fmt: skip
            _run(host.argv("ip", "link", "set", "eth0", "up"))
            _run(host.argv("ip", "link", "set", "lo", "up"))
            _run(host.argv("ip", "route", "replace", "default", "via", self.gateway))
        self.write_hosts(names or {})

    def write_hosts(self, names: dict[str, str]) -> None:
        """Every host's /etc/hosts (its own, through /etc/netns): localhost and `names`."""
        lines = ["127.0.0.1 localhost"]
        lines += [f"{self.hosts[host].address} {dns}" for dns, host in sorted(names.items())]
        for host in self.hosts.values():
            etc = NETNS_ETC / host.namespace
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text("\n".join(lines) + "\n")

    def remove(self) -> list[str]:
        return remove(self.id)

    # ---- faults --------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        """No packet between hosts `a` and `b`, either way (both stay up): `a` neither
        receives from `b` nor sends to it."""
        self._drop(a, inbound=[b], outbound=[b])

    def cut_one_way(self, a: str, b: str) -> None:
        """What `b` sends to `a` is lost; what `a` sends to `b` arrives (a one-way loss:
        UDP gets through one way, TCP handshakes fail both ways)."""
        self._drop(a, inbound=[b], outbound=[])

    def partition(self, side: Iterable[str]) -> None:
        """Cut every host in `side` from every host not in it, keeping the links within
        each side (and both sides' links to the machine itself). One rule set per host of
        `side`, applied at once (iptables-restore), so the cut has no ramp."""
        inside = list(dict.fromkeys(side))
        unknown = set(inside) - set(self.hosts)
        if unknown:
            raise ConfigError(f"partition: no hosts {sorted(unknown)} on network {self.id}")
        outside = [name for name in self.hosts if name not in inside]
        for a in inside:
            self._drop(a, inbound=outside, outbound=outside)

    def _drop(self, name: str, *, inbound: Sequence[str], outbound: Sequence[str]) -> None:
        """DROP rules inside host `name` (its own firewall), in one iptables-restore."""
        lines = ["*filter"]
        lines += [f"-I INPUT -s {self.hosts[b].address} -j DROP" for b in inbound]
        lines += [f"-I OUTPUT -d {self.hosts[b].address} -j DROP" for b in outbound]
        lines.append("COMMIT")
        argv = self.hosts[name].argv("iptables-restore", "--noflush")
        done = subprocess.run(
            argv, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=30,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise OperationError(f"{' '.join(argv)}: {done.stderr.strip()[-300:]}")

    def heal(self, hosts: Iterable[str] | None = None) -> None:
        """Remove every cut of `hosts` (default all)."""
        for name in hosts or self.hosts:
            _run(self.hosts[name].argv("iptables", "-F"))

    def move(self, name: str) -> str:
        """Give host `name` a new address on the bridge (a rescheduled pod's new IP)."""
        host = self.hosts[name]
        used = {h.address for h in self.hosts.values()} | {self.gateway}
        fresh = next(str(a) for a in reversed(list(self.subnet.hosts())) if str(a) not in used)
        # the old one goes first: deleting a primary address deletes its secondaries too
        _run(host.argv("ip", "addr", "flush", "dev", "eth0"))
        _run(host.argv("ip", "addr", "add", f"{fresh}/{self.subnet.prefixlen}", "dev", "eth0"))
        _run(host.argv("ip", "route", "replace", "default", "via", self.gateway))
        self.hosts[name] = dataclasses.replace(host, address=fresh)
        return fresh


def _refuse_dropped_forwarding() -> None:
    """Bridged traffic passes the machine's FORWARD chain when br_netfilter is loaded; a
    DROP policy there (a standard dockerd sets one) would cut every host off silently."""
    flag = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    try:
        bridged = flag.read_text().strip() == "1"
    except OSError:
        return  # br_netfilter not loaded: bridged frames never see iptables
    if not bridged:
        return
    done = _run(["iptables", "-S", "FORWARD"], check=False)
    if "-P FORWARD DROP" in done.stdout.splitlines()[:1]:
        raise ConfigError(
            "this machine's FORWARD policy is DROP and bridged traffic passes it "
            "(net.bridge.bridge-nf-call-iptables=1), so the hosts could not reach each "
            "other; this module changes no rule of the machine's own: allow the twin's "
            f"bridges (`iptables -I FORWARD -i '{PREFIX}+' -o '{PREFIX}+' -j ACCEPT`) or "
            "set net.bridge.bridge-nf-call-iptables=0, then run again"
        )


def used_subnets() -> set[ipaddress.IPv4Network]:
    """The /24s of SUPERNET this machine already has an address or a route in."""
    found = set()
    for argv in (["ip", "-o", "-4", "addr", "show"], ["ip", "-4", "route", "show"]):
        for word in _run(argv, check=False).stdout.split():
            try:
                net = ipaddress.IPv4Interface(word).network
            except ValueError:
                continue
            if net.overlaps(SUPERNET):
                found |= {s for s in SUPERNET.subnets(new_prefix=24) if s.overlaps(net)}
    return found


def free_network_id(attempts: int = 500) -> str:
    """A new network id whose /24 no address or route of this machine uses."""
    used = used_subnets()
    for _ in range(attempts):
        candidate = secrets.token_hex(2)
        if subnet_of(candidate) not in used:
            return candidate
    raise OperationError(
        f"no free /24 left in {SUPERNET} for a new twin network; remove old ones with "
        "`redisops local down` of their twins"
    )


def subnet_of(network_id: str) -> ipaddress.IPv4Network:
    """The /24 of network `network_id` inside SUPERNET (stable for the id)."""
    octet = sum(ord(c) * 31**i for i, c in enumerate(network_id)) % 250 + 1
    return ipaddress.IPv4Network(f"10.213.{octet}.0/24")


def namespaces() -> list[str]:
    done = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _exists_link(name: str) -> bool:
    return _run(["ip", "link", "show", name], check=False).returncode == 0


def _links(pattern: re.Pattern[str]) -> list[str]:
    done = _run(["ip", "-o", "link", "show"], check=False)
    found = []
    for line in done.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if pattern.fullmatch(name):
                found.append(name)
    return found


def remove(network_id: str) -> list[str]:
    """Delete everything of network `network_id`: its hosts' processes (by PID), its
    namespaces, veths, bridge and /etc/netns files. Returns what was removed."""
    if not _ID.match(network_id):
        raise ConfigError(f"network id {network_id!r}: give 1-6 lower-case letters/digits")
    return _remove(re.escape(network_id))


def remove_all() -> list[str]:
    """Delete every network this module made (after a crash, before a new run)."""
    return _remove("[a-z0-9]{1,6}")


def _remove(ids: str) -> list[str]:
    """What networks whose id matches the regex `ids` made, removed."""
    own_namespace = re.compile(f"{PREFIX}{ids}-[a-z][a-z0-9-]*")
    own_link = re.compile(f"{PREFIX}{ids}(br|v[0-9]+p?)")
    removed: list[str] = []
    for ns in namespaces():
        if not own_namespace.fullmatch(ns):
            continue
        pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 5
        while _run(["ip", "netns", "pids", ns], check=False).stdout.split():
            if time.monotonic() > deadline:
                raise OperationError(f"processes in namespace {ns} would not exit")
            time.sleep(0.05)
        _run(["ip", "netns", "del", ns])
        removed.append(f"netns {ns}")
    if NETNS_ETC.is_dir():  # also those of namespaces already gone (a reboot)
        for etc in NETNS_ETC.iterdir():
            if own_namespace.fullmatch(etc.name) and etc.is_dir():
                shutil.rmtree(etc)
    for link in _links(own_link):
        if _exists_link(link):  # a veth goes with its peer's namespace
            _run(["ip", "link", "del", link], check=False)
            removed.append(f"link {link}")
    return removed
