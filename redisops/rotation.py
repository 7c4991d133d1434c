"""Three-phase rotations (add, switch, retire): their order, and a GKE stack's part in a
role's password rotation (runbooks/rotate-passwords.md).

A rotation first makes a second secret acceptable (`add`), then hands it out
(`switch`), then stops accepting the first (`retire`). Phases run in that order; a phase
repeated after it succeeded changes nothing and checks again. The same order governs
password rotations (twin and GKE) and the twin's CA rotation (`redisops.certs`).

For a GKE stack the phases edit `Pulumi.<stack>.yaml` exactly as the runbook's
`pulumi config set --path acl...` lines do: `acl.rotating` lists the roles whose second
password slot is valid, `acl.active` names the slot a role's Secret hands out (blue
unless said). The edit touches only the `redis-platform:acl` entry and keeps every other
line of the file byte for byte; it leaves one comment line in that entry naming the slot
the rotation started from, since `add` and `switch` look alike in the config itself.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast, get_args

import yaml

from redisops import acl
from redisops.errors import ConfigError
from redisops.tls import write_private

Phase = Literal["add", "switch", "retire"]
PHASES: tuple[Phase, ...] = get_args(Phase)
Slot = Literal["blue", "green"]
SLOTS: tuple[Slot, ...] = get_args(Slot)

# The Pulumi project's config namespace (Pulumi.yaml `name`; infra.settings.PROJECT).
PROJECT = "redis-platform"
ACL_KEY = f"{PROJECT}:acl"
RUNBOOK = "runbooks/rotate-passwords.md"


# ---- the order of phases ----------------------------------------------------------------


def next_phase(done: Phase | None) -> Phase:
    """The phase that follows the last completed one (None: no rotation ever ran)."""
    if done == "add":
        return "switch"
    if done == "switch":
        return "retire"
    return "add"


def describe_state(done: Phase | None) -> str:
    return {
        None: "no rotation in progress",
        "add": "phase add is done (both accepted, the old one still handed out)",
        "switch": "phase switch is done (the new one handed out, the old one still accepted)",
        "retire": "no rotation in progress (the last one was retired)",
    }[done]


def check_order(
    done: Phase | None, requested: str, subject: str, command: Callable[[Phase], str]
) -> bool:
    """Whether `requested` repeats the last completed phase (True: check again, change
    nothing) or is the next one (False: run it); any other phase is refused naming the
    current phase and the command to run next."""
    if requested not in PHASES:
        raise ConfigError(f"--phase {requested!r}: use add, switch or retire (in that order)")
    if requested == done:
        return True
    if requested == next_phase(done):
        return False
    following = next_phase(done)
    raise ConfigError(
        f"{subject}: --phase {requested} is out of order: {describe_state(done)}; "
        f"next: `{command(following)}`"
    )


def read_phase(path: Path) -> Phase | None:
    """The last completed phase recorded in `path` (None: no record, no rotation yet)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        phase = data["phase"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"rotation record {path} is unreadable ({type(exc).__name__}); it holds the last "
            'completed phase as {"phase": "add"|"switch"|"retire"}: restore it, or delete it '
            "only if no rotation is in progress"
        ) from exc
    if phase not in PHASES:
        raise ConfigError(
            f"rotation record {path}: unknown phase {str(phase)[:20]!r}; expected add, switch "
            "or retire"
        )
    return cast(Phase, phase)


def write_phase(path: Path, phase: Phase) -> None:
    """Record `phase` as completed (private file, written atomically)."""
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    write_private(path, (json.dumps({"phase": phase, "completed_at": stamp}) + "\n").encode())


# ---- who picks up a switched password (the runbook's table) -----------------------------


@dataclass(frozen=True)
class Pickup:
    """Who reads a role's password, and what makes them use a new one now (GKE)."""

    reads: str
    restart: str | None


PICKUP: dict[str, Pickup] = {
    acl.READER: Pickup(
        "SSE proxy, at start", "kubectl rollout restart deployment/sse-proxy -n redis"
    ),
    acl.PUBLISHER: Pickup(
        "SSE proxy, at start", "kubectl rollout restart deployment/sse-proxy -n redis"
    ),
    acl.OPERATOR: Pickup("reconcile Job, every run", None),
    acl.ADMIN: Pickup("reconcile Job, every run", None),
    acl.BACKUP: Pickup("backup CronJob, every run", None),
    acl.SMOKE: Pickup("smoke Job, every run", None),
    acl.MONITORING: Pickup(
        "probes (file, every call); exporter sidecar (environment, at start)",
        "kubectl rollout restart statefulset/redis-cluster -n redis (one pod at a time, "
        "each primary hands off first)",
    ),
    acl.REPLICATION: Pickup(
        "redis.conf include (masterauth)",
        None,  # the reconcile Job CONFIG SETs masteruser/masterauth on every node
    ),
}


def known_role(role: str) -> str:
    if role not in acl.ROLES:
        raise ConfigError(f"--role {role!r}: unknown role; roles are {', '.join(acl.ROLES)}")
    return role


# ---- a stack's acl config ----------------------------------------------------------------

_NOTE = re.compile(
    r"^\s*#\s*redisops acl rotate:\s*(?P<role>[a-z]+)\s+(?P<phase>add|switch|retire)\s+"
    r"\((?P<old>blue|green) -> (?P<new>blue|green)\)"
)


@dataclass(frozen=True)
class Note:
    """The comment a phase leaves in the stack file: the role, the last phase done, and
    the slot the rotation started from (`old`) and hands out at switch (`new`)."""

    role: str
    phase: Phase
    old: Slot
    new: Slot

    def line(self) -> str:
        return f"# redisops acl rotate: {self.role} {self.phase} ({self.old} -> {self.new})"


@dataclass(frozen=True)
class StackAcl:
    """`redis-platform:acl` of a stack file: the config, and the notes of rotations."""

    active: dict[str, Slot] = field(default_factory=dict)
    rotating: tuple[str, ...] = ()
    notes: dict[str, Note] = field(default_factory=dict)
    comments: tuple[str, ...] = ()  # other comment lines inside the entry, kept

    def active_slot(self, role: str) -> Slot:
        return self.active.get(role, "blue")

    def value(self) -> dict[str, Any]:
        """The config value as YAML loads it."""
        data: dict[str, Any] = {}
        if self.active:
            data["active"] = dict(self.active)
        data["rotating"] = list(self.rotating)
        return data


def other_slot(slot: Slot) -> Slot:
    return "green" if slot == "blue" else "blue"


def _acl_value(raw: object, where: str) -> tuple[dict[str, Slot], tuple[str, ...]]:
    """Validate `redis-platform:acl` as infra/settings.py's AclSettings does."""
    if raw is None:
        return {}, ()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: {ACL_KEY} is not a mapping; see {RUNBOOK}")
    unknown = sorted(set(raw) - {"active", "rotating"})
    if unknown:
        raise ConfigError(f"{where}: {ACL_KEY}.{unknown[0]} is not a known setting")
    active = raw.get("active") or {}
    rotating = raw.get("rotating") or []
    if not isinstance(active, Mapping) or not all(v in SLOTS for v in active.values()):
        raise ConfigError(f"{where}: {ACL_KEY}.active must map roles to blue or green")
    if not isinstance(rotating, list) or not all(isinstance(r, str) for r in rotating):
        raise ConfigError(f"{where}: {ACL_KEY}.rotating must be a list of roles")
    strange = sorted((set(active) | set(rotating)) - set(acl.ROLES))
    if strange:
        raise ConfigError(
            f"{where}: {ACL_KEY} names unknown role(s) {', '.join(map(str, strange))}; "
            f"roles are {', '.join(acl.ROLES)}"
        )
    return {str(k): cast(Slot, v) for k, v in active.items()}, tuple(dict.fromkeys(rotating))


def stack_phase(config: StackAcl, role: str, where: str) -> Phase | None:
    """The last completed phase of `role`'s rotation, read from the config and its note."""
    note = config.notes.get(role)
    active = config.active_slot(role)
    if role not in config.rotating:
        return "retire" if note is not None and active == note.new else None
    if note is None:
        raise ConfigError(
            f"{where}: {ACL_KEY}.rotating lists {role} (active slot {active}) but the file "
            f"has no `redisops acl rotate` note saying which slot the rotation started from, "
            f"so add and switch cannot be told apart; finish this rotation by hand with the "
            f"`pulumi config set` lines of {RUNBOOK}"
        )
    return "add" if active == note.old else "switch"


def apply_phase(config: StackAcl, role: str, phase: Phase) -> StackAcl:
    """The config after `phase` of `role`'s rotation (from the state before it)."""
    notes = dict(config.notes)
    if phase == "add":
        old = config.active_slot(role)
        notes[role] = Note(role, "add", old, other_slot(old))
        return replace(config, rotating=(*config.rotating, role), notes=notes)
    note = config.notes[role]
    notes[role] = replace(note, phase=phase)
    if phase == "switch":
        return replace(config, active={**config.active, role: note.new}, notes=notes)
    return replace(config, rotating=tuple(r for r in config.rotating if r != role), notes=notes)


def equivalent_command(before: StackAcl, role: str, phase: Phase, stack: str) -> str:
    """The runbook's `pulumi config set` line that makes the same change."""
    if phase == "add":
        return f"pulumi config set --path 'acl.rotating[{len(before.rotating)}]' {role} -s {stack}"
    if phase == "switch":
        note = before.notes[role]
        return f"pulumi config set --path 'acl.active.{role}' {note.new} -s {stack}"
    rest = json.dumps([r for r in before.rotating if r != role])
    return f"pulumi config set --path acl.rotating '{rest}' -s {stack}"


# ---- the stack file as text --------------------------------------------------------------

_KEY = re.compile(r"""^(?P<indent>[ ]*)["']?redis-platform:acl["']?\s*:(?P<rest>.*)$""")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _significant(line: str) -> bool:
    return bool(line.strip()) and not line.lstrip().startswith("#")


@dataclass(frozen=True)
class StackText:
    """Where `redis-platform:acl` sits in a stack file's lines."""

    lines: list[str]
    child_indent: int
    start: int | None  # the key's line, or None when the file has no entry
    end: int  # one past the entry's last line (or where a new entry goes)


def _first(lines: list[str], indices: range, test: Callable[[str], bool], default: int) -> int:
    return next((j for j in indices if test(lines[j])), default)


def _locate(lines: list[str], where: str) -> StackText:
    """The `config:` section's child indentation and the acl entry's lines in it."""
    config = _first(lines, range(len(lines)), lambda line: bool(re.match(r"^config\s*:", line)), -1)
    if config < 0:
        raise ConfigError(f"{where}: no top-level `config:` mapping; is this a Pulumi stack file?")
    body = range(config + 1, len(lines))
    section_end = _first(
        lines, body, lambda line: _significant(line) and not _indent(line), len(lines)
    )
    section = range(config + 1, section_end)
    children = [j for j in section if _significant(lines[j])]
    child = _indent(lines[children[0]]) if children else 2
    start = _first(
        lines, section, lambda line: _indent(line) == child and bool(_KEY.match(line)), -1
    )
    if start < 0:
        # After the section's last indented line (its last value, or a comment under it).
        indented = [j for j in section if lines[j].strip() and _indent(lines[j])]
        return StackText(lines, child, None, (indented[-1] if indented else config) + 1)
    rest = range(start + 1, section_end)
    end = _first(
        lines, rest, lambda line: bool(line.strip()) and _indent(line) <= child, section_end
    )
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return StackText(lines, child, start, end)


def parse_stack_acl(text: str, where: str) -> tuple[dict[str, Any], StackAcl]:
    """The whole stack document and its `redis-platform:acl` entry (with notes)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise ConfigError(f"{where}: no top-level `config:` mapping; is this a Pulumi stack file?")
    active, rotating = _acl_value(document["config"].get(ACL_KEY), where)
    located = _locate(text.splitlines(), where)
    notes: dict[str, Note] = {}
    comments: list[str] = []
    if located.start is not None:
        for line in located.lines[located.start + 1 : located.end]:
            match = _NOTE.match(line)
            if match and match["role"] in acl.ROLES and match["old"] != match["new"]:
                notes[match["role"]] = Note(
                    match["role"],
                    cast(Phase, match["phase"]),
                    cast(Slot, match["old"]),
                    cast(Slot, match["new"]),
                )
            elif line.strip().startswith("#"):
                comments.append(line.strip())
    return document, StackAcl(active, rotating, notes, tuple(comments))


def render_acl_entry(config: StackAcl, indent: int) -> list[str]:
    """The `redis-platform:acl` entry's lines at the config's child indentation."""
    pad, sub, item = " " * indent, " " * (indent + 2), " " * (indent + 4)
    lines = [f"{pad}{ACL_KEY}:"]
    lines += [f"{sub}{comment}" for comment in config.comments]
    lines += [f"{sub}{config.notes[r].line()}" for r in acl.ROLES if r in config.notes]
    if config.active:
        lines.append(f"{sub}active:")
        lines += [f"{item}{role}: {slot}" for role, slot in config.active.items()]
    if config.rotating:
        lines.append(f"{sub}rotating:")
        lines += [f"{item}- {role}" for role in config.rotating]
    else:
        lines.append(f"{sub}rotating: []")
    return lines


def edit_stack_text(text: str, config: StackAcl, where: str) -> str:
    """`text` with its `redis-platform:acl` entry replaced by `config` (added at the end
    of `config:` when missing); refused unless YAML then reads exactly the old document
    with only that entry changed."""
    document, _ = parse_stack_acl(text, where)
    located = _locate(text.splitlines(), where)
    entry = render_acl_entry(config, located.child_indent)
    lines = list(located.lines)
    if located.start is None:
        head = " " * located.child_indent + (
            f"# Roles holding a second password during a rotation ({RUNBOOK})."
        )
        lines[located.end : located.end] = [head, *entry]
    else:
        lines[located.start : located.end] = entry
    edited = "\n".join(lines) + ("\n" if text.endswith("\n") or not text else "")
    expected = copy.deepcopy(document)
    expected["config"][ACL_KEY] = config.value()
    try:
        same = yaml.safe_load(edited) == expected
    except yaml.YAMLError:
        same = False
    if not same:
        raise ConfigError(
            f"{where}: editing {ACL_KEY} would change other settings too (an unusual "
            f"layout of the file?); nothing was written. Make the change by hand with the "
            f"`pulumi config set` lines of {RUNBOOK}"
        )
    return edited


# ---- one phase on a stack file ----------------------------------------------------------


@dataclass
class StackRotation:
    """What a phase did to a stack file, and what the operator runs next."""

    stack: str
    config_file: str
    role: str
    phase: Phase
    repeated: bool
    before: Phase | None
    active_before: Slot
    active_after: Slot
    rotating_after: list[str]
    equivalent: str | None
    next_steps: list[str]
    next_command: str
    changed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": "stack",
            "stack": self.stack,
            "config_file": self.config_file,
            "role": self.role,
            "phase": self.phase,
            "repeated": self.repeated,
            "changed": self.changed,
            "state_before": self.before or "idle",
            "active_slot_before": self.active_before,
            "active_slot_after": self.active_after,
            "rotating": self.rotating_after,
            "equivalent": self.equivalent,
            "next_steps": self.next_steps,
            "next_command": self.next_command,
        }


def stack_command(role: str, stack: str, config_file: Path | None) -> Callable[[Phase], str]:
    extra = f" --config-file {config_file}" if config_file is not None else ""
    return lambda phase: f"redisops acl rotate --role {role} --phase {phase} --stack {stack}{extra}"


def steps_after(role: str, phase: Phase, stack: str) -> list[str]:
    """What the operator does after the file changed: `pulumi up`, then who to restart."""
    up = f"pulumi up -s {stack}"
    if phase == "add":
        return [
            f"{up}   (the ACL file Secret gets both hashes; a new reconcile Job loads it)",
            f"check: the smoke Job passes; {role}'s Secret still holds the old password",
        ]
    if phase == "switch":
        pickup = PICKUP[role]
        then = (
            f"then: {pickup.restart}"
            if pickup.restart
            else (
                "then: nothing — the reconcile Job sets masteruser/masterauth on every node"
                if role == acl.REPLICATION
                else "then: nothing — it reads the Secret on every run"
            )
        )
        return [
            f"{up}   (redis-user-{role} now holds the new password)",
            f"{role} reads its password: {pickup.reads}; {then}",
            "clients in other namespaces: restart or reload them from their copy of the "
            "Secret / Secret Manager; wait until every client uses the new password",
        ]
    return [
        f"{up}   (the old slot's password is deleted; the ACL file holds one hash)",
        "a client still on the old password now gets WRONGPASS: undo by putting the role "
        f"back into acl.rotating with the same active slot ({RUNBOOK}, Rollback)",
    ]


def rotate_stack(
    config_file: Path, stack: str, role: str, phase: str, *, named_file: bool = False
) -> StackRotation:
    """Run one phase of `role`'s rotation on the stack file `config_file`."""
    role = known_role(role)
    where = str(config_file)
    try:
        text = config_file.read_text()
    except OSError as exc:
        raise ConfigError(
            f"--stack {stack}: cannot read {config_file} ({exc.strerror}); run from the "
            "repository root or give --config-file"
        ) from exc
    _, before = parse_stack_acl(text, where)
    done = stack_phase(before, role, where)
    command = stack_command(role, stack, config_file if named_file else None)
    repeated = check_order(done, phase, f"{role} on stack {stack}", command)
    typed = cast(Phase, phase)
    after = before if repeated else apply_phase(before, role, typed)
    result = StackRotation(
        stack=stack,
        config_file=where,
        role=role,
        phase=typed,
        repeated=repeated,
        before=done,
        active_before=before.active_slot(role),
        active_after=after.active_slot(role),
        rotating_after=list(after.rotating),
        equivalent=None if repeated else equivalent_command(before, role, typed, stack),
        next_steps=steps_after(role, typed, stack),
        next_command=command(next_phase(typed)) if typed != "retire" else "",
    )
    if not repeated:
        edited = edit_stack_text(text, after, where)
        _replace_file(config_file, edited)
        result.changed = True
    return result


def _replace_file(path: Path, text: str) -> None:
    """Write atomically, keeping the file's mode."""
    mode = path.stat().st_mode & 0o777
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    tmp.replace(path)
