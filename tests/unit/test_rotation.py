"""Rotations without servers: the order of phases, a GKE stack file edited as the
runbook's `pulumi config set` lines would, the certificate helpers, and every usage
mistake of `acl rotate` / `certs status|rotate` refused with exit 2 and the fix."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from infra import settings as infra_settings
from redisops import acl, certs, rotation
from redisops.alerts import ALERTS, AlertParams
from redisops.cli_ops_security import acl_app, certs_app
from redisops.errors import ConfigError, RedisOpsError
from redisops.local.passwords import passwords, rotation_acl_text
from redisops.local.settings import TwinSettings
from redisops.local.twin import Twin
from redisops.tls import (
    bundle_pem,
    fingerprint,
    issue,
    issue_client,
    issue_node,
    issued_by,
    key_matches,
    load_bundle,
    new_ca,
    subject_alt_names,
    write_private,
)

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "runbooks" / "rotate-passwords.md"


# ---- order of phases ---------------------------------------------------------------------


def command(phase: str) -> str:
    return f"redisops acl rotate --role reader --phase {phase}"


@pytest.mark.parametrize(
    ("done", "requested", "repeated"),
    [
        (None, "add", False),
        ("add", "switch", False),
        ("switch", "retire", False),
        ("retire", "add", False),  # the next rotation
        ("add", "add", True),
        ("switch", "switch", True),
        ("retire", "retire", True),
    ],
)
def test_each_phase_runs_after_the_one_before_or_repeats_itself(
    done: rotation.Phase | None, requested: str, repeated: bool
) -> None:
    assert rotation.check_order(done, requested, "reader", command) is repeated


@pytest.mark.parametrize(
    ("done", "requested", "state", "following"),
    [
        (None, "switch", "no rotation in progress", "add"),
        (None, "retire", "no rotation in progress", "add"),
        ("retire", "switch", "the last one was retired", "add"),
        ("add", "retire", "phase add is done", "switch"),
        ("switch", "add", "phase switch is done", "retire"),
    ],
)
def test_a_phase_out_of_order_names_the_current_phase_and_the_next_command(
    done: rotation.Phase | None, requested: str, state: str, following: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        rotation.check_order(done, requested, "reader", command)
    message = str(caught.value)
    assert f"--phase {requested} is out of order" in message
    assert state in message
    assert f"next: `{command(following)}`" in message
    assert caught.value.exit_code == 2


def test_an_unknown_phase_or_role_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError, match="use add, switch or retire"):
        rotation.check_order(None, "rollback", "reader", command)
    with pytest.raises(ConfigError, match=r"unknown role; roles are admin, operator"):
        rotation.known_role("root")


def test_a_phase_record_round_trips_and_a_damaged_one_names_the_file(tmp_path: Path) -> None:
    record = tmp_path / "reader.rotation.json"
    assert rotation.read_phase(record) is None
    rotation.write_phase(record, "switch")
    assert rotation.read_phase(record) == "switch"
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    record.write_text("{not json")
    with pytest.raises(ConfigError, match=re.escape(str(record))):
        rotation.read_phase(record)
    record.write_text('{"phase": "rollback"}')
    with pytest.raises(ConfigError, match="unknown phase 'rollback'"):
        rotation.read_phase(record)


# ---- who picks up a new password: the runbook's table ------------------------------------


def runbook_table() -> dict[str, tuple[str, str]]:
    rows: dict[str, tuple[str, str]] = {}
    for line in RUNBOOK.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("role", "---"):
            continue
        for role in (r.strip() for r in cells[0].split(",")):
            if role in acl.ROLES:
                rows[role] = (cells[1].replace("`", ""), cells[2])
    return rows


def test_the_restart_table_is_the_runbooks() -> None:
    table = runbook_table()
    assert set(table) == set(acl.ROLES)
    for role, (reads, to_switch) in table.items():
        pickup = rotation.PICKUP[role]
        assert pickup.reads == reads, role
        command_in_runbook = re.findall(r"`(kubectl [^`]+)`", to_switch)
        if pickup.restart is None:
            assert to_switch.startswith("nothing"), role
        else:
            assert pickup.restart.startswith(command_in_runbook[0]), role


# ---- a stack file ------------------------------------------------------------------------


def copy_stack(tmp_path: Path, stack: str) -> Path:
    path = tmp_path / f"Pulumi.{stack}.yaml"
    shutil.copy(ROOT / f"Pulumi.{stack}.yaml", path)
    return path


def acl_settings(path: Path) -> infra_settings.AclSettings:
    """The stack's acl config as the Pulumi program reads it."""
    config = yaml.safe_load(path.read_text())["config"]
    return infra_settings.AclSettings.model_validate(config.get(rotation.ACL_KEY, {}))


def outside_acl(text: str) -> list[str]:
    """The file's lines but the `redis-platform:acl` entry (and the head comment added)."""
    lines = text.splitlines()
    located = rotation._locate(lines, "test")
    if located.start is None:
        return lines
    kept = lines[: located.start] + lines[located.end :]
    return [line for line in kept if "Roles holding a second password" not in line]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_two_rotations_of_a_stack_move_the_slots_as_the_runbook_does(
    tmp_path: Path, stack: str
) -> None:
    path = copy_stack(tmp_path, stack)
    original = path.read_text()
    expected_slots = [
        ("add", ("blue", "green")),
        ("switch", ("green", "blue")),
        ("retire", ("green",)),
        ("add", ("green", "blue")),  # the next rotation goes the other way
        ("switch", ("blue", "green")),
        ("retire", ("blue",)),
    ]
    for phase, slots in expected_slots:
        result = rotation.rotate_stack(path, stack, acl.READER, phase)
        assert result.changed and not result.repeated
        assert acl_settings(path).slots(acl.READER) == slots, phase
        assert f"pulumi up -s {stack}" in result.next_steps[0]
        # Nothing else in the file moved, comments included.
        assert outside_acl(path.read_text()) == outside_acl(original)
    settings = acl_settings(path)
    assert settings.rotating == () and settings.active_slot(acl.READER) == "blue"


def test_each_phase_edits_what_its_pulumi_config_set_line_edits(tmp_path: Path) -> None:
    path = copy_stack(tmp_path, "prod")
    add = rotation.rotate_stack(path, "prod", acl.MONITORING, "add")
    assert add.equivalent == "pulumi config set --path 'acl.rotating[0]' monitoring -s prod"
    second = rotation.rotate_stack(path, "prod", acl.BACKUP, "add")
    assert second.equivalent == "pulumi config set --path 'acl.rotating[1]' backup -s prod"
    switch = rotation.rotate_stack(path, "prod", acl.MONITORING, "switch")
    assert switch.equivalent == "pulumi config set --path 'acl.active.monitoring' green -s prod"
    assert any("rollout restart statefulset/redis-cluster" in s for s in switch.next_steps)
    retire = rotation.rotate_stack(path, "prod", acl.MONITORING, "retire")
    assert retire.equivalent == "pulumi config set --path acl.rotating '[\"backup\"]' -s prod"
    settings = acl_settings(path)
    assert settings.rotating == ("backup",)
    assert settings.slots(acl.MONITORING) == ("green",)
    assert settings.slots(acl.BACKUP) == ("blue", "green")


def test_repeating_a_phase_changes_nothing(tmp_path: Path) -> None:
    path = copy_stack(tmp_path, "prod")
    rotation.rotate_stack(path, "prod", acl.READER, "add")
    before = path.read_bytes()
    again = rotation.rotate_stack(path, "prod", acl.READER, "add")
    assert again.repeated and not again.changed
    assert path.read_bytes() == before
    assert again.as_dict()["next_command"].endswith("--phase switch --stack prod")


def test_a_stack_phase_out_of_order_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    path = copy_stack(tmp_path, "prod")
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=r"no rotation in progress; next: `redisops acl rotate "
                       r"--role reader --phase add --stack prod`"):  # fmt: skip
        rotation.rotate_stack(path, "prod", acl.READER, "switch")
    rotation.rotate_stack(path, "prod", acl.READER, "add")
    rotation.rotate_stack(path, "prod", acl.READER, "switch")
    with pytest.raises(ConfigError, match=r"phase switch is done.*--phase retire"):
        rotation.rotate_stack(path, "prod", acl.READER, "add")
    assert path.read_bytes() != before  # only the successful phases changed it


def test_a_flow_style_or_quoted_acl_entry_is_edited_too(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.s.yaml"
    path.write_text(
        "# head\nconfig:\n  redis-platform:environment: dev\n"
        '  "redis-platform:acl": {rotating: []}\n'
        "  # about the next key\n  redis-platform:namespace: redis\nencryptionsalt: abc\n"
    )
    rotation.rotate_stack(path, "s", acl.SMOKE, "add")
    text = path.read_text()
    document = yaml.safe_load(text)
    assert document["config"][rotation.ACL_KEY] == {"rotating": ["smoke"]}
    assert document["config"]["redis-platform:namespace"] == "redis"
    assert document["encryptionsalt"] == "abc"
    assert "  # about the next key\n  redis-platform:namespace: redis\n" in text


def test_a_rotation_begun_by_hand_cannot_be_continued_blindly(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text("config:\n  redis-platform:acl:\n    rotating: [reader]\n")
    with pytest.raises(ConfigError, match="cannot be told apart"):
        rotation.rotate_stack(path, "prod", acl.READER, "switch")
    # Other roles are still free to rotate.
    assert rotation.rotate_stack(path, "prod", acl.SMOKE, "add").changed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("config: [\n", "not valid YAML"),
        ("stack: prod\n", "no top-level `config:` mapping"),
        ("config:\n  redis-platform:acl:\n    rotating: [root]\n", "unknown role"),
        ("config:\n  redis-platform:acl:\n    active: {reader: red}\n", "blue or green"),
        ("config:\n  redis-platform:acl:\n    rotatng: []\n", "rotatng is not a known"),
    ],
)
def test_a_bad_stack_file_is_refused_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "Pulumi.x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        rotation.rotate_stack(path, "x", acl.READER, "add")
    assert str(path) in str(caught.value)
    assert path.read_text() == text


def test_a_missing_stack_file_says_where_it_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*Pulumi\.prod\.yaml.*--config-file"):
        rotation.rotate_stack(tmp_path / "Pulumi.prod.yaml", "prod", acl.READER, "add")


def test_an_edit_that_would_change_other_settings_is_refused(tmp_path: Path) -> None:
    # An anchor defined inside the entry and used elsewhere: rewriting the entry would
    # break the alias, so nothing is written.
    path = tmp_path / "Pulumi.x.yaml"
    text = "config:\n  redis-platform:acl:\n    rotating: &r []\n  redis-platform:other: *r\n"
    path.write_text(text)
    with pytest.raises(ConfigError, match="would change other settings too"):
        rotation.rotate_stack(path, "x", acl.READER, "add")
    assert path.read_text() == text


# ---- the twin's accepted passwords -------------------------------------------------------


def test_the_twin_acl_file_holds_every_accepted_password_as_a_hash(tmp_path: Path) -> None:
    twin = Twin(tmp_path)
    layout = twin.layout
    for role in acl.ROLES:
        write_private(layout.password_file(role), f"{role}-password-0123456789\n".encode())
    write_private(layout.next_password_file(acl.READER), b"reader-next-0123456789\n")
    text = rotation_acl_text(twin, TwinSettings())
    users = acl.parse_acl_lines(text.splitlines())
    assert len(users[acl.READER].password_hashes) == 2
    assert len(users[acl.ADMIN].password_hashes) == 1
    assert "reader-next-0123456789" not in text and "0123456789" not in text
    dropped = rotation_acl_text(twin, TwinSettings(), drop=(acl.READER, "next"))
    assert len(acl.parse_acl_lines(dropped.splitlines())[acl.READER].password_hashes) == 1
    assert set(passwords(layout, acl.READER)) == {"current", "next"}


# ---- certificate helpers -----------------------------------------------------------------


def test_a_bundle_keeps_order_and_each_certificate_once() -> None:
    a, b = new_ca("a"), new_ca("b")
    bundle = bundle_pem(a.cert_pem, b.cert_pem, a.cert_pem)
    names = [c.subject.rfc4514_string() for c in load_bundle(bundle)]
    assert names == ["CN=a", "CN=b"]
    with pytest.raises(ConfigError, match="no readable PEM certificate"):
        load_bundle(b"garbage")


def test_signatures_keys_and_names_are_checked() -> None:
    ca, other = new_ca("a"), new_ca("b")
    node = issue_node(ca, ("localhost",), ("127.0.0.1",))
    assert issued_by(node.certificate, ca.certificate)
    assert not issued_by(node.certificate, other.certificate)
    assert key_matches(node.certificate, node.key_pem)
    assert not key_matches(node.certificate, ca.key_pem)
    assert subject_alt_names(node.certificate) == (("localhost",), ("127.0.0.1",))
    assert subject_alt_names(issue_client(ca, "smoke").certificate) == ((), ())
    digest = fingerprint(node.certificate)
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", digest)


def test_status_fails_within_the_alerts_certificate_window() -> None:
    assert AlertParams().cert_days == certs.EXPIRY_DAYS
    alert = next(a for a in ALERTS if a.name == "RedisTlsCertificateExpiringSoon")
    assert str(certs.EXPIRY_DAYS * 86400) in alert.expr(AlertParams())
    ca = new_ca()
    short = issue(ca, "smoke", server_auth=False, client_auth=True, days=certs.EXPIRY_DAYS - 1)
    long = issue(ca, "smoke", server_auth=False, client_auth=True, days=certs.EXPIRY_DAYS + 1)
    assert certs.describe("x", short.certificate, None).problems
    assert certs.describe("x", long.certificate, None).problems == []
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=certs.EXPIRY_DAYS + 2)
    assert "expired" in certs.describe("x", long.certificate, None, now=later).problems[0]
    assert certs.trust_problem(long.certificate, [new_ca().certificate], "ca.crt")


# ---- the commands' usage errors (no server needed) ---------------------------------------


def cli(*args: str) -> tuple[int, str, Any]:
    """Run the commands as `redisops` would (its main() turns RedisOpsError into the exit
    code): (exit code, error message or '', parsed --json output or the text)."""
    app = typer.Typer()
    app.add_typer(acl_app, name="acl")
    app.add_typer(certs_app, name="certs")
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, RedisOpsError):
        return result.exception.exit_code, str(result.exception), None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    output: Any = result.stdout
    if "--json" in args and result.stdout.strip():
        output = json.loads(result.stdout)
    return result.exit_code, "", output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["acl", "rotate", "--role", "root", "--phase", "add", "--target", "local"],
         "--role 'root': unknown role"),
        (["acl", "rotate", "--role", "reader", "--phase", "undo", "--target", "local"],
         "--phase 'undo': use add, switch or retire"),
        (["acl", "rotate", "--role", "reader", "--phase", "add"],
         "give --target local (the twin) or --stack"),
        (["acl", "rotate", "--role", "reader", "--phase", "add", "--target", "gke"],
         "--target 'gke': only 'local'"),
        (["acl", "rotate", "--role", "reader", "--phase", "add", "--target", "local",
          "--stack", "prod"], "choose one"),
        (["acl", "rotate", "--role", "reader", "--phase", "add", "--target", "local",
          "--config-file", "x.yaml"], "--config-file: not used with --target local"),
        (["acl", "rotate", "--role", "reader", "--phase", "add", "--stack", "prod",
          "--state-dir", "/tmp/x"], "--state-dir: not used with --stack"),
        (["acl", "rotate", "--role", "reader", "--phase", "add", "--stack", "../etc"],
         "not a stack name"),
        (["certs", "rotate", "--what", "ca", "--phase", "add"], "--target local is required"),
        (["certs", "rotate", "--what", "key", "--target", "local"], "use node, client or ca"),
        (["certs", "rotate", "--what", "node", "--phase", "add", "--target", "local"],
         "--phase: not used with --what node"),
        (["certs", "status"], "--node, --ca required (or use --target local)"),
        (["certs", "status", "--target", "local", "--ca", "ca.crt"],
         "--ca: not used with --target local"),
        (["certs", "status", "--node", "127.0.0.1:1", "--ca", "ca.crt", "--cert", "c.crt"],
         "--cert and --key go together"),
    ],
)  # fmt: skip
def test_usage_mistakes_exit_2_naming_the_option(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, error, _ = (
        cli(*args, "--state-dir", str(tmp_path)) if "--stack" not in args else cli(*args)
    )
    assert code == 2
    assert message in error


@pytest.mark.parametrize(
    "args",
    [
        ["acl", "rotate", "--role", "reader", "--phase", "add", "--target", "local"],
        ["certs", "status", "--target", "local"],
        ["certs", "rotate", "--what", "node", "--target", "local"],
        ["certs", "rotate", "--what", "ca", "--target", "local"],
        ["certs", "rotate", "--what", "ca", "--phase", "add", "--target", "local"],
    ],
)
def test_without_a_twin_every_command_says_how_to_start_one(
    tmp_path: Path, args: list[str]
) -> None:
    code, error, _ = cli(*args, "--state-dir", str(tmp_path / "none"))
    assert code == 2
    assert f"no local twin in {tmp_path / 'none'}" in error and "redisops local up" in error
    assert not (tmp_path / "none").exists()


def test_an_unreadable_ca_file_exits_2_naming_it(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.crt"
    garbage.write_text("not a certificate\n")
    code, error, _ = cli("certs", "status", "--node", "127.0.0.1:1", "--ca", str(garbage))
    assert code == 2
    assert f"CA file {garbage} holds no readable PEM certificate" in error
    code, error, _ = cli("certs", "status", "--node", "127.0.0.1:1", "--ca", str(tmp_path / "n"))
    assert code == 2
    assert "cannot read it (No such file or directory)" in error


def test_the_stack_phase_prints_json_only_with_the_next_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_stack(tmp_path, "dev")
    monkeypatch.chdir(tmp_path)  # ./Pulumi.<stack>.yaml by default
    code, _, data = cli("acl", "rotate", "--role", "reader", "--phase", "add", "--stack", "dev",
                        "--json")  # fmt: skip
    assert code == 0
    assert data["changed"] and data["state_before"] == "idle"
    assert data["next_steps"][0].startswith("pulumi up -s dev")
    assert data["next_command"] == "redisops acl rotate --role reader --phase switch --stack dev"
    code, error, _ = cli("acl", "rotate", "--role", "reader", "--phase", "retire", "--stack", "dev")
    assert code == 2 and "phase add is done" in error
    code, _, text = cli("acl", "rotate", "--role", "reader", "--phase", "switch", "--stack", "dev")
    assert code == 0
    assert "kubectl rollout restart deployment/sse-proxy -n redis" in text
