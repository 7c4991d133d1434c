from __future__ import annotations

import random
import re

import pytest
from redis.crc import key_slot

from redisops import acl
from redisops.errors import ConfigError

PASSWORDS = {role: f"{role}-password-0123456789abcdef" for role in acl.ROLES}
HASHES = {role: [acl.hash_password(pw)] for role, pw in PASSWORDS.items()}


def rendered(**overrides: list[str]) -> str:
    return acl.render_acl_file({**HASHES, **overrides})


def test_acl_file_holds_hashes_only_never_a_password() -> None:
    text = rendered()
    for password in PASSWORDS.values():
        assert password not in text
    assert ">" not in text  # '>password' would be a plaintext password rule
    for role in acl.ROLES:
        line = next(x for x in text.splitlines() if x.startswith(f"user {role} "))
        assert re.search(r" #[0-9a-f]{64}( |$)", line)


def test_default_user_is_off_with_no_rights() -> None:
    first = rendered().splitlines()[0]
    assert first == "user default off resetchannels -@all"


def test_a_user_may_hold_two_passwords_during_rotation() -> None:
    new = acl.hash_password("next-admin-password-0123456789")
    users = acl.parse_acl_lines(rendered(admin=[HASHES["admin"][0], new]).splitlines())
    assert users["admin"].password_hashes == {HASHES["admin"][0], new}


def test_three_passwords_are_refused() -> None:
    three = [acl.hash_password(f"password-number-{i}-abcdefgh") for i in range(3)]
    with pytest.raises(ConfigError, match="at most 2"):
        rendered(admin=three)


def test_a_plaintext_password_in_place_of_a_hash_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a lowercase SHA-256"):
        rendered(reader=["reader-password-0123456789abcdef"])


def test_every_role_needs_a_password() -> None:
    hashes = {r: h for r, h in HASHES.items() if r != acl.SMOKE}
    with pytest.raises(ConfigError, match="no password hash for role"):
        acl.render_acl_file(hashes)


def test_unknown_roles_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown role"):
        acl.render_acl_file({**HASHES, "intruder": HASHES["admin"]})


@pytest.mark.parametrize("password", ["short", "has a space in it 0123456789"])
def test_weak_or_malformed_passwords_are_refused(password: str) -> None:
    with pytest.raises(ConfigError, match="password"):
        acl.hash_password(password)


def test_cluster_aware_roles_can_discover_the_topology() -> None:
    specs = acl.role_specs()
    for role in (acl.BACKUP, acl.MONITORING, acl.PUBLISHER, acl.READER, acl.SMOKE):
        assert "+cluster|slots" in specs[role].commands, role
        assert "+command" in specs[role].commands, role


def test_stream_roles_get_one_key_pattern_per_stream_with_the_right_access() -> None:
    specs = acl.role_specs(["events", "audit:*"])
    assert specs[acl.PUBLISHER].keys == ("%W~events", "%W~audit:*", "%W~smoke:sse:*")
    assert specs[acl.READER].keys == ("%R~events", "%R~audit:*", "%R~smoke:sse:*")


def test_only_admin_holds_all_commands_or_channels() -> None:
    for role, spec in acl.role_specs().items():
        if role == acl.ADMIN:
            continue
        assert "+@all" not in spec.commands
        assert spec.commands[0] == "-@all"
        assert spec.channels == ()
        assert not any(
            c.startswith("+config") or c.startswith("+acl|setuser") for c in spec.commands
        )


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ([], "empty"),
        (["*"], "every key"),
        (["?x"], "every key"),
        (["smoke:events"], "reserved prefix"),
        (["s*"], "reserved prefix"),
        (["bad stream"], "not a valid stream pattern"),
        (["evil~*"], "not a valid stream pattern"),
        (["idempotency:x"], "reserved prefix"),
        (["idem*"], "reserved prefix"),
    ],
)
def test_bad_stream_patterns_are_refused_with_the_reason(patterns: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        acl.validate_stream_patterns(patterns)


def test_good_stream_patterns_are_kept_in_order_without_duplicates() -> None:
    assert acl.validate_stream_patterns(["b", "a:*", "b", "smoke"]) == ("b", "a:*", "smoke")


def test_diff_acl_is_empty_for_the_same_rules_in_another_order() -> None:
    text = rendered()
    shuffled = []
    for line in text.splitlines():
        root, *selectors = line.split(" (")
        head, tail = root.split(" ")[:2], root.split(" ")[2:]
        inner = [" ".join(reversed(sel.rstrip(")").split())) for sel in selectors]
        shuffled.append(" ".join([*head, *reversed(tail), *(f"({i})" for i in reversed(inner))]))
    assert any("(" in line for line in shuffled)
    assert shuffled != text.splitlines()
    assert acl.diff_acl(text, shuffled) == []


def test_diff_acl_names_users_and_what_differs_never_hashes() -> None:
    text = rendered()
    loaded = [
        line.replace("+xadd", "+xadd +xrange") if line.startswith("user publisher") else line
        for line in text.splitlines()
        if not line.startswith("user smoke")
    ]
    loaded.append("user stranger on nopass ~* +@all")
    loaded = [
        line.replace(HASHES["admin"][0], "0" * 64) if line.startswith("user admin") else line
        for line in loaded
    ]
    problems = acl.diff_acl(text, loaded)
    assert "user publisher has different rules on the node" in problems
    assert "user smoke is missing on the node" in problems
    assert "user stranger exists on the node but not in the ACL file" in problems
    assert "user admin has different passwords on the node" in problems
    assert not any(HASHES["admin"][0] in p for p in problems)


# ---- idempotency records (exactly-once POST) -----------------------------------------

TRICKY_STREAMS = [
    "agent_updates",
    "standup:2026-11-25",
    "standup:{team-eu}:daily",  # a hash tag: the stream's slot is the tag's
    "standup:{}:x",  # an empty tag counts for nothing: the whole name is hashed
    "standup:{a}{b}",  # only the first tag counts
    "standup:a}b",  # a lone closing brace: cannot be quoted in a tag
    "standup:}{x}",  # a closing brace before the tag
    "standup:{open",  # an opening brace never closed
    "standup:{{x}}",
    "smoke:sse:{canary}:run",
]


@pytest.mark.parametrize("stream", TRICKY_STREAMS)
def test_an_idempotency_record_lives_in_its_streams_cluster_slot(stream: str) -> None:
    record = acl.idempotency_key(stream, "k-1")
    assert key_slot(record.encode()) == key_slot(stream.encode())
    assert record.startswith(acl.IDEMPOTENCY_PREFIX)
    assert record.endswith(f":{stream}:k-1")  # the stream's name stays readable in the key


def test_idempotency_records_share_the_slot_of_random_stream_names() -> None:
    rng = random.Random(11)
    for _ in range(300):
        stream = "standup:" + "".join(rng.choice("ab{}:") for _ in range(rng.randint(1, 8)))
        record = acl.idempotency_key(stream, "key")
        assert key_slot(record.encode()) == key_slot(stream.encode()), stream


def test_idempotency_record_names_are_fixed_and_unambiguous() -> None:
    assert (
        acl.idempotency_key("agent_updates", "k") == "idempotency:{agent_updates}:agent_updates:k"
    )
    assert acl.idempotency_key("s:{t}x", "k") == "idempotency:{t}:s:{t}x:k"
    # Different (stream, key) pairs never share a record (keys cannot hold ':').
    assert acl.idempotency_key("s:{t}x", "y") != acl.idempotency_key("s:{t}x:y", "z")
    with pytest.raises(ConfigError, match="Idempotency-Key"):
        acl.idempotency_key("agent_updates", "a:b")


def test_the_publisher_reaches_idempotency_records_only_through_its_selectors() -> None:
    spec = acl.role_specs(["events", "audit:*"])[acl.PUBLISHER]
    # The root selector is unchanged: XADD/XTRIM, write-only, on the streams.
    assert spec.keys == ("%W~events", "%W~audit:*", "%W~smoke:sse:*")
    assert spec.commands == ("-@all", "+xadd", "+xtrim", "+ping", "+cluster|slots", "+command")
    records = (
        "~idempotency:{*}:events:*",
        "~idempotency:{*}:audit:*:*",
        "~idempotency:{*}:smoke:sse:*:*",
    )
    call, store = spec.selectors
    # FCALL declares both keys, so it needs read and write on both. It runs only functions
    # that are loaded (reconcile loads one library); no EVAL, no EVALSHA, no SCRIPT.
    assert call.keys == ("~events", "~audit:*", "~smoke:sse:*", *records)
    assert call.commands == ("-@all", "+fcall")
    # The function's own GET/SET run with the publisher's rights: on records only (SET on
    # a stream would replace it).
    assert store.keys == records
    assert store.commands == ("-@all", "+get", "+set")
    line = next(x for x in rendered().splitlines() if x.startswith("user publisher "))
    assert line.endswith(
        "(~agent_updates ~agent_tasks ~standup:* ~smoke:sse:* "
        "~idempotency:{*}:agent_updates:* ~idempotency:{*}:agent_tasks:* "
        "~idempotency:{*}:standup:*:* ~idempotency:{*}:smoke:sse:*:* "
        "resetchannels -@all +fcall) "
        "(~idempotency:{*}:agent_updates:* ~idempotency:{*}:agent_tasks:* "
        "~idempotency:{*}:standup:*:* ~idempotency:{*}:smoke:sse:*:* "
        "resetchannels -@all +get +set)"
    )
    for role, other in acl.role_specs().items():
        if role != acl.PUBLISHER:
            assert other.selectors == (), role


OPERATOR_FUNCTION = ("+function|load", "+function|list")
SCRIPTING = ("+eval", "+evalsha", "+eval_ro", "+evalsha_ro", "+script", "+@scripting")


def test_no_role_but_admin_may_run_lua_of_its_own() -> None:
    for role, spec in acl.role_specs().items():
        if role == acl.ADMIN:
            continue
        rules = [*spec.commands, *(c for s in spec.selectors for c in s.commands)]
        assert not [r for r in rules if r in SCRIPTING or r.startswith("+script|")], role
        assert not [r for r in rules if r.startswith("+function") and r not in OPERATOR_FUNCTION]
        assert not [r for r in rules if r.startswith("+fcall")] or role == acl.PUBLISHER, role


def test_the_operator_loads_and_lists_functions_and_nothing_more() -> None:
    commands = acl.role_specs()[acl.OPERATOR].commands
    assert [c for c in commands if "function" in c or "fcall" in c] == list(OPERATOR_FUNCTION)
    assert acl.role_specs()[acl.PUBLISHER].selectors[0].commands[-1:] == ("+fcall",)


def test_diff_acl_compares_selectors_as_units() -> None:
    text = rendered()
    line = next(x for x in text.splitlines() if x.startswith("user publisher "))
    reordered = line.replace("-@all +get +set)", "+set -@all +get)")
    assert reordered != line
    assert acl.diff_acl(text, [reordered if x == line else x for x in text.splitlines()]) == []
    # +set moved from the records' selector into FCALL's: a different, wider rule.
    moved = line.replace("+fcall)", "+fcall +set)").replace("+get +set)", "+get)")
    problems = acl.diff_acl(text, [moved if x == line else x for x in text.splitlines()])
    assert problems == ["user publisher has different rules on the node"]
