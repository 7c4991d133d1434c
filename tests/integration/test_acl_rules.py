"""The rendered ACL file, loaded by a real redis-server, means what the matrix says."""

from __future__ import annotations

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
