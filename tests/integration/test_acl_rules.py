"""The rendered ACL file, loaded by a real redis-server, means what the matrix says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from redisops import acl, functions
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
        # Lua of its own, however granted: the hole EVAL in a selector opened.
        (acl.PUBLISHER, "+eval"),
        (acl.PUBLISHER, "+evalsha"),
        (acl.PUBLISHER, "+@scripting"),
        (acl.PUBLISHER, "(~agent_updates ~idempotency:* +eval +evalsha)"),
        (acl.PUBLISHER, "+function|load"),
        (acl.PUBLISHER, "+function"),
        (acl.PUBLISHER, "+fcall_ro"),
        (acl.PUBLISHER, "(~* +fcall)"),  # the function on any key
        (acl.OPERATOR, "+function"),  # DELETE, FLUSH, RESTORE
        (acl.OPERATOR, "+fcall"),
        (acl.OPERATOR, "+eval"),
        (acl.READER, "(~idempotency:* +get)"),
        (acl.READER, "+fcall"),
        (acl.SMOKE, "~*"),
        (acl.SMOKE, "+function|load"),
        (acl.MONITORING, "+script"),
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


def load_library(port: int) -> None:
    """Load the platform's library as reconcile does: as the operator."""
    operator = plain_client(port, acl.OPERATOR, PASSWORDS[acl.OPERATOR])
    try:
        assert operator.execute_command("FUNCTION", "LOAD", "REPLACE", functions.CODE) == (
            functions.LIBRARY
        )
        listed = operator.execute_command("FUNCTION", "LIST", "WITHCODE")
        assert functions.libraries(listed) == {functions.LIBRARY: functions.CODE}
        for command in (("FUNCTION", "DELETE", functions.LIBRARY), ("FUNCTION", "FLUSH")):
            with pytest.raises(redis.ResponseError, match="no permissions"):
                operator.execute_command(*command)
        with pytest.raises(redis.ResponseError, match="no permissions"):
            operator.execute_command("FCALL", functions.PUBLISH_ONCE, 0)
    finally:
        operator.close()


def publish_once(client: redis.Redis, stream: str, key: str, *fields: str) -> object:
    record = acl.idempotency_key(stream, key)
    return client.execute_command(
        "FCALL", functions.PUBLISH_ONCE, 2, stream, record, 60, "fp nonce", "", "", *fields
    )


def test_the_publisher_touches_its_idempotency_records_and_no_other_key(tmp_path: Path) -> None:
    """Real commands, not dry runs: what the proxy's exactly-once POST does, and what a
    publisher must still not do."""
    requires_redis()
    (tmp_path / "users.acl").write_text(render())
    stream = "agent_updates"
    record = acl.idempotency_key(stream, "k-1")
    with standalone_redis(tmp_path / "srv", "--aclfile", str(tmp_path / "users.acl")) as port:
        load_library(port)
        publisher = plain_client(port, acl.PUBLISHER, PASSWORDS[acl.PUBLISHER])
        try:
            assert publisher.set(record, "1-0 fp nonce", ex=60) is True
            assert publisher.get(record) == "1-0 fp nonce"
            reply: Any = publish_once(publisher, stream, "k-2", "a", "b")
            created, entry = reply
            assert created == 1
            assert publisher.get(acl.idempotency_key(stream, "k-2")) == f"{entry} fp nonce"
            assert publish_once(publisher, stream, "k-2", "a", "b") == [0, f"{entry} fp nonce"]
            refused: list[Callable[[], object]] = [
                lambda: publisher.get(OUTSIDE_KEY),
                lambda: publisher.set(OUTSIDE_KEY, "x", ex=60),
                lambda: publisher.set(stream, "x"),  # would replace the stream
                lambda: publisher.get(stream),
                lambda: publisher.delete(record),
                lambda: publisher.set(acl.idempotency_key("not_served", "k"), "x"),
                # The function on keys it does not serve: refused before it runs.
                lambda: publish_once(publisher, "not_served", "k", "a", "b"),
                lambda: publisher.execute_command(
                    "FCALL", functions.PUBLISH_ONCE, 2, stream, OUTSIDE_KEY, 60, "m", "", "", "a"
                ),
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


def test_the_publisher_runs_the_publish_function_and_no_lua_of_its_own(tmp_path: Path) -> None:
    """The review's findings, as real commands: a keyless EVAL passed every selector's key
    check, so the publisher could freeze a shard, write past maxmemory and forge log
    lines. Now it may call loaded functions only, and only reconcile loads one."""
    requires_redis()
    (tmp_path / "users.acl").write_text(render())
    with standalone_redis(tmp_path / "srv", "--aclfile", str(tmp_path / "users.acl")) as port:
        load_library(port)
        admin = plain_client(port, acl.ADMIN, PASSWORDS[acl.ADMIN])
        publisher = plain_client(port, acl.PUBLISHER, PASSWORDS[acl.PUBLISHER])
        try:
            loaded_sha = str(admin.script_load("return 1"))  # EVALSHA of a cached script
            no_permission: list[tuple[object, ...]] = [
                ("EVAL", "return 1", 0),
                ("EVAL", "while true do end", 0),
                ("EVAL", "#!lua flags=allow-oom\nreturn redis.call('PING')", 0),
                ("EVAL", "redis.log(redis.LOG_WARNING, 'FORGED by the publisher')", 0),
                ("EVAL", "return 1", 2, "agent_updates", acl.idempotency_key("agent_updates", "k")),
                ("EVALSHA", loaded_sha, 0),
                ("EVAL_RO", "return 1", 0),
                ("SCRIPT", "LOAD", "return 1"),
                ("SCRIPT", "FLUSH"),
                ("SCRIPT", "KILL"),
                ("FUNCTION", "LOAD", "#!lua name=evil\nredis.register_function('evil', "
                 "function() while true do end end)"),
                ("FUNCTION", "LOAD", "REPLACE", functions.CODE),
                ("FUNCTION", "DELETE", functions.LIBRARY),
                ("FUNCTION", "FLUSH"),
                ("FUNCTION", "LIST"),
                ("FCALL_RO", functions.PUBLISH_ONCE, 0),
            ]  # fmt: skip
            for command in no_permission:
                with pytest.raises(redis.ResponseError, match="no permissions"):
                    publisher.execute_command(*command)
            # FCALL with no keys passes every key check: it can reach only loaded
            # functions, and there is one.
            with pytest.raises(redis.ResponseError, match="Function not found"):
                publisher.execute_command("FCALL", "evil", 0)
            with pytest.raises(redis.ResponseError, match="Function not found"):
                publisher.execute_command("FCALL", "redis.log", 0)
            listed = admin.execute_command("FUNCTION", "LIST", "WITHCODE")
            assert functions.libraries(listed) == {functions.LIBRARY: functions.CODE}
            # Over maxmemory (noeviction) the function is refused like XADD: it has no
            # allow-oom flag.
            admin.config_set("maxmemory", "1")
            try:
                with pytest.raises(redis.exceptions.OutOfMemoryError, match="maxmemory"):
                    publish_once(publisher, "agent_updates", "oom", "a", "b")
                with pytest.raises(redis.exceptions.OutOfMemoryError, match="maxmemory"):
                    publisher.xadd("agent_updates", {"a": "b"})
            finally:
                admin.config_set("maxmemory", "0")
            assert admin.exists("agent_updates") == 0
        finally:
            publisher.close()
            admin.close()
    assert "FORGED" not in (tmp_path / "srv" / "redis.log").read_text()
