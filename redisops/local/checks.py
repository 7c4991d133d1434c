"""Checks the twin's rotations run after each step: who can log in, and whether the
cluster is whole (every node `cluster_state:ok`, every replica's link up)."""

from __future__ import annotations

import time

import redis
from pydantic import SecretStr

from redisops import acl
from redisops.client import Credentials, Endpoint, TlsClient, connect
from redisops.cluster import parse_info
from redisops.local.settings import HOST, TwinSettings
from redisops.local.twin import Twin

ACCEPTED = "accepted"
WRONGPASS = "WRONGPASS"


def login(endpoint: Endpoint, tls: TlsClient, username: str, password: str) -> str:
    """Log in and PING: "accepted", "WRONGPASS", or "error: ..." (TLS refused, down)."""
    client = connect(endpoint, tls, Credentials(username=username, password=SecretStr(password)))
    try:
        client.ping()
    except redis.AuthenticationError:
        return WRONGPASS
    except (redis.RedisError, OSError) as exc:
        # A refused client certificate ends the handshake: redis-py says ConnectionError.
        return f"error: {type(exc).__name__}: {str(exc)[:160]}"
    finally:
        client.close()
    return ACCEPTED


def endpoints(settings: TwinSettings) -> list[Endpoint]:
    return [Endpoint(host=HOST, port=p) for p in settings.ports]


def _node_problems(twin: Twin, endpoint: Endpoint) -> list[str]:
    client = connect(
        endpoint, twin.client_tls(acl.MONITORING), twin.credentials(acl.MONITORING), timeout=2.0
    )
    try:
        cluster = parse_info(str(client.execute_command("CLUSTER", "INFO")))
        replication = client.info("replication")
    except (redis.RedisError, OSError) as exc:
        return [f"{endpoint}: does not answer ({type(exc).__name__}: {str(exc)[:120]})"]
    finally:
        client.close()
    problems = []
    if cluster.get("cluster_state") != "ok":
        problems.append(f"{endpoint}: cluster_state is {cluster.get('cluster_state')}")
    if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
        problems.append(
            f"{endpoint}: replication link to its primary is "
            f"{replication.get('master_link_status')}"
        )
    return problems


def cluster_problems(twin: Twin, settings: TwinSettings, timeout: float = 15.0) -> list[str]:
    """What keeps the cluster from being whole; waits up to `timeout` for it to be."""
    deadline = time.monotonic() + timeout
    while True:
        problems = [p for ep in endpoints(settings) for p in _node_problems(twin, ep)]
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.2)
