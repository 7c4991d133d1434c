"""Stream round trips through the SSE proxy: Redis -> SSE, POST -> SSE, resume, refusal,
and a stream on the shard that just failed over (where such bridges are known to go quiet).

All streams live under `smoke:sse:*`, which the proxy always serves and no consumer
reads, so the checks never write into a real stream.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from redisops import acl
from redisops.tokens import mint
from smoke_tests import capabilities
from smoke_tests.capabilities import Declared
from smoke_tests.conftest import Measure
from smoke_tests.probes import cluster_client
from smoke_tests.sse_client import Subscription
from smoke_tests.targets import SseProxy, Target

DELIVERY_LIMIT_S = 2.0


@pytest.fixture(scope="module")
def sse(target: Target, declared: Declared) -> SseProxy:
    declared.require(capabilities.SSE)
    assert target.sse is not None
    return target.sse


def subscribe(sse: SseProxy, stream: str, **kwargs: object) -> Subscription:
    sub = Subscription(f"{sse.url}/v1/streams/{stream}", token=sse.token, **kwargs)  # type: ignore[arg-type]
    sub.start()
    return sub


class Publisher:
    """XADD as the publisher role (connected before any timing starts)."""

    def __init__(self, target: Target) -> None:
        self.client = cluster_client(target, acl.PUBLISHER)
        self.client.ping(target_nodes=self.client.ALL_NODES)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def add(self, stream: str, fields: dict[str, str]) -> str:
        return str(self.client.xadd(stream, fields))  # type: ignore[arg-type]


def expire(target: Target, *streams: str) -> None:
    client = cluster_client(target)
    try:
        for stream in streams:
            client.pexpire(stream, 3_600_000)
    finally:
        client.close()


def test_an_entry_added_in_redis_reaches_an_sse_client_identical(
    target: Target, sse: SseProxy, run_id: str, measure: Measure
) -> None:
    stream = f"smoke:sse:roundtrip:{run_id}"
    fields = {
        "sender": "smoke",
        "action": "roundtrip",
        "timestamp": str(time.time()),
        "payload": "{}",
    }
    with subscribe(sse, stream) as sub, Publisher(target) as publisher:
        started = time.monotonic()
        entry_id = publisher.add(stream, fields)
        assert sub.wait_for(lambda evs: any(e.id == entry_id for e in evs), DELIVERY_LIMIT_S), (
            f"not delivered within {DELIVERY_LIMIT_S} s"
        )
        latency = time.monotonic() - started
    event = next(e for e in sub.events if e.id == entry_id)
    assert event.event == "roundtrip"
    assert event.json() == fields
    measure("sse_roundtrip_latency", latency, goal=DELIVERY_LIMIT_S)
    expire(target, stream)


def test_an_entry_posted_to_the_proxy_reaches_an_sse_client(
    target: Target, sse: SseProxy, run_id: str
) -> None:
    stream = f"smoke:sse:post:{run_id}"
    fields = {"sender": "smoke", "payload": '{"via": "POST"}'}
    with subscribe(sse, stream) as sub:
        response = httpx.post(
            f"{sse.url}/v1/streams/{stream}/events",
            json=fields,
            headers={"Authorization": f"Bearer {sse.token}"},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        entry_id = response.json()["id"]
        assert sub.wait_for(lambda evs: any(e.id == entry_id for e in evs), DELIVERY_LIMIT_S)
    assert next(e for e in sub.events if e.id == entry_id).json() == fields
    expire(target, stream)


def test_resuming_with_last_event_id_delivers_exactly_the_missed_entries(
    target: Target, sse: SseProxy, run_id: str
) -> None:
    stream = f"smoke:sse:resume:{run_id}"
    with Publisher(target) as publisher:
        ids = [publisher.add(stream, {"n": str(i)}) for i in range(6)]
    with subscribe(sse, stream, last_event_id=ids[1]) as sub:
        assert sub.wait_for(lambda evs: any(e.id == ids[-1] for e in evs), DELIVERY_LIMIT_S)
        time.sleep(0.3)  # a duplicate would show up now
    assert [e.id for e in sub.entries()] == ids[2:]
    expire(target, stream)


def test_a_token_without_the_stream_is_refused(
    sse: SseProxy, declared: Declared, run_id: str
) -> None:
    declared.require(capabilities.SSE_SIGNING_SECRET)
    assert sse.secret_file is not None
    narrow = mint(Path(sse.secret_file).read_text().strip(), "smoke", ["agent_*"], [], 300)
    response = httpx.get(
        f"{sse.url}/v1/streams/smoke:sse:denied:{run_id}",
        headers={"Authorization": f"Bearer {narrow}"},
        timeout=10,
    )
    assert response.status_code == 403
    assert response.json()["reason"] == "stream_not_allowed"


def test_the_failed_over_shard_still_flows_through_the_proxy(
    target: Target,
    declared: Declared,
    sse_canary: Subscription | None,
    run_id: str,
    measure: Measure,
) -> None:
    declared.require(capabilities.SSE)
    assert sse_canary is not None
    stream = f"smoke:sse:{{canary}}:{run_id}"
    with Publisher(target) as publisher:
        started = time.monotonic()
        entry_id = publisher.add(stream, {"sender": "smoke", "after": "failover"})
    assert sse_canary.wait_for(lambda evs: any(e.id == entry_id for e in evs), 10), (
        "the proxy did not deliver an entry of the failed-over shard through a "
        f"subscription opened before the failover (errors: {sse_canary.errors[-2:]})"
    )
    measure("sse_after_failover_latency", time.monotonic() - started)
    expire(target, stream)
