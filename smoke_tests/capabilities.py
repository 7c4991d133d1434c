"""What a target may declare absent, and the one way a check skips for it.

A skipped check checked nothing, so a skip passes the gate only where the target says the
thing checked is not there: no SSE proxy, no backups, no disruption allowed (the target
file, or `--no-disruption`), and so on below. A check skips through `Declared.require`,
which skips only when the target declares the capability absent, and says which one; the
runner then judges every skip against the same declarations (`judge`): any other skip — a
bare `pytest.skip`, an inconclusive probe — fails the gate, naming the check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from redisops import acl
from smoke_tests.targets import Target

SSE = "sse"  # Target.sse is None: the target runs no SSE proxy
SSE_SIGNING_SECRET = "sse-signing-secret"  # Target.sse.secret_file is None
BACKUPS = "backups"  # Target.backups is None
DISRUPTION = "disruption"  # Target.can_disrupt is false, or --no-disruption
CLIENT_CERTIFICATES = "client-certificates"  # Target.mutual_tls is false


def credentials(role: str) -> str:
    """The capability of running commands as `role` (the target holds its password)."""
    return f"credentials:{role}"


#: where the `target` fixture leaves the declarations for the runner (runner.py)
DECLARED = pytest.StashKey["Declared"]()

_DECLARED = re.compile(r"\[(?P<capability>[\w:.-]+) absent\] (?P<reason>.*)", re.DOTALL)
# Skips written before this module, recognised so that they need not change at once.
_LEGACY = {BACKUPS: re.compile(r"target \S+ has no backups configured")}


@dataclass(frozen=True)
class Declared:
    """The capabilities a target (and this run) declares absent, each with its reason."""

    absent: Mapping[str, str]

    @classmethod
    def of(cls, target: Target, *, no_disruption: bool = False) -> Declared:
        absent: dict[str, str] = {}
        if target.sse is None:
            absent[SSE] = f"target {target.name} runs no SSE proxy"
        elif target.sse.secret_file is None:
            absent[SSE_SIGNING_SECRET] = "the target does not share the token signing secret"
        if target.backups is None:
            absent[BACKUPS] = f"target {target.name} has no backups configured"
        if not target.can_disrupt:
            absent[DISRUPTION] = f"target {target.name} does not allow crashing nodes"
        elif no_disruption:
            absent[DISRUPTION] = "--no-disruption given"
        if not target.mutual_tls:
            absent[CLIENT_CERTIFICATES] = f"target {target.name} does not require them"
        held = target.credential_roles()
        for role in acl.ROLES:
            if role not in held:
                absent[credentials(role)] = f"target {target.name} holds no password for {role}"
        return cls(absent)

    def require(self, capability: str) -> None:
        """Skip the calling check when the target declares `capability` absent."""
        reason = self.absent.get(capability)
        if reason is not None:
            pytest.skip(f"[{capability} absent] {reason}")


@dataclass(frozen=True)
class Skip:
    """How the gate judges one skipped check."""

    capability: str | None  # the capability the skip names, if any
    reason: str
    allowed: bool


def judge(message: str, declared: Declared | None) -> Skip:
    """A skip is allowed only when it names a capability the target declared absent."""
    reason = message.removeprefix("Skipped: ")
    capability: str | None = None
    match = _DECLARED.fullmatch(reason)
    if match:
        capability, reason = match["capability"], match["reason"]
    else:
        capability = next((c for c, p in _LEGACY.items() if p.fullmatch(reason)), None)
    allowed = declared is not None and capability in declared.absent
    return Skip(capability, reason, allowed)
