"""ACLs: no default user, wrong passwords refused, each role exactly as privileged as needed."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

import pytest
import redis

from redisops import acl
from redisops.client import Credentials, connect
from smoke_tests import capabilities
from smoke_tests.acl_matrix import OUTSIDE_KEY, PROBES, SMOKE_KEY, Probe, concrete_stream
from smoke_tests.capabilities import Declared
from smoke_tests.probes import RoleConnections, Router, dryrun, raw_command, resp, run_as
from smoke_tests.targets import Target


def test_unauthenticated_clients_can_do_nothing(target: Target) -> None:
    for endpoint in target.endpoints():
        reply = raw_command(endpoint, target.tls(acl.SMOKE), resp("PING"))
        assert reply.startswith(b"-NOAUTH"), f"{endpoint} answered {reply[:60]!r} without AUTH"


@pytest.mark.parametrize("password", ["", "not-the-default-password"])
def test_default_user_cannot_authenticate(target: Target, password: str) -> None:
    endpoint = target.endpoints()[0]
    reply = raw_command(endpoint, target.tls(acl.SMOKE), resp("AUTH", "default", password))
    assert reply.startswith(b"-WRONGPASS"), f"AUTH default answered {reply[:60]!r}"


def test_wrong_password_is_rejected(target: Target) -> None:
    endpoint = target.endpoints()[0]
    client = connect(
        endpoint,
        target.tls(acl.SMOKE),
        Credentials(username=acl.SMOKE, password="wrong-password-0123456789"),
    )
    try:
        with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
            client.ping()
    finally:
        client.close()


@pytest.fixture(scope="module")
def connections(target: Target) -> Iterator[RoleConnections]:
    pool = RoleConnections(target)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def router(target: Target) -> Router:
    return Router(target)


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.label)
def test_role_permissions_match_the_matrix(
    target: Target,
    declared: Declared,
    probe: Probe,
    connections: RoleConnections,
    router: Router,
) -> None:
    stream = concrete_stream(target.streams)
    assert not any(fnmatch.fnmatchcase(OUTSIDE_KEY, p) for p in target.streams)
    command = probe.resolve(stream, OUTSIDE_KEY, SMOKE_KEY)
    if probe.how == "dryrun":
        client = connections.get(acl.SMOKE, router.any)
        allowed, detail = dryrun(client, probe.role, command)
    else:
        declared.require(capabilities.credentials(probe.role))
        key = None if probe.key_index is None else command[probe.key_index]
        allowed, detail = run_as(connections.get(probe.role, router.endpoint(key)), command)
    assert allowed == probe.allowed, f"{probe.label}: got {detail}"
