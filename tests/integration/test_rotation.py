"""Password and certificate rotations on a real twin, through the commands.

One 3 x 1 twin for the module (no proxy, no monitoring); every test completes the
rotations it starts, so the next finds the twin whole. Whatever a command claims is
checked again here independently: logins on every node, the certificate each node
serves, `cluster_state:ok` and replication links, and new TLS handshakes of the cluster
bus and of replication (links cut, a replica restarted) with the rotated material.
"""

from __future__ import annotations

import json
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import typer
from cryptography import x509
from typer.testing import CliRunner

from redisops import acl, tls
from redisops.cli_ops_security import acl_app, certs_app
from redisops.client import (
    Credentials,
    Endpoint,
    TlsClient,
    connect,
    connect_cluster,
    served_certificate,
)
from redisops.errors import RedisOpsError
from redisops.local import checks
from redisops.local.settings import HOST
from redisops.local.twin import Twin
from tests.conftest import free_base_port, requires_redis

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twin]:
    requires_redis()
    twin = Twin(tmp_path_factory.mktemp("rotation-twin"))
    report = twin.up(base_port=free_base_port(6), sse_proxy=False, monitoring=False)
    assert report.healthy, report.findings
    yield twin
    twin.down(purge=False)


def cli(twin: Twin, *args: str) -> tuple[int, str, Any]:
    """The commands as `redisops` runs them (RedisOpsError -> its exit code): (exit code,
    error message, parsed JSON)."""
    app = typer.Typer()
    app.add_typer(acl_app, name="acl")
    app.add_typer(certs_app, name="certs")
    argv = [*args, "--state-dir", str(twin.layout.root), "--json"]
    result = CliRunner().invoke(app, argv)
    if isinstance(result.exception, RedisOpsError):
        return result.exception.exit_code, str(result.exception), None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, "", json.loads(result.stdout) if result.stdout.strip() else None


def rotate(twin: Twin, role: str, phase: str) -> tuple[int, str, Any]:
    return cli(twin, "acl", "rotate", "--role", role, "--phase", phase, "--target", "local")


def rotate_ca(twin: Twin, phase: str) -> tuple[int, str, Any]:
    return cli(twin, "certs", "rotate", "--what", "ca", "--phase", phase, "--target", "local")


def ports(twin: Twin) -> list[int]:
    return twin.settings().ports


def login(port: int, client_tls: TlsClient, username: str, password: str) -> str:
    return checks.login(Endpoint(host=HOST, port=port), client_tls, username, password)


def secret(path: Path) -> str:
    return path.read_text().strip()


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


def acl_line(twin: Twin, port: int, role: str) -> str:
    lines = twin.layout.aclfile(port).read_text().splitlines()
    return next(line for line in lines if line.startswith(f"user {role} "))


def admin(twin: Twin, port: int) -> redis.Redis:
    return connect(
        Endpoint(host=HOST, port=port), twin.client_tls(acl.ADMIN), twin.credentials(acl.ADMIN)
    )


def replicas(twin: Twin) -> list[int]:
    return [n["port"] for n in twin.status()["nodes"] if n["role"] == "replica"]


def relink_and_check(twin: Twin, restart: int | None = None) -> None:
    """New TLS handshakes with the material on disk now: every replica's link to its
    primary is cut (it reconnects and authenticates again), one replica restarts (its
    cluster bus links to every node are new), then the cluster must be whole and a write
    must reach a replica."""
    for port in replicas(twin):
        client = admin(twin, port)
        try:
            assert client.execute_command("CLIENT", "KILL", "TYPE", "master") >= 1
        finally:
            client.close()
    if restart is not None:
        twin.stop_node(restart)
        twin.start_node(restart)
        twin.wait_responding(twin.settings())
    assert checks.cluster_problems(twin, twin.settings(), timeout=30.0) == []
    cluster = connect_cluster(
        [Endpoint(host=HOST, port=p) for p in ports(twin)],
        twin.client_tls(acl.SMOKE),
        twin.credentials(acl.SMOKE),
    )
    try:
        cluster.set("smoke:rotation", "1")
        node = cluster.get_node_from_key("smoke:rotation")
        assert cluster.execute_command("WAIT", 1, 5000, target_nodes=node) >= 1
        cluster.delete("smoke:rotation")
    finally:
        cluster.close()


# ---- passwords ---------------------------------------------------------------------------


def test_reader_password_rotation_accepts_both_until_retire_then_refuses_the_old(
    twin: Twin,
) -> None:
    layout = twin.layout
    first = secret(layout.password_file(acl.READER))
    client_tls = twin.client_tls(acl.READER)

    code, error, _ = rotate(twin, acl.READER, "switch")
    assert code == 2
    assert "no rotation in progress" in error and "--phase add --target local" in error
    code, error, _ = rotate(twin, acl.READER, "retire")
    assert code == 2 and "--phase add" in error

    code, _, report = rotate(twin, acl.READER, "add")
    assert code == 0, report
    assert report["ok"] and report["state_after"] == "add"
    assert report["next_command"].startswith("redisops acl rotate --role reader --phase switch")
    second = secret(layout.next_password_file(acl.READER))
    assert second != first and private(layout.next_password_file(acl.READER))
    assert secret(layout.password_file(acl.READER)) == first  # still handed out
    for port in ports(twin):
        assert login(port, client_tls, acl.READER, first) == "accepted"
        assert login(port, client_tls, acl.READER, second) == "accepted"
        line = acl_line(twin, port, acl.READER)
        assert line.count(" #") == 2 and first not in line and second not in line

    code, _, again = rotate(twin, acl.READER, "add")
    assert code == 0 and again["repeated"]
    assert secret(layout.next_password_file(acl.READER)) == second
    code, error, _ = rotate(twin, acl.READER, "retire")
    assert code == 2 and "phase add is done" in error and "--phase switch" in error

    code, _, report = rotate(twin, acl.READER, "switch")
    assert code == 0 and report["ok"], report
    assert secret(layout.password_file(acl.READER)) == second
    assert secret(layout.old_password_file(acl.READER)) == first
    assert private(layout.old_password_file(acl.READER))
    assert not layout.next_password_file(acl.READER).exists()
    assert any("no SSE proxy" in note for note in report["notes"])
    for port in ports(twin):
        assert login(port, client_tls, acl.READER, first) == "accepted"
        assert login(port, client_tls, acl.READER, second) == "accepted"
    # `local up` (reconcile) between phases keeps both hashes: clients still on the old
    # password are not cut off before retire.
    assert twin.up().healthy
    for port in ports(twin):
        assert login(port, client_tls, acl.READER, first) == "accepted"
        assert acl_line(twin, port, acl.READER).count(" #") == 2
    code, error, _ = rotate(twin, acl.READER, "add")  # a second add within the rotation
    assert code == 2 and "phase switch is done" in error and "--phase retire" in error
    code, _, again = rotate(twin, acl.READER, "switch")
    assert code == 0 and again["repeated"]

    code, _, report = rotate(twin, acl.READER, "retire")
    assert code == 0 and report["ok"], report
    assert {c["result"] for c in report["checks"] if c["password"] == "old"} == {"WRONGPASS"}
    assert not layout.old_password_file(acl.READER).exists()
    for port in ports(twin):
        assert login(port, client_tls, acl.READER, first) == "WRONGPASS"
        assert login(port, client_tls, acl.READER, second) == "accepted"
        assert acl_line(twin, port, acl.READER).count(" #") == 1
    code, _, again = rotate(twin, acl.READER, "retire")
    assert code == 0 and again["repeated"] and again["ok"]
    code, error, _ = rotate(twin, acl.READER, "switch")
    assert code == 2 and "the last one was retired" in error and "--phase add" in error


def test_replication_password_rotation_keeps_every_replica_in_sync(twin: Twin) -> None:
    layout = twin.layout
    first = secret(layout.password_file(acl.REPLICATION))
    for phase in ("add", "switch"):
        code, _, report = rotate(twin, acl.REPLICATION, phase)
        assert code == 0 and report["ok"], report
    second = secret(layout.password_file(acl.REPLICATION))
    assert second != first
    include = layout.replication_include
    assert second in include.read_text() and first not in include.read_text()
    assert private(include)
    for port in ports(twin):
        client = admin(twin, port)
        try:
            current = client.config_get("master*")
        finally:
            client.close()
        assert current["masteruser"] == acl.REPLICATION and current["masterauth"] == second
    code, _, report = rotate(twin, acl.REPLICATION, "retire")
    assert code == 0 and report["ok"], report
    # Replicas must now authenticate again with the new password only.
    relink_and_check(twin)


def test_a_damaged_rotation_record_stops_the_rotation_naming_the_file(twin: Twin) -> None:
    record = twin.layout.rotation_record(acl.SMOKE)
    record.write_text("{half")
    try:
        code, error, _ = rotate(twin, acl.SMOKE, "add")
        assert code == 2 and str(record) in error and "unreadable" in error
        assert not twin.layout.next_password_file(acl.SMOKE).exists()
    finally:
        record.unlink()


# ---- certificates ------------------------------------------------------------------------


def served(twin: Twin, port: int) -> x509.Certificate:
    der = served_certificate(Endpoint(host=HOST, port=port), twin.client_tls(acl.MONITORING))
    return x509.load_der_x509_certificate(der)


def node_file(twin: Twin) -> x509.Certificate:
    return x509.load_pem_x509_certificate(twin.layout.tls.node_cert.read_bytes())


def pids(twin: Twin) -> dict[int, int]:
    return {n["port"]: n["pid"] for n in twin.status()["nodes"]}


def test_status_lists_every_file_and_what_each_node_serves(twin: Twin) -> None:
    code, _, status = cli(twin, "certs", "status", "--target", "local")
    assert code == 0, status
    names = [f["name"] for f in status["files"]]
    assert names == ["ca", "node", *(f"client:{r}" for r in acl.ROLES)]
    node = next(f for f in status["files"] if f["name"] == "node")
    assert node["days_left"] > 300 and node["subject"] == "CN=redis-node"
    assert node["fingerprint_sha256"] == tls.fingerprint(node_file(twin))
    assert len(status["nodes"]) == len(ports(twin))
    for entry in status["nodes"]:
        assert entry["matches_file"] is True
        assert entry["served"]["fingerprint_sha256"] == node["fingerprint_sha256"]


def test_status_on_explicit_nodes_fails_on_a_short_lived_or_unexpected_certificate(
    twin: Twin, tmp_path: Path
) -> None:
    layout = twin.layout.tls
    nodes = [f"--node={HOST}:{p}" for p in ports(twin)]
    base = ["certs", "status", *nodes, f"--ca={layout.ca_cert}"]
    code, _, status = cli(twin, *base, f"--expect-node-cert={layout.node_cert}")
    assert code == 0 and all(n["matches_file"] for n in status["nodes"])
    # A client certificate that expires inside the alert's window fails the check.
    ca = tls.Issued(layout.ca_key.read_bytes(), layout.ca_cert.read_bytes())
    short = tls.issue(ca, acl.SMOKE, server_auth=False, client_auth=True, days=5)
    tls.write_private(tmp_path / "short.key", short.key_pem)
    tls.write_private(tmp_path / "short.crt", short.cert_pem)
    code, _, status = cli(
        twin, *base, f"--cert={tmp_path / 'short.crt'}", f"--key={tmp_path / 'short.key'}"
    )
    assert code == 1
    assert any("client" in p and "expires in 5.0 days (< 14)" in p for p in status["problems"])
    # Nodes that serve another certificate than the one expected are stale.
    code, _, status = cli(twin, *base, f"--expect-node-cert={layout.client_cert(acl.SMOKE)}")
    assert code == 1
    assert all(n["matches_file"] is False for n in status["nodes"])


def test_node_certificate_rotation_reloads_every_node_without_restart(twin: Twin) -> None:
    before_pids = pids(twin)
    old = node_file(twin)
    # A renewed file nobody reloaded: status names every node as stale.
    ca = tls.Issued(twin.layout.tls.ca_key.read_bytes(), twin.layout.tls.ca_cert.read_bytes())
    renewed = tls.issue_node(ca, *tls.subject_alt_names(old))
    tls.write_private(twin.layout.tls.node_key, renewed.key_pem)
    tls.write_private(twin.layout.tls.node_cert, renewed.cert_pem)
    code, _, status = cli(twin, "certs", "status", "--target", "local")
    assert code == 1
    assert all("serves another certificate" in " ".join(n["problems"]) for n in status["nodes"])

    code, _, report = cli(twin, "certs", "rotate", "--what", "node", "--target", "local")
    assert code == 0 and report["ok"], report
    new = node_file(twin)
    assert new.serial_number not in (old.serial_number, renewed.certificate.serial_number)
    assert tls.subject_alt_names(new) == tls.subject_alt_names(old)
    assert private(twin.layout.tls.node_key)
    for port in ports(twin):
        assert served(twin, port) == new
    assert pids(twin) == before_pids
    relink_and_check(twin)
    assert cli(twin, "certs", "status", "--target", "local")[0] == 0


def test_client_certificate_rotation_issues_every_role_a_new_one(twin: Twin) -> None:
    layout = twin.layout.tls
    before = {r: layout.client_cert(r).read_bytes() for r in acl.ROLES}
    code, _, report = cli(twin, "certs", "rotate", "--what", "client", "--target", "local")
    assert code == 0 and report["ok"], report
    for role in acl.ROLES:
        assert layout.client_cert(role).read_bytes() != before[role]
        assert private(layout.client_key(role))


def snapshot_old_setup(twin: Twin, where: Path) -> TlsClient:
    """A client set up before the CA rotation: a copy of the old CA file, and a client
    certificate of the old CA."""
    where.mkdir()
    layout = twin.layout.tls
    for source, name in (
        (layout.ca_cert, "ca.crt"),
        (layout.client_cert(acl.SMOKE), "smoke.crt"),
        (layout.client_key(acl.SMOKE), "smoke.key"),
    ):
        shutil.copy(source, where / name)
    return TlsClient(
        ca_file=str(where / "ca.crt"),
        cert_file=str(where / "smoke.crt"),
        key_file=str(where / "smoke.key"),
    )


def smoke_everywhere(twin: Twin, client_tls: TlsClient) -> set[str]:
    password = twin.credentials(acl.SMOKE).password.get_secret_value()
    return {login(p, client_tls, acl.SMOKE, password).split(":")[0] for p in ports(twin)}


def test_ca_rotation_overlaps_so_clients_and_the_cluster_never_lose_trust(
    twin: Twin, tmp_path: Path
) -> None:
    layout = twin.layout.tls
    old = snapshot_old_setup(twin, tmp_path / "old")
    old_ca = x509.load_pem_x509_certificate(Path(old.ca_file).read_bytes())
    # Today's clients trusting the current CA file, with an old-CA client certificate.
    bundle_with_old_cert = old.model_copy(update={"ca_file": str(layout.ca_cert)})
    before_pids = pids(twin)
    replica = replicas(twin)

    code, error, _ = rotate_ca(twin, "switch")
    assert code == 2 and "no rotation in progress" in error and "--phase add" in error
    code, error, _ = cli(twin, "certs", "rotate", "--what", "ca", "--target", "local")
    assert code == 2 and "needs --phase" in error and "--phase add" in error

    # add: both CAs trusted, nodes still serve old-CA certificates.
    code, _, report = rotate_ca(twin, "add")
    assert code == 0 and report["ok"], report
    assert len(tls.load_bundle(layout.ca_cert.read_bytes())) == 2
    assert private(layout.ca_next_key)
    assert smoke_everywhere(twin, old) == {"accepted"}  # old CA only, old certificate
    new_ca = tls.Issued(layout.ca_next_key.read_bytes(), layout.ca_next_cert.read_bytes())
    early = tls.issue_client(new_ca, acl.SMOKE)
    tls.write_private(tmp_path / "early.key", early.key_pem)
    tls.write_private(tmp_path / "early.crt", early.cert_pem)
    early_tls = TlsClient(
        ca_file=str(layout.ca_cert),
        cert_file=str(tmp_path / "early.crt"),
        key_file=str(tmp_path / "early.key"),
    )
    assert smoke_everywhere(twin, early_tls) == {"accepted"}  # a new-CA certificate too
    relink_and_check(twin, restart=replica[0])
    code, _, again = rotate_ca(twin, "add")
    assert code == 0 and again["repeated"]
    code, error, _ = rotate_ca(twin, "retire")
    assert code == 2 and "phase add is done" in error

    # switch: the new CA signs every node and client certificate; both still trusted.
    code, _, report = rotate_ca(twin, "switch")
    assert code == 0 and report["ok"], report
    signer = tls.load_bundle(layout.ca_cert.read_bytes())[0]
    assert signer.subject != old_ca.subject
    for port in ports(twin):
        assert tls.issued_by(served(twin, port), signer)
    for role in acl.ROLES:
        leaf = x509.load_pem_x509_certificate(layout.client_cert(role).read_bytes())
        assert tls.issued_by(leaf, signer)
    assert smoke_everywhere(twin, bundle_with_old_cert) == {"accepted"}  # old cert still in
    # Trusting the old CA alone no longer verifies the nodes: why add hands out the bundle.
    assert smoke_everywhere(twin, old) == {"error"}
    assert smoke_everywhere(twin, twin.client_tls(acl.SMOKE)) == {"accepted"}
    relink_and_check(twin, restart=replica[1])

    # retire: the new CA only; certificates of the old CA are refused.
    code, _, report = rotate_ca(twin, "retire")
    assert code == 0 and report["ok"], report
    assert tls.load_bundle(layout.ca_cert.read_bytes()) == [signer]
    assert not layout.ca_old_key.exists() and not layout.ca_next_key.exists()
    assert smoke_everywhere(twin, bundle_with_old_cert) == {"error"}
    assert smoke_everywhere(twin, twin.client_tls(acl.SMOKE)) == {"accepted"}
    relink_and_check(twin, restart=replica[2])
    code, _, again = rotate_ca(twin, "retire")
    assert code == 0 and again["repeated"] and again["ok"]

    code, _, status = cli(twin, "certs", "status", "--target", "local")
    assert code == 0 and status["ca_rotation"] is None, status["problems"]
    unchanged = {p: pid for p, pid in pids(twin).items() if p not in replica}
    assert unchanged == {p: pid for p, pid in before_pids.items() if p not in replica}


def test_the_password_rotation_still_works_after_the_ca_rotation(twin: Twin) -> None:
    """The rotations compose: a full password rotation on the new CA's certificates."""
    started = time.monotonic()
    for phase in ("add", "switch", "retire"):
        code, _, report = rotate(twin, acl.OPERATOR, phase)
        assert code == 0 and report["ok"], report
    assert time.monotonic() - started < 20
    operator = Credentials.from_file(acl.OPERATOR, twin.layout.password_file(acl.OPERATOR))
    assert twin.credentials(acl.OPERATOR) == operator
