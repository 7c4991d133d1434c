"""The fan-out's bookkeeping: joining at any position gives every entry once, in order.

These drive `StreamReader._deliver` and `join` directly (no Redis involved: the reader
loop that feeds them is tested against the twin in tests/integration)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from smoke_tests.sse_client import Parser
from sse_proxy.hub import Hub, StreamReader, Subscriber
from sse_proxy.metrics import REGISTRY
from sse_proxy.settings import load_settings
from sse_proxy.sse import HEARTBEAT, entry_event, parse_entry_id


def reader(**overrides: Any) -> StreamReader:
    settings = load_settings(redis_tls_ca_file="/ca", auth_mode="disabled", **overrides)
    hub = Hub(settings, backend=None)  # type: ignore[arg-type]
    return StreamReader(hub, "agent_updates")


def entry(n: int) -> tuple[str, dict[str, str]]:
    return f"{1000 + n}-0", {"n": str(n)}


def ids(chunks: list[bytes]) -> list[str]:
    return [e.id for e in Parser().feed(b"".join(chunks)) if e.id]


def test_a_subscriber_joining_mid_stream_gets_ring_history_then_live_once() -> None:
    r = reader(ring_size=100)
    r._deliver([entry(i) for i in range(10)])
    join = r.join(parse_entry_id("1004-0"))
    assert join.backlog is not None
    assert ids(join.backlog) == [f"{1000 + i}-0" for i in range(5, 10)]
    r._deliver([entry(i) for i in range(10, 13)])
    assert ids(list(join.subscriber.buffer)) == ["1010-0", "1011-0", "1012-0"]


def test_history_older_than_the_ring_is_paged_from_redis_up_to_the_join_point() -> None:
    r = reader(ring_size=5)
    r._deliver([entry(i) for i in range(20)])
    join = r.join(parse_entry_id("1003-0"))
    assert join.backlog is None  # the caller pages (1003-0, live_from] with XRANGE
    assert join.live_from == parse_entry_id("1019-0")
    assert r.ring_floor == parse_entry_id("1014-0")
    edge = r.join(parse_entry_id("1014-0"))
    assert edge.backlog is not None and ids(edge.backlog) == [
        f"{1000 + i}-0" for i in range(15, 20)
    ]


def test_without_a_ring_every_catch_up_is_paged() -> None:
    r = reader(ring_size=0)
    r._deliver([entry(i) for i in range(3)])
    assert r.join(parse_entry_id("1001-0")).backlog is None
    assert r.join(None).backlog == []


def test_now_joins_at_the_current_position_with_no_backlog() -> None:
    r = reader()
    r._deliver([entry(i) for i in range(3)])
    join = r.join(None)
    assert join.backlog == [] and join.live_from == parse_entry_id("1002-0")


def test_a_client_resuming_ahead_of_the_reader_skips_what_it_has() -> None:
    r = reader()
    r._deliver([entry(i) for i in range(3)])
    join = r.join(parse_entry_id("1005-0"))  # the client saw 1003..1005 elsewhere
    assert join.backlog == []
    r._deliver([entry(i) for i in range(3, 5)])
    r._deliver([entry(i) for i in range(5, 8)])
    assert ids(list(join.subscriber.buffer)) == ["1006-0", "1007-0"]
    assert join.subscriber.skip_until is None


def test_entries_at_or_before_the_position_are_never_delivered_twice() -> None:
    r = reader()
    sub = r.join(None).subscriber
    r._deliver([entry(1), entry(2)])
    r._deliver([entry(2), entry(1), entry(3)])  # e.g. re-read after a failover
    assert ids(list(sub.buffer)) == ["1001-0", "1002-0", "1003-0"]


def test_a_slow_subscriber_is_cut_off_and_the_others_are_untouched() -> None:
    r = reader(client_buffer=5)
    slow = r.join(None).subscriber
    fast = r.join(None).subscriber
    r._deliver([entry(i) for i in range(20)])  # a burst bigger than the buffer: accepted
    assert slow.state == fast.state == "live"
    for i in range(20, 28):
        fast.buffer.clear()  # the fast one keeps up
        fast.pending = 0
        r._deliver([entry(i)])
    assert str(slow.state) == "overflow"
    assert not slow.buffer  # references dropped at once
    assert slow not in r.subscribers
    assert fast.state == "live" and fast in r.subscribers


def test_each_batch_is_encoded_once_and_shared() -> None:
    r = reader()
    subs = [r.join(None).subscriber for _ in range(3)]
    r._deliver([entry(1), entry(2)])
    assert len({id(s.buffer[0]) for s in subs}) == 1
    assert subs[0].buffer[0] == entry_event(*entry(1)) + entry_event(*entry(2))
    assert subs[0].pending == 2
    assert r.ring[-1][1] == entry_event(*entry(2))  # the ring keeps single events


def test_random_join_points_see_every_entry_once_in_order() -> None:
    rng = random.Random(7)
    r = reader(ring_size=50)
    delivered: list[tuple[str, dict[str, str]]] = []
    seen: list[tuple[Subscriber, list[str]]] = []
    for step in range(300):
        batch = [entry(len(delivered) + i) for i in range(rng.randint(1, 3))]
        r._deliver(batch)
        delivered += batch
        if step % 17 == 0:
            start = rng.randint(0, len(delivered) - 1)
            join = r.join(parse_entry_id(delivered[start][0]))
            history = (
                ids(join.backlog)
                if join.backlog is not None
                else [
                    e[0]
                    for e in delivered[start + 1 :]  # what XRANGE (start, live_from] returns
                ]
            )
            seen.append((join.subscriber, history))
    for sub, history in seen:
        got = history + ids(list(sub.buffer))
        first = delivered.index(next(e for e in delivered if e[0] == got[0])) if got else 0
        assert got == [e[0] for e in delivered[first:]]


def test_next_batch_returns_everything_queued_or_a_heartbeat() -> None:
    async def scenario() -> tuple[list[bytes], list[bytes], bool]:
        sub = Subscriber("s", 10)
        sub.push(b"a")
        sub.push(b"b", 2)
        first = await sub.next_batch()
        waiting = asyncio.ensure_future(sub.next_batch())
        await asyncio.sleep(0.05)
        blocked = not waiting.done()  # nothing queued: it waits, no busy loop
        sub.heartbeat()
        return first, await waiting, blocked

    first, beat, blocked = asyncio.run(scenario())
    assert first == [b"a", b"b"]
    assert blocked
    assert beat == [HEARTBEAT]


def _series() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in REGISTRY.collect()
        for sample in family.samples
    }


def test_a_thousand_streams_of_one_pattern_share_their_metric_series() -> None:
    settings = load_settings(redis_tls_ca_file="/ca", auth_mode="disabled", client_buffer=1)
    hub = Hub(settings, backend=None)  # type: ignore[arg-type]

    def traffic(stream: str) -> None:
        r = hub.readers[stream] = StreamReader(hub, stream)
        r.join(None)
        r._deliver([entry(0)])
        r._deliver([entry(1)])  # the subscriber did not read the first: a cut-off
        hub.update_gauges()

    traffic("standup:warm-up")
    before = _series()
    for i in range(1000):
        traffic(f"standup:team-{i}")
    assert _series() - before == set()
    assert not any("standup:team" in str(labels) for _, labels in _series())
    for r in hub.readers.values():
        r.lag = 0.5
    hub.readers["standup:team-7"].lag = 99.0
    hub.update_gauges()
    assert REGISTRY.get_sample_value("sse_reader_lag_seconds", {"pattern": "standup:*"}) == 99.0
