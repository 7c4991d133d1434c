"""Ports the tests and the drills pick for twins stay out of the kernel's ephemeral range:
an outgoing connection anywhere on the machine may take any port of that range between
the moment a free base is chosen and the moment redis-server binds (a CI failure: "bind:
Address already in use" on a bus port, base + 10000)."""

from __future__ import annotations

from pathlib import Path

import pytest

from redisops.local import process
from redisops.local.settings import BUS_OFFSET
from tests import conftest


def ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


@pytest.mark.parametrize(
    "choose",
    [lambda n: process.free_base_port("127.0.0.1", n), conftest.free_base_port],
    ids=["redisops", "tests"],
)
def test_a_twin_s_node_and_bus_ports_are_below_the_ephemeral_range(choose: object) -> None:
    low = ephemeral_low()
    for _ in range(200):
        count = 12
        base = choose(count)  # type: ignore[operator]
        assert base >= 1024
        assert base + count - 1 + BUS_OFFSET < low, (base, low)
