"""The smoke suite against a twin: it passes on a healthy one, and each kind of check fails
when what it guards is broken."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from redisops import acl
from redisops.client import Endpoint, connect
from redisops.local.settings import HOST
from redisops.local.twin import Twin
from redisops.tls import issue, new_ca, write_private
from smoke_tests.probes import plaintext_probe, tls_probe
from tests.conftest import requires_redis
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
