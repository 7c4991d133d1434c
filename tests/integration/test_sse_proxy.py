"""The SSE proxy's contract, against a real twin (Redis Cluster over TLS with ACLs)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from redisops import functions
from redisops.local.twin import Twin
from redisops.tokens import mint
from smoke_tests.sse_client import Parser, Subscription
from tests.integration.proxies import (
    ProxyProcess,
    admin,
    node_admin,
    publisher,
    running_proxy,
    shard_of,
)


@pytest.fixture(scope="module")
def proxy(session_twin: Twin, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """A proxy with short timers, shared by the tests of this module."""
    with running_proxy(
        session_twin,
        tmp_path_factory.mktemp("proxy"),
        heartbeat_s=0.3,
        retry_ms=200,
        retention=[
            {"pattern": "standup:trim-*", "maxlen": 10},
            {"pattern": "standup:age-*", "max_age_s": 1},
            {"pattern": "*", "maxlen": 100000},
        ],
        cors_origins=["http://allowed.example"],
    ) as running:
        yield running


def stream_name(prefix: str = "standup:t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def xadd(twin: Twin, stream: str, count: int, **fields: str) -> list[str]:
    client = publisher(twin)
    try:
        entries: list[str] = []
        for i in range(count):
            values: dict[str, str] = {"n": str(i), **fields}
            entries.append(str(client.xadd(stream, values)))  # type: ignore[arg-type]
        return entries
    finally:
        client.close()


def subscribe(proxy: ProxyProcess, stream: str, query: str = "", **kwargs: object) -> Subscription:
    sub = Subscription(f"{proxy.url}/v1/streams/{stream}{query}", token=proxy.token(), **kwargs)  # type: ignore[arg-type]
    sub.start()
    return sub


def ids_of(sub: Subscription) -> list[str]:
    return [e.id for e in sub.entries() if e.id]


# ---- the event contract ----------------------------------------------------------


def test_response_starts_at_once_unbuffered_with_retry_and_a_comment(proxy: ProxyProcess) -> None:
    stream = stream_name()
    with httpx.stream(
        "GET", f"{proxy.url}/v1/streams/{stream}", headers=proxy.headers(), timeout=5
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        first = next(response.iter_raw())
    assert first.startswith(b"retry: 200\n\n: stream ")


def test_entries_arrive_with_id_action_event_name_and_all_fields(
    proxy: ProxyProcess, session_twin: Twin
) -> None:
    stream = stream_name()
    with subscribe(proxy, stream) as sub:
        client = publisher(session_twin)
        try:
            with_action = client.xadd(stream, {"sender": "a", "action": "lock", "payload": "{}"})
            plain = client.xadd(stream, {"sender": "b", "timestamp": "t"})
        finally:
            client.close()
        assert sub.wait_for(lambda evs: len([e for e in evs if e.id]) == 2, 5)
    first, second = sub.entries()
    assert (first.id, first.event, first.json()) == (
        with_action,
        "lock",
        {"sender": "a", "action": "lock", "payload": "{}"},
    )
    assert (second.id, second.event, second.json()) == (
        plain,
        "message",
        {"sender": "b", "timestamp": "t"},
    )


def test_from_now_earliest_and_an_id(proxy: ProxyProcess, session_twin: Twin) -> None:
    stream = stream_name()
    old = xadd(session_twin, stream, 5)
    with (
        subscribe(proxy, stream) as now,
        subscribe(proxy, stream, "?from=earliest") as earliest,
        subscribe(proxy, stream, f"?from={old[1]}") as after_id,
    ):
        new = xadd(session_twin, stream, 2)
        for sub in (now, earliest, after_id):
            assert sub.wait_for(lambda evs: any(e.id == new[-1] for e in evs), 5)
    assert ids_of(now) == new
    assert ids_of(earliest) == old + new
    assert ids_of(after_id) == old[2:] + new


def test_last_event_id_header_and_query_resume_right_after_it(
    proxy: ProxyProcess, session_twin: Twin
) -> None:
    stream = stream_name()
    entries = xadd(session_twin, stream, 6)
    with (
        subscribe(proxy, stream, "?from=now", last_event_id=entries[2]) as header,
        subscribe(proxy, stream, f"?last_event_id={entries[3]}") as query,
    ):
        assert header.wait_for(lambda evs: len(evs) >= 3, 5)
        assert query.wait_for(lambda evs: len(evs) >= 2, 5)
        time.sleep(0.3)
    assert ids_of(header) == entries[3:]
    assert ids_of(query) == entries[4:]


def test_an_entry_that_is_not_utf8_is_delivered_losslessly_and_never_stalls_its_stream(
    proxy: ProxyProcess, session_twin: Twin
) -> None:
    # Entries are bytes: a producer outside the proxy may write any. Each value or field
    # name that is not UTF-8 arrives as {"base64": ...} / "base64:<name>"; the rest as is.
    stream = stream_name()
    client = publisher(session_twin)
    try:
        first = str(client.xadd(stream, {"n": "0"}))
        with subscribe(proxy, stream, "?from=earliest") as live:
            binary = {"action": "note", "payload": b"\xff\xfeok", b"\xc3": "v"}
            bad = str(client.xadd(stream, binary))  # type: ignore[arg-type]
            after = str(client.xadd(stream, {"n": "2"}))
            assert live.wait_for(lambda evs: any(e.id == after for e in evs), 5), live.entries()
        with subscribe(proxy, stream, f"?last_event_id={first}") as resumed:  # from XRANGE
            assert resumed.wait_for(lambda evs: any(e.id == after for e in evs), 5), resumed.body
    finally:
        client.close()
    for sub in (live, resumed):
        assert ids_of(sub)[-2:] == [bad, after]
        event = next(e for e in sub.entries() if e.id == bad)
        assert event.event == "note"
        assert json.loads(event.data) == {
            "action": "note",
            "payload": {"base64": "//5vaw=="},
            "base64:ww==": "v",
        }
    assert httpx.get(f"{proxy.url}/readyz").status_code == 200


def test_a_from_now_client_that_reconnects_before_its_first_event_loses_nothing(
    proxy: ProxyProcess, session_twin: Twin
) -> None:
    stream = stream_name()
    old = xadd(session_twin, stream, 2)
    response = httpx.Client(timeout=5).send(
        httpx.Client().build_request(
            "GET", f"{proxy.url}/v1/streams/{stream}?from=now", headers=proxy.headers()
        ),
        stream=True,
    )
    parser = Parser()
    events: list[Any] = []
    deadline = time.monotonic() + 5
    try:
        for chunk in response.iter_raw():
            events += parser.feed(chunk)
            if parser.last_id or time.monotonic() > deadline:
                break  # the position, before any entry: the connection drops here
    finally:
        response.close()
    # Node's eventsource drops a block that has only an id: the position is an event
    # with data, named so that no `message` handler fires.
    [position] = events
    assert (position.event, position.id) == ("position", old[-1])
    assert json.loads(position.data) == {"position": old[-1]}
    new = xadd(session_twin, stream, 3)  # while the client is away
    with subscribe(proxy, stream, "?from=now", last_event_id=parser.last_id) as again:
        assert again.wait_for(lambda evs: any(e.id == new[-1] for e in evs), 5)
    assert ids_of(again) == new


def test_joining_while_entries_pour_in_gives_each_entry_once_in_order(
    proxy: ProxyProcess, session_twin: Twin
) -> None:
    stream = stream_name()
    stop = threading.Event()
    written: list[str] = []

    def pour() -> None:
        client = publisher(session_twin)
        try:
            while not stop.is_set():
                written.append(str(client.xadd(stream, {"n": str(len(written))})))
        finally:
            client.close()

    writer = threading.Thread(target=pour)
    writer.start()
    subs: list[tuple[int, Subscription]] = []
    try:
        while len(written) < 50:
            time.sleep(0.01)
        for i in range(12):
            time.sleep(0.05)
            start = len(written) - 1 - (i * 37) % max(1, len(written))
            resume = written[max(0, start)]
            subs.append((written.index(resume), subscribe(proxy, stream, f"?from={resume}")))
    finally:
        time.sleep(0.3)
        stop.set()
        writer.join()
    try:
        for index, sub in subs:
            expected = written[index + 1 :]
            last = written[-1]
            assert sub.wait_for(lambda evs: any(e.id == last for e in evs), 10)  # noqa: B023
            assert ids_of(sub) == expected, f"joined after #{index}"
    finally:
        for _, sub in subs:
            sub.close()


def test_trimmed_history_is_announced_with_a_gap_event_then_continues_from_the_oldest(
    proxy: ProxyProcess, session_twin: Twin
) -> None:
    stream = stream_name("standup:trim")
    first = xadd(session_twin, stream, 1)[0]
    client = publisher(session_twin)
    try:
        for i in range(300):
            client.xadd(stream, {"n": str(i)}, maxlen=10, approximate=False)
    finally:
        client.close()
    with subscribe(proxy, stream, f"?from={first}") as sub:
        assert sub.wait_for(lambda evs: len([e for e in evs if e.id]) == 10, 5)
    gap = sub.events[0]
    assert gap.event == "gap" and gap.id is None
    retained = [e.id for e in sub.entries()]
    assert gap.json() == {"requested": first, "oldest": retained[0]}
    assert len(retained) == 10


def test_heartbeat_comments_keep_idle_streams_alive(proxy: ProxyProcess) -> None:
    with subscribe(proxy, stream_name()) as sub:
        time.sleep(1.0)
    assert sub.parser.comments >= 3  # the opening comment plus heartbeats every 0.3 s


# ---- publishing ------------------------------------------------------------------


def test_post_adds_an_entry_and_returns_its_id(proxy: ProxyProcess, session_twin: Twin) -> None:
    stream = stream_name()
    with subscribe(proxy, stream) as sub:
        response = httpx.post(
            f"{proxy.url}/v1/streams/{stream}/events",
            json={"sender": "ui", "action": "ping", "payload": '{"x": 1}'},
            headers=proxy.headers(),
        )
        assert response.status_code == 201, response.text
        entry_id = response.json()["id"]
        assert sub.wait_for(lambda evs: any(e.id == entry_id for e in evs), 5)
    assert sub.entries()[-1].json() == {"sender": "ui", "action": "ping", "payload": '{"x": 1}'}


def test_post_applies_the_streams_retention(proxy: ProxyProcess, session_twin: Twin) -> None:
    stream = stream_name("standup:trim")
    with httpx.Client(headers=proxy.headers()) as http:
        for i in range(300):
            response = http.post(f"{proxy.url}/v1/streams/{stream}/events", json={"n": str(i)})
            assert response.status_code == 201
    client = admin(session_twin)
    try:
        length = client.xlen(stream)
    finally:
        client.close()
    assert 10 <= length < 300  # approximate MAXLEN 10 trims whole nodes


def test_post_trims_entries_older_than_the_max_age(proxy: ProxyProcess, session_twin: Twin) -> None:
    stream = stream_name("standup:age")
    with httpx.Client(headers=proxy.headers()) as http:
        for i in range(300):
            assert http.post(
                f"{proxy.url}/v1/streams/{stream}/events", json={"n": str(i)}
            ).is_success
        time.sleep(1.2)
        assert http.post(f"{proxy.url}/v1/streams/{stream}/events", json={"n": "new"}).is_success
    client = admin(session_twin)
    try:
        length = client.xlen(stream)
    finally:
        client.close()
    assert length < 301  # MINID ~ (now - 1 s) removed the older, whole stream nodes


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 400, "bad_json"),
        (b"[1, 2]", 400, "bad_event"),
        (b"{}", 400, "bad_event"),
        (b'{"n": 1}', 400, "bad_event"),
        (b'{"n": {"deep": "x"}}', 400, "bad_event"),
        (b'{"": "x"}', 400, "bad_event"),
        (b'{"big": "' + b"x" * 70_000 + b'"}', 413, "payload_too_large"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(
    proxy: ProxyProcess, body: bytes, status: int, reason: str
) -> None:
    response = httpx.post(
        f"{proxy.url}/v1/streams/{stream_name()}/events",
        content=body,
        headers={**proxy.headers(), "content-type": "application/json"},
    )
    assert response.status_code == status
    assert response.json()["reason"] == reason
    assert response.json()["detail"]


def test_an_oversized_body_without_content_length_is_refused(proxy: ProxyProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"big": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    response = httpx.post(
        f"{proxy.url}/v1/streams/{stream_name()}/events", content=chunks(), headers=proxy.headers()
    )
    assert response.status_code == 413


# ---- exactly-once publishing ---------------------------------------------------------


def post(
    proxy: ProxyProcess, stream: str, fields: dict[str, str], key: str | None = None
) -> httpx.Response:
    headers = proxy.headers()
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(
        f"{proxy.url}/v1/streams/{stream}/events", json=fields, headers=headers, timeout=20
    )


def entries_of(twin: Twin, stream: str) -> list[tuple[str, dict[str, str]]]:
    client = admin(twin)
    try:
        entries: Any = client.xrange(stream, "-", "+")
        return [(str(entry_id), dict(fields)) for entry_id, fields in entries]
    finally:
        client.close()


def test_a_repeated_post_with_the_same_idempotency_key_answers_200_with_the_first_id(
    proxy: ProxyProcess, session_twin: Twin
) -> None:
    stream = stream_name()
    key = uuid.uuid4().hex
    first = post(proxy, stream, {"sender": "agent", "n": "1"}, key)
    assert first.status_code == 201, first.text
    repeats = [post(proxy, stream, {"sender": "agent", "n": "1"}, key) for _ in range(3)]
    assert [r.status_code for r in repeats] == [200, 200, 200]
    assert {r.json()["id"] for r in repeats} == {first.json()["id"]}
    assert entries_of(session_twin, stream) == [(first.json()["id"], {"sender": "agent", "n": "1"})]


def test_different_idempotency_keys_add_distinct_entries(
    proxy: ProxyProcess, session_twin: Twin
) -> None:
    stream = stream_name()
    answers = [post(proxy, stream, {"n": "same"}, f"key-{i}") for i in range(3)]
    assert [a.status_code for a in answers] == [201, 201, 201]
    ids = [a.json()["id"] for a in answers]
    assert len(set(ids)) == 3
    assert [eid for eid, _ in entries_of(session_twin, stream)] == ids


def test_concurrent_posts_with_one_idempotency_key_add_one_entry(
    proxy: ProxyProcess, session_twin: Twin
) -> None:
    stream = stream_name()
    key = uuid.uuid4().hex
    answers: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda: answers.append(post(proxy, stream, {"n": "1"}, key)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len(entries_of(session_twin, stream)) == 1


def test_an_idempotency_key_reused_for_another_event_is_refused(
    proxy: ProxyProcess, session_twin: Twin
) -> None:
    stream = stream_name()
    assert post(proxy, stream, {"n": "1"}, "reused-key").status_code == 201
    other = post(proxy, stream, {"n": "2"}, "reused-key")
    assert other.status_code == 422, other.text
    assert other.json()["reason"] == "idempotency_key_reused"
    assert "Idempotency-Key" in other.json()["detail"]
    assert len(entries_of(session_twin, stream)) == 1


@pytest.mark.parametrize(
    "key", ["", "x" * 129, "has space", "colon:inside", "star*", "brace{", "é"]
)
def test_a_malformed_idempotency_key_is_a_400_naming_the_header(
    proxy: ProxyProcess, session_twin: Twin, key: str
) -> None:
    stream = stream_name()
    headers = [(k.encode(), v.encode()) for k, v in proxy.headers().items()]
    response = httpx.post(
        f"{proxy.url}/v1/streams/{stream}/events",
        content=json.dumps({"n": "1"}).encode(),
        headers=[*headers, (b"Idempotency-Key", key.encode())],
    )
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "bad_idempotency_key"
    assert "Idempotency-Key" in response.json()["detail"]
    assert entries_of(session_twin, stream) == []


def test_an_idempotency_key_expires_after_the_window(session_twin: Twin, tmp_path: Path) -> None:
    from redis.crc import key_slot

    from redisops import acl

    with running_proxy(session_twin, tmp_path, idempotency_window_s=1) as own:
        stream = stream_name("standup:{team-eu}:expiry")
        first = post(own, stream, {"n": "1"}, "expiring-key")
        assert first.status_code == 201, first.text
        assert post(own, stream, {"n": "1"}, "expiring-key").status_code == 200
        record = acl.idempotency_key(stream, "expiring-key")
        client = admin(session_twin)
        try:
            assert key_slot(record.encode()) == key_slot(stream.encode())
            assert 0 < int(client.pttl(record)) <= 1000
        finally:
            client.close()
        time.sleep(1.3)
        again = post(own, stream, {"n": "1"}, "expiring-key")
    assert again.status_code == 201
    assert again.json()["id"] != first.json()["id"]
    assert len(entries_of(session_twin, stream)) == 2


def test_a_keyed_post_where_the_publish_function_is_missing_is_a_503_naming_reconcile(
    proxy: ProxyProcess, session_twin: Twin
) -> None:
    """A cluster nobody reconciled has no publish function: the proxy says so and never
    falls back to a script of its own (the publisher may not run one)."""
    stream = stream_name()
    primary, _ = shard_of(session_twin, stream)
    client = node_admin(session_twin, primary)
    try:
        client.execute_command("FUNCTION", "DELETE", functions.LIBRARY)
        keyed = post(proxy, stream, {"n": "1"}, uuid.uuid4().hex)
        assert keyed.status_code == 503, keyed.text
        body = keyed.json()
        assert body["reason"] == "publish_function_missing"
        assert "redisops reconcile" in body["detail"]
        assert "127.0.0.1" not in keyed.text and str(primary) not in keyed.text
        assert entries_of(session_twin, stream) == []
        keyless = post(proxy, stream, {"n": "2"})  # a plain XADD needs no function
        assert keyless.status_code == 201, keyless.text
    finally:
        client.close()
        session_twin.up()  # reconcile loads it again
    again = post(proxy, stream, {"n": "3"}, uuid.uuid4().hex)
    assert again.status_code == 201, again.text
    assert [f["n"] for _, f in entries_of(session_twin, stream)] == ["2", "3"]
    assert "publish function" in proxy.log_text()  # the operator learns which shard


# ---- refusing ----------------------------------------------------------------------


def test_unknown_streams_get_a_json_404(proxy: ProxyProcess) -> None:
    for name in ("not_configured", "smoke:other", "agent_updates_x"):
        response = httpx.get(f"{proxy.url}/v1/streams/{name}", headers=proxy.headers())
        assert response.status_code == 404
        assert response.json()["reason"] == "unknown_stream"
        assert "agent_updates" in response.json()["detail"]


@pytest.mark.parametrize(
    "value", ["abc", "1-", "-1", "1-2-3", "99999999999999999999999-0", "1 - 2"]
)
def test_a_malformed_last_event_id_is_a_400(proxy: ProxyProcess, value: str) -> None:
    response = httpx.get(
        f"{proxy.url}/v1/streams/{stream_name()}",
        headers={**proxy.headers(), "Last-Event-ID": value},
    )
    assert response.status_code == 400
    assert response.json()["reason"] == "bad_position"
    assert "Last-Event-ID" in response.json()["detail"]


def test_a_malformed_last_event_id_query_is_reported_as_the_query_parameter(
    proxy: ProxyProcess,
) -> None:
    response = httpx.get(
        f"{proxy.url}/v1/streams/{stream_name()}?last_event_id=abc", headers=proxy.headers()
    )
    assert response.status_code == 400 and response.json()["reason"] == "bad_position"
    assert response.json()["detail"].startswith("?last_event_id: ")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('{"sender": "a", "payload": "x\\ud800y"}', "'payload'"),
        ('{"sender": "a", "pay\\udfffload": "x"}', "field name"),
        ('{"sender": "a", "payload": "\\udcff"}', "'payload'"),  # what surrogateescape makes
    ],
)
def test_a_lone_surrogate_in_a_published_event_is_a_400_naming_the_field(
    proxy: ProxyProcess, session_twin: Twin, body: str, named: str
) -> None:
    stream = stream_name()
    response = httpx.post(
        f"{proxy.url}/v1/streams/{stream}/events",
        content=body.encode(),
        headers={**proxy.headers(), "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "bad_event"
    assert named in response.json()["detail"] and "UTF-8" in response.json()["detail"]
    assert entries_of(session_twin, stream) == []  # nothing half-written


def test_tokens_are_checked_per_stream_and_per_operation(proxy: ProxyProcess) -> None:
    stream = stream_name()
    url = f"{proxy.url}/v1/streams/{stream}"
    cases = [
        ({}, 401, "missing_token"),
        ({"Authorization": "Bearer x.y.z"}, 401, "malformed"),
        ({"Authorization": f"Bearer {proxy.token(ttl=-120)}"}, 401, "expired"),
        (
            {"Authorization": f"Bearer {proxy.token(streams=('agent_*',))}"},
            403,
            "stream_not_allowed",
        ),
    ]
    for headers, status, reason in cases:
        response = httpx.get(url, headers=headers)
        assert (response.status_code, response.json()["reason"]) == (status, reason)
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
    read_only = {"Authorization": f"Bearer {proxy.token(publish=())}"}
    response = httpx.post(f"{url}/events", json={"a": "b"}, headers=read_only)
    assert (response.status_code, response.json()["reason"]) == (403, "publish_not_allowed")
    query = httpx.get(f"{url}?access_token={proxy.token()}")
    assert (query.status_code, query.json()["reason"]) == (401, "query_token_disabled")


def test_the_cookie_carries_the_token_for_browsers(proxy: ProxyProcess) -> None:
    with httpx.stream(
        "GET",
        f"{proxy.url}/v1/streams/{stream_name()}",
        cookies={"sse_token": proxy.token()},
        timeout=5,
    ) as response:
        assert response.status_code == 200


def test_cors_allows_listed_origins_with_credentials_only(proxy: ProxyProcess) -> None:
    url = f"{proxy.url}/v1/streams/{stream_name()}"
    preflight = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "last-event-id",
    }
    allowed = httpx.options(url, headers={"Origin": "http://allowed.example", **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://allowed.example"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    denied = httpx.options(url, headers={"Origin": "http://evil.example", **preflight})
    assert "access-control-allow-origin" not in denied.headers
    for origin, allowed_origin in (
        ("http://allowed.example", True),
        ("http://evil.example", False),
    ):
        with httpx.stream(
            "GET", url, headers={**proxy.headers(), "Origin": origin}, timeout=5
        ) as response:
            assert response.status_code == 200
            assert ("access-control-allow-origin" in response.headers) == allowed_origin
            if allowed_origin:
                assert response.headers["access-control-allow-credentials"] == "true"


# ---- operations ----------------------------------------------------------------------


def _sample(text: str, series: str) -> float:
    """The value of one series in a /metrics page (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(f"{series} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_health_readiness_and_metrics(proxy: ProxyProcess, session_twin: Twin) -> None:
    assert httpx.get(f"{proxy.url}/healthz").json() == {"status": "ok"}
    stream = stream_name()
    delivered = 'sse_events_delivered_total{pattern="standup:*"}'
    before = _sample(httpx.get(f"{proxy.url}/metrics").text, delivered)
    with subscribe(proxy, stream) as sub:
        xadd(session_twin, stream, 3)
        assert sub.wait_for(lambda evs: len([e for e in evs if e.id]) == 3, 5)
        ready = httpx.get(f"{proxy.url}/readyz")
        assert ready.status_code == 200 and ready.json()["readers"] >= 1
        text = httpx.get(f"{proxy.url}/metrics").text
    assert _sample(text, 'sse_clients{pattern="standup:*"}') >= 1
    assert _sample(text, delivered) - before == 3
    assert 0 <= _sample(text, 'sse_reader_lag_seconds{pattern="standup:*"}') < 5
    for pattern in ("agent_updates", "agent_tasks", "standup:*", "smoke:sse:*"):
        assert f'sse_events_published_total{{pattern="{pattern}"}}' in text  # from the start
    assert stream not in text  # stream names are never labels
    for name in (
        "sse_slow_client_cutoffs_total",
        "sse_reader_lag_seconds",
        "sse_redis_errors_total",
        "sse_auth_failures_total",
        "sse_http_requests_total",
    ):
        assert name in text
    assert 'sse_http_requests_total{method="GET",route="subscribe",status="200"}' in text


def _tcp_ports_of(pid: int) -> set[int]:
    """Local TCP ports of the sockets process `pid` holds (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = str(fd.readlink())
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_redis_connections_do_not_grow_with_clients(session_twin: Twin, tmp_path: Path) -> None:
    def proxy_connections() -> int:
        """Connections of this proxy process only (other tests' proxies come and go)."""
        client = admin(session_twin)
        try:
            lists: Any = client.client_list(target_nodes=client.ALL_NODES)
        finally:
            client.close()
        rows = [c for node in lists.values() for c in node] if isinstance(lists, dict) else lists
        mine = _tcp_ports_of(own.pid)
        return sum(
            1
            for c in rows
            if c.get("user") in ("reader", "publisher")
            and int(str(c.get("addr", ":0")).rsplit(":", 1)[1]) in mine
        )

    with running_proxy(session_twin, tmp_path) as own:
        stream = stream_name()
        before = proxy_connections()
        with subscribe(own, stream) as one:
            xadd(session_twin, stream, 1)
            assert one.wait_for(lambda evs: any(e.id for e in evs), 5)
            with_one = proxy_connections()
            many = [subscribe(own, stream, "?from=earliest") for _ in range(60)]
            try:
                xadd(session_twin, stream, 1)
                for sub in many:
                    assert sub.wait_for(lambda evs: len([e for e in evs if e.id]) == 2, 10)
                with_many = proxy_connections()
            finally:
                for sub in many:
                    sub.close()
    print(
        f"reader/publisher connections: idle {before}, 1 client {with_one}, 61 clients {with_many}"
    )
    assert with_many == with_one
    assert with_one - before <= 2  # the stream's reader, plus at most one shared connection


def test_a_client_that_stops_reading_is_cut_off_and_others_keep_flowing(
    session_twin: Twin, tmp_path: Path
) -> None:
    with running_proxy(session_twin, tmp_path, write_timeout_s=2.0) as own:
        stream = stream_name()
        token = own.token()
        # A raw socket that asks for the stream and never reads a byte after that.
        stuck = socket.create_connection(("127.0.0.1", int(own.url.rsplit(":", 1)[1])))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        request = f"GET /v1/streams/{stream} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}"
        stuck.sendall(f"{request}\r\n\r\n".encode())
        with subscribe(own, stream) as healthy:
            client = publisher(session_twin)
            try:
                # More than the kernel's socket buffers hold, so the proxy's writes block.
                pad = "p" * 4000
                pipe = client.pipeline()
                for i in range(4000):
                    pipe.xadd(stream, {"n": str(i), "pad": pad})
                written = [str(x) for x in pipe.execute()]
            finally:
                client.close()
            assert healthy.wait_for(lambda evs: any(e.id == written[-1] for e in evs), 20)
            assert ids_of(healthy) == written
            deadline = time.monotonic() + 10
            while (
                "sse_slow_client_cutoffs_total" not in _cutoffs(own) and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            assert _cutoffs(own), "the stuck client was not cut off"
        stuck.close()
        assert own.rss_mb() < 150


def _cutoffs(proxy: ProxyProcess) -> str:
    text = httpx.get(f"{proxy.url}/metrics").text
    return "".join(
        line
        for line in text.splitlines()
        if line.startswith("sse_slow_client_cutoffs_total") and not line.endswith(" 0.0")
    )


def refusal_of(response: httpx.Response) -> tuple[int, dict[str, Any]]:
    """(retry ms, the `unavailable` event's data) of a temporary refusal as EventSource
    meets it: 200, an event stream that ends after them."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = Parser().feed(response.content)
    [unavailable] = events
    assert unavailable.event == "unavailable" and unavailable.id is None  # position unmoved
    retry = re.search(r"^retry: (\d+)$", response.text, flags=re.MULTILINE)
    assert retry is not None, response.text
    return int(retry.group(1)), json.loads(unavailable.data)


def test_a_connection_flood_past_the_limit_is_told_to_retry_and_spares_existing_clients(
    session_twin: Twin, tmp_path: Path
) -> None:
    # Browsers and Node's eventsource never retry a non-200 answer: a temporary refusal
    # is a 200 stream that says when to come back (`retry:`, jittered) and ends.
    with running_proxy(session_twin, tmp_path, max_connections=5) as own:
        stream = stream_name()
        subs = [subscribe(own, stream) for _ in range(5)]
        try:
            refused = [
                httpx.get(f"{own.url}/v1/streams/{stream}", headers=own.headers(), timeout=5)
                for _ in range(20)
            ]
            answers = [refusal_of(r) for r in refused]
            assert all(data["reason"] == "too_many_connections" for _, data in answers)
            retries = [ms for ms, _ in answers]
            assert all(2000 <= ms <= 10000 for ms in retries) and len(set(retries)) > 1
            entry = xadd(session_twin, stream, 1)[0]
            for sub in subs:
                assert sub.wait_for(lambda evs: any(e.id == entry for e in evs), 5)
            # An EventSource-like client retries on its own and gets in once a slot frees.
            waiting = Subscription(
                f"{own.url}/v1/streams/{stream}?from=now", token=own.token(), reconnect=True
            )
            waiting.start()
            subs.pop().close()
            deadline = time.monotonic() + 15
            while not waiting.positions and time.monotonic() < deadline:
                time.sleep(0.05)  # back after its retry:, with its position
            later = xadd(session_twin, stream, 1)[0]
            assert waiting.wait_for(lambda evs: any(e.id == later for e in evs), 15), (
                waiting.statuses,
                waiting.errors,
            )
            assert waiting.connections >= 2 and set(waiting.statuses) == {200}
            waiting.close()
        finally:
            for sub in subs:
                sub.close()


def test_huge_headers_are_refused_without_harming_the_process(
    proxy: ProxyProcess, session_twin: Twin
) -> None:
    stream = stream_name()
    with subscribe(proxy, stream) as sub:
        for size in (40_000, 2_000_000):
            response = httpx.get(
                f"{proxy.url}/v1/streams/{stream}",
                headers={**proxy.headers(), "X-Huge": "h" * size},
                timeout=5,
            )
            assert response.status_code == 431
            assert response.json()["reason"] == "head_too_large"
        entry = xadd(session_twin, stream, 1)[0]
        assert sub.wait_for(lambda evs: any(e.id == entry for e in evs), 5)
    assert httpx.get(f"{proxy.url}/healthz").status_code == 200


def _post_in_two_writes(proxy: ProxyProcess, request: bytes, split: int) -> int:
    """Send `request` as two TCP writes cut at `split`; the answer's status code."""
    port = int(proxy.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request[:split])
        time.sleep(0.05)  # the proxy reads the first part on its own
        sock.sendall(request[split:])
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    return int(answer.split(b" ", 2)[1]) if answer else 0


def test_a_large_post_is_accepted_wherever_the_end_of_its_head_is_split(
    proxy: ProxyProcess, session_twin: Twin
) -> None:
    stream = stream_name()
    body = json.dumps({"sender": "split", "pad": "p" * 40_000}).encode()
    lines = [
        f"POST /v1/streams/{stream}/events HTTP/1.1",
        "Host: proxy",
        f"Authorization: Bearer {proxy.token()}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    statuses = {
        offset: _post_in_two_writes(proxy, head + body, len(head) + offset)
        for offset in range(-6, 7)
    }
    assert statuses == dict.fromkeys(statuses, 201)  # offset from the end of the head
    client = admin(session_twin)
    try:
        assert client.xlen(stream) == len(statuses)
    finally:
        client.close()


def _read_answer(sock: socket.socket) -> int:
    """Read one HTTP answer (head and Content-Length body); its status code."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(4096)
    return int(head.split(b" ", 2)[1])


def test_the_head_bound_applies_to_every_request_of_a_kept_alive_connection(
    proxy: ProxyProcess,
) -> None:
    port = int(proxy.url.rsplit(":", 1)[1])
    small = b"GET /healthz HTTP/1.1\r\nHost: proxy\r\n\r\n"
    huge = b"GET /healthz HTTP/1.1\r\nHost: proxy\r\nX-Huge: " + b"h" * 40_000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        statuses = []
        for _ in range(2):
            sock.sendall(small)
            statuses.append(_read_answer(sock))
        with contextlib.suppress(OSError):  # the proxy may close while the head still flows
            for i in range(0, len(huge), 1000):  # trickled: no one read holds the whole head
                sock.sendall(huge[i : i + 1000])
                time.sleep(0.001)
        statuses.append(_read_answer(sock))
    assert statuses == [200, 200, 431]


def _series(text: str) -> set[str]:
    """The proxy's own series in a /metrics page: name and labels, without values."""
    return {
        line.rsplit(" ", 1)[0]
        for line in text.splitlines()
        if line.startswith("sse_") and not line.startswith("#")
    }


async def _round_trip(http: httpx.AsyncClient, url: str, stream: str) -> None:
    """Subscribe to `stream`, POST one event to it, read it back, leave."""
    async with http.stream("GET", f"{url}/v1/streams/{stream}") as sub:
        assert sub.status_code == 200
        chunks = sub.aiter_raw()
        received = await anext(chunks)  # the preamble: the subscriber has joined
        posted = await http.post(f"{url}/v1/streams/{stream}/events", json={"n": "1"})
        assert posted.status_code == 201, posted.text
        wanted = f"id: {posted.json()['id']}".encode()
        while wanted not in received:
            received += await anext(chunks)


def test_a_thousand_distinct_streams_of_one_pattern_add_no_metric_series(
    session_twin: Twin, tmp_path: Path
) -> None:
    import asyncio

    with running_proxy(session_twin, tmp_path, reader_linger_s=0) as own:
        headers = own.headers()
        prefix = f"standup:labels-{uuid.uuid4().hex[:8]}"

        async def run(streams: range, round_trips: int) -> None:
            """POST to every stream; subscribe to the first `round_trips` and read back."""
            limit = asyncio.Semaphore(16)
            async with httpx.AsyncClient(timeout=20, headers=headers) as http:

                async def one(i: int) -> None:
                    stream = f"{prefix}-{i}"
                    async with limit:
                        if i < round_trips:
                            await _round_trip(http, own.url, stream)
                        else:
                            url = f"{own.url}/v1/streams/{stream}/events"
                            posted = await http.post(url, json={"n": "1"})
                            assert posted.status_code == 201, posted.text

                await asyncio.gather(*(one(i) for i in streams))

        asyncio.run(run(range(1), 1))  # every kind of series a standup stream touches
        httpx.get(f"{own.url}/metrics")  # and the scrape's own request series
        before = _series(httpx.get(f"{own.url}/metrics").text)
        started = time.monotonic()
        # Subscriptions start a reader (a Redis connection) each: 50 of the 1000 do.
        asyncio.run(run(range(1, 1001), 51))
        took = time.monotonic() - started
        after = _series(httpx.get(f"{own.url}/metrics").text)
    print(f"1000 standup streams (50 subscribed) in {took:.1f} s; {len(after)} series")
    assert after - before == set()
    assert not any(prefix in series for series in after)
    assert 'sse_events_published_total{pattern="standup:*"}' in after


def test_sigterm_tells_every_client_to_come_back_and_exits_within_the_grace(
    session_twin: Twin, tmp_path: Path
) -> None:
    import os
    import signal

    with running_proxy(session_twin, tmp_path, shutdown_grace_s=5) as own:
        stream = stream_name()
        subs = [subscribe(own, stream) for _ in range(10)]
        started = time.monotonic()
        os.kill(own.pid, signal.SIGTERM)
        own.proc.wait(timeout=15)
        elapsed = time.monotonic() - started
    for sub in subs:
        sub.close()
        assert sub.parser.retry_ms is not None and sub.parser.retry_ms <= 3000
    assert elapsed < 5, f"took {elapsed:.1f} s"
    assert "draining 10 client(s)" in own.log_text()


def test_disabled_auth_is_explicit_and_logged(session_twin: Twin, tmp_path: Path) -> None:
    with running_proxy(session_twin, tmp_path, auth_mode="disabled", jwt_secret_file=None) as own:
        response = httpx.post(f"{own.url}/v1/streams/{stream_name()}/events", json={"a": "b"})
        assert response.status_code == 201
    assert "authorization is DISABLED" in own.log_text()


def test_sse_events_parse_into_the_same_fields_redis_holds(
    proxy: ProxyProcess, session_twin: Twin
) -> None:
    stream = stream_name()
    tricky = {"text": "multi\nline\r\nvalue", "quote": '"', "unicode": "é✓", "action": "a b"}
    entry = xadd(session_twin, stream, 1, **tricky)[0]
    with httpx.stream(
        "GET", f"{proxy.url}/v1/streams/{stream}?from=earliest", headers=proxy.headers(), timeout=5
    ) as response:
        parser = Parser()
        for chunk in response.iter_raw():
            events = [e for e in parser.feed(chunk) if e.id and e.event != "position"]
            if events:
                break
    assert events[0].id == entry
    assert events[0].event == "message"
    assert json.loads(events[0].data) == {"n": "0", **tricky}


def test_readiness_fails_while_redis_is_unreachable(session_twin: Twin, tmp_path: Path) -> None:
    """And no answer tells a public client where Redis lives: the addresses redis-py puts
    in its errors go to the log only."""
    from tests.conftest import free_port

    dead_port = free_port()
    dead = f"127.0.0.1:{dead_port}"
    settings = {**session_twin.proxy.settings_json(session_twin.settings())}
    settings.update(port=free_port(), redis_nodes=[dead])
    config = tmp_path / "dead.json"
    config.write_text(json.dumps(settings))
    log = tmp_path / "dead.log"
    import subprocess
    import sys

    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sse_proxy", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{settings['port']}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the proxy did not start without Redis"
                time.sleep(0.1)
        assert health.status_code == 200  # alive, so not restarted in a loop
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert any("redis" in p for p in ready.json()["problems"])
        secret = session_twin.proxy.secret_file.read_text().strip()
        headers = {"Authorization": f"Bearer {mint(secret, 'test', ('*',), ('*',), 600)}"}
        events = f"{url}/v1/streams/agent_updates/events"
        answers = {
            "readyz": ready,
            "post": httpx.post(events, json={"n": "1"}, headers=headers, timeout=30),
            "keyed post": httpx.post(
                events, json={"n": "1"}, headers={**headers, "Idempotency-Key": "k"}, timeout=30
            ),
            "subscribe": httpx.get(f"{url}/v1/streams/agent_updates", headers=headers, timeout=30),
        }
        for what, answer in answers.items():
            assert answer.status_code == (200 if what == "subscribe" else 503), (what, answer.text)
            assert dead not in answer.text and str(dead_port) not in answer.text, (
                what,
                answer.text,
            )
        assert answers["post"].json()["reason"] == "redis_unavailable"
        assert answers["post"].json()["detail"] == "the entry was not added: Redis is unavailable"
        retry_ms, refusal = refusal_of(answers["subscribe"])  # EventSource comes back
        assert refusal["reason"] == "redis_unavailable" and 1000 <= retry_ms <= 4000
    finally:
        from tests.integration.proxies import stop

        stop(proc)
    assert dead in log.read_text()  # the operator still learns what failed


def test_the_helm_test_round_trip_check_passes_and_fails_as_it_should(
    proxy: ProxyProcess, tmp_path: Path
) -> None:
    import subprocess
    import sys

    token = tmp_path / "token"

    def run_check() -> tuple[int, dict[str, Any]]:
        proc = subprocess.run(
            [sys.executable, "-m", "smoke_tests.sse_check", "--url", proxy.url,
             "--token-file", str(token), "--timeout", "5"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return proc.returncode, json.loads(proc.stdout)

    token.write_text(proxy.token(streams=("smoke:sse:*",), publish=("smoke:sse:*",)))
    code, result = run_check()
    assert (code, result["ok"]) == (0, True), result
    token.write_text(proxy.token(streams=("smoke:sse:*",), publish=()))
    code, result = run_check()
    assert code == 1 and "publish answered 403" in result["detail"]
