"""What a Redis pod does before `redis-server` starts: point nodes.conf at where peers are now.

The cluster bus records peers by IP in nodes.conf. On Kubernetes every pod gets a new IP
when it restarts; after a full restart (a node-pool upgrade, a zone outage) every IP in
every nodes.conf is stale and no node finds another: the cluster stays down. Each line
also holds the peer's announced hostname (its stable pod DNS name), so the start step
resolves those names and rewrites the IPs. A peer whose name does not resolve yet keeps
its old IP: it will reach us when it starts, and gossip spreads the rest.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from redisops.errors import ConfigError


@dataclass(frozen=True)
class AddressChange:
    node_id: str
    hostname: str
    old_ip: str
    new_ip: str
    myself: bool


def resolve_ipv4(hostname: str) -> str | None:
    """The first IPv4 address of `hostname`, or None when it does not resolve (yet)."""
    try:
        infos = socket.getaddrinfo(hostname, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return None
    return str(infos[0][4][0]) if infos else None


def refresh_nodes_conf(
    text: str, resolve: Callable[[str], str | None], my_ip: str | None
) -> tuple[str, list[AddressChange]]:
    """Rewrite the IP of every node line whose hostname resolves elsewhere.

    A line reads `<id> <ip>:<port>@<bus>[,<hostname>[,aux=...]] <flags> ...`; the `myself`
    line takes `my_ip` (the pod's IP from the Downward API). Everything else, including
    the `vars` line and lines without a hostname, is kept byte for byte.
    """
    out: list[str] = []
    changes: list[AddressChange] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split(" ")
        if len(fields) < 8 or fields[0] == "vars":
            out.append(line)
            continue
        address, *extras = fields[1].split(",")
        ip_port, at, bus = address.partition("@")
        ip, colon, port = ip_port.rpartition(":")
        if not (at and colon and port.isdigit() and bus.isdigit()):
            raise ConfigError(
                f"nodes.conf line {number}: address {fields[1]!r} is not ip:port@busport; "
                "the file is damaged: move it aside and let reconcile re-join the node"
            )
        hostname = extras[0] if extras else ""
        myself = "myself" in fields[2].split(",")
        new_ip = my_ip if myself else (resolve(hostname) if hostname else None)
        if new_ip and new_ip != ip:
            changes.append(AddressChange(fields[0], hostname, ip, new_ip, myself))
            fields[1] = ",".join([f"{new_ip}:{port}@{bus}", *extras])
        out.append(" ".join(fields))
    return "\n".join(out) + ("\n" if text.endswith("\n") else ""), changes


def prepare(
    data_dir: Path, my_ip: str | None, resolve: Callable[[str], str | None] = resolve_ipv4
) -> list[AddressChange]:
    """Refresh `data_dir/nodes.conf` in place (atomically); nothing to do on a first start."""
    path = data_dir / "nodes.conf"
    if not path.exists():
        return []
    text = path.read_text()
    new_text, changes = refresh_nodes_conf(text, resolve, my_ip)
    if changes:
        temporary = path.with_suffix(".conf.refresh")
        temporary.write_text(new_text)
        temporary.replace(path)
    return changes
