from __future__ import annotations

import pytest

from redisops.cluster import (
    SLOTS,
    count_slots,
    even_slot_ranges,
    format_ranges,
    merge_ranges,
    parse_cluster_nodes,
    parse_info,
    uncovered_slots,
)

SAMPLE = """\
aaaa1111 10.0.0.1:6379@16379,redis-0.redis.ns.svc myself,master - 0 0 1 connected \
0-5460 [93->-bbbb2222]
bbbb2222 10.0.0.2:6379@16379,redis-1.redis.ns.svc master - 0 1700000000000 2 connected \
5461-10922 [93-<-aaaa1111]
cccc3333 10.0.0.3:6379@16379 master,fail - 1700000000000 1700000000000 3 disconnected 10923-16383
dddd4444 10.0.0.4:6379@16379,redis-3.redis.ns.svc slave aaaa1111 0 1700000000000 1 connected
eeee5555 :0@0 slave,fail?,noaddr cccc3333 0 0 3 disconnected
"""


def test_parse_cluster_nodes_reads_roles_slots_hostnames_and_flags() -> None:
    nodes = {n.node_id: n for n in parse_cluster_nodes(SAMPLE)}
    me = nodes["aaaa1111"]
    assert me.myself and me.is_primary
    assert me.hostname == "redis-0.redis.ns.svc"
    assert (me.ip, me.port, me.bus_port) == ("10.0.0.1", 6379, 16379)
    assert me.slots == ((0, 5460),)
    assert me.migrating == (93,)
    assert nodes["bbbb2222"].importing == (93,)
    assert nodes["cccc3333"].failed and nodes["cccc3333"].hostname is None
    assert nodes["dddd4444"].is_replica and nodes["dddd4444"].master_id == "aaaa1111"
    assert nodes["eeee5555"].suspected and nodes["eeee5555"].port == 0


def test_uncovered_slots_ignore_failed_primaries() -> None:
    assert uncovered_slots(parse_cluster_nodes(SAMPLE)) == ((10923, 16383),)


def test_even_slot_ranges_cover_every_slot_once() -> None:
    for shards in (3, 4, 7, 16):
        ranges = even_slot_ranges(shards)
        assert len(ranges) == shards
        assert count_slots(ranges) == SLOTS
        assert ranges[0][0] == 0 and ranges[-1][1] == SLOTS - 1
        sizes = {hi - lo + 1 for lo, hi in ranges}
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="at least 1"):
        even_slot_ranges(0)


def test_merge_and_format_ranges() -> None:
    assert merge_ranges([5, 1, 2, 3, 9, 10]) == ((1, 3), (5, 5), (9, 10))
    assert format_ranges(((1, 3), (5, 5))) == "1-3,5"
    assert format_ranges(()) == "-"


def test_parse_info_skips_sections_and_blank_lines() -> None:
    info = parse_info("# Cluster\r\ncluster_state:ok\r\n\r\ncluster_known_nodes:6\r\n")
    assert info == {"cluster_state": "ok", "cluster_known_nodes": "6"}
