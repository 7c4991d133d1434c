"""What a Redis pod on GKE runs, run for real against twins: the probes and the preStop
handoff (the shell scripts of infra/k8s/scripts with the twin's certificates and
passwords laid out as the pod mounts them), and the start step that points nodes.conf
at the peers' new addresses after every pod got a new IP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from infra.k8s.redis_cluster import SCRIPTS
from redisops import acl
from redisops.client import Endpoint, connect
from redisops.local.settings import HOST
from redisops.local.twin import Twin
from tests.conftest import free_base_port

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "infra" / "k8s" / "scripts"
REDISOPS = [sys.executable, "-m", "redisops"]


def pod_env(twin: Twin, root: Path, port: int) -> dict[str, str]:
    """The pod's environment and mounts: one client certificate, one password file per
    role the pod holds (operator, monitoring) under USERS_DIR/<role>/password."""
    users = root / "users"
    for role in (acl.OPERATOR, acl.MONITORING):
        (users / role).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(twin.layout.password_file(role), users / role / "password")
    tls = twin.client_tls(acl.OPERATOR)
    return {
        "PATH": os.environ["PATH"],
        "REDIS_PORT": str(port),
        "TLS_CA": tls.ca_file,
        "TLS_CERT": str(tls.cert_file),
        "TLS_KEY": str(tls.key_file),
        "USERS_DIR": str(users),
        "HANDOFF_TIMEOUT": "10",
    }


def run_script(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPTS_DIR / name)], env=env, capture_output=True, text=True, timeout=60
    )


def nodes_by_role(twin: Twin) -> dict[str, list[dict[str, Any]]]:
    nodes = twin.status()["nodes"]
    return {role: [n for n in nodes if n["role"] == role] for role in ("primary", "replica")}


def test_scripts_are_posix_sh() -> None:
    for name in SCRIPTS:
        checked = subprocess.run(["sh", "-n", str(SCRIPTS_DIR / name)], capture_output=True)
        assert checked.returncode == 0, (name, checked.stderr)


def test_probes(session_twin: Twin, tmp_path: Path) -> None:
    roles = nodes_by_role(session_twin)
    for node in (roles["primary"][0], roles["replica"][0]):
        env = pod_env(session_twin, tmp_path, node["port"])
        for script in ("liveness.sh", "readiness.sh"):
            proc = run_script(script, env)
            assert proc.returncode == 0, (script, node["port"], proc.stdout, proc.stderr)
    # nothing listening: both fail and say why
    env = pod_env(session_twin, tmp_path, 1)
    for script in ("liveness.sh", "readiness.sh"):
        proc = run_script(script, env)
        assert proc.returncode == 1
        assert script.split(".")[0] in proc.stdout
    # a wrong password is not alive either (no silent pass on an auth error)
    env = pod_env(session_twin, tmp_path, roles["primary"][0]["port"])
    (Path(env["USERS_DIR"]) / acl.MONITORING / "password").write_text("wrong\n")
    proc = run_script("liveness.sh", env)
    assert proc.returncode == 1 and "unexpected reply" in proc.stdout


def _wait_role(twin: Twin, port: int, role: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node = next(n for n in twin.status()["nodes"] if n["port"] == port)
        if node["role"] == role and node["cluster_state"] == "ok":
            return
        time.sleep(0.2)
    raise AssertionError(f"node :{port} did not become {role}")


def test_pre_stop_lets_a_node_finish_its_initial_aof_before_sigterm(
    session_twin: Twin, tmp_path: Path
) -> None:
    """Redis refuses SIGTERM while it writes its first AOF ("Writing initial AOF, can't
    exit"), as a replica does right after a full sync: the kubelet would kill it at the
    end of the grace period. The hook waits for the rewrite (seen in the plan run)."""
    roles = nodes_by_role(session_twin)
    replica = roles["replica"][0]
    primary = next(n for n in roles["primary"] if n["node_id"] == replica["primary_id"])
    lo = primary["slots"][0][0]
    tag = next(t for t in map(str, range(100_000)) if key_slot(t.encode()) == lo)
    keys = [f"aof-drill:{{{tag}}}:{i}" for i in range(100)]
    writer = connect(
        Endpoint(host=HOST, port=primary["port"]),
        session_twin.client_tls(acl.ADMIN),
        session_twin.credentials(acl.ADMIN),
    )
    writer.mset(dict.fromkeys(keys, "x"))
    writer.execute_command("WAIT", 1, 2000)
    node = connect(
        Endpoint(host=HOST, port=replica["port"]),
        session_twin.client_tls(acl.ADMIN),
        session_twin.credentials(acl.ADMIN),
    )
    try:
        # An initial AOF, slowed down: switching AOF on makes Redis write it from scratch.
        node.config_set("rdb-key-save-delay", "40000")  # 40 ms per key
        node.config_set("appendonly", "no")
        node.config_set("appendonly", "yes")
        assert node.info("persistence")["aof_rewrite_in_progress"] == 1
        proc = run_script("pre-stop.sh", pod_env(session_twin, tmp_path, replica["port"]))
        assert proc.returncode == 0, proc.stderr
        assert "waiting for the AOF rewrite" in proc.stdout, proc.stdout
        persistence = node.info("persistence")
        assert persistence["aof_rewrite_in_progress"] == 0, persistence  # SIGTERM would work
    finally:
        node.config_set("rdb-key-save-delay", "0")
        deadline = time.monotonic() + 30
        while node.info("persistence")["aof_rewrite_in_progress"] and time.monotonic() < deadline:
            time.sleep(0.1)
        node.close()
        writer.delete(*keys)
        writer.close()


def test_pre_stop_hands_a_primary_to_its_replica(session_twin: Twin, tmp_path: Path) -> None:
    roles = nodes_by_role(session_twin)
    replica = roles["replica"][0]
    proc = run_script("pre-stop.sh", pod_env(session_twin, tmp_path, replica["port"]))
    assert proc.returncode == 0 and "not a primary" in proc.stdout

    primary = next(n for n in roles["primary"] if n["node_id"] == replica["primary_id"])
    proc = run_script("pre-stop.sh", pod_env(session_twin, tmp_path, primary["port"]))
    assert proc.returncode == 0, proc.stderr
    assert f"handed off to 127.0.0.1:{replica['port']}" in proc.stdout, proc.stdout
    _wait_role(session_twin, primary["port"], "replica")
    _wait_role(session_twin, replica["port"], "primary")
    # and back, so the twin is left as found
    proc = run_script("pre-stop.sh", pod_env(session_twin, tmp_path, replica["port"]))
    assert f"handed off to 127.0.0.1:{primary['port']}" in proc.stdout, proc.stdout
    _wait_role(session_twin, primary["port"], "primary")


# ---- start step: nodes.conf after a full restart with new IPs ---------------------------


def _cluster_nodes(twin: Twin, port: int) -> str:
    client = connect(
        Endpoint(host=HOST, port=port), twin.client_tls(acl.ADMIN), twin.credentials(acl.ADMIN)
    )
    try:
        return str(client.execute_command("CLUSTER", "NODES"))
    finally:
        client.close()


def _admin(twin: Twin, port: int, *command: str) -> Any:
    client = connect(
        Endpoint(host=HOST, port=port), twin.client_tls(acl.ADMIN), twin.credentials(acl.ADMIN)
    )
    try:
        return client.execute_command(*command)
    finally:
        client.close()


@pytest.mark.timeout(180)
def test_node_prepare_rejoins_a_cluster_whose_addresses_all_changed(own_twin: Twin) -> None:
    report = own_twin.up(base_port=free_base_port(3), shards=3, replicas=0, sse_proxy=False)
    assert report.healthy, report.findings
    ports = own_twin.settings().ports
    # Every node announces a hostname (on GKE its pod DNS name; here one that resolves
    # to 127.0.0.1) and saves it into its peers' nodes.conf.
    for port in ports:
        _admin(own_twin, port, "CONFIG", "SET", "cluster-announce-hostname", "localhost")
    deadline = time.monotonic() + 20
    while any(_cluster_nodes(own_twin, p).count(",localhost") < 3 for p in ports):
        assert time.monotonic() < deadline, "hostnames did not spread"
        time.sleep(0.2)
    for port in ports:
        _admin(own_twin, port, "CLUSTER", "SAVECONFIG")
    own_twin.down()

    # Every pod came back with a new IP: the addresses in nodes.conf are all stale.
    for i, port in enumerate(ports):
        conf = own_twin.layout.node_dir(port) / "nodes.conf"
        conf.write_text(conf.read_text().replace(f"{HOST}:", f"10.255.{i}.1:"))

    for port in ports:
        proc = subprocess.run(
            [*REDISOPS, "node", "prepare", "--data-dir", str(own_twin.layout.node_dir(port)),
             "--my-ip", HOST, "--json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert len(result["changes"]) == 3, result
        assert "10.255." not in (own_twin.layout.node_dir(port) / "nodes.conf").read_text()

    # Only the servers start (no reconcile): they find each other from nodes.conf alone.
    for port in ports:
        own_twin.start_node(port)
    deadline = time.monotonic() + 30
    while True:
        views = [_cluster_nodes(own_twin, p) for p in ports]
        states = [
            str(_admin(own_twin, p, "CLUSTER", "INFO")).count("cluster_state:ok") for p in ports
        ]
        if all(states) and not any("fail" in v for v in views):
            break
        assert time.monotonic() < deadline, views
        time.sleep(0.3)


# ---- start: a former primary waits for its replica to take over -------------------------

A, B = "a" * 40, "b" * 40
PRIMARY_WITH_REPLICA = (
    f"{A} 10.0.0.1:6379@16379,p0 myself,master - 0 0 1 connected 0-5460\n"
    f"{B} 10.0.0.2:6379@16379,p1 slave {A} 0 0 1 connected\n"
)
PRIMARY_ALONE = f"{A} 10.0.0.1:6379@16379,p0 myself,master - 0 0 1 connected 0-5460\n"
REPLICA = (
    f"{A} 10.0.0.1:6379@16379,p0 myself,slave {B} 0 0 1 connected\n"
    f"{B} 10.0.0.2:6379@16379,p1 master - 0 0 1 connected 0-5460\n"
)
EMPTY_PRIMARY = f"{A} 10.0.0.1:6379@16379 myself,master - 0 0 0 connected\n"


@pytest.mark.parametrize(
    ("nodes_conf", "holds"),
    [
        (PRIMARY_WITH_REPLICA, True),
        (PRIMARY_ALONE, False),  # nobody could take over: waiting would only add downtime
        (REPLICA, False),
        (EMPTY_PRIMARY, False),
        (None, False),  # first start
    ],
)
def test_start_holds_only_a_former_primary_with_replicas(
    tmp_path: Path, nodes_conf: str | None, holds: bool
) -> None:
    if nodes_conf is not None:
        (tmp_path / "nodes.conf").write_text(nodes_conf)
    env = {"PATH": os.environ["PATH"], "DATA_DIR": str(tmp_path), "HOLD_SECONDS": "2"}
    started = time.monotonic()
    proc = subprocess.run(
        ["sh", str(SCRIPTS_DIR / "start.sh"), "--version"],  # redis-server --version, then exit
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    waited = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert "Redis server v=" in proc.stdout  # the arguments reached redis-server
    assert (waited >= 2) == holds, waited
    assert ("waiting 2s" in proc.stdout) == holds
