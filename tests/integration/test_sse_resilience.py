"""Streaming clients across a Redis failover and across a proxy restart: every entry the
stream holds arrives once, in order."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from redisops import acl
from redisops.client import Endpoint, connect
from redisops.local.settings import HOST
from redisops.local.twin import Twin
from smoke_tests.sse_client import Subscription
from sse_proxy.backend import Backend
from sse_proxy.settings import load_settings
from tests.conftest import free_base_port, free_port
from tests.integration.proxies import (
    ProxyProcess,
    admin,
    node_admin,
    publisher,
    running_proxy,
    shard_of,
    start_proxy,
    stop,
)


class Writer:
    """Publishes to a stream until stopped, riding out failovers (errors are expected)."""

    def __init__(self, twin: Twin, stream: str, interval: float = 0.005) -> None:
        self.twin = twin
        self.stream = stream
        self.interval = interval
        self.written = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = publisher(self.twin)
        try:
            while not self._stop.is_set():
                try:
                    client.xadd(self.stream, {"n": str(self.written)})
                    self.written += 1
                except redis.RedisError:
                    self.failed += 1
                    time.sleep(0.05)
                time.sleep(self.interval)
        finally:
            client.close()

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def truth(twin: Twin, stream: str) -> list[str]:
    client = admin(twin)
    try:
        entries: Any = client.xrange(stream, "-", "+")
        return [str(entry_id) for entry_id, _ in entries]
    finally:
        client.close()


def ids_of(sub: Subscription) -> list[str]:
    return [e.id for e in sub.entries() if e.id]


@contextmanager
def subscriptions(proxy: ProxyProcess, stream: str, count: int) -> Iterator[list[Subscription]]:
    subs = [
        Subscription(
            f"{proxy.url}/v1/streams/{stream}?from=earliest", token=proxy.token(), reconnect=True
        )
        for _ in range(count)
    ]
    for sub in subs:
        sub.start()
    try:
        yield subs
    finally:
        for sub in subs:
            sub.close()


def wait_all(subs: list[Subscription], last: str, timeout: float = 30) -> None:
    for sub in subs:
        assert sub.wait_for(lambda evs: any(e.id == last for e in evs), timeout), (
            f"client stuck at {ids_of(sub)[-1:]}, errors {sub.errors[-2:]}"
        )


@pytest.fixture
def failover_twin(own_twin: Twin) -> Twin:
    report = own_twin.up(base_port=free_base_port(6), sse_proxy=False)
    assert report.healthy, report.findings
    own_twin.proxy.ensure_credentials()
    return own_twin


def wait_role(twin: Twin, port: int, role: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node = next(n for n in twin.status()["nodes"] if n["port"] == port)
        if node["role"] == role:
            return
        time.sleep(0.1)
    raise AssertionError(f"node :{port} did not become {role}")


def test_a_graceful_failover_under_streaming_clients_loses_and_repeats_nothing(
    failover_twin: Twin, tmp_path: Path
) -> None:
    twin = failover_twin
    stream = f"standup:failover-{uuid.uuid4().hex[:8]}"
    proxy = start_proxy(twin, tmp_path)
    try:
        with subscriptions(proxy, stream, 5) as subs:
            with Writer(twin, stream) as writer:
                while writer.written < 100:
                    time.sleep(0.01)
                _, replica = shard_of(twin, stream)
                client = connect(
                    Endpoint(host=HOST, port=replica),
                    twin.client_tls(acl.ADMIN),
                    twin.credentials(acl.ADMIN),
                )
                try:
                    client.execute_command("CLUSTER", "FAILOVER")
                finally:
                    client.close()
                wait_role(twin, replica, "primary")
                time.sleep(1.0)
            expected = truth(twin, stream)
            wait_all(subs, expected[-1])
            for sub in subs:
                assert ids_of(sub) == expected
            assert len(expected) > 150
    finally:
        stop(proxy.proc)


def test_a_crashed_primary_under_streaming_clients_loses_and_repeats_nothing(
    failover_twin: Twin, tmp_path: Path
) -> None:
    twin = failover_twin
    stream = f"standup:crash-{uuid.uuid4().hex[:8]}"
    proxy = start_proxy(twin, tmp_path)
    try:
        with subscriptions(proxy, stream, 5) as subs:
            with Writer(twin, stream) as writer:
                while writer.written < 100:
                    time.sleep(0.01)
                primary, replica = shard_of(twin, stream)
                twin.kill_node(primary)
                wait_role(twin, replica, "primary")
                before = writer.written
                deadline = time.monotonic() + 20
                while writer.written < before + 100 and time.monotonic() < deadline:
                    time.sleep(0.05)  # the proxy must follow the stream to its new primary
                twin.start_node(primary)
                wait_role(twin, primary, "replica")
                time.sleep(0.5)
            expected = truth(twin, stream)
            try:
                wait_all(subs, expected[-1])
            except AssertionError:
                print(proxy.log_text()[-4000:])  # what the reader went through
                print(httpx_get(f"{proxy.url}/readyz"))
                raise
            for sub in subs:
                got = ids_of(sub)
                assert len(got) == len(set(got)), "an entry arrived twice"
                assert got == sorted(got, key=lambda i: tuple(map(int, i.split("-"))))
                # Entries Redis lost in the crash (acknowledged by the old primary, never
                # replicated) may have reached clients; everything Redis holds must have.
                missing = [e for e in expected if e not in set(got)]
                assert not missing, f"{len(missing)} entries never arrived, e.g. {missing[:3]}"
            print(f"written {writer.written}, failed {writer.failed}, held {len(expected)}")
            metrics = httpx_get(f"{proxy.url}/metrics")
            assert 'sse_redis_errors_total{operation="xread"}' in metrics
    finally:
        stop(proxy.proc)


def httpx_get(url: str) -> str:
    import httpx

    return httpx.get(url).text


def test_a_proxy_restart_under_streaming_clients_loses_and_repeats_nothing(
    session_twin: Twin, tmp_path: Path
) -> None:
    twin = session_twin
    stream = f"standup:restart-{uuid.uuid4().hex[:8]}"
    port = free_port()
    proxy = start_proxy(twin, tmp_path, port=port, shutdown_grace_s=3, retry_ms=300)
    try:
        with subscriptions(proxy, stream, 5) as subs:
            with Writer(twin, stream) as writer:
                while writer.written < 100:
                    time.sleep(0.01)
                stop(proxy.proc)
                down_at = writer.written
                time.sleep(1.0)  # entries keep arriving in Redis while no proxy runs
                assert writer.written > down_at
                proxy = start_proxy(twin, tmp_path, port=port, shutdown_grace_s=3, retry_ms=300)
                time.sleep(1.0)
            expected = truth(twin, stream)
            wait_all(subs, expected[-1])
            for sub in subs:
                assert ids_of(sub) == expected
                assert sub.connections >= 2  # it did reconnect
    finally:
        stop(proxy.proc)


# ---- publishing across lost replies and crashes --------------------------------------


def post(
    proxy: ProxyProcess,
    stream: str,
    fields: dict[str, str],
    key: str | None = None,
    timeout: float = 20.0,
) -> httpx.Response:
    headers = proxy.headers()
    if key is not None:
        headers["Idempotency-Key"] = key
    return httpx.post(
        f"{proxy.url}/v1/streams/{stream}/events", json=fields, headers=headers, timeout=timeout
    )


def entries_with(twin: Twin, stream: str, n: str) -> list[str]:
    """Ids of the stream's entries whose field `n` is `n`."""
    client = admin(twin)
    try:
        entries: Any = client.xrange(stream, "-", "+")
        return [str(entry_id) for entry_id, fields in entries if fields.get("n") == n]
    finally:
        client.close()


@pytest.mark.parametrize("key", [None, "lost-reply-key"])
def test_a_publish_whose_redis_reply_is_lost_is_never_appended_twice(
    session_twin: Twin, tmp_path: Path, key: str | None
) -> None:
    """The write executes on the primary, then the proxy's connection is cut before the
    reply: CLIENT PAUSE ALL holds the write, and a CLIENT KILL of the publisher's
    connections, sent after it, runs right after it in the same turn of the event loop."""
    twin = session_twin
    stream = f"standup:lost-reply-{uuid.uuid4().hex[:8]}"
    primary, _ = shard_of(twin, stream)
    with running_proxy(twin, tmp_path) as proxy:
        # An authenticated publisher connection to the primary (and the script loaded).
        warm = post(proxy, stream, {"n": "warm"}, None if key is None else f"warm-{key}")
        assert warm.status_code == 201, warm.text
        pauser, killer = node_admin(twin, primary), node_admin(twin, primary)
        answer: list[httpx.Response] = []
        try:
            killer.ping()  # connected and authenticated now: under the pause only KILL waits
            pauser.execute_command("CLIENT", "PAUSE", "1500", "ALL")
            request = threading.Thread(
                target=lambda: answer.append(post(proxy, stream, {"n": "lost"}, key))
            )
            request.start()
            time.sleep(0.4)  # the proxy's write waits in the paused primary
            killer.execute_command("CLIENT", "KILL", "USER", acl.PUBLISHER)  # parked behind it
            request.join(timeout=30)
        finally:
            pauser.close()
            killer.close()
        held = entries_with(twin, stream, "lost")
    assert len(held) == 1, f"the stream holds the event {len(held)} times"
    if key is None:
        assert answer[0].status_code == 503, answer[0].text
        body = answer[0].json()
        assert body["reason"] == "publish_outcome_unknown"
        assert "may or may not" in body["detail"] and "Idempotency-Key" in body["detail"]
        assert "127.0.0.1" not in answer[0].text and str(primary) not in answer[0].text
    else:
        assert answer[0].status_code == 201, answer[0].text
        assert answer[0].json()["id"] == held[0]


def test_a_client_retrying_with_its_idempotency_key_across_a_primary_crash_publishes_once(
    failover_twin: Twin, tmp_path: Path
) -> None:
    """kill -9 of the stream's primary while the publish waits in it (CLIENT PAUSE WRITE
    holds it there); the client gives up after 0.5 s each time and retries with its key,
    so several of its attempts are still running in the proxy when the replica takes over."""
    twin = failover_twin
    stream = f"standup:crash-post-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex
    proxy = start_proxy(twin, tmp_path)
    try:
        assert post(proxy, stream, {"n": "warm"}, f"warm-{key}").status_code == 201
        primary, replica = shard_of(twin, stream)
        pauser = node_admin(twin, primary)
        try:
            pauser.execute_command("CLIENT", "PAUSE", "10000", "WRITE")
        finally:
            pauser.close()
        answers: list[int | str] = []
        final: list[httpx.Response] = []

        def client() -> None:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                try:
                    response = post(proxy, stream, {"n": "crash"}, key, timeout=0.5)
                except httpx.TimeoutException:
                    answers.append("timeout")
                    continue
                answers.append(response.status_code)
                if response.status_code in (200, 201):
                    final.append(response)
                    return
                time.sleep(0.1)

        retrying = threading.Thread(target=client)
        retrying.start()
        time.sleep(0.5)  # the first attempt waits in the paused primary
        twin.kill_node(primary)
        wait_role(twin, replica, "primary")
        retrying.join(timeout=60)
        time.sleep(4)  # attempts the client abandoned have run their course in the proxy
        twin.start_node(primary)
        wait_role(twin, primary, "replica")
        held = entries_with(twin, stream, "crash")
        print(f"client saw {answers}; the stream holds {held}")
        assert final, f"no attempt succeeded: {answers}"
        assert held == [final[0].json()["id"]], f"the stream holds the event {len(held)} times"
    finally:
        stop(proxy.proc)


def wait_healthy(twin: Twin, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not twin.status()["healthy"]:
        assert time.monotonic() < deadline, "the twin did not become healthy again"
        time.sleep(0.1)


@pytest.mark.parametrize("kill", [False, True], ids=["stop", "kill-9"])
def test_keyless_posts_after_their_primary_restarted_are_published(
    failover_twin: Twin, tmp_path: Path, kill: bool
) -> None:
    """The publisher's pooled connections to a node that restarted are dead. A write
    sent on one has an unknown outcome (503), so each connection is checked before a
    write is sent on it: nothing reaches Redis on a dead one, and the write goes on a
    new one."""
    twin = failover_twin
    stream = f"standup:restart-{uuid.uuid4().hex[:8]}"
    with running_proxy(twin, tmp_path) as proxy:
        # Several pooled publisher connections to the stream's primary.
        warm: list[httpx.Response] = []
        threads = [
            threading.Thread(target=lambda: warm.append(post(proxy, stream, {"n": "warm"})))
            for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [r.status_code for r in warm] == [201] * 6, [r.text for r in warm]
        primary, _ = shard_of(twin, stream)
        if kill:
            twin.kill_node(primary)
        else:
            twin.stop_node(primary)
        twin.start_node(primary)
        twin.wait_responding(twin.settings())
        wait_healthy(twin)
        answers = [post(proxy, stream, {"n": f"after-{i}"}) for i in range(6)]
        assert [(a.status_code, a.json().get("reason")) for a in answers] == [(201, None)] * 6
        for i, answer in enumerate(answers):
            assert entries_with(twin, stream, f"after-{i}") == [answer.json()["id"]]


def test_the_first_concurrent_writes_of_a_new_publisher_are_all_applied(session_twin: Twin) -> None:
    """redis-py's cluster client routes a command by its key only once it knows the
    cluster: commands that arrive together before that go to any node, and the MOVED
    replies that follow can cut one of their connections mid-reply (an unknown outcome,
    measured on about one burst in four). The publisher learns the slot map before its
    first write."""
    settings = load_settings(**session_twin.proxy.settings_json(session_twin.settings()))
    stream = f"standup:cold-{uuid.uuid4().hex[:8]}"

    async def burst(n: int) -> list[str]:
        backend = Backend(settings)
        await backend.start()
        try:
            results = await asyncio.gather(
                *(backend.publish(stream, {"n": f"{n}-{i}"}, None) for i in range(6)),
                return_exceptions=True,
            )
        finally:
            await backend.close()
        return [type(r).__name__ for r in results if isinstance(r, BaseException)]

    failures = [asyncio.run(burst(n)) for n in range(20)]
    assert not any(failures), failures
    assert len(entries_with_prefix(session_twin, stream)) == 120


def entries_with_prefix(twin: Twin, stream: str) -> list[str]:
    client = admin(twin)
    try:
        entries: Any = client.xrange(stream, "-", "+")
        return [str(entry_id) for entry_id, _ in entries]
    finally:
        client.close()
