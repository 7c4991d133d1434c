"""What the `redisops` commands share: output, options, and how to reach a cluster."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from redisops.client import Credentials, Endpoint, TlsClient
from redisops.errors import ConfigError
from redisops.local.settings import DEFAULT_STATE_DIR
from redisops.local.twin import Twin
from redisops.topology import DesiredNode

out = Console()
err = Console(stderr=True)
logger = logging.getLogger("redisops")

StateDir = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="REDISOPS_STATE_DIR",
        help="Where the twin keeps data, config, certificates and credentials.",
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON only (for scripts).")]
TargetOpt = Annotated[
    str | None, typer.Option("--target", help="'local' for the twin; else give --node etc.")
]
NodeOpt = Annotated[
    list[str] | None,
    typer.Option("--node", help="host:port of a cluster node (repeat); with --ca etc."),
]
CaOpt = Annotated[Path | None, typer.Option("--ca", help="CA certificate (PEM).")]
CertOpt = Annotated[Path | None, typer.Option("--cert", help="Client certificate (PEM).")]
KeyOpt = Annotated[Path | None, typer.Option("--key", help="Client key (PEM).")]
UserOpt = Annotated[str | None, typer.Option("--user", help="Redis user (default: the role).")]
PasswordFileOpt = Annotated[
    Path | None, typer.Option("--password-file", help="File holding the user's password.")
]

DEFAULT_STATE = DEFAULT_STATE_DIR


def refuse_unused(mode: str, options: Mapping[str, object]) -> None:
    """Options given (not None, False or empty) that `mode` would ignore: refuse them by
    name rather than let a user believe they took effect."""
    given = [flag for flag, value in options.items() if value not in (None, False, [], ())]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: not used with {mode}; drop {'it' if len(given) == 1 else 'them'}"
        )


def given_options(ctx: typer.Context, *names: str) -> dict[str, bool]:
    """flag -> whether the command line (or the environment) set each of these parameters."""
    flags = {p.name: p.opts[0] for p in ctx.command.params if p.name}

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)  # typer's own click: compare by name
        return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

    return {flags[name]: given(name) for name in names}


def refuse_local_cluster_flags(
    nodes: list[str] | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    user: str | None,
    password_file: Path | None,
) -> None:
    """With --target local the twin supplies what these flags would say."""
    refuse_unused(
        "--target local (the twin supplies nodes, certificates and credentials)",
        {"--node": nodes, "--ca": ca, "--cert": cert, "--key": key, "--user": user,
         "--password-file": password_file},
    )  # fmt: skip


def client_certificate(cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        raise ConfigError(
            "--cert and --key go together: give the client certificate and its key, or "
            "neither (when the cluster does not require client certificates)"
        )


def emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def show_progress(json_out: bool) -> bool:
    """Progress bars only for people: on a terminal and without --json."""
    return not json_out and out.is_terminal


@dataclass
class Access:
    """How to reach a cluster as one role."""

    endpoints: list[Endpoint]
    tls: TlsClient
    credentials: Credentials
    twin: Twin | None = None


def cluster_access(
    role: str,
    *,
    target: str | None,
    state_dir: Path,
    nodes: list[str] | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    user: str | None,
    password_file: Path | None,
) -> Access:
    """`--target local` (the twin) or explicit `--node/--ca/--cert/--key/--password-file`."""
    if target == "local":
        refuse_local_cluster_flags(nodes, ca, cert, key, user, password_file)
        twin = Twin(state_dir)
        settings = twin.settings()
        return Access(
            settings.endpoints,
            twin.client_tls(role),
            twin.credentials(role),
            twin,
        )
    if target is not None:
        raise ConfigError(f"--target {target!r}: only 'local' is known; or give --node etc.")
    missing = [
        name
        for name, value in (("--node", nodes), ("--ca", ca), ("--password-file", password_file))
        if not value
    ]
    if missing:
        raise ConfigError(f"{', '.join(missing)} required (or use --target local)")
    if nodes is None or ca is None or password_file is None:  # for the type checker
        raise ConfigError("--node, --ca and --password-file are required")
    client_certificate(cert, key)
    return Access(
        [Endpoint.parse(n) for n in nodes],
        TlsClient(
            ca_file=str(ca),
            cert_file=str(cert) if cert else None,
            key_file=str(key) if key else None,
        ),
        Credentials.from_file(user or role, password_file),
    )


def parse_desired_node(text: str) -> DesiredNode:
    """host:port[=zone] of a desired node, as `--node` gives it."""
    address, _, zone = text.partition("=")
    return DesiredNode(endpoint=Endpoint.parse(address), zone=zone or None)


def local_backup_location(state_dir: Path) -> str:
    return f"file://{(state_dir / 'backups').absolute()}"
