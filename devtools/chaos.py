"""Chaos drills on separate hosts: real partitions, stopped processes and lost links on the
netns twin (`redisops local up --hosts netns`), under write load and with SSE clients
streaming through the proxy, and the numbers of what Redis Cluster loses.

    make chaos                                   # every drill, reports/chaos.json
    python -m devtools.chaos run --drill partition-long --json out.json

Each drill runs two agents, one on each client host (`client-a`, `client-b`), as
processes inside those network namespaces. Each agent writes its own canary list on the
victim's shard (`RPUSH` then `WAIT 1 100` every 10 ms: a write is *acknowledged* when its
reply arrived, *WAIT-acknowledged* when a replica had it too) and streams the victim
shard's stream through the SSE proxy (reconnecting as EventSource does); `client-b` also
publishes to that stream every 20 ms. After the fault is healed and the cluster is whole
again, the driver reads back what the cluster holds and counts, per agent: writes
acknowledged and lost (with and without WAIT), writes a minority primary accepted and
lost, the longest stretch without an accepted write, SSE entries lost (in the stream, never
received), duplicated (received twice) and phantom (received, gone from the stream).

Bounded: a drill touches only the twin's own namespaces and addresses, runs for a fixed
time, and the twin (namespaces included) is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from redisops import acl
from redisops.client import connect, connect_cluster
from redisops.cluster import parse_cluster_nodes
from redisops.local import checks, netns, process
from redisops.local.twin import Twin

AGENTS = ("client-a", "client-b")
PUBLISHER = "client-b"
WARMUP_S = 1.5
SETTLE_S = 1.0
CATCH_UP_S = 3.0  # after the last publish, for SSE clients to receive what is in flight
REDUNDANCY_TIMEOUT_S = 60.0


# ---- the agent: runs inside a client host -------------------------------------------


def agent(status_file: Path, key: str, stream: str, publish: bool, out: Path) -> None:
    """Write the canary, stream (and publish) until SIGTERM; then write what happened."""
    from smoke_tests.canary import Canary
    from smoke_tests.probes import cluster_client
    from smoke_tests.sse_client import Subscription
    from smoke_tests.targets import LocalTarget

    status = json.loads(status_file.read_text())
    target = LocalTarget(status, Path(status["state_dir"]))
    stop = threading.Event()
    stop_publishing = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    published: list[tuple[str, float]] = []
    publish_errors: list[str] = []

    def publisher() -> None:
        client: redis.RedisCluster | None = None
        seq = 0
        while not stop_publishing.is_set():
            try:
                if client is None:
                    client = cluster_client(target, acl.PUBLISHER)
                seq += 1
                entry_id = client.xadd(stream, {"action": "chaos", "seq": str(seq)})
                published.append((str(entry_id), time.monotonic()))
            except (redis.RedisError, OSError) as exc:
                publish_errors.append(f"{type(exc).__name__}: {str(exc)[:80]}")
                with contextlib.suppress(Exception):
                    if client is not None:
                        client.close()
                client = None
            stop_publishing.wait(0.02)

    sse = status["sse_proxy"]
    url = f"{sse['url']}/v1/streams/{urllib.parse.quote(stream, safe='')}?from=now"
    subscription = Subscription(url, token=sse["token"], reconnect=True, timeout=3.0)
    canary = Canary(target, key, interval=0.01, wait_ms=100, timeout=0.5)
    threads = [threading.Thread(target=publisher, daemon=True)] if publish else []
    subscription.start(wait=False)
    canary.start()
    for thread in threads:
        thread.start()
    while not stop.is_set():
        stop.wait(0.1)
    stopped_at = time.monotonic()
    stop_publishing.set()  # first: the catch-up below starts at the last publish
    canary.stop()
    stopped = threading.Event()
    for thread in threads:
        thread.join(timeout=5)
    # what was published reaches the subscription before it closes (no edge effect)
    stopped.wait(CATCH_UP_S)
    subscription.close()
    result = {
        "writes": [[w.seq, w.at, w.acked, w.node] for w in canary.log.writes],
        "errors": len(canary.log.errors),
        "published": published,
        "publish_errors": len(publish_errors),
        "received": [e.id for e in subscription.entries()],
        # where the first connection started (`from=now`): entries after it are expected
        "position": subscription.positions[0].id if subscription.positions else None,
        "connections": subscription.connections,
        "stopped_at": stopped_at,
    }
    out.write_text(json.dumps(result))


# ---- the driver ------------------------------------------------------------------------


@dataclass
class Agents:
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    outs: dict[str, Path] = field(default_factory=dict)

    def stop(self) -> dict[str, dict[str, Any]]:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        results = {}
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            results[name] = json.loads(self.outs[name].read_text())
        return results


@dataclass
class Drill:
    name: str
    what: str
    fault: Callable[[Context], Callable[[], None]]  # makes the fault; returns its healing
    hold_s: Callable[[int], float]  # node-timeout ms -> how long the fault lasts
    minority: str | None = "client-a"  # the agent cut off with the victim, if any


@dataclass
class Context:
    twin: Twin
    network: netns.Network
    status: dict[str, Any]
    victim_port: int
    victim_host: str
    victim_pid: int
    replica_host: str
    notes: dict[str, Any] = field(default_factory=dict)


def _partition(ctx: Context) -> Callable[[], None]:
    ctx.network.partition([ctx.victim_host, "client-a"])
    return ctx.network.heal


def _sigstop(ctx: Context) -> Callable[[], None]:
    os.kill(ctx.victim_pid, signal.SIGSTOP)
    return lambda: os.kill(ctx.victim_pid, signal.SIGCONT)


def _proxy_cut(ctx: Context) -> Callable[[], None]:
    ctx.network.cut("proxy", ctx.victim_host)
    return ctx.network.heal


def _replica_cut(ctx: Context) -> Callable[[], None]:
    ctx.network.cut(ctx.replica_host, ctx.victim_host)
    return ctx.network.heal


MIGRATION_KEYS = 20_000  # spread over every slot: each slot's move carries keys


def _kill_during_migration(ctx: Context) -> Callable[[], None]:
    """Scale out by one shard in the background (`redisops local up --shards N+1`: the
    rebalance moves slots with redis-cli --cluster) over a data set in every slot, kill -9
    the first primary seen with a slot migrating away; the healing restarts it and lets
    reconcile finish the job. Every key of the data set must be there afterwards."""
    settings = ctx.twin.settings()
    grown = settings.shards + 1
    outcome: dict[str, Any] = {}
    run = f"smoke:chaos:mig:{int(time.time())}"
    admin = connect_cluster(
        settings.endpoints, ctx.twin.client_tls(acl.ADMIN), ctx.twin.credentials(acl.ADMIN)
    )
    try:
        pipe = admin.pipeline(transaction=False)
        for i in range(MIGRATION_KEYS):
            pipe.set(f"{run}:{i}", str(i))
        pipe.execute()
    finally:
        admin.close()

    def grow() -> None:
        try:
            outcome["healthy"] = ctx.twin.up(shards=grown).healthy
        except Exception as exc:  # the kill may break the rebalance: reconcile heals it
            outcome["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"

    thread = threading.Thread(target=grow, daemon=True)
    thread.start()
    victim = _wait_migrating(ctx.twin, settings.ports, timeout=120.0)
    if victim is None:
        thread.join(timeout=180)
        raise RuntimeError("no primary had a slot migrating during the scale-out: no drill")
    pid = process.running_pid(ctx.twin.layout.pidfile(victim), victim)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    ctx.notes["killed_while_migrating"] = victim
    ctx.notes["killed_the_canary_s_shard"] = victim == ctx.victim_port

    def heal() -> None:
        thread.join(timeout=180)
        ctx.notes["scale_out_first_try"] = outcome
        if process.running_pid(ctx.twin.layout.pidfile(victim), victim) is None:
            ctx.twin.start_node(victim)
        # as on GKE, where the reconcile Job runs once the pods are ready: the restarted
        # node has loaded its data (and shows its open slots) before reconcile looks
        ctx.twin.wait_responding(ctx.twin.settings(), timeout=60.0)
        passes = []
        for _ in range(3):  # reconcile until nothing is left to do (counted)
            report = ctx.twin.up(shards=grown)  # close open slots, finish the move
            passes.append(
                {
                    "healthy": report.healthy,
                    "actions": [a.message for a in report.actions],
                    "errors": [f.message for f in report.findings if f.severity == "error"],
                }
            )
            if report.healthy and not checks.cluster_problems(
                ctx.twin, ctx.twin.settings(), timeout=10.0
            ):
                break
        ctx.notes["reconcile_passes"] = passes
        now = ctx.twin.settings()
        check = connect_cluster(
            now.endpoints, ctx.twin.client_tls(acl.ADMIN), ctx.twin.credentials(acl.ADMIN)
        )
        try:
            pipe = check.pipeline(transaction=False)
            for i in range(MIGRATION_KEYS):
                pipe.get(f"{run}:{i}")
            values = pipe.execute()
            ctx.notes["migration_keys"] = MIGRATION_KEYS
            ctx.notes["migration_keys_lost"] = sum(1 for i, v in enumerate(values) if v != str(i))
            pipe = check.pipeline(transaction=False)
            for i in range(MIGRATION_KEYS):
                pipe.delete(f"{run}:{i}")
            pipe.execute()
        finally:
            check.close()

    return heal


def _wait_migrating(twin: Twin, ports: list[int], timeout: float) -> int | None:
    """The first node of `ports` seen with a slot migrating away, within `timeout`."""
    settings = twin.settings()
    creds, tls = twin.credentials(acl.MONITORING), twin.client_tls(acl.MONITORING)
    clients = {p: connect(settings.endpoint(p), tls, creds, timeout=1.0) for p in ports}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for port, client in clients.items():
                with contextlib.suppress(redis.RedisError, OSError):
                    nodes = parse_cluster_nodes(str(client.execute_command("CLUSTER", "NODES")))
                    if any(n.myself and n.migrating for n in nodes):
                        return port
        return None
    finally:
        for client in clients.values():
            client.close()


DRILLS: dict[str, Drill] = {
    d.name: d
    for d in (
        Drill(
            "partition-long",
            "a primary and client-a cut from the majority, longer than node-timeout",
            _partition,
            lambda ms: 3 * ms / 1000 + 2.0,
        ),
        Drill(
            "partition-short",
            "the same, shorter than node-timeout",
            _partition,
            lambda ms: 0.5 * ms / 1000,
        ),
        Drill(
            "sigstop",
            "SIGSTOP of a primary past node-timeout, then SIGCONT",
            _sigstop,
            lambda ms: 3 * ms / 1000 + 2.0,
            minority=None,
        ),
        Drill(
            "proxy-cut",
            "the SSE proxy cut from the stream's primary",
            _proxy_cut,
            lambda ms: 3 * ms / 1000 + 2.0,
            minority=None,
        ),
        Drill(
            "replica-cut",
            "a replica that cannot reach its primary but reaches every other node",
            _replica_cut,
            lambda ms: 3 * ms / 1000 + 2.0,
            minority=None,
        ),
        Drill(
            "kill-during-migration",
            "kill -9 of a primary while a scale-out migrates its slots; reconcile heals",
            _kill_during_migration,
            lambda ms: 0.0,
            minority=None,
        ),
    )
}


def _shard0(status: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The primary serving slot 0's shard, and one of its replicas."""
    nodes = status["nodes"]
    primary = next(n for n in nodes if n["role"] == "primary" and n["shard"] == 0)
    replica = next(n for n in nodes if n["primary_id"] == primary["node_id"])
    return primary, replica


def _host_name(status: dict[str, Any], address: str) -> str:
    hosts = status["network"]["hosts"]
    return str(next(name for name, h in hosts.items() if h["address"] == address))


def run_drill(
    twin: Twin,
    drill: Drill,
    work: Path,
    *,
    min_replicas: bool = False,
    max_lag_s: int = 2,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    from smoke_tests.probes import key_for_primary

    settings = twin.settings()
    network = settings.network()
    assert network is not None, "chaos drills need a netns twin"
    problems = checks.cluster_problems(twin, settings, timeout=REDUNDANCY_TIMEOUT_S)
    if problems:
        raise RuntimeError(f"the twin is not whole before {drill.name}: {problems}")
    _min_replicas(twin, settings, on=min_replicas, lag_s=max_lag_s)
    status = twin.status()
    primary, replica = _shard0(status)
    slots = {s for lo, hi in primary["slots"] for s in range(lo, hi + 1)}
    tag_key = key_for_primary(slots, "smoke:chaos:")
    tag = tag_key[tag_key.index("{") :]
    # the smoke suite's own keys and streams: the roles' ACLs already admit them
    stream = f"smoke:sse:chaos-{drill.name}{tag}"
    run_id = f"{drill.name}-{int(time.time())}"
    status_file = work / f"{run_id}-status.json"
    status_file.write_text(json.dumps(status))
    keys = {n: f"smoke:chaos:{tag}:{run_id}:{n}" for n in AGENTS}
    agents = Agents()
    for name in AGENTS:
        out = work / f"{run_id}-{name}.json"
        argv = network[name].argv(
            sys.executable, "-m", "devtools.chaos", "agent", "--status", str(status_file),
            "--key", keys[name], "--stream", stream, "--out", str(out),
            *(["--publish"] if name == PUBLISHER else []),
        )  # fmt: skip
        agents.procs[name] = subprocess.Popen(argv, cwd=Path(__file__).resolve().parents[1])
        agents.outs[name] = out
    ctx = Context(
        twin, network, status, primary["port"], _host_name(status, primary["host"]),
        int(primary["pid"]), _host_name(status, replica["host"]),
    )  # fmt: skip
    notes = ctx.notes
    notes["max_lag_s"] = max_lag_s if min_replicas else None
    heal: Callable[[], None] | None = None
    try:
        time.sleep(WARMUP_S)
        hold = drill.hold_s(settings.node_timeout_ms)
        say(f"{drill.name}: {drill.what} ({hold:.1f} s)")
        started = time.monotonic()
        notes["fault_wall_ms"] = [int(time.time() * 1000)]
        heal = drill.fault(ctx)
        time.sleep(hold)
        heal()
        heal = None
        healed = time.monotonic()
        notes["fault_wall_ms"].append(int(time.time() * 1000))
        # the shape may have changed (a scale-out): judge against the settings now
        problems = checks.cluster_problems(twin, twin.settings(), timeout=REDUNDANCY_TIMEOUT_S)
        redundant = time.monotonic()
        time.sleep(SETTLE_S)
    finally:
        if heal is not None:
            heal()
        results = agents.stop()
    return _measure(
        twin, drill, results, started=started, healed=healed, redundant=redundant,
        problems=problems, stream=stream, keys=keys, min_replicas=min_replicas, notes=notes,
    )  # fmt: skip


def _min_replicas(twin: Twin, settings: Any, *, on: bool, lag_s: int) -> None:
    """`min-replicas-to-write 1` with `min-replicas-max-lag` `lag_s`, or off."""
    lag = lag_s
    for endpoint in settings.endpoints:
        with contextlib.closing(_node(twin, endpoint)) as client:
            client.config_set("min-replicas-to-write", 1 if on else 0)
            client.config_set("min-replicas-max-lag", lag)


def _node(twin: Twin, endpoint: Any) -> redis.Redis:
    from redisops.client import connect

    return connect(endpoint, twin.client_tls(acl.ADMIN), twin.credentials(acl.ADMIN), timeout=2.0)


def _measure(
    twin: Twin,
    drill: Drill,
    results: dict[str, dict[str, Any]],
    *,
    started: float,
    healed: float,
    redundant: float,
    problems: list[str],
    stream: str,
    keys: dict[str, str],
    min_replicas: bool,
    notes: dict[str, Any],
) -> dict[str, Any]:
    settings = twin.settings()  # after the drill: a scale-out changed the shape
    cluster = connect_cluster(
        settings.endpoints, twin.client_tls(acl.ADMIN), twin.credentials(acl.ADMIN)
    )
    try:
        stored = {n: {int(v) for v in cluster.lrange(k, 0, -1)} for n, k in keys.items()}
        in_stream = [str(e[0]) for e in cluster.xrange(stream) or []]
        for key in keys.values():
            cluster.delete(key)
        cluster.delete(stream)
    finally:
        cluster.close()
    per_agent = {}
    for name, result in results.items():
        writes = result["writes"]
        acked = list(writes)
        wait_acked = [w for w in writes if w[2]]
        during = [w for w in writes if started <= w[1] <= healed]
        lost = [w for w in acked if w[0] not in stored[name]]
        lost_wait = [w for w in wait_acked if w[0] not in stored[name]]
        # the longest stretch without an accepted write from the fault on, up to the agent's
        # stop (a write that never came back counts to the end)
        times = sorted(w[1] for w in writes)
        before = [x for x in times if x <= started]
        points = [before[-1] if before else started, *(x for x in times if x > started)]
        points.append(result["stopped_at"])
        gaps = [b - a for a, b in itertools.pairwise(points)]
        per_agent[name] = {
            "acknowledged": len(acked),
            "wait_acknowledged": len(wait_acked),
            "lost": len(lost),
            "wait_acknowledged_lost": len(lost_wait),
            "accepted_during_fault": len(during),
            "lost_during_fault": len([w for w in during if w[0] not in stored[name]]),
            "unavailable_s": round(max(gaps, default=0.0), 3),
        }
    stream_ids = set(in_stream)
    published = {entry_id for entry_id, _ in results[PUBLISHER]["published"]}
    sse = {}
    for name, result in results.items():
        received = result["received"]
        got = set(received)
        # every entry after the position the subscription started from; none known (it
        # never connected): every entry
        start = result["position"]
        expected = [i for i in in_stream if start is None or not _id_ge(start, i)]
        sse[name] = {
            "connected": start is not None,
            "received": len(received),
            "lost": len(missed := [i for i in expected if i not in got]),
            # when the missed entries were written: before the fault, during it (until 2 s
            # after the heal), or after
            "lost_when": _when(missed, notes.get("fault_wall_ms")),
            "duplicated": len(received) - len(got),
            "phantom": len(got - stream_ids),
            "connections": result["connections"],
        }
    minority = drill.minority
    return {
        "drill": drill.name,
        "what": drill.what,
        "min_replicas_to_write": 1 if min_replicas else 0,
        "min_replicas_max_lag_s": notes.get("max_lag_s"),
        "shape": f"{settings.shards}x{settings.replicas}",
        "hold_s": round(healed - started, 2),
        "time_to_full_redundancy_s": round(redundant - healed, 2),
        "whole_afterwards": not problems,
        "problems_afterwards": problems,
        "writes": per_agent,
        "wait_acknowledged_lost": sum(a["wait_acknowledged_lost"] for a in per_agent.values()),
        "acknowledged_lost": sum(a["lost"] for a in per_agent.values()),
        "minority_accepted_lost": per_agent[minority]["lost_during_fault"] if minority else 0,
        "unavailable_s": per_agent["client-b"]["unavailable_s"],
        "published": len(published),
        "published_lost": len(published - stream_ids),
        "sse": sse,
        "reconcile_actions": _reconcile_actions(twin),
        "notes": notes,
    }


def _when(ids: list[str], fault: list[int] | None) -> dict[str, int]:
    if not fault or len(fault) < 2:
        return {}
    start, heal = fault[0], fault[1] + 2000
    ms = [int(i.split("-")[0]) for i in ids]
    return {
        "before": sum(m < start for m in ms),
        "during": sum(start <= m <= heal for m in ms),
        "after": sum(m > heal for m in ms),
    }


def _id_ge(a: str, b: str) -> bool:
    ams, aseq = (int(x) for x in a.split("-"))
    bms, bseq = (int(x) for x in b.split("-"))
    return (ams, aseq) >= (bms, bseq)


def _reconcile_actions(twin: Twin) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "redisops", "reconcile", "--target", "local", "--state-dir",
         str(twin.layout.root), "--plan", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    try:
        plan = json.loads(done.stdout)
        actions, findings = plan["actions"], plan.get("findings", [])
    except (ValueError, KeyError, TypeError):
        return [f"reconcile --plan failed: {done.stderr.strip()[-200:]}"]
    said = [f"action: {a.get('message', a)}" for a in actions]
    said += [
        f"{f.get('severity')}: {f.get('message')}"
        for f in findings
        if f.get("severity") in ("error", "warning")
    ]
    return said


@contextlib.contextmanager
def netns_twin(root: Path, node_timeout_ms: int, replicas: int = 1) -> Iterator[Twin]:
    """A netns twin, removed afterwards. Its default ports are free: every node and the
    proxy listen in a namespace of their own."""
    twin = Twin(root)
    try:
        report = twin.up(hosts="netns", replicas=replicas, node_timeout_ms=node_timeout_ms)
        if not report.healthy:
            raise RuntimeError(f"the netns twin did not form: {report.findings}")
        yield twin
    finally:
        twin.down(purge=True)


def run(
    names: list[str],
    node_timeout_ms: int,
    both: bool,
    say: Callable[[str], None],
    *,
    replicas: int = 1,
    max_lag_s: int = 2,
    runs: int = 1,
) -> dict[str, Any]:
    reports = []
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="redisops-chaos-") as tmp,
        netns_twin(Path(tmp) / "twin", node_timeout_ms, replicas) as twin,
    ):
        for name in [n for _ in range(runs) for n in names]:
            for min_replicas in (
                (False, True) if both and name.startswith("partition") else (False,)
            ):
                reports.append(
                    run_drill(
                        twin,
                        DRILLS[name],
                        Path(tmp),
                        min_replicas=min_replicas,
                        max_lag_s=max_lag_s,
                        say=say,
                    )
                )
                say(_line(reports[-1]))
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kernel": platform.release()},
        "node_timeout_ms": node_timeout_ms,
        "replicas": replicas,
        "runs": runs,
        "duration_s": round(time.monotonic() - started, 1),
        "drills": reports,
        "summary": summary(reports),
    }  # fmt: skip


SUMMED = ("unavailable_s", "time_to_full_redundancy_s", "acknowledged_lost",
          "wait_acknowledged_lost", "minority_accepted_lost", "published_lost")  # fmt: skip


def summary(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per drill and setting, over the runs: median, min and max of each number."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in reports:
        groups.setdefault((r["drill"], r["min_replicas_to_write"]), []).append(r)
    rows = []
    for (drill, min_replicas), runs in groups.items():
        row: dict[str, Any] = {"drill": drill, "min_replicas_to_write": min_replicas,
                               "runs": len(runs)}  # fmt: skip
        for key in SUMMED:
            values = [float(r[key]) for r in runs]
            row[key] = {"median": statistics.median(values), "min": min(values),
                        "max": max(values)}  # fmt: skip
        row["sse_lost_max"] = max(sum(s["lost"] for s in r["sse"].values()) for r in runs)
        row["sse_phantom_max"] = max(sum(s["phantom"] for s in r["sse"].values()) for r in runs)
        row["sse_duplicated_max"] = max(
            sum(s["duplicated"] for s in r["sse"].values()) for r in runs
        )
        rows.append(row)
    return rows


def _line(r: dict[str, Any]) -> str:
    sse = r["sse"]
    return (
        f"{r['drill']} (min-replicas {r['min_replicas_to_write']}): unavailable "
        f"{r['unavailable_s']} s, redundancy after heal {r['time_to_full_redundancy_s']} s, "
        f"acked lost {r['acknowledged_lost']}, WAIT-acked lost {r['wait_acknowledged_lost']}, "
        f"minority accepted+lost {r['minority_accepted_lost']}, SSE lost "
        f"{sum(s['lost'] for s in sse.values())} dup {sum(s['duplicated'] for s in sse.values())} "
        f"phantom {sum(s['phantom'] for s in sse.values())}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("agent", help="(inside a client host) canary, SSE and publisher")
    a.add_argument("--status", type=Path, required=True)
    a.add_argument("--key", required=True)
    a.add_argument("--stream", required=True)
    a.add_argument("--publish", action="store_true")
    a.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run", help="run drills on a netns twin and print the table")
    r.add_argument("--drill", action="append", choices=sorted(DRILLS), help="repeat; default all")
    r.add_argument("--node-timeout", type=int, default=1000)
    r.add_argument("--with-min-replicas", action="store_true",
                   help="the partition drills also with min-replicas-to-write 1")  # fmt: skip
    r.add_argument("--replicas", type=int, default=1, help="replicas per shard (prod: 2)")
    r.add_argument("--max-lag", type=int, default=2, help="min-replicas-max-lag, seconds")
    r.add_argument("--runs", type=int, default=1, help="repeat the drills (median, range)")
    r.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    if args.command == "agent":
        agent(args.status, args.key, args.stream, args.publish, args.out)
        return 0
    netns.require_root()
    report = run(args.drill or list(DRILLS), args.node_timeout, args.with_min_replicas,
                 lambda m: print(m, file=sys.stderr, flush=True),
                 replicas=args.replicas, max_lag_s=args.max_lag, runs=args.runs)  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"drills": [_line(d) for d in report["drills"]],
                      "duration_s": report["duration_s"]}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
