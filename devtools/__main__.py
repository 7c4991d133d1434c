"""`python -m devtools image`: build the platform image here (see devtools/image.py)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from devtools import engine as engines
from devtools.engine import EngineError
from devtools.image import build_image

app = typer.Typer(help="Developer tooling: the container engine and the platform image.")
err = Console(stderr=True)


@app.command("image")
def image(
    json_out: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
    keep_engine: Annotated[
        bool, typer.Option(help="leave a dockerd this command started running")
    ] = False,
) -> None:
    """Build the platform image from the Dockerfile (cached by content); start the
    container engine when none runs, and stop it again unless --keep-engine."""
    try:
        engine = engines.start()
        try:
            built = build_image(engine, progress=lambda step: err.print(f"[dim]image:[/] {step}"))
        finally:
            if not keep_engine:
                engines.stop(engine)
    except EngineError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if json_out:
        print(json.dumps(built.as_dict()))
    else:
        state = "built" if built.built else "unchanged, cached"
        err.print(
            f"{built.image} ({state}) on {built.base}: "
            f"{built.size_bytes / 1e6:.0f} MB, {built.seconds:.1f} s"
        )


@app.command("engine")
def engine_cmd(
    action: Annotated[str, typer.Argument(help="start | stop | status")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Start, stop or show the private container engine (for a session of tests)."""
    try:
        if action == "start":
            found = engines.start()
            result = {"host": found.host, "started": found.started_here, "pid": found.pid}
        elif action == "status":
            found_or_none = engines.find()
            result = {"host": found_or_none.host if found_or_none else None}
        elif action == "stop":
            result = {"stopped": engines.stop_private()}
        else:
            raise typer.BadParameter(f"unknown action {action!r}: use start, stop or status")
    except EngineError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    print(json.dumps(result) if json_out else result)


if __name__ == "__main__":
    app()
