"""`redisops acl rotate` and `redisops certs status|rotate`: credentials and certificates
changed without downtime, each step proven.

Exit codes: 0 done and proven, 1 a check failed (the step is not recorded as done; run
it again), 2 bad usage or a phase out of order (the message names the next command).
With `--json` stdout holds JSON only; progress goes to stderr.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from redisops import certs, rotation
from redisops.cli_common import (
    DEFAULT_STATE,
    CaOpt,
    CertOpt,
    JsonOut,
    KeyOpt,
    NodeOpt,
    StateDir,
    TargetOpt,
    client_certificate,
    emit,
    err,
    logger,
    out,
    refuse_unused,
    show_progress,
)
from redisops.client import Endpoint, TlsClient
from redisops.errors import ConfigError
from redisops.local.passwords import TwinRotation, rotate_twin_password
from redisops.local.twin import Twin

acl_app = typer.Typer(help="Redis users: rotate a role's password without downtime.")
certs_app = typer.Typer(help="TLS certificates: status of files and nodes; rotation (twin).")

TwinTargetOpt = Annotated[str | None, typer.Option("--target", help="'local': the twin.")]
PhaseOpt = Annotated[
    str | None,
    typer.Option("--phase", help="add, switch or retire: the rotation's steps, in that order."),
]
_STACK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _progress(json_out: bool) -> Callable[[str], None]:
    """Readable lines on stderr for people at a terminal; log records otherwise."""
    if show_progress(json_out):
        return lambda message: err.print(f"[dim]{escape(message)}[/dim]", highlight=False)
    return logger.info


def _phase(phase: str | None) -> str | None:
    if phase is not None and phase not in rotation.PHASES:
        raise ConfigError(f"--phase {phase!r}: use add, switch or retire (in that order)")
    return phase


def _notes(notes: list[str], problems: list[str], next_command: str) -> None:
    for problem in problems:
        out.print(f"  [red]problem[/red] {escape(problem)}", highlight=False, soft_wrap=True)
    for note in notes:
        out.print(f"  note: {escape(note)}", highlight=False, soft_wrap=True)
    if next_command:
        out.print(f"next: {escape(next_command)}", highlight=False, soft_wrap=True)


# ---- acl rotate --------------------------------------------------------------------------


def _print_twin_rotation(result: TwinRotation) -> None:
    passed = sum(1 for c in result.checks if c.ok)
    verb = "checked again" if result.repeated else "done"
    colour = "green" if result.ok else "red"
    out.print(
        f"{result.role}: phase {result.phase} [{colour}]{verb if result.ok else 'NOT PROVEN'}"
        f"[/{colour}] on the local twin — {passed} of {len(result.checks)} login checks as "
        "expected",
        highlight=False,
    )
    for check in result.checks:
        if not check.ok:
            out.print(
                f"  [red]failed[/red] {check.node}: {check.password} password got "
                f"{escape(check.result)}, expected {check.expected}",
                highlight=False,
            )
    _notes(result.notes, result.problems, result.next_command if result.ok else "")


def _print_stack_rotation(result: rotation.StackRotation) -> None:
    if result.changed:
        head = f"{result.config_file} edited"
        same = f" (what `{result.equivalent}` does)" if result.equivalent else ""
    else:
        head, same = f"{result.config_file} already says so: nothing changed", ""
    out.print(
        f"{result.role} on stack {result.stack}: phase {result.phase} — {escape(head)}{same}; "
        f"acl.rotating {result.rotating_after}, {result.role}'s active slot "
        f"{result.active_after}",
        highlight=False,
        soft_wrap=True,
    )
    out.print("then:")
    for i, step in enumerate(result.next_steps, start=1):
        out.print(f"  {i}. {escape(step)}", highlight=False, soft_wrap=True)
    _notes([], [], result.next_command)


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)  # typer's own click: compare by name
    return source is not None and source.name == "COMMANDLINE"


@acl_app.command("rotate")
def acl_rotate(
    ctx: typer.Context,
    role: Annotated[str, typer.Option("--role", help="The role (Redis user) to rotate.")],
    phase: Annotated[
        str,
        typer.Option("--phase", help="add, switch or retire: the runbook's steps, in order."),
    ],
    target: TwinTargetOpt = None,
    stack: Annotated[
        str | None,
        typer.Option("--stack", help="A GKE stack (dev, prod): edits Pulumi.<stack>.yaml."),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config-file", help="With --stack: the stack file (default ./Pulumi.<stack>.yaml)."
        ),
    ] = None,
    state_dir: StateDir = DEFAULT_STATE,
    json_out: JsonOut = False,
) -> None:
    """One step of a role's password rotation (runbooks/rotate-passwords.md): add a second
    password, switch to handing it out, retire the first.

    --target local: done on the twin and proven (every password that
    must log in does, on every node; after retire the old one gets
    WRONGPASS). --stack: the stack's acl config edited as the runbook's
    `pulumi config set` lines do; prints the `pulumi up` and the
    restarts to run next.
    """
    _phase(phase)
    rotation.known_role(role)
    if target is not None and stack is not None:
        raise ConfigError(
            "--target and --stack: choose one — --target local (the twin) or --stack <name> "
            "(a GKE stack's Pulumi.<name>.yaml)"
        )
    if stack is not None:
        if _from_command_line(ctx, "state_dir"):
            raise ConfigError("--state-dir: not used with --stack (it names the twin); drop it")
        if not _STACK.match(stack):
            raise ConfigError(f"--stack {stack!r}: not a stack name (e.g. dev, prod)")
        path = config_file or Path(f"Pulumi.{stack}.yaml")
        result = rotation.rotate_stack(
            path.absolute(), stack, role, phase, named_file=config_file is not None
        )
        emit(result.as_dict()) if json_out else _print_stack_rotation(result)
        return
    if target != "local":
        raise ConfigError(
            f"--target {target!r}: only 'local' (the twin) is known; or give --stack <name>"
            if target is not None
            else "give --target local (the twin) or --stack <name> (a GKE stack, e.g. prod)"
        )
    refuse_unused("--target local (the twin keeps its passwords itself)",
                  {"--config-file": config_file})  # fmt: skip
    outcome = rotate_twin_password(Twin(state_dir), role, phase, _progress(json_out))
    emit(outcome.as_dict()) if json_out else _print_twin_rotation(outcome)
    if not outcome.ok:
        raise typer.Exit(1)


# ---- certs status ------------------------------------------------------------------------


def _days(days: float | None) -> str:
    return "-" if days is None else f"{days:.1f}"


def _state(problems: list[str]) -> str:
    return "[green]ok[/green]" if not problems else f"[red]{escape('; '.join(problems))}[/red]"


def _print_status(result: certs.CertStatus) -> None:
    files = Table(title=f"certificate files (fail under {certs.EXPIRY_DAYS} days)")
    for column in ("file", "subject", "not after", "days left", "SHA-256", "state"):
        files.add_column(column, overflow="fold")
    for f in result.files:
        files.add_row(
            f.name, f.subject, f.not_after[:19], _days(f.days_left), f.fingerprint[:23] + "…",
            _state(f.problems),
        )  # fmt: skip
    out.print(files)
    nodes = Table(title="what each node serves")
    for column in ("node", "subject", "days left", "SHA-256", "matches file", "state"):
        nodes.add_column(column, overflow="fold")
    for n in result.nodes:
        served = n.served
        match = {None: "-", True: "yes", False: "[red]no[/red]"}[n.matches_file]
        nodes.add_row(
            n.node, served.subject if served else "-", _days(served.days_left if served else None),
            (served.fingerprint[:23] + "…") if served else "-", match, _state(n.problems),
        )  # fmt: skip
    out.print(nodes)
    if result.ca_rotation:
        out.print(f"CA rotation in progress: phase {result.ca_rotation} done")
    colour = "green" if result.ok else "red"
    summary = "all certificates ok" if result.ok else f"{len(result.problems)} problem(s)"
    out.print(f"[{colour}]{summary}[/{colour}]")


@certs_app.command("status")
def certs_status(
    target: TargetOpt = None,
    node: NodeOpt = None,
    ca: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    expect_node_cert: Annotated[
        Path | None,
        typer.Option(help="The node certificate file every node must serve (PEM)."),
    ] = None,
    state_dir: StateDir = DEFAULT_STATE,
    json_out: JsonOut = False,
) -> None:
    """Subject, expiry, days left and SHA-256 fingerprint of every certificate file, and
    the certificate each node serves. Exit 1 when one expires within the alert's window
    (RedisTlsCertificateExpiringSoon) or a node serves a stale one."""
    if target == "local":
        refuse_unused(
            "--target local (the twin supplies nodes and certificate files)",
            {"--node": node, "--ca": ca, "--cert": cert, "--key": key,
             "--expect-node-cert": expect_node_cert},
        )  # fmt: skip
        result = certs.twin_status(Twin(state_dir))
    elif target is not None:
        raise ConfigError(f"--target {target!r}: only 'local' is known; or give --node and --ca")
    else:
        missing = [name for name, value in (("--node", node), ("--ca", ca)) if not value]
        if missing or node is None or ca is None:
            raise ConfigError(f"{', '.join(missing)} required (or use --target local)")
        client_certificate(cert, key)
        tls = TlsClient(
            ca_file=str(ca),
            cert_file=str(cert) if cert else None,
            key_file=str(key) if key else None,
        )
        clients = [("client", cert)] if cert is not None else []
        result = certs.status(
            [Endpoint.parse(n) for n in node], tls, node_cert=expect_node_cert,
            client_certs=clients,
        )  # fmt: skip
    emit(result.as_dict()) if json_out else _print_status(result)
    if not result.ok:
        raise typer.Exit(1)


# ---- certs rotate ------------------------------------------------------------------------


def _print_cert_rotation(result: certs.CertRotation) -> None:
    colour = "green" if result.ok else "red"
    what = {"node": "node certificate", "client": "client certificates", "ca": "CA"}[result.what]
    step = f" phase {result.phase}" if result.phase else ""
    verb = "checked again" if result.repeated else "done"
    out.print(
        f"{what}{step}: [{colour}]{verb if result.ok else 'NOT PROVEN'}[/{colour}] — "
        f"{len(result.written)} file(s) written, "
        f"{sum(1 for n in result.nodes if not n.problems)} of {len(result.nodes)} nodes serve "
        "the node certificate file; cluster " + ("whole" if not result.problems else "NOT whole"),
        highlight=False,
    )
    node_problems = [f"{n.node}: {p}" for n in result.nodes for p in n.problems]
    _notes(result.notes, result.problems + node_problems, result.next_command if result.ok else "")


@certs_app.command("rotate")
def certs_rotate(
    what: Annotated[
        str, typer.Option("--what", help="node, client or ca (ca goes in three phases).")
    ],
    phase: PhaseOpt = None,
    target: TwinTargetOpt = None,
    state_dir: StateDir = DEFAULT_STATE,
    json_out: JsonOut = False,
) -> None:
    """Rotate the twin's node certificate, client certificates or CA; reload every node
    without a restart and prove it (each node serves the new certificate, the cluster
    stays ok, replication links up)."""
    _phase(phase)
    if what not in certs.WHATS:
        raise ConfigError(f"--what {what!r}: use node, client or ca")
    if target != "local":
        raise ConfigError(
            "--target local is required: only the twin's certificates rotate here (on GKE "
            "pulumi-tls renews them at `pulumi up` within tls.earlyRenewalHours and the "
            "reconcile Job reloads them)"
        )
    twin = Twin(state_dir)
    progress = _progress(json_out)
    if what != "ca":
        refuse_unused(f"--what {what} (only the CA rotates in phases)", {"--phase": phase})
        result = (certs.rotate_node if what == "node" else certs.rotate_clients)(twin, progress)
    elif phase is None:
        twin.settings()  # a missing twin is the first thing to say
        done = certs.ca_phase(twin)
        following = rotation.next_phase(done)
        raise ConfigError(
            f"--what ca needs --phase: {rotation.describe_state(done)}; next: "
            f"`{certs.ca_command(twin.layout.root)(following)}`"
        )
    else:
        result = certs.rotate_ca(twin, phase, progress)
    emit(result.as_dict()) if json_out else _print_cert_rotation(result)
    if not result.ok:
        raise typer.Exit(1)
