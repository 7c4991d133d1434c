"""The pod runner's pure parts: Kubernetes' variable expansion, quantities, refusals of
fields it does not run, and the NXDOMAIN answers of the cluster DNS stand-in."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from devtools import dns, pods
from devtools.engine import Engine


def test_expansion_follows_kubernetes() -> None:
    env = {"POD_NAME": "redis-cluster-0", "A": "x"}
    assert pods.expand("$(POD_NAME).headless", env) == "redis-cluster-0.headless"
    assert pods.expand("$$(POD_NAME)", env) == "$(POD_NAME)"  # escaped
    assert pods.expand("$(MISSING)-$(A)", env) == "$(MISSING)-x"  # undefined stays


@pytest.mark.parametrize(
    ("quantity", "value"), [("512Mi", 512 * 2**20), ("1Gi", 2**30), ("64M", 64 * 10**6)]
)
def test_memory_quantities(quantity: str, value: int) -> None:
    assert pods.memory_bytes(quantity) == value


def test_a_memory_quantity_it_cannot_read_is_refused() -> None:
    with pytest.raises(pods.PodError, match=r"1\.5Gi"):
        pods.memory_bytes("1.5Gi")


def _cluster(tmp_path: Path) -> pods.Cluster:
    return pods.Cluster(
        Engine(host="unix:///nonexistent", client="docker"), "ns", "d", tmp_path, "p"
    )


def test_a_pod_field_it_does_not_run_is_refused_not_dropped(tmp_path: Path) -> None:
    spec = {"containers": [{"name": "c", "image": "i"}], "hostNetwork": True}
    with pytest.raises(pods.PodError, match="hostNetwork"):
        _cluster(tmp_path).start_pod("p", spec)


def test_absent_containers_must_exist(tmp_path: Path) -> None:
    spec = {"containers": [{"name": "c", "image": "i"}]}
    with pytest.raises(pods.PodError, match="exportr"):
        _cluster(tmp_path).start_pod("p", spec, absent={"exportr": "typo"})


def _query(name: str, ident: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", 1, 1)


def test_every_query_gets_nxdomain_with_its_id_and_question() -> None:
    query = _query("gone.redis.svc.cluster.local")
    reply = dns.nxdomain_reply(query)
    assert reply is not None
    ident, flags, qd, an, _, _ = struct.unpack("!HHHHHH", reply[:12])
    assert (ident, qd, an) == (0x1234, 1, 0)
    assert flags & 0x8000 and flags & 0x000F == dns.NXDOMAIN and flags & 0x0100  # QR, RD
    assert reply[12:] == query[12:]


def test_responses_and_truncated_packets_get_no_reply() -> None:
    assert dns.nxdomain_reply(b"\x00\x01") is None
    response = bytearray(_query("a.b"))
    response[2] |= 0x80
    assert dns.nxdomain_reply(bytes(response)) is None
    assert dns.nxdomain_reply(_query("a.b")[:-3]) is None
