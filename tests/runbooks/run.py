"""Run runbook pages against a running twin, with the data guard, and report.

    .venv/bin/python -m tests.runbooks.run run [PAGES...] [--state-dir D] [--json]

Without PAGES: every page of runbooks/ that the twin executes, in the index's order.
The twin is the one in --state-dir (default: `make up`'s, .redisops/local; env
REDISOPS_STATE_DIR); a page that declares another shape is refused, not run. Exit 0
when every page passed, 1 when one failed, 2 on bad usage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from redisops.cli_common import StateDir
from redisops.errors import RedisOpsError
from redisops.local.settings import DEFAULT_STATE_DIR
from redisops.local.twin import Twin
from redisops.runbooks import Page
from tests.runbooks.harness import (
    LOGS,
    REPORT,
    PageResult,
    load_page,
    repository_pages,
    results_table,
    run_page,
    write_report,
)

app = typer.Typer(add_completion=False, no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)


@app.callback()
def _main() -> None:
    """Execute runbook procedures against the twin."""


@app.command()
def run(
    pages: Annotated[
        list[Path] | None, typer.Argument(help="Pages to run (default: every executable page).")
    ] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    with_rollback: Annotated[
        bool,
        typer.Option(
            "--with-rollback", help="Also run the sh rollback blocks of pages with rollback=safe."
        ),
    ] = False,
    report: Annotated[Path, typer.Option(help="Where to write the JSON report.")] = REPORT,
    logs: Annotated[Path, typer.Option(help="Directory for each page's script and log.")] = LOGS,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run pages in order; each inside the data guard; a table (or JSON) of the results."""
    try:
        chosen = _pages(pages)
        twin = Twin(state_dir)
        twin.settings()  # refuses a state directory without a twin, with the fix
    except (RedisOpsError, OSError) as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(2) from exc
    results: list[PageResult] = []
    for page in chosen:
        if not json_out:
            err.print(f"running {page.source} ...")
        results.append(run_page(page, twin, work_dir=logs, with_rollback=with_rollback))
    write_report(results, report)
    if json_out:
        sys.stdout.write(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    else:
        out = Console() if sys.stdout.isatty() else Console(width=140)
        out.print(results_table(results))
        for result in results:
            if result.failure:
                err.print(result.failure, markup=False, highlight=False)
    raise typer.Exit(0 if all(r.passed for r in results) else 1)


def _pages(paths: list[Path] | None) -> list[Page]:
    if not paths:
        return [p for p in repository_pages() if p.executable or p.problems]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise OSError(f"no such page: {', '.join(missing)}")
    return [load_page(p) for p in paths]


if __name__ == "__main__":
    app()
