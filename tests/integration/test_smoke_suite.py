"""The smoke suite against a twin: it passes on a healthy one, and each kind of check fails
when what it guards is broken."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from redisops import acl
from redisops.client import Endpoint, connect
from redisops.cluster import ClusterNode, parse_cluster_nodes
from redisops.local.settings import HOST
from redisops.local.twin import Twin
from redisops.tls import issue, new_ca, write_private
from smoke_tests.probes import key_round_trips, plaintext_probe, tls_probe
from tests.conftest import free_port, requires_redis
from tests.integration.servers import standalone_redis

REDISOPS = [sys.executable, "-m", "redisops"]
REPORTS = Path(__file__).resolve().parents[2] / "reports"


def smoke(twin: Twin, *args: str) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [
            *REDISOPS,
            "smoke",
            "--target",
            "local",
            "--state-dir",
            str(twin.layout.root),
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def test_smoke_suite_passes_on_the_twin_and_reports_every_number(session_twin: Twin) -> None:
    # Backups expected at most an hour old, and one taken: the backup check runs too.
    session_twin.up(backup_max_age_s=3600)
    created = subprocess.run(
        [*REDISOPS, "backup", "create", "--target", "local",
         "--state-dir", str(session_twin.layout.root)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    code, report, stderr = smoke(session_twin, "--report-dir", str(REPORTS))
    failed = [t for t in report["tests"] if t["outcome"] in ("failed", "error")]
    assert code == 0, f"{failed}\n{stderr[-2000:]}"
    assert report["ok"] is True
    counts = report["counts"]
    assert counts["failed"] == 0 and counts["skipped"] == 0 and counts["passed"] > 100
    numbers = report["measurements"]
    for name in (
        "graceful_failover_unavailability",
        "hard_failover_unavailability",
        "hard_failover_time_to_redundancy",
        "cert_days_left_min",
        "backup_age",
        "sse_roundtrip_latency",
    ):
        assert name in numbers, name
    print(json.dumps(numbers, indent=1))
    junit = ET.parse(REPORTS / "smoke-junit.xml").getroot()
    suite = junit if junit.tag == "testsuite" else junit[0]
    assert int(suite.get("failures", "1")) == 0
    assert suite.findall(".//property[@name='hard_failover_unavailability']")
    # The suite leaves the twin as it found it: healthy, same roles.
    status = session_twin.status()
    assert status["healthy"]
    assert session_twin.up().actions == []


def test_smoke_suite_fails_when_a_role_has_too_many_rights(session_twin: Twin) -> None:
    port = session_twin.settings().ports[0]
    admin = connect(
        Endpoint(host=HOST, port=port),
        session_twin.client_tls(acl.ADMIN),
        session_twin.credentials(acl.ADMIN),
    )
    try:
        admin.execute_command("ACL", "SETUSER", acl.MONITORING, "~*", "+get")
        code, report, _ = smoke(
            session_twin, "-k", "matrix and monitoring", "--report-dir", str(REPORTS / "broken")
        )
    finally:
        admin.close()
        repaired = session_twin.up()  # reconcile loads the ACL file again
    assert code == 1
    failed = {t["id"] for t in report["tests"] if t["outcome"] == "failed"}
    assert any("monitoring may not GET" in t for t in failed), failed
    assert [a.code for a in repaired.actions] == ["acl_load"]


# ---- skips: a pass only where the target declares the capability absent ------------

# A client whose OpenSSL will not offer TLS 1.1 (as hardened images build it) cannot tell
# whether the servers refuse TLS 1.1: the check skips as inconclusive.
NO_TLS_1_1 = """openssl_conf = default_conf
[default_conf]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
Protocol = -TLSv1.1
"""


def test_a_skip_no_declared_capability_backs_fails_the_gate_and_is_named(
    session_twin: Twin, tmp_path: Path
) -> None:
    conf = tmp_path / "openssl.cnf"
    conf.write_text(NO_TLS_1_1)
    proc = subprocess.run(
        [*REDISOPS, "smoke", "--target", "local", "--state-dir", str(session_twin.layout.root),
         "--report-dir", str(tmp_path), "-k", "tls_1_1"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "OPENSSL_CONF": str(conf), "COLUMNS": "200"},
    )  # fmt: skip
    report = json.loads((tmp_path / "smoke-report.json").read_text())
    check = "test_tls.py::test_tls_1_1_is_refused_and_tls_1_2_accepted"
    assert [t["id"] for t in report["tests"]] == [check]
    assert report["counts"]["skipped"] == 1 and report["counts"]["failed"] == 0
    assert report["ok"] is False
    assert report["exit_code"] == 1
    assert proc.returncode == 1, proc.stdout + proc.stderr
    [skip] = report["skips"]
    assert skip["test"] == check
    assert skip["capability"] is None and skip["allowed"] is False
    assert "inconclusive" in skip["reason"]
    assert f"skipped, not allowed {check}" in proc.stdout
    assert "1 skipped (1 not allowed)" in proc.stdout


def test_a_skip_of_a_declared_absent_capability_passes_and_is_reported(
    session_twin: Twin, tmp_path: Path
) -> None:
    code, report, stderr = smoke(
        session_twin, "--no-disruption", "-k", "primary_crash", "--report-dir", str(tmp_path)
    )
    assert code == 0, stderr[-2000:]
    assert report["ok"] is True
    assert report["absent_capabilities"]["disruption"] == "--no-disruption given"
    assert report["skips"] == [
        {
            "test": "test_failover.py::"
            "test_primary_crash_fails_over_and_loses_no_acknowledged_write",
            "capability": "disruption",
            "reason": "--no-disruption given",
            "allowed": True,
        }
    ]


def test_plaintext_probe_detects_a_plaintext_server(tmp_path: Path) -> None:
    requires_redis()
    with standalone_redis(tmp_path / "plain") as port:
        answered, detail = plaintext_probe(Endpoint(host=HOST, port=port))
    assert answered, detail


def _tls_server_files(tmp_path: Path) -> tuple[Path, Path, Path, tuple[str, str]]:
    ca = new_ca()
    node = issue(ca, "n", ip_addresses=[HOST], server_auth=True, client_auth=True)
    client = issue(ca, "c", server_auth=False, client_auth=True)
    paths = {name: tmp_path / name for name in ("ca.crt", "n.crt", "n.key", "c.crt", "c.key")}
    write_private(paths["ca.crt"], ca.cert_pem)
    write_private(paths["n.crt"], node.cert_pem)
    write_private(paths["n.key"], node.key_pem)
    write_private(paths["c.crt"], client.cert_pem)
    write_private(paths["c.key"], client.key_pem)
    return (
        paths["ca.crt"],
        paths["n.crt"],
        paths["n.key"],
        (str(paths["c.crt"]), str(paths["c.key"])),
    )


def test_tls_probe_detects_a_server_that_skips_client_certificates(tmp_path: Path) -> None:
    requires_redis()
    ca, cert, key, pair = _tls_server_files(tmp_path)
    args = ["--tls-ca-cert-file", str(ca), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    with standalone_redis(tmp_path / "a", *args, "--tls-auth-clients", "no", tls_port=True) as port:
        lax = tls_probe(Endpoint(host=HOST, port=port), str(ca), client_cert=None)
    with standalone_redis(
        tmp_path / "b", *args, "--tls-auth-clients", "yes", tls_port=True
    ) as port:
        strict = tls_probe(Endpoint(host=HOST, port=port), str(ca), client_cert=None)
        with_cert = tls_probe(Endpoint(host=HOST, port=port), str(ca), client_cert=pair)
    assert lax.accepted, lax.detail
    assert not strict.accepted and strict.refused_by_server, strict.detail
    assert with_cert.accepted, with_cert.detail


def test_tls_probe_detects_a_certificate_for_another_name(tmp_path: Path) -> None:
    requires_redis()
    ca, cert, key, pair = _tls_server_files(tmp_path)
    args = ["--tls-ca-cert-file", str(ca), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    with standalone_redis(tmp_path / "a", *args, tls_port=True) as port:
        endpoint = Endpoint(host=HOST, port=port)
        right = tls_probe(endpoint, str(ca), client_cert=pair, server_name=HOST)
        wrong = tls_probe(endpoint, str(ca), client_cert=pair, server_name="redis.example.com")
    assert right.accepted, right.detail
    assert not wrong.accepted and "verification failed" in wrong.detail


def test_tls_probe_distinguishes_server_refusal_from_client_inability(tmp_path: Path) -> None:
    requires_redis()
    ca, cert, key, pair = _tls_server_files(tmp_path)
    args = ["--tls-ca-cert-file", str(ca), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    with standalone_redis(
        tmp_path / "a", *args, "--tls-protocols", "TLSv1.2 TLSv1.3", tls_port=True
    ) as port:
        old = tls_probe(
            Endpoint(host=HOST, port=port),
            str(ca),
            client_cert=pair,
            version=ssl.TLSVersion.TLSv1_1,
        )
    assert not old.accepted
    assert old.refused_by_server, old.detail


# ---- routing: host and port, since every pod listens on 6379 on GKE ----------------


def _port_free_on(hosts: tuple[str, ...]) -> int:
    """A port free on every host, with its cluster bus port (+10000)."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        try:
            for host in hosts:
                for p in (port, port + 10000):
                    with socket.socket() as sock:
                        sock.bind((host, p))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {hosts}")


@contextmanager
def _cluster_node(workdir: Path, host: str, port: int) -> Iterator[redis.Redis]:
    """A cluster-enabled redis-server on host:port only; stopped by PID afterwards."""
    workdir.mkdir(parents=True)
    proc = subprocess.Popen(
        ["redis-server", "--bind", host, "--port", str(port), "--cluster-enabled", "yes",
         "--cluster-announce-ip", host, "--cluster-node-timeout", "2000",
         "--repl-diskless-sync-delay", "0", "--dir", str(workdir), "--save", "",
         "--appendonly", "no", "--logfile", str(workdir / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(host=host, port=port, decode_responses=True)
    try:
        _wait_for(lambda: client.ping(), f"{host}:{port} to answer")
        yield client
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def _wait_for(check: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _primaries(node: redis.Redis) -> list[ClusterNode]:
    nodes = parse_cluster_nodes(str(node.execute_command("CLUSTER", "NODES")))
    return [n for n in nodes if n.is_primary and n.slots and not n.failed]


def test_round_trip_check_fails_when_a_key_goes_to_the_right_port_on_another_host(
    tmp_path: Path,
) -> None:
    """Two nodes on one port, as every pod on GKE: a cluster client holding the map from
    before a failover routes keys to the old primary — same port, other host."""
    requires_redis()
    hosts = ("127.0.0.2", "127.0.0.3")
    port = _port_free_on(hosts)
    with (
        _cluster_node(tmp_path / "a", hosts[0], port) as a,
        _cluster_node(tmp_path / "b", hosts[1], port) as b,
    ):
        a.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        a.execute_command("CLUSTER", "MEET", hosts[1], str(port))
        a_id = str(a.execute_command("CLUSTER", "MYID"))
        _wait_for(lambda: b.execute_command("CLUSTER", "REPLICATE", a_id), "b to follow a")
        _wait_for(lambda: b.info("replication")["master_link_status"] == "up", "b in sync")
        client = redis.RedisCluster(host=hosts[0], port=port, decode_responses=True)
        try:
            assert key_round_trips(client, _primaries(a), "smoke:roundtrip:before:") == []
            b.execute_command("CLUSTER", "FAILOVER")
            _wait_for(lambda: [p.ip for p in _primaries(a)] == [hosts[1]], "b to take over")
            [primary] = _primaries(a)
            stale = client.get_node_from_key("smoke:roundtrip:after:{0}")
            assert (stale.host, stale.port) == (hosts[0], primary.port)  # the blind spot
            problems = key_round_trips(client, [primary], "smoke:roundtrip:after:")
        finally:
            client.close()
    assert len(problems) == 1, problems
    assert f"{hosts[1]}:{port}" in problems[0] and f"{hosts[0]}:{port}" in problems[0]
