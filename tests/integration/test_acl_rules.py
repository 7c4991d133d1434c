"""The rendered ACL file, loaded by a real redis-server, means what the matrix says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from redisops import acl
from smoke_tests.acl_matrix import OUTSIDE_KEY, PROBES, SMOKE_KEY, Probe, concrete_stream
from tests.conftest import requires_redis
from tests.integration.servers import plain_client, standalone_redis

PASSWORDS = {role: f"{role}-password-0123456789abcdef" for role in acl.ROLES}


def render() -> str:
    return acl.render_acl_file({r: [acl.hash_password(p)] for r, p in PASSWORDS.items()})


def violations(port: int) -> list[str]:
    admin = plain_client(port, acl.ADMIN, PASSWORDS[acl.ADMIN])
    stream = concrete_stream(acl.DEFAULT_STREAMS)
    wrong: list[str] = []
    try:
        for probe in PROBES:
            command = probe.resolve(stream, OUTSIDE_KEY, SMOKE_KEY)
            reply = str(admin.execute_command("ACL", "DRYRUN", probe.role, *command))
            if (reply == "OK") != probe.allowed:
                wrong.append(f"{probe.label}: {reply}")
    finally:
        admin.close()
    return wrong


def test_every_rendered_rule_loads_and_acl_list_matches_the_file(tmp_path: Path) -> None:
    requires_redis()
    text = render()
    (tmp_path / "users.acl").write_text(text)
    with standalone_redis(tmp_path / "srv", "--aclfile", str(tmp_path / "users.acl")) as port:
        admin = plain_client(port, acl.ADMIN, PASSWORDS[acl.ADMIN])
        try:
            listed = [str(x) for x in admin.execute_command("ACL", "LIST")]
        finally:
            admin.close()
        assert acl.diff_acl(text, listed) == []
        assert violations(port) == []


@pytest.mark.parametrize(
    ("role", "extra"),
    [
        (acl.READER, "%RW~agent_updates +xadd"),
        (acl.MONITORING, "~* +get"),
        (acl.PUBLISHER, "+flushall"),
        (acl.PUBLISHER, "+set"),  # SET on its streams (they would be replaced)
        (acl.PUBLISHER, "%RW~agent_updates +get"),  # reads a stream
        (acl.PUBLISHER, "(~* +get +set)"),
        (acl.PUBLISHER, "(~agent_updates +eval +set)"),
        (acl.PUBLISHER, "(~idempotency:* +get +set +del)"),
        (acl.PUBLISHER, "~idempotency:*"),  # XADD into records
        (acl.PUBLISHER, "+script|load"),
        (acl.READER, "(~idempotency:* +get)"),
        (acl.SMOKE, "~*"),
    ],
)
def test_the_matrix_catches_a_role_with_too_many_rights(
    tmp_path: Path, role: str, extra: str
) -> None:
    requires_redis()
    lines = [
        f"{line} {extra}" if line.startswith(f"user {role} ") else line
        for line in render().splitlines()
    ]
    (tmp_path / "users.acl").write_text("\n".join(lines) + "\n")
    with standalone_redis(tmp_path / "srv", "--aclfile", str(tmp_path / "users.acl")) as port:
        wrong = violations(port)
    assert wrong, f"giving {role} {extra} went unnoticed"
    assert all(w.startswith(f"{role} ") for w in wrong)


def test_each_role_authenticates_with_its_password_and_no_other(tmp_path: Path) -> None:
    requires_redis()
    (tmp_path / "users.acl").write_text(render())
    with standalone_redis(tmp_path / "srv", "--aclfile", str(tmp_path / "users.acl")) as port:
        for role, password in PASSWORDS.items():
            client = plain_client(port, role, password)
            assert client.ping() is True
            client.close()
            other = plain_client(port, role, "another-role-password-0123456789")
            with pytest.raises(redis.AuthenticationError, match="invalid username-password"):
                other.ping()
            other.close()


def test_probe_labels_are_unique() -> None:
    labels = [p.label for p in PROBES]
    assert len(labels) == len(set(labels))
    assert isinstance(PROBES[0], Probe)


def test_the_publisher_touches_its_idempotency_records_and_no_other_key(tmp_path: Path) -> None:
    """Real commands, not dry runs: what the proxy's exactly-once POST does, and what a
    publisher must still not do, scripts included."""
    requires_redis()
    (tmp_path / "users.acl").write_text(render())
    stream = "agent_updates"
    record = acl.idempotency_key(stream, "k-1")
    with standalone_redis(tmp_path / "srv", "--aclfile", str(tmp_path / "users.acl")) as port:
        publisher = plain_client(port, acl.PUBLISHER, PASSWORDS[acl.PUBLISHER])
        try:
            assert publisher.set(record, "1-0 fp nonce", ex=60) is True
            assert publisher.get(record) == "1-0 fp nonce"
            script = (
                "local id = redis.call('XADD', KEYS[1], '*', 'a', 'b') "
                "redis.call('SET', KEYS[2], id, 'EX', 60) return id"
            )
            entry = publisher.eval(script, 2, stream, acl.idempotency_key(stream, "k-2"))
            assert publisher.get(acl.idempotency_key(stream, "k-2")) == entry
            refused: list[Callable[[], object]] = [
                lambda: publisher.get(OUTSIDE_KEY),
                lambda: publisher.set(OUTSIDE_KEY, "x", ex=60),
                lambda: publisher.set(stream, "x"),  # would replace the stream
                lambda: publisher.get(stream),
                lambda: publisher.delete(record),
                lambda: publisher.set(acl.idempotency_key("not_served", "k"), "x"),
                lambda: publisher.eval("return 1", 1, OUTSIDE_KEY),
                lambda: publisher.eval("return redis.call('SET', KEYS[1], 'x')", 1, stream),
                lambda: publisher.eval("return redis.call('XRANGE', KEYS[1], '-', '+')", 1, stream),
                lambda: publisher.eval("return redis.call('GET', 'acl-probe:outside')", 0),
            ]
            for command in refused:
                with pytest.raises(redis.ResponseError, match=r"(?i)permission|can't"):
                    command()
        finally:
            publisher.close()
        admin = plain_client(port, acl.ADMIN, PASSWORDS[acl.ADMIN])
        try:
            assert admin.type(stream) == "stream"
            assert admin.xlen(stream) == 1
            assert admin.exists(OUTSIDE_KEY) == 0
        finally:
            admin.close()
