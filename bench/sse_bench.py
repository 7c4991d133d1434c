"""SSE proxy benchmark: N clients on one stream, a publisher at R events/s, on the twin.

    make bench-sse            # or: .venv/bin/python bench/sse_bench.py --clients 1000 --rate 50

Prints delivered / expected, delivered events/s, publish -> receipt latency p50/p95/p99
(measured on a sample of clients), the proxy's RSS, and the Redis connections the proxy
holds; then an idle test (--idle N connections, proxy RSS). The clients run in a separate
process (uvloop, plain sockets) so they do not share an event loop with the publisher.
Everything runs on this machine: publisher, proxy, Redis and clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from redisops import acl
from redisops.client import Endpoint, connect_cluster
from redisops.local import process
from redisops.local.settings import HOST
from redisops.local.twin import Twin
from redisops.tokens import mint

MARK = b"\nid: "


class Client(asyncio.Protocol):
    """One SSE connection: counts events; sampled ones also measure latency."""

    def __init__(self, request: bytes, sample: bool, stats: dict[str, Any]) -> None:
        self.request = request
        self.sample = sample
        self.stats = stats
        self.tail = b""
        self.buffer = b""
        self.events = 0
        self.connected = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self.connected.done() and b"200 OK" in data[:20]:
            self.connected.set_result(True)
        chunk = self.tail + data
        found = chunk.count(MARK)
        self.events += found
        self.stats["events"] += found
        self.tail = chunk[-4:]
        if self.sample and found:
            now = time.time()
            self.buffer += data
            *complete, self.buffer = self.buffer.split(b"\n\n")
            for block in complete:
                start = block.find(b'"t":"')
                if start >= 0:
                    end = block.find(b'"', start + 5)
                    self.stats["latencies"].append(now - float(block[start + 5 : end]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats["lost"] += 1
        if not self.connected.done():
            self.connected.set_result(False)


async def run_clients(
    url: str, stream: str, token: str, count: int, samples: int, ready: Any, stop: Any, out: Any
) -> None:
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"GET /v1/streams/{stream} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    stats: dict[str, Any] = {"events": 0, "latencies": [], "lost": 0}
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    for i in range(count):
        protocol = Client(request, i < samples, stats)
        await loop.create_connection(lambda protocol=protocol: protocol, host, int(port))  # type: ignore[misc]
        clients.append(protocol)
        if i % 200 == 199:
            await asyncio.sleep(0)
    ok = await asyncio.gather(*(c.connected for c in clients))
    ready.put(sum(1 for x in ok if x))
    while not stop.is_set():
        await asyncio.sleep(0.05)
    out.put({"events": stats["events"], "latencies": stats["latencies"], "lost": stats["lost"]})


def client_process(*args: Any) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run_clients(*args))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def proxy_redis_connections(twin: Twin) -> int:
    client = connect_cluster(
        [Endpoint(host=HOST, port=twin.settings().ports[0])],
        twin.client_tls(acl.ADMIN),
        twin.credentials(acl.ADMIN),
    )
    try:
        lists: Any = client.client_list(target_nodes=client.ALL_NODES)
    finally:
        client.close()
    rows = [c for node in lists.values() for c in node] if isinstance(lists, dict) else lists
    return sum(1 for c in rows if c.get("user") in (acl.READER, acl.PUBLISHER))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def start_proxy(twin: Twin, workdir: Path, port: int) -> subprocess.Popen[bytes]:
    settings = {**twin.proxy.settings_json(twin.settings()), "port": port, "max_connections": 20000}
    config = workdir / "proxy.json"
    config.write_text(json.dumps(settings))
    log = (workdir / "proxy.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sse_proxy", "--config", str(config)], stdout=log, stderr=log
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://{HOST}:{port}/readyz", timeout=1).status_code == 200:
                return proc
        time.sleep(0.1)
    raise SystemExit("the proxy did not start; see " + str(workdir / "proxy.log"))


async def publish(twin: Twin, stream: str, rate: float, seconds: float) -> int:
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    tls = twin.client_tls(acl.ADMIN)
    client = RedisCluster(
        startup_nodes=[ClusterNode(HOST, twin.settings().ports[0])],
        username=acl.ADMIN,
        password=twin.credentials(acl.ADMIN).password.get_secret_value(),
        decode_responses=True,
        driver_info=None,
        **tls.redis_kwargs(),
    )
    sent = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            due = started + sent / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await client.xadd(stream, {"t": repr(time.time()), "seq": str(sent), "pad": "x" * 100})
            sent += 1
    finally:
        await client.aclose()
    return sent


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state-dir", type=Path, help="a running twin (default: start one)")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--samples", type=int, default=50, help="clients that measure latency")
    parser.add_argument("--idle", type=int, default=5000, help="idle connections for the RSS test")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        own = args.state_dir is None
        twin = Twin(args.state_dir or workdir / "twin")
        if own:
            twin.up(base_port=process.free_base_port("127.0.0.1", 6), sse_proxy=False)
        twin.proxy.ensure_credentials()
        secret = twin.proxy.secret_file.read_text().strip()
        token = mint(secret, "bench", ["*"], ["*"], 3600)
        port = free_port()
        proxy = start_proxy(twin, workdir, port)
        url = f"http://{HOST}:{port}"
        result: dict[str, Any] = {
            "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
            "clients": args.clients,
            "rate": args.rate,
            "seconds": args.seconds,
        }
        try:
            idle_before = rss_mb(proxy.pid)
            redis_before = proxy_redis_connections(twin)
            stream = f"standup:bench-{int(time.time())}"
            ctx = mp.get_context("spawn")
            ready, stop, out = ctx.Queue(), ctx.Event(), ctx.Queue()
            worker = ctx.Process(
                target=client_process,
                args=(url, stream, token, args.clients, args.samples, ready, stop, out),
            )
            worker.start()
            connected = ready.get(timeout=120)
            result["connected"] = connected
            time.sleep(1.0)
            sent = asyncio.run(publish(twin, stream, args.rate, args.seconds))
            time.sleep(3.0)  # let the last events arrive
            result["rss_mb_under_load"] = round(rss_mb(proxy.pid), 1)
            result["redis_connections"] = proxy_redis_connections(twin) - redis_before
            stop.set()
            measured = out.get(timeout=60)
            worker.join(timeout=30)
            expected = sent * connected
            latencies = measured["latencies"]
            result.update(
                published=sent,
                delivered=measured["events"],
                expected=expected,
                delivery_ratio=round(measured["events"] / expected, 5) if expected else None,
                delivered_per_s=round(measured["events"] / args.seconds),
                latency_p50_ms=round(percentile(latencies, 0.50) * 1000, 1),
                latency_p95_ms=round(percentile(latencies, 0.95) * 1000, 1),
                latency_p99_ms=round(percentile(latencies, 0.99) * 1000, 1),
                latency_mean_ms=round(statistics.fmean(latencies) * 1000, 1) if latencies else None,
                lost_connections=measured["lost"],
                rss_mb_idle_start=round(idle_before, 1),
            )
            if args.idle:
                time.sleep(2.0)
                ready2, stop2, out2 = ctx.Queue(), ctx.Event(), ctx.Queue()
                idle_worker = ctx.Process(
                    target=client_process,
                    args=(url, f"{stream}-idle", token, args.idle, 0, ready2, stop2, out2),
                )
                idle_worker.start()
                result["idle_connected"] = ready2.get(timeout=300)
                time.sleep(2.0)
                result["idle_rss_mb"] = round(rss_mb(proxy.pid), 1)
                result["idle_redis_connections"] = proxy_redis_connections(twin) - redis_before
                stop2.set()
                out2.get(timeout=60)
                idle_worker.join(timeout=30)
        finally:
            proxy.send_signal(signal.SIGTERM)
            proxy.wait(timeout=60)
            if own:
                twin.down(purge=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['machine']}; {args.clients} clients x {args.rate:g}/s for {args.seconds:g} s")
    for key, value in result.items():
        print(f"  {key:26s} {value}")


if __name__ == "__main__":
    main()
