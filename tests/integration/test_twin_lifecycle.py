"""Twins of their own: cold start, crash recovery, scale-out, healing, ACL drift, TLS reload."""

from __future__ import annotations

import os
import shutil
import signal
import time
from typing import Any

import redis

from redisops import acl
from redisops.client import Endpoint, connect, connect_cluster
from redisops.local import process
from redisops.local.settings import HOST
from redisops.local.twin import Twin
from redisops.reconcile import ReconcileOptions, ReconcileReport, reconcile
from redisops.tls import ensure_twin_tls
from smoke_tests.probes import tls_probe
from tests.conftest import free_base_port
from tests.integration.libraries import everywhere


def cluster_of(twin: Twin, role: str = acl.ADMIN) -> redis.RedisCluster:
    port = twin.settings().ports[0]
    return connect_cluster(
        [Endpoint(host=HOST, port=port)], twin.client_tls(role), twin.credentials(role)
    )


def fill(twin: Twin, count: int) -> None:
    client = cluster_of(twin)
    try:
        pipe = client.pipeline()
        for i in range(count):
            pipe.set(f"data:{i}", i)
        pipe.execute()
    finally:
        client.close()


def key_count(twin: Twin) -> int:
    client = cluster_of(twin)
    try:
        sizes: Any = client.dbsize(target_nodes=redis.RedisCluster.PRIMARIES)
    finally:
        client.close()
    return sum(sizes.values()) if isinstance(sizes, dict) else int(sizes)


def node_ids(twin: Twin) -> dict[int, str]:
    return {n["port"]: n["node_id"] for n in twin.status()["nodes"]}


def test_cold_start_then_crash_of_every_node_recovers_the_same_cluster(own_twin: Twin) -> None:
    started = time.monotonic()
    report = own_twin.up(base_port=free_base_port(6), sse_proxy=False)
    cold = time.monotonic() - started
    print(f"cold start to cluster_state:ok: {cold:.2f} s")
    assert report.healthy, report.findings
    assert own_twin.status()["healthy"]
    fill(own_twin, 2000)
    ids = node_ids(own_twin)
    time.sleep(1.2)  # appendfsync everysec: let the last second reach the disk
    for node in own_twin.status()["nodes"]:
        os.kill(node["pid"], signal.SIGKILL)  # a crash: pid files stay behind
    for port in own_twin.settings().ports:
        assert own_twin.layout.pidfile(port).exists()
        pid = process.read_pid(own_twin.layout.pidfile(port))
        assert pid is not None
        deadline = time.monotonic() + 5
        while not process.exited(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    report = own_twin.up()
    assert report.healthy, report.findings
    assert node_ids(own_twin) == ids
    assert key_count(own_twin) == 2000


def test_down_keeps_data_and_purge_removes_it(own_twin: Twin) -> None:
    own_twin.up(base_port=free_base_port(6), sse_proxy=False)
    fill(own_twin, 100)
    stopped = own_twin.down()
    assert len(stopped) == 6
    assert own_twin.layout.state_file.exists()
    assert not any(n["running"] for n in own_twin.status()["nodes"])
    assert own_twin.up().healthy
    assert key_count(own_twin) == 100
    own_twin.down(purge=True)
    assert not own_twin.layout.root.exists()


def test_scale_out_adds_a_shard_and_keeps_every_key(own_twin: Twin) -> None:
    base = free_base_port(8)
    own_twin.up(base_port=base, sse_proxy=False)
    fill(own_twin, 3000)
    before = set(own_twin.settings().ports)
    report = own_twin.up(shards=4)
    assert report.healthy, report.findings
    codes = [a.code for a in report.actions]
    assert "rebalance" in codes and "replicate" in codes
    status = own_twin.status()
    primaries = [n for n in status["nodes"] if n["role"] == "primary"]
    assert len(primaries) == 4
    assert all(n["slot_count"] > 3000 for n in primaries)
    assert key_count(own_twin) == 3000
    # the new primary gets the function library the proxy publishes through
    added = {f"{HOST}:{p}" for p in set(own_twin.settings().ports) - before}
    assert any(a.code == "function_load" and a.node in added for a in report.actions)
    everywhere(own_twin)
    assert own_twin.up().actions == []


def test_a_wiped_replica_is_forgotten_and_replaced(own_twin: Twin) -> None:
    own_twin.up(base_port=free_base_port(6), sse_proxy=False)
    replica = next(n for n in own_twin.status()["nodes"] if n["role"] == "replica")
    port, old_id = replica["port"], replica["node_id"]
    own_twin.stop_node(port)
    node_dir = own_twin.layout.node_dir(port)
    for name in ("nodes.conf", "dump.rdb", "appendonlydir"):
        path = node_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    own_twin.start_node(port)
    report = reconcile(
        own_twin.settings().desired(),
        own_twin.client_tls(acl.OPERATOR),
        own_twin.credentials(acl.OPERATOR),
        ReconcileOptions(timeout_s=30),
    )
    assert report.healthy, report.findings
    codes = [a.code for a in report.actions]
    assert codes[:1] == ["forget"] or "forget" in codes
    assert "meet" in codes and "replicate" in codes
    new = next(n for n in own_twin.status()["nodes"] if n["port"] == port)
    assert new["role"] == "replica" and new["node_id"] != old_id
    assert old_id not in {n["node_id"] for n in own_twin.status()["nodes"]}


def test_acl_drift_is_reported_by_a_dry_run_and_repaired(own_twin: Twin) -> None:
    own_twin.up(base_port=free_base_port(6), sse_proxy=False)
    port = own_twin.settings().ports[1]
    admin = connect(
        Endpoint(host=HOST, port=port),
        own_twin.client_tls(acl.ADMIN),
        own_twin.credentials(acl.ADMIN),
    )
    try:
        admin.execute_command("ACL", "SETUSER", acl.READER, "+flushall")
    finally:
        admin.close()
    settings = own_twin.settings()

    def run(dry_run: bool) -> ReconcileReport:
        return reconcile(
            settings.desired(),
            own_twin.client_tls(acl.OPERATOR),
            own_twin.credentials(acl.OPERATOR),
            ReconcileOptions(
                acl_text=own_twin.acl_text(settings), write_acl=own_twin.write_acl, dry_run=dry_run
            ),
        )

    dry = run(dry_run=True)
    assert [(a.code, a.node) for a in dry.actions] == [("acl_load", f"127.0.0.1:{port}")]
    assert "different rules" in dry.actions[0].message
    assert run(dry_run=True).actions  # the dry run changed nothing
    fixed = run(dry_run=False)
    assert [a.code for a in fixed.actions] == ["acl_load"]
    assert run(dry_run=False).actions == []


def test_tls_certificates_are_reloaded_without_restart(own_twin: Twin) -> None:
    own_twin.up(base_port=free_base_port(6), sse_proxy=False)
    pids = {n["port"]: n["pid"] for n in own_twin.status()["nodes"]}
    endpoint = Endpoint(host=HOST, port=own_twin.settings().ports[0])
    tls = own_twin.client_tls(acl.SMOKE)
    pair = (str(tls.cert_file), str(tls.key_file))
    before = tls_probe(endpoint, tls.ca_file, client_cert=pair).peer_cert
    # A new certificate with an extra name, from the same CA (as `pulumi up` renews it).
    written = ensure_twin_tls(own_twin.layout.tls, acl.ROLES, ("localhost",), (HOST, "127.0.0.9"))
    assert str(own_twin.layout.tls.node_cert) in written
    settings = own_twin.settings()
    report = reconcile(
        settings.desired(),
        own_twin.client_tls(acl.OPERATOR),
        own_twin.credentials(acl.OPERATOR),
        ReconcileOptions(reload_tls=True, admin=own_twin.credentials(acl.ADMIN)),
    )
    assert report.healthy, report.findings
    assert [a.code for a in report.actions] == ["reload_tls"] * 6
    after = tls_probe(endpoint, tls.ca_file, client_cert=pair).peer_cert
    assert before is not None and after is not None
    assert after.serial_number != before.serial_number
    assert {n["port"]: n["pid"] for n in own_twin.status()["nodes"]} == pids


def test_changing_the_streams_reloads_the_acl_on_every_node(own_twin: Twin) -> None:
    own_twin.up(base_port=free_base_port(6), sse_proxy=False)
    report = own_twin.up(streams=("events:*",))
    assert report.healthy, report.findings
    assert [a.code for a in report.actions] == ["acl_load"] * 6
    for port in own_twin.settings().ports:
        admin = connect(
            Endpoint(host=HOST, port=port),
            own_twin.client_tls(acl.ADMIN),
            own_twin.credentials(acl.ADMIN),
        )
        try:
            allowed = admin.execute_command("ACL", "DRYRUN", acl.READER, "XLEN", "events:a")
            denied = admin.execute_command("ACL", "DRYRUN", acl.READER, "XLEN", "agent_updates")
        finally:
            admin.close()
        assert allowed == "OK"
        assert "no permissions" in str(denied)
    assert own_twin.status()["streams"] == ["events:*"]
