"""The local twin as other tools see it: status contract, idempotence, secrets, replication."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from redisops import acl, rediscli
from redisops.client import Endpoint, connect, connect_cluster
from redisops.cluster import SLOTS
from redisops.local.twin import Twin

REDISOPS = [sys.executable, "-m", "redisops"]


def cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*REDISOPS, *args], capture_output=True, text=True, timeout=300, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"redisops {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
    return proc


def test_status_json_is_the_contract_for_other_tools(session_twin: Twin) -> None:
    proc = cli("local", "status", "--json", "--state-dir", str(session_twin.layout.root))
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    nodes = status["nodes"]
    assert status["healthy"] is True
    assert len(nodes) == 6
    assert sorted(n["role"] for n in nodes) == ["primary"] * 3 + ["replica"] * 3
    assert sum(n["slot_count"] for n in nodes) == SLOTS
    assert {n["shard"] for n in nodes} == {0, 1, 2}
    for node in nodes:
        assert node["host"] == "127.0.0.1"
        assert node["running"] and node["pid"] > 0
        assert len(node["node_id"]) == 40
    by_id = {n["node_id"]: n for n in nodes}
    for node in nodes:
        if node["role"] == "replica":
            primary = by_id[node["primary_id"]]
            assert primary["shard"] == node["shard"]
            assert primary["zone"] != node["zone"], "replica shares its primary's zone"
    assert Path(status["tls"]["ca"]).is_file()
    for role in acl.ROLES:
        assert Path(status["tls"]["clients"][role]["cert"]).is_file()
        password_file = Path(status["users"][role]["password_file"])
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600


def test_up_on_a_running_twin_changes_nothing(session_twin: Twin) -> None:
    before = {n["port"]: (n["pid"], n["node_id"]) for n in session_twin.status()["nodes"]}
    report = session_twin.up()
    assert report.actions == []
    assert report.healthy
    after = {n["port"]: (n["pid"], n["node_id"]) for n in session_twin.status()["nodes"]}
    assert after == before


def test_reconcile_cli_reports_no_changes_as_json(session_twin: Twin) -> None:
    proc = cli(
        "reconcile", "--target", "local", "--json", "--state-dir", str(session_twin.layout.root)
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["actions"] == [] and report["changed"] is False and report["healthy"] is True
    assert report["summary"].startswith("no changes")


def test_redis_cli_cluster_check_passes_as_admin(session_twin: Twin) -> None:
    port = session_twin.settings().ports[0]
    result = rediscli.cluster_check(
        f"127.0.0.1:{port}",
        session_twin.client_tls(acl.ADMIN),
        session_twin.credentials(acl.ADMIN),
    )
    assert result.ok, result.stdout + result.stderr
    assert "[OK] All 16384 slots covered." in result.stdout


def test_no_password_appears_outside_the_password_files(session_twin: Twin) -> None:
    passwords = [session_twin.credentials(role).password.get_secret_value() for role in acl.ROLES]
    secrets_dir = session_twin.layout.secrets
    checked = 0
    for path in session_twin.layout.root.rglob("*"):
        if not path.is_file() or path.is_relative_to(secrets_dir):
            continue
        text = path.read_bytes().decode(errors="replace")
        checked += 1
        for password in passwords:
            assert password not in text, f"a password leaked into {path}"
    assert checked > 10
    # The replication password lives in the 0600 include only.
    include = session_twin.layout.replication_include
    assert stat.S_IMODE(include.stat().st_mode) == 0o600


def test_writes_are_replicated_and_acknowledged(session_twin: Twin) -> None:
    ports = session_twin.settings().ports
    from redisops.client import Endpoint

    cluster = connect_cluster(
        [Endpoint(host="127.0.0.1", port=ports[0])],
        session_twin.client_tls(acl.SMOKE),
        session_twin.credentials(acl.SMOKE),
    )
    try:
        key = "smoke:integration:replicated"
        cluster.set(key, "v")
        node = cluster.get_node_from_key(key)
        direct = connect(
            Endpoint(host=node.host, port=node.port),
            session_twin.client_tls(acl.SMOKE),
            session_twin.credentials(acl.SMOKE),
        )
        try:
            direct.set(key, "v2")
            assert direct.execute_command("WAIT", 1, 2000) == 1
        finally:
            direct.close()
        assert cluster.delete(key) == 1
    finally:
        cluster.close()


def explicit_reconcile_args(twin: Twin, nodes: list[str]) -> list[str]:
    """`redisops reconcile` with explicit nodes and the operator's files, as the reconcile
    Job calls it (no --target)."""
    tls = twin.client_tls(acl.OPERATOR)
    return [
        "reconcile",
        *nodes,
        "--shards=3",
        "--replicas=1",
        f"--ca={tls.ca_file}",
        f"--cert={tls.cert_file}",
        f"--key={tls.key_file}",
        f"--password-file={twin.layout.password_file(acl.OPERATOR)}",
    ]


def test_reconcile_cli_with_explicit_nodes_as_a_kubernetes_job_would_run_it(
    session_twin: Twin, tmp_path: Path
) -> None:
    settings = session_twin.settings()
    acl_file = tmp_path / "users.acl"
    acl_file.write_text(session_twin.acl_text(settings))
    zones = ["zone-a", "zone-b", "zone-c"]
    nodes = [f"--node=127.0.0.1:{p}={zones[i % 3]}" for i, p in enumerate(settings.ports)]
    args = [*explicit_reconcile_args(session_twin, nodes), f"--acl-file={acl_file}", "--json"]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["actions"] == [] and report["findings"] == []
    # A wrong topology is reported, not "fixed" destructively: 2 replicas per shard wanted.
    wrong = cli(*[a for a in args if a != "--replicas=1"], "--replicas=2")
    assert wrong.returncode == 2
    assert "needs 9 nodes, 6 given" in wrong.stderr


def test_reconcile_reloads_certificates_and_replication_credentials_as_the_job_does(
    session_twin: Twin, tmp_path: Path
) -> None:
    """The reconcile Job's TLS/credential step: CONFIG SET re-reads the mounted files,
    sets masteruser/masterauth, and checks each node then serves the deployed certificate."""
    settings = session_twin.settings()
    tls = session_twin.client_tls(acl.OPERATOR)
    layout = session_twin.layout
    base = [
        *explicit_reconcile_args(session_twin, [f"--node=127.0.0.1:{p}" for p in settings.ports]),
        "--reload-tls",
        f"--admin-password-file={layout.password_file(acl.ADMIN)}",
        f"--replication-password-file={layout.password_file(acl.REPLICATION)}",
        "--json",
    ]
    proc = cli(*base, f"--expect-node-cert={layout.tls.node_cert}")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [a["code"] for a in report["actions"]] == ["reload_tls"] * len(settings.ports)
    assert report["findings"] == []
    admin = connect(
        Endpoint(host="127.0.0.1", port=settings.ports[0]),
        session_twin.client_tls(acl.ADMIN),
        session_twin.credentials(acl.ADMIN),
    )
    try:
        assert admin.config_get("masteruser")["masteruser"] == acl.REPLICATION
        expected = session_twin.credentials(acl.REPLICATION).password.get_secret_value()
        assert admin.config_get("masterauth")["masterauth"] == expected
    finally:
        admin.close()
    # Expecting another certificate than the nodes serve: reported after the settle time.
    proc = cli(*base, f"--expect-node-cert={tls.cert_file}", "--settle=1")
    assert proc.returncode == 1, proc.stderr
    findings = json.loads(proc.stdout)["findings"]
    assert {f["code"] for f in findings} == {"tls_stale"}
    assert len(findings) == len(settings.ports)
