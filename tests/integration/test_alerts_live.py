"""Live fire drills: every alert of `redisops.alerts` fires in the twin's real Prometheus
while the fault it names is injected, reaches Alertmanager (and a webhook this test runs
on loopback), and resolves once the fault is removed. Nothing is faked: real
redis-server processes, Debian's Prometheus, Alertmanager and redis_exporter, the proxy.

The twin runs the production rules on its clock (`TWIN_SCALE`); each drill's budget is
the alert's `for` plus two evaluation intervals, plus one scrape and Alertmanager's
group_wait (the path to the webhook), plus the time the fault itself takes to show
(named per drill). The measured times are written to reports/alert-drills.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from redisops import acl, alerts, dashboards
from redisops.client import Endpoint, connect
from redisops.local.monitoring import SCRAPE_S, TwinMonitoring, twin_alert_params
from redisops.local.settings import HOST
from redisops.local.twin import Twin
from redisops.tls import Issued, issue
from smoke_tests.sse_client import Subscription
from tests.conftest import free_base_port, free_port, requires_redis
from tests.integration.proxies import node_admin, publisher, shard_of

REPORT = Path(os.environ.get("REPORTS", "reports")) / "alert-drills.json"
TIMINGS: dict[str, dict[str, float]] = {}
ALERTMANAGER_GROUP_WAIT_S = 1
# A rules reload (how these drills change the allowed age) rebuilds Prometheus's rule
# groups, which start evaluating again within one interval (`up` itself returns only
# once Prometheus has its Alertmanager back).
RELOAD_S = 2.0
RESOLVE_S = 25.0  # windows are 5 s on the twin; resolution also waits for group_interval


class Webhook:
    """Alertmanager's webhook receiver: every notification, as received."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook.lock:
                    for alert in body["alerts"]:
                        hook.received.append((time.monotonic(), alert))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def seen(self, name: str, status: str, since: float) -> list[dict[str, Any]]:
        with self.lock:
            return [
                a
                for t, a in self.received
                if t >= since and a["labels"]["alertname"] == name and a["status"] == status
            ]

    def wait(self, name: str, status: str, since: float, timeout: float) -> float:
        """Seconds from `since` to the first `status` notification of `name`."""
        deadline = since + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for t, a in self.received:
                    if t >= since and a["labels"]["alertname"] == name and a["status"] == status:
                        return t - since
            time.sleep(0.05)
        raise AssertionError(
            f"{name} did not reach Alertmanager as {status} within {timeout:.1f} s; "
            f"received meanwhile: {sorted({a['labels']['alertname'] for a in self._since(since)})}"
        )

    def _since(self, since: float) -> list[dict[str, Any]]:
        with self.lock:
            return [a for t, a in self.received if t >= since]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hook() -> Iterator[Webhook]:
    receiver = Webhook()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def alert_twin(tmp_path_factory: pytest.TempPathFactory, hook: Webhook) -> Iterator[Twin]:
    requires_redis()
    if shutil.which("prometheus") is None:
        pytest.fail("Debian's prometheus is missing: run `make monitoring` first")
    twin = Twin(tmp_path_factory.mktemp("alert-twin"))
    try:
        report = twin.up(
            base_port=free_base_port(6),
            proxy_port=free_port(),
            monitoring=True,
            monitoring_port=free_base_port(20),
            alert_webhook=hook.url,
            backup_max_age_s=3600,
            drill_max_age_s=3600,
            proxy_max_connections=20,
        )
        assert report.healthy, report.findings
        wait_scraped(twin)
        # A proven backup, so the backup and drill alerts start quiet (they fire until then:
        # a new twin has neither), and their resolved notifications are delivered.
        redisops("drill", "restore", "--target", "local", "--state-dir", str(twin.layout.root))
        wait_quiet(twin)
        yield twin
    finally:
        twin.down(purge=False)
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(TIMINGS, indent=2, sort_keys=True) + "\n")


def wait_scraped(twin: Twin, timeout: float = 15.0) -> None:
    """Until every target of the twin's Prometheus has been scraped and is up."""
    expected = 1 + len(twin.settings().ports) + (1 if twin.settings().sse_proxy else 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        up = query(twin, "sum(up)")
        if up and float(up[0]["value"][1]) == expected:
            return
        time.sleep(0.2)
    down = [t["metric"] for t in query(twin, "up == 0")]
    raise AssertionError(f"not every target is up after {timeout:.0f} s; down: {down}")


def wait_quiet(twin: Twin, timeout: float = 20.0) -> None:
    """Until Prometheus has no pending or firing alert, then one Alertmanager group
    interval more (the resolved notifications)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [a for a in active_alerts(twin) if a["state"] in ("pending", "firing")]:
            time.sleep(2 * ALERTMANAGER_GROUP_WAIT_S + 1)
            return
        time.sleep(0.2)
    raise AssertionError(f"alerts still active: {active_alerts(twin)}")


def redisops(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "redisops", *args], capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"redisops {' '.join(args)}: {result.stderr[-800:]}")
    return result


def query(twin: Twin, promql: str) -> list[dict[str, Any]]:
    url = TwinMonitoring.urls(twin.settings())["prometheus"] + "/api/v1/query?"
    with urllib.request.urlopen(url + urllib.parse.urlencode({"query": promql}), timeout=5) as r:  # noqa: S310 (loopback)
        body = json.load(r)
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def active_alerts(twin: Twin) -> list[dict[str, Any]]:
    url = TwinMonitoring.urls(twin.settings())["prometheus"] + "/api/v1/alerts"
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (loopback)
        return list(json.load(r)["data"]["alerts"])


def budget(name: str, shows_after: float = 0.0) -> float:
    """`for` + two evaluations + one scrape + group_wait, plus the fault's own delay."""
    params = twin_alert_params_default()
    alert = alerts.BY_NAME[name]
    return (
        params.seconds(alert.for_s)
        + 2 * SCRAPE_S
        + SCRAPE_S
        + ALERTMANAGER_GROUP_WAIT_S
        + 1.0  # the webhook's own delivery and this poll
        + shows_after
    )


def twin_alert_params_default() -> alerts.AlertParams:
    return alerts.AlertParams(scale=1 / 60)


def _states(twin: Twin, name: str) -> list[Any]:
    url = TwinMonitoring.urls(twin.settings())["prometheus"] + "/api/v1/rules"
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (loopback)
        groups = json.load(r)["data"]["groups"]
    return [
        (
            rule["state"],
            rule.get("lastError"),
            rule["query"],
            [a["activeAt"] for a in rule["alerts"]],
        )
        for group in groups
        for rule in group["rules"]
        if rule["name"] == name
    ]


def drill(
    twin: Twin,
    hook: Webhook,
    names: list[str],
    inject: Callable[[], object],
    remove: Callable[[], object],
    *,
    shows_after: float = 0.0,
    keep_injecting: Callable[[], object] | None = None,
) -> None:
    """Inject, expect every alert of `names` to fire within its budget, remove, expect
    each to resolve. `keep_injecting` runs in a loop while waiting (a burst)."""
    inject()
    started = time.monotonic()  # the fault is in place (an injection may take a while)
    worker: threading.Thread | None = None
    try:
        stop = threading.Event()
        if keep_injecting is not None:
            worker = threading.Thread(target=_loop, args=(keep_injecting, stop), daemon=True)
            worker.start()
        try:
            for name in names:
                try:
                    fired = hook.wait(name, "firing", started, budget(name, shows_after))
                except AssertionError as exc:
                    raise AssertionError(f"{exc}; Prometheus: {_states(twin, name)}") from None
                TIMINGS.setdefault(name, {})["fire_s"] = round(fired, 2)
                TIMINGS[name]["budget_s"] = round(budget(name, shows_after), 2)
        finally:
            stop.set()
            if worker is not None:
                worker.join(10)  # no injection may land after the fault is removed
    finally:
        remove()
        removed = time.monotonic()
    for name in names:
        resolved = hook.wait(name, "resolved", removed, RESOLVE_S)
        TIMINGS[name]["resolve_s"] = round(resolved, 2)


def _loop(action: Callable[[], object], stop: threading.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(Exception):
            action()
        time.sleep(0.02)


def pid_of(twin: Twin, port: int) -> int:
    node = next(n for n in twin.status()["nodes"] if n["port"] == port)
    assert node["pid"], f"node {port} is not running"
    return int(node["pid"])


DRILL_STREAM = "standup:drill"  # a stream the publisher role may write


def a_shard(twin: Twin) -> tuple[int, int]:
    """(primary port, replica port) of the shard holding the drills' stream."""
    return shard_of(twin, DRILL_STREAM)


def drill_write(client: redis.RedisCluster, size: int = 100) -> None:
    client.xadd(DRILL_STREAM, {"sender": "drill", "pad": "x" * size}, maxlen=100)


def wait_healthy(twin: Twin, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if twin.status()["healthy"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"the twin did not recover: {twin.status()['nodes']}")


def restart(twin: Twin, port: int) -> None:
    twin.start_node(port)
    wait_healthy(twin)


def stall(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)


def resume(twin: Twin, pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    wait_healthy(twin)


# ---- no fire ------------------------------------------------------------------------------


def test_a_healthy_twin_under_sse_load_raises_nothing_for_a_minute(
    alert_twin: Twin, hook: Webhook
) -> None:
    settings = alert_twin.settings()
    proxy = alert_twin.proxy
    token = proxy.ensure_credentials()
    started = time.monotonic()
    subs = [
        Subscription(f"{proxy.url(settings)}/v1/streams/agent_updates", token=token)
        for _ in range(15)  # 15 of the proxy's 20: below the 90 % alert
    ]
    for sub in subs:
        sub.start()
    client = publisher(alert_twin)
    sent = 0
    try:
        while time.monotonic() - started < 60:
            pipe = client.pipeline()
            for _ in range(10):
                pipe.xadd("agent_updates", {"sender": "load", "n": str(sent)}, maxlen=5000)
                sent += 1
            pipe.execute()
            time.sleep(0.1)  # ~100 events/s, each to 15 clients
    finally:
        client.close()
        for sub in subs:
            sub.close()
    delivered = min(len([e for e in s.entries() if e.id]) for s in subs)
    assert delivered > 0.9 * sent, f"clients got {delivered} of {sent} events"
    assert hook._since(started) == [], [a["labels"] for a in hook._since(started)]
    assert [a for a in active_alerts(alert_twin) if a["state"] in ("pending", "firing")] == []


def test_every_metric_a_rule_names_is_on_the_live_twin(alert_twin: Twin) -> None:
    params = twin_alert_params(alert_twin.settings())
    names = alerts.metric_names(params)
    missing = [name for name in names if not query(alert_twin, f'count({{__name__="{name}"}})')]
    assert missing == [], f"rules name metrics the twin does not have: {missing}"
    assert len(names) >= 25


def test_every_dashboard_panel_returns_data_on_the_live_twin(alert_twin: Twin) -> None:
    params = twin_alert_params(alert_twin.settings())
    empty = [p.title for p in dashboards.panels(params) if not query(alert_twin, p.query)]
    assert empty == []


# ---- Redis ----------------------------------------------------------------------------------


def test_a_killed_replica_fires_node_down_missing_nodes_and_primary_without_replica(
    alert_twin: Twin, hook: Webhook
) -> None:
    _, replica = a_shard(alert_twin)
    drill(
        alert_twin,
        hook,
        ["RedisNodeDown", "RedisPrimaryWithoutReplica", "RedisNodesMissing"],
        lambda: alert_twin.kill_node(replica),
        lambda: restart(alert_twin, replica),
    )


def test_a_stalled_replica_fires_replica_lag(alert_twin: Twin, hook: Webhook) -> None:
    _, replica = a_shard(alert_twin)
    pid = pid_of(alert_twin, replica)
    # The primary's lag counts seconds since the replica's last ack (sent every second).
    drill(
        alert_twin,
        hook,
        ["RedisReplicaLagHigh"],
        lambda: os.kill(pid, signal.SIGSTOP),
        lambda: resume(alert_twin, [pid]),
        shows_after=3.0,  # the lag must first pass the 2 s threshold
    )


def test_a_shard_with_no_live_node_fires_cluster_state_and_slots(
    alert_twin: Twin, hook: Webhook
) -> None:
    primary, replica = a_shard(alert_twin)
    pids = [pid_of(alert_twin, primary), pid_of(alert_twin, replica)]

    drill(
        alert_twin,
        hook,
        ["RedisClusterSlotsNotOk", "RedisClusterStateNotOk"],
        lambda: stall(pids),
        lambda: resume(alert_twin, pids),
        # node-timeout (1 s) to pfail, then failure reports gossiped to a majority
        shows_after=alert_twin.settings().node_timeout_ms / 1000 * 2 + 1,
    )


def test_memory_near_maxmemory_and_oom_rejections_fire(alert_twin: Twin, hook: Webhook) -> None:
    primary, _ = a_shard(alert_twin)
    node = node_admin(alert_twin, primary)
    original = str(node.config_get("maxmemory")["maxmemory"])
    used = int(node.info("memory")["used_memory"])
    writer = publisher(alert_twin)
    try:
        # 93 % used: the ceiling lowered to just above what is used is memory filled to it.
        drill(
            alert_twin,
            hook,
            ["RedisMemoryHigh"],
            lambda: node.config_set("maxmemory", str(int(used / 0.93))),
            lambda: node.config_set("maxmemory", original),
        )
        drill(
            alert_twin,
            hook,
            ["RedisOomRejectedWrites"],
            lambda: node.config_set("maxmemory", str(used)),
            lambda: node.config_set("maxmemory", original),
            keep_injecting=lambda: drill_write(writer, 1000),
        )
    finally:
        node.config_set("maxmemory", original)
        node.close()
        writer.close()


def failover_to(twin: Twin, port: int, timeout: float = 15.0) -> None:
    """Make the replica on `port` its shard's primary (CLUSTER FAILOVER, no data lost)."""
    node = node_admin(twin, port)
    try:
        node.execute_command("CLUSTER", "FAILOVER")
        deadline = time.monotonic() + timeout
        while node.info("replication")["role"] != "master":
            assert time.monotonic() < deadline, f"{port} did not take over"
            time.sleep(0.05)
    finally:
        node.close()
    wait_healthy(twin)


def test_a_full_disk_fires_persistence_write_errors(alert_twin: Twin, hook: Webhook) -> None:
    if os.geteuid() != 0:
        pytest.fail("this drill mounts a small tmpfs as one node's data directory: run as root")
    primary, replica = a_shard(alert_twin)
    # The replica's data directory moves onto a small filesystem of its own; the replica
    # then takes over as primary (a replica that cannot write its AOF stops by design:
    # "Replica was unable to write command to disk", which RedisNodeDown reports).
    data = alert_twin.layout.node_dir(replica)
    saved = data.with_name(f"{replica}.saved")
    alert_twin.stop_node(replica)
    shutil.copytree(data, saved)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "drill-data", str(data)], check=True)
    filler = data / "filler"
    writer = publisher(alert_twin)
    try:
        shutil.copytree(saved, data, dirs_exist_ok=True)
        alert_twin.start_node(replica)
        wait_healthy(alert_twin)
        failover_to(alert_twin, replica)

        def fill() -> None:
            with filler.open("wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()

        drill(
            alert_twin,
            hook,
            ["RedisPersistenceWriteErrors"],
            fill,
            lambda: filler.unlink(missing_ok=True),  # Redis retries the write by itself
            keep_injecting=lambda: drill_write(writer),
        )
    finally:
        filler.unlink(missing_ok=True)
        writer.close()
        with contextlib.suppress(Exception):
            failover_to(alert_twin, primary)
        alert_twin.stop_node(replica)
        subprocess.run(["umount", "-l", str(data)], check=False)
        shutil.rmtree(data, ignore_errors=True)
        saved.rename(data)
        alert_twin.start_node(replica)
        wait_healthy(alert_twin)


def test_connections_past_maxclients_fire_rejected_connections(
    alert_twin: Twin, hook: Webhook
) -> None:
    primary, _ = a_shard(alert_twin)
    node = node_admin(alert_twin, primary)
    original = str(node.config_get("maxclients")["maxclients"])

    def at_the_limit() -> None:
        # Bursts of clients past the limit, with pauses: the exporter connects anew at
        # every scrape and needs a free slot to report the refusals.
        burst = [socket.create_connection((HOST, primary), timeout=2) for _ in range(4)]
        time.sleep(0.02)
        for sock in burst:
            sock.close()
        time.sleep(0.3)

    try:
        clients = node.info("clients")
        # maxclients counts the cluster bus links too.
        in_use = int(clients["connected_clients"]) + int(clients["cluster_connections"])
        drill(
            alert_twin,
            hook,
            ["RedisRejectedConnections"],
            lambda: node.config_set("maxclients", str(in_use + 2)),
            lambda: node.config_set("maxclients", original),
            keep_injecting=at_the_limit,
        )
    finally:
        node.config_set("maxclients", original)
        node.close()


def test_a_burst_of_wrong_passwords_fires_auth_failures(alert_twin: Twin, hook: Webhook) -> None:
    primary, _ = a_shard(alert_twin)
    client = connect(
        Endpoint(host=HOST, port=primary),
        alert_twin.client_tls(acl.MONITORING),
        alert_twin.credentials(acl.MONITORING),
    )

    def wrong() -> None:
        for _ in range(10):
            with contextlib.suppress(redis.AuthenticationError, redis.ResponseError):
                client.execute_command("AUTH", acl.MONITORING, "not-the-password")

    try:
        drill(
            alert_twin,
            hook,
            ["RedisAuthFailuresSpike"],
            lambda: None,
            lambda: None,
            keep_injecting=wrong,
        )
    finally:
        client.close()


def test_a_client_with_the_wrong_role_fires_permission_denials(
    alert_twin: Twin, hook: Webhook
) -> None:
    primary, _ = a_shard(alert_twin)
    client = connect(
        Endpoint(host=HOST, port=primary),
        alert_twin.client_tls(acl.READER),
        alert_twin.credentials(acl.READER),
    )

    def forbidden() -> None:
        for _ in range(20):
            with contextlib.suppress(redis.ResponseError):
                client.execute_command("SET", "drill", "x")  # the reader may not write

    try:
        drill(
            alert_twin,
            hook,
            ["RedisPermissionDenialsSpike"],
            lambda: None,
            lambda: None,
            keep_injecting=forbidden,
        )
    finally:
        client.close()


def test_a_certificate_13_days_from_expiry_fires(alert_twin: Twin, hook: Webhook) -> None:
    tls = alert_twin.layout.tls
    original = tls.node_cert.read_bytes()

    def short_lived() -> None:
        ca = Issued(tls.ca_key.read_bytes(), tls.ca_cert.read_bytes())
        cert = issue(
            ca, "node", dns_names=("localhost",), server_auth=True, client_auth=True, days=13
        )
        tls.node_cert.write_bytes(cert.cert_pem)

    try:
        drill(
            alert_twin,
            hook,
            ["RedisTlsCertificateExpiringSoon"],
            short_lived,
            lambda: tls.node_cert.write_bytes(original),
        )
    finally:
        tls.node_cert.write_bytes(original)


# ---- backups and drills --------------------------------------------------------------------


def alertmanagers(twin: Twin) -> list[str]:
    """The Alertmanagers Prometheus sends to now."""
    url = TwinMonitoring.urls(twin.settings())["prometheus"] + "/api/v1/alertmanagers"
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (loopback)
        return [a["url"] for a in json.load(r)["data"]["activeAlertmanagers"]]


def test_a_settings_change_never_leaves_prometheus_without_alertmanager(
    alert_twin: Twin,
) -> None:
    # A rules reload rebuilds Prometheus's Alertmanager targets; until discovery hands
    # them over (up to 5 s) a firing alert goes nowhere. `up` returns only after.
    try:
        _set(alert_twin, backup_max_age_s=3599)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert alertmanagers(alert_twin), "Prometheus has no Alertmanager after `up`"
            time.sleep(0.05)
    finally:
        _set(alert_twin, backup_max_age_s=3600)


def test_backups_that_stop_fire_backup_stale(alert_twin: Twin, hook: Webhook) -> None:
    # The fixture's backup is minutes old: with 8 s allowed, the backups have stopped for
    # longer than allowed. The fix is a backup (the allowed age stays 8 s until the alert
    # has resolved), as when the CronJob runs again.
    root = str(alert_twin.layout.root)
    try:
        drill(
            alert_twin,
            hook,
            ["RedisBackupStale"],
            lambda: _set(alert_twin, backup_max_age_s=8),
            lambda: redisops("backup", "create", "--target", "local", "--state-dir", root),
            shows_after=RELOAD_S,
        )
    finally:
        _set(alert_twin, backup_max_age_s=3600)


def test_a_failed_backup_run_fires_backup_failed(alert_twin: Twin, hook: Webhook) -> None:
    root = alert_twin.layout.root
    primary, _ = a_shard(alert_twin)
    wrong = root / "wrong.password"
    wrong.write_text("not-the-password\n")
    tls = alert_twin.layout.tls

    def failing_backup() -> None:
        result = redisops(
            "backup",
            "create",
            "--to",
            f"file://{root / 'backups'}",
            "--node",
            f"{HOST}:{primary}",
            "--ca",
            str(tls.ca_cert),
            "--cert",
            str(tls.client_cert(acl.BACKUP)),
            "--key",
            str(tls.client_key(acl.BACKUP)),
            "--user",
            acl.BACKUP,
            "--password-file",
            str(wrong),
            check=False,
        )
        assert result.returncode != 0

    drill(
        alert_twin,
        hook,
        ["RedisBackupFailed"],
        failing_backup,
        lambda: redisops("backup", "create", "--target", "local", "--state-dir", str(root)),
    )


def test_drills_that_stop_fire_drill_overdue(alert_twin: Twin, hook: Webhook) -> None:
    # Before the failed-drill test (whose fix is a drill). As for backups: the fixture's
    # drill is minutes old, 20 s are allowed (a drill here
    # takes about 8 s), and the fix is a drill that passes.
    root = str(alert_twin.layout.root)
    try:
        drill(
            alert_twin,
            hook,
            ["RedisRestoreDrillOverdue"],
            lambda: _set(alert_twin, drill_max_age_s=20),
            lambda: redisops("drill", "restore", "--target", "local", "--state-dir", root),
            shows_after=RELOAD_S,
        )
    finally:
        _set(alert_twin, drill_max_age_s=3600)


def test_a_failed_restore_drill_fires_drill_failed(alert_twin: Twin, hook: Webhook) -> None:
    root = alert_twin.layout.root

    def failing_drill() -> None:
        result = redisops(
            "drill",
            "restore",
            "--from",
            f"file://{root / 'backups'}",
            "--backup",
            "20000101T000000Z",
            "--state-dir",
            str(root),
            check=False,
        )
        assert result.returncode != 0

    drill(
        alert_twin,
        hook,
        ["RedisRestoreDrillFailed"],
        failing_drill,
        lambda: redisops("drill", "restore", "--target", "local", "--state-dir", str(root)),
    )


def test_the_platform_metrics_going_away_fires_ops_metrics_down(
    alert_twin: Twin, hook: Webhook
) -> None:
    monitoring = alert_twin.monitoring

    def kill() -> None:
        pid = monitoring.running_pid("ops")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

    drill(
        alert_twin,
        hook,
        ["RedisOpsMetricsDown"],
        kill,
        lambda: monitoring.up(alert_twin.settings()),
    )


# ---- the SSE proxy ---------------------------------------------------------------------------


def test_a_stopped_proxy_fires_proxy_down(alert_twin: Twin, hook: Webhook) -> None:
    drill(
        alert_twin,
        hook,
        ["SseProxyDown"],
        lambda: alert_twin.proxy.stop(),
        lambda: alert_twin.proxy.start(alert_twin.settings()),
    )


def test_redis_stalling_for_the_proxy_fires_proxy_not_ready(
    alert_twin: Twin, hook: Webhook
) -> None:
    ports = alert_twin.settings().ports
    nodes = [node_admin(alert_twin, port) for port in ports]

    def pause() -> None:
        for node in nodes:
            node.execute_command("CLIENT", "PAUSE", "2500", "ALL")

    def pause_again() -> None:
        time.sleep(2.0)
        pause()

    def unpause() -> None:
        for node in nodes:
            node.execute_command("CLIENT", "UNPAUSE")

    try:
        # Paused again and again until the alert fires: every node stalls every client.
        drill(
            alert_twin,
            hook,
            ["SseProxyNotReady"],
            pause,
            unpause,
            keep_injecting=pause_again,
        )
    finally:
        for node in nodes:
            with contextlib.suppress(redis.RedisError):
                node.execute_command("CLIENT", "UNPAUSE")
            node.close()


def test_connections_at_the_limit_fire_near_limit_and_5xx(alert_twin: Twin, hook: Webhook) -> None:
    settings = alert_twin.settings()
    token = alert_twin.proxy.ensure_credentials()
    url = f"{alert_twin.proxy.url(settings)}/v1/streams/agent_tasks"
    subs: list[Subscription] = []

    def fill() -> None:
        for _ in range(settings.proxy_max_connections):
            sub = Subscription(url, token=token)
            sub.start()
            subs.append(sub)

    def refused() -> None:
        sub = Subscription(url, token=token, timeout=2)
        with contextlib.suppress(Exception):
            sub.start()
        sub.close()
        # a temporary refusal: 200, `retry:`, an `unavailable` event (counted as a 503)
        assert any(e.event == "unavailable" for e in sub.events) or not sub.statuses

    def close_all() -> None:
        for sub in subs:
            sub.close()

    try:
        drill(
            alert_twin,
            hook,
            ["SseConnectionsNearLimit", "SseProxyHigh5xxRate"],
            fill,
            close_all,
            keep_injecting=refused,
        )
    finally:
        close_all()


def test_a_stalled_reader_fires_reader_lag(alert_twin: Twin, hook: Webhook) -> None:
    settings = alert_twin.settings()
    token = alert_twin.proxy.ensure_credentials()
    stream = "agent_updates"
    primary, _ = shard_of(alert_twin, stream)
    node = node_admin(alert_twin, primary)
    writer = publisher(alert_twin)
    sub = Subscription(f"{alert_twin.proxy.url(settings)}/v1/streams/{stream}", token=token)
    sub.start()
    try:
        # The reader may no longer XREAD (an ACL mistake): it stalls while entries pile up.
        # (An XREAD already blocked when the rule changes still completes: entries are
        # added again and again, the first after it is the one that waits.)
        def pile_up() -> None:
            writer.xadd(stream, {"sender": "drill", "action": "stall"})
            time.sleep(0.5)

        drill(
            alert_twin,
            hook,
            ["SseReaderLagHigh"],
            lambda: node.execute_command("ACL", "SETUSER", acl.READER, "-xread"),
            lambda: node.execute_command("ACL", "LOAD"),
            keep_injecting=pile_up,
            shows_after=3.0,  # the waiting entry must grow older than the 2 s threshold
        )
    finally:
        node.execute_command("ACL", "LOAD")
        node.close()
        writer.close()
        sub.close()


def test_slow_clients_cut_off_in_numbers_fire_cutoffs_spike(
    alert_twin: Twin, hook: Webhook
) -> None:
    settings = alert_twin.settings()
    token = alert_twin.proxy.ensure_credentials()
    stream = "agent_tasks"
    stuck: list[socket.socket] = []
    writer = publisher(alert_twin)
    threshold = twin_alert_params(settings).cutoffs

    def stall_clients() -> None:
        for _ in range(threshold + 2):
            sock = socket.create_connection((HOST, settings.proxy_port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(
                f"GET /v1/streams/{stream} HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {token}\r\n\r\n".encode()
            )
            stuck.append(sock)
        time.sleep(0.5)
        pad = "p" * 4000
        pipe = writer.pipeline()
        # More than the kernel's socket buffers hold, so the proxy's writes block and
        # each stuck client's queue passes its buffer (1000 events).
        for i in range(4000):
            pipe.xadd(stream, {"sender": "drill", "n": str(i), "pad": pad}, maxlen=4000)
        pipe.execute()

    def release() -> None:
        for sock in stuck:
            sock.close()

    try:
        drill(alert_twin, hook, ["SseSlowClientCutoffsSpike"], stall_clients, release)
    finally:
        release()
        writer.close()


# ---- helpers --------------------------------------------------------------------------------


def _set(twin: Twin, **changes: Any) -> None:
    """Change the twin's settings the supported way (`up`), which re-renders the rules
    and makes Prometheus reload them."""
    report = twin.up(**changes)
    assert report.healthy, report.findings


def test_every_alert_was_drilled_live(alert_twin: Twin) -> None:
    """Runs last: the drills above covered every alert the twin evaluates."""
    evaluated = {a.name for a in alerts.selected(twin_alert_params(alert_twin.settings()))}
    assert evaluated - set(TIMINGS) == set(), "alerts never drilled live"
    assert all("fire_s" in t and "resolve_s" in t for t in TIMINGS.values()), TIMINGS
