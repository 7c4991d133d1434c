"""Checks the twin's rotations run after each step: who can log in, and whether the
cluster is whole (every node `cluster_state:ok`, every replica's link up)."""

from __future__ import annotations

import time

import redis
from pydantic import SecretStr

from redisops import acl, health
from redisops.client import Credentials, Endpoint, TlsClient, connect
from redisops.local.settings import TwinSettings
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
    return settings.endpoints


def cluster_problems(twin: Twin, settings: TwinSettings, timeout: float = 15.0) -> list[str]:
    """What keeps the cluster from being whole, as the health model judges it (every
    node `cluster_state:ok`, every slot served, every replica's link up); waits up to
    `timeout` for it to be."""
    tls, creds = twin.client_tls(acl.MONITORING), twin.credentials(acl.MONITORING)
    desired = settings.desired()
    deadline = time.monotonic() + timeout
    while True:
        observed = health.observe_as(desired.nodes, tls, creds, timeout=2.0)
        problems = health.judge(desired, observed).problems(settled=True)
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.2)
