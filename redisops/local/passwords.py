"""A role's password rotation on the twin: the runbook's three steps, done and proven.

Files under the twin's `secrets/` (mode 0600) say which passwords a role's user accepts:
`<role>.password` (the one handed out), `<role>.password.next` (phase add: accepted, not
handed out yet) and `<role>.password.old` (phase switch: handed out no more, accepted
until retire); `<role>.rotation.json` records the phase last completed. A file is there
exactly while its password is accepted, so an interrupted phase is finished by running
it again. The ACL file is rendered by `redisops.acl` (hashes only) and pushed to every
node by reconcile; each phase ends by logging in with every password on every node.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from redisops import acl
from redisops.client import Credentials, connect
from redisops.conf import render_replication_include
from redisops.errors import ConfigError
from redisops.local import checks
from redisops.local.settings import DEFAULT_STATE_DIR, TwinLayout, TwinSettings
from redisops.local.twin import Twin
from redisops.reconcile import ReconcileOptions, ReconcileReport, reconcile
from redisops.rotation import Phase, check_order, known_role, next_phase, read_phase, write_phase
from redisops.tls import write_private

Progress = Callable[[str], None]
# Which passwords must log in after each phase (True) and which must get WRONGPASS.
EXPECTED: dict[Phase, dict[str, bool]] = {
    "add": {"current": True, "next": True},
    "switch": {"current": True, "old": True},
    "retire": {"current": True, "old": False},
}


@dataclass
class LoginCheck:
    node: str
    password: str  # which one: current, next or old (never the password itself)
    expected: str
    result: str

    @property
    def ok(self) -> bool:
        return self.result == self.expected


@dataclass
class TwinRotation:
    """What one phase did on the twin and what it proved."""

    role: str
    phase: Phase
    repeated: bool
    before: Phase | None
    next_command: str
    checks: list[LoginCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reconcile: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": "local",
            "role": self.role,
            "phase": self.phase,
            "repeated": self.repeated,
            "state_before": self.before or "idle",
            "state_after": self.phase if self.ok else (self.before or "idle"),
            "ok": self.ok,
            "checks": [
                {
                    "node": c.node,
                    "password": c.password,
                    "expected": c.expected,
                    "result": c.result,
                    "ok": c.ok,
                }
                for c in self.checks
            ],
            "problems": self.problems,
            "notes": self.notes,
            "reconcile": self.reconcile,
            "next_command": self.next_command,
        }


def _read(path: Path, role: str) -> str:
    return Credentials.from_file(role, path).password.get_secret_value()


def passwords(layout: TwinLayout, role: str) -> dict[str, str]:
    """The role's accepted passwords by name (current, next, old): those whose file exists."""
    return {name: _read(path, role) for name, path in layout.accepted_password_files(role).items()}


def rotation_acl_text(
    twin: Twin, settings: TwinSettings, drop: tuple[str, str] | None = None
) -> str:
    """The twin's ACL file with every accepted password of every role (two for a role in
    rotation); `drop` = (role, name) leaves one out (retire)."""
    return twin.acl_text(settings, drop)


def command_for(role: str, state_dir: Path) -> Callable[[Phase], str]:
    extra = "" if state_dir == DEFAULT_STATE_DIR else f" --state-dir {state_dir}"
    return lambda phase: f"redisops acl rotate --role {role} --phase {phase} --target local{extra}"


# ---- the phases' file changes ------------------------------------------------------------


def _add_files(layout: TwinLayout, role: str) -> None:
    if layout.old_password_file(role).exists():
        raise ConfigError(
            f"{layout.old_password_file(role)} exists, yet no rotation of {role} is in "
            "progress: a retired password left behind; delete it, then run add again"
        )
    if not layout.next_password_file(role).exists():
        write_private(layout.next_password_file(role), (secrets.token_urlsafe(32) + "\n").encode())


def _switch_files(layout: TwinLayout, role: str) -> str:
    """Hand out the next password (keeping the current one as old); return the new one."""
    current = layout.password_file(role)
    next_file, old_file = layout.next_password_file(role), layout.old_password_file(role)
    if not next_file.exists():
        if old_file.exists():  # an interrupted switch: the new one is handed out already
            return _read(current, role)
        raise ConfigError(
            f"the second password of {role} ({next_file}) is missing; run phase add again"
        )
    new = _read(next_file, role)
    if not old_file.exists():
        write_private(old_file, current.read_bytes())
    write_private(current, (new + "\n").encode())
    if role == acl.REPLICATION:
        # What a node that starts later reads (running nodes get CONFIG SET).
        write_private(layout.replication_include, render_replication_include(new).encode())
    return new


def _finish_files(layout: TwinLayout, role: str, phase: Phase) -> None:
    """Drop the file of a password that is no longer accepted (or no longer next)."""
    if phase == "switch":
        layout.next_password_file(role).unlink(missing_ok=True)
    elif phase == "retire":
        layout.old_password_file(role).unlink(missing_ok=True)
    write_phase(layout.rotation_record(role), phase)


# ---- pushing and proving ----------------------------------------------------------------


def _push(
    twin: Twin, settings: TwinSettings, role: str, phase: Phase, progress: Progress
) -> ReconcileReport:
    drop = (role, "old") if phase == "retire" else None
    options = ReconcileOptions(
        acl_text=rotation_acl_text(twin, settings, drop),
        write_acl=twin.write_acl,
        progress=progress,
    )
    if role == acl.REPLICATION and phase == "switch":
        # Running nodes read masterauth from the include file at start only.
        options.reload_tls = True
        options.admin = twin.credentials(acl.ADMIN)
        options.replication = twin.credentials(acl.REPLICATION)
    return reconcile(
        settings.desired(), twin.client_tls(acl.OPERATOR), twin.credentials(acl.OPERATOR), options
    )


def _prove(twin: Twin, settings: TwinSettings, role: str, phase: Phase) -> list[LoginCheck]:
    # Before the phase's last file change: during retire the old password's file is still
    # there (it is deleted once proven refused); retire repeated has none left to try.
    accepted = passwords(twin.layout, role)
    result = []
    tls = twin.client_tls(role)
    for endpoint in checks.endpoints(settings):
        for name, must_work in EXPECTED[phase].items():
            if name not in accepted:
                continue  # retire repeated: the old password is gone already
            expected = checks.ACCEPTED if must_work else checks.WRONGPASS
            got = checks.login(endpoint, tls, role, accepted[name])
            result.append(LoginCheck(str(endpoint), name, expected, got))
    return result


def _masterauth_problems(twin: Twin, settings: TwinSettings) -> list[str]:
    """Every node replicates with the handed-out replication password (compared, never shown)."""
    want = twin.credentials(acl.REPLICATION).password.get_secret_value()
    problems = []
    for endpoint in checks.endpoints(settings):
        admin = connect(endpoint, twin.client_tls(acl.ADMIN), twin.credentials(acl.ADMIN))
        try:
            current = admin.config_get("master*")
        finally:
            admin.close()
        if current.get("masteruser") != acl.REPLICATION or current.get("masterauth") != want:
            problems.append(f"{endpoint}: masteruser/masterauth are not the new credentials")
    return problems


def _handover_notes(twin: Twin, settings: TwinSettings, role: str) -> list[str]:
    """Make the twin's long-running readers of the password use the new one (or say how)."""
    if role in (acl.READER, acl.PUBLISHER):
        if twin.proxy.running_pid() is not None:
            twin.proxy.stop()
            pid = twin.proxy.start(settings)
            return [f"restarted the SSE proxy (pid {pid}): it reads the {role} password at start"]
        if settings.sse_proxy:
            return [
                "the SSE proxy is not running; `redisops local up` starts it with the new "
                f"{role} password"
            ]
        return ["this twin runs no SSE proxy: nothing to restart"]
    if role == acl.MONITORING and settings.monitoring:
        return [
            "the exporters read the monitoring password at start: restart them before "
            "retire (`redisops local up --no-monitoring`, then `redisops local up --monitoring`)"
        ]
    if role == acl.REPLICATION:
        return ["masteruser/masterauth set on every running node; the include file updated"]
    return [f"{role}'s clients read the password file on every run: nothing to restart"]


def rotate_twin_password(
    twin: Twin, role: str, phase: str, progress: Progress = lambda _m: None
) -> TwinRotation:
    """Run one phase of `role`'s password rotation on the twin, and prove it."""
    role = known_role(role)
    settings = twin.settings()
    layout = twin.layout
    done = read_phase(layout.rotation_record(role))
    command = command_for(role, layout.root)
    repeated = check_order(done, phase, f"{role} on the local twin", command)
    typed = cast(Phase, phase)
    result = TwinRotation(
        role=role,
        phase=typed,
        repeated=repeated,
        before=done,
        next_command=command(next_phase(typed)) if typed != "retire" else "",
    )
    if not repeated and typed == "add":
        _add_files(layout, role)
    elif not repeated and typed == "switch":
        _switch_files(layout, role)
    progress(f"{role}: pushing the ACL file ({typed}) to {len(settings.ports)} nodes")
    report = _push(twin, settings, role, typed, progress)
    result.reconcile = report.summary()
    if not report.healthy:
        result.problems.append(f"reconcile: {report.summary()}")
        return result
    result.checks = _prove(twin, settings, role, typed)
    if role == acl.REPLICATION:
        result.problems += _masterauth_problems(twin, settings)
        result.problems += checks.cluster_problems(twin, settings)
    if not result.ok:
        return result
    if typed == "switch":
        result.notes += _handover_notes(twin, settings, role)
    _finish_files(layout, role, typed)
    return result
