"""The verbs the procedures run, against twins of their own, through the real CLI:
scale-in with data, failover (graceful, forced, refused), node replacement."""

from __future__ import annotations

import json
from typing import Any

import redis

from redisops import acl
from redisops.client import Endpoint, connect_cluster
from redisops.local.settings import HOST
from redisops.local.twin import Twin
from tests.conftest import free_base_port
from tests.integration.libraries import cli


def cluster(twin: Twin) -> redis.RedisCluster:
    port = twin.settings().ports[0]
    return connect_cluster(
        [Endpoint(host=HOST, port=port)], twin.client_tls(acl.ADMIN), twin.credentials(acl.ADMIN)
    )


def fill(twin: Twin, count: int) -> None:
    client = cluster(twin)
    try:
        pipe = client.pipeline()
        for i in range(count):
            pipe.set(f"data:{i}", i)
        pipe.execute()
        for i in range(200):
            client.xadd("agent_updates", {"n": str(i)})
    finally:
        client.close()


def contents(twin: Twin) -> tuple[int, list[str], list[str]]:
    """(key count over primaries, values of data:*, ids of the stream)."""
    client = cluster(twin)
    try:
        sizes: Any = client.dbsize(target_nodes=redis.RedisCluster.PRIMARIES)
        values = [str(v) for v in client.mget_nonatomic([f"data:{i}" for i in range(0, 3000, 7)])]
        ids = [str(e[0]) for e in client.xrange("agent_updates") or []]
    finally:
        client.close()
    total = sum(sizes.values()) if isinstance(sizes, dict) else int(sizes)
    return total, values, ids


def run(twin: Twin, *args: str) -> tuple[int, dict[str, Any], str]:
    proc = cli(*args, "--state-dir", str(twin.layout.root), "--json")
    data = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    return proc.returncode, data, proc.stderr


def primaries(twin: Twin) -> dict[int, int]:
    """port -> slot count of every primary serving slots."""
    return {
        n["port"]: n["slot_count"]
        for n in twin.status()["nodes"]
        if n["role"] == "primary" and n["slot_count"]
    }


def test_scale_in_from_4_to_3_shards_keeps_every_key(own_twin: Twin) -> None:
    own_twin.up(base_port=free_base_port(8), shards=4, sse_proxy=False)
    fill(own_twin, 3000)
    before = contents(own_twin)
    assert before[0] == 3001

    # The guard: the twin refuses to stop nodes that still hold data.
    refused = cli("local", "up", "--shards", "3", "--state-dir", str(own_twin.layout.root))
    assert refused.returncode == 2
    assert "redisops scale --target local --shards 3" in refused.stderr

    code, plan, _ = run(own_twin, "scale", "--target", "local", "--shards", "3", "--plan")
    assert code == 0 and plan["planned_only"] is True
    codes = [a["code"] for a in plan["actions"]]
    assert codes[0] == "rebalance" and codes.count("leave") == 2, codes
    assert all(a["reason"] and a["risk"] for a in plan["actions"])
    assert len(primaries(own_twin)) == 4  # the plan changed nothing

    code, report, err = run(own_twin, "scale", "--target", "local", "--shards", "3")
    assert code == 0, (report.get("findings"), report.get("failed"), err[-1500:])
    assert report["ok"] and report["done"] == len(report["actions"])
    assert "redisops local up --shards 3" in report["next_step"]
    assert contents(own_twin) == before  # zero keys lost, the stream entry for entry
    leaving = set(report["details"]["leaving"])
    assert leaving == {f"{HOST}:{p}" for p in own_twin.settings().ports[6:]}

    # Only now does the twin shrink: the nodes that left are stopped.
    assert own_twin.up(shards=3).healthy
    status = own_twin.status()
    assert len(status["nodes"]) == 6 and len(primaries(own_twin)) == 3
    assert sum(primaries(own_twin).values()) == 16384
    assert contents(own_twin) == before
    assert own_twin.up().actions == []


def test_failover_graceful_then_forced_and_bad_input(own_twin: Twin) -> None:
    own_twin.up(base_port=free_base_port(6), sse_proxy=False)
    fill(own_twin, 3000)
    before = contents(own_twin)
    shard0 = next(
        n for n in own_twin.status()["nodes"] if n["role"] == "primary" and n["shard"] == 0
    )

    code, report, err = run(own_twin, "failover", "--target", "local", "--shard", "0")
    assert code == 0, err[-2000:]
    assert report["details"]["from"] == f"{HOST}:{shard0['port']}"
    new = int(report["details"]["to"].rsplit(":", 1)[1])
    roles = {n["port"]: n["role"] for n in own_twin.status()["nodes"]}
    assert roles[new] == "primary" and roles[shard0["port"]] == "replica"
    assert report["actions"][0]["risk"] == "low"

    # Forcing a shard whose primary serves would lose its latest writes: nothing is done.
    code, report, err = run(own_twin, "failover", "--target", "local", "--shard", "0", "--force")
    assert code == 0 and report["actions"] == [], err[-2000:]
    assert "nothing to take over" in report["details"]["nothing_to_do"]
    # The primary crashes: --force promotes its replica without waiting for node-timeout.
    own_twin.kill_node(new)
    code, report, err = run(own_twin, "failover", "--target", "local", "--shard", "0", "--force")
    assert code == 0, err[-2000:]
    if report["actions"]:  # (Redis may have elected it by itself in the meantime)
        assert report["actions"][0]["risk"] == "high" and report["actions"][0]["mode"] == "FORCE"
    roles = {n["port"]: n["role"] for n in own_twin.status()["nodes"]}
    assert roles[shard0["port"]] == "primary"
    own_twin.start_node(new)
    code, _, err = run(own_twin, "health", "--target", "local", "--wait", "30")
    assert code == 0, err[-1000:]
    assert contents(own_twin) == before

    code, _, err = run(own_twin, "failover", "--target", "local", "--shard", "9")
    assert code == 2 and "--shard 9" in err and "shards 0..2" in err
    code, _, err = run(own_twin, "failover", "--target", "local", "--shard", "0", "--force",
                       "--takeover")  # fmt: skip
    assert code == 2 and "choose one" in err
    code, _, err = run(own_twin, "scale", "--target", "local", "--shards", "4")
    assert code == 2 and "Scale out" in err


def test_node_replace_gives_a_primary_a_new_identity_and_keeps_its_shard(own_twin: Twin) -> None:
    own_twin.up(base_port=free_base_port(6), sse_proxy=False)
    fill(own_twin, 3000)
    before = contents(own_twin)
    primary = next(n for n in own_twin.status()["nodes"] if n["role"] == "primary")
    code, report, err = run(own_twin, "node", "replace", "--port", str(primary["port"]))
    assert code == 0, err[-2000:]
    details = report["details"]
    assert details["old_id"] == primary["node_id"] and details["new_id"] != primary["node_id"]
    assert details["role"] == "replica"  # its replica took the shard over first
    assert "nodes.conf" in details["wiped"]
    ids = {n["node_id"] for n in own_twin.status()["nodes"]}
    assert primary["node_id"] not in ids
    assert contents(own_twin) == before
    code, _, err = run(own_twin, "node", "replace", "--port", "1")
    assert code == 2 and "--port 1" in err
