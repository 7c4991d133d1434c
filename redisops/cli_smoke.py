"""`redisops smoke`: the post-rollout gate, against the twin, from inside a cluster (the
smoke Job runs `--target kubernetes`), or launched from CI against a stack (`--stack`)."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from redisops import smoke_launch
from redisops.cli_common import DEFAULT_STATE as DEFAULT_STATE_DIR
from redisops.cli_common import JsonOut, StateDir, emit, err, out, refuse_unused
from redisops.errors import ConfigError, Unavailable

DEFAULT_TIMEOUT_S = 1200.0  # above the Job's own activeDeadlineSeconds (900 s)


def smoke_cmd(
    target: Annotated[
        str | None,
        typer.Option(
            help="Where to run: local (the twin, the default) or kubernetes (inside the "
            "cluster, with --target-file: what the smoke Job runs)."
        ),
    ] = None,
    stack: Annotated[
        str | None,
        typer.Option(
            help="Launch the gate on a GKE stack (dev, prod): create its smoke Job from the "
            "stack's outputs, wait, read the reports, delete it."
        ),
    ] = None,
    outputs_file: Annotated[
        Path | None,
        typer.Option(help="--stack: a file of `pulumi stack output --json` (default: run pulumi)."),
    ] = None,
    context: Annotated[
        str | None, typer.Option(help="--stack: the kubeconfig context (default: current).")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="--stack: seconds to wait for the Job before giving up (exit 2).")
    ] = DEFAULT_TIMEOUT_S,
    keep_job: Annotated[
        bool, typer.Option("--keep-job", help="--stack: leave the Job (and its pod) to debug.")
    ] = False,
    summary_md: Annotated[
        Path | None,
        typer.Option(
            help="--stack: append a Markdown summary to this file (CI: $GITHUB_STEP_SUMMARY)."
        ),
    ] = None,
    target_file: Annotated[
        Path | None,
        typer.Option(help="kubernetes: the target file (the smoke Job mounts it)."),
    ] = None,
    report_dir: Annotated[
        Path, typer.Option(help="Where the JUnit XML and the JSON report go.")
    ] = Path("reports"),
    no_disruption: Annotated[
        bool, typer.Option("--no-disruption", help="Skip checks that crash nodes.")
    ] = False,
    select: Annotated[
        str | None, typer.Option("-k", help="Only checks matching this pytest expression.")
    ] = None,
    state_dir: StateDir = DEFAULT_STATE_DIR,
    json_out: JsonOut = False,
) -> None:
    """Run the post-rollout smoke suite against a target; exit 1 on any failure, 2 when it
    could not run."""
    if stack is not None:
        refuse_unused(
            "--stack (the stack's Job decides what runs)",
            {
                "--target": target,
                "--target-file": target_file,
                "--no-disruption": no_disruption,
                "-k": select,
            },
        )
        _launch(stack, outputs_file, context, timeout, keep_job, report_dir, summary_md, json_out)
        return
    refuse_unused(
        "--target (these are for --stack)",
        {
            "--outputs-file": outputs_file,
            "--context": context,
            "--keep-job": keep_job,
            "--summary-md": summary_md,
        },
    )
    if timeout != DEFAULT_TIMEOUT_S:
        raise ConfigError("--timeout: used only with --stack; drop it")
    _run_here(
        target or "local", target_file, report_dir, no_disruption, select, state_dir, json_out
    )


def _run_here(
    target: str,
    target_file: Path | None,
    report_dir: Path,
    no_disruption: bool,
    select: str | None,
    state_dir: Path,
    json_out: bool,
) -> None:
    from smoke_tests import runner  # imported late: pulls in pytest
    from smoke_tests.targets import TargetError, load_target

    if target == "local":
        refuse_unused("--target local (the twin describes itself)", {"--target-file": target_file})
        if not (state_dir / "state.json").exists():
            raise ConfigError(
                f"no local twin in {state_dir}; start one with `make up` or `redisops local up`"
            )
    elif target == "kubernetes":
        try:  # fail here, with the reason, rather than inside pytest
            load_target(target, None, target_file)
        except TargetError as exc:
            raise ConfigError(f"--target kubernetes: {exc}") from exc
    else:
        raise ConfigError(f"--target {target!r}: use local (the twin) or kubernetes")
    report = runner.run(
        target,
        state_dir if target == "local" else None,
        report_dir,
        no_disruption=no_disruption,
        select=select,
        quiet_stdout=json_out,
        target_file=target_file,
    )
    if target == "kubernetes":
        # Inside the smoke Job the reports leave through the log: the launcher reads
        # these lines back (smoke_launch.read_frames). Before the JSON, which stays last.
        for line in smoke_launch.frame_reports(report_dir):
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
    if json_out:
        emit(report)
    else:
        print_report(report)
    if not report["ok"]:
        raise typer.Exit(1)


def _launch(
    stack: str,
    outputs_file: Path | None,
    context: str | None,
    timeout: float,
    keep: bool,
    report_dir: Path,
    summary_md: Path | None,
    json_out: bool,
) -> None:
    if timeout <= 0:
        raise ConfigError(f"--timeout {timeout:g}: give the seconds to wait, e.g. 1200")
    try:
        result = _run_launch(stack, outputs_file, context, timeout, keep, json_out)
    except (Unavailable, ConfigError) as exc:  # exit 2: the gate did not run
        _append(summary_md, smoke_launch.markdown_unavailable(stack, str(exc)))
        raise
    written = smoke_launch.write_reports(result.files, report_dir)
    summary = smoke_launch.summary(result)
    summary["reports"] = [str(p) for p in written]
    _append(summary_md, smoke_launch.markdown(summary))
    if json_out:
        emit(summary)
    else:
        if result.verdict.report is not None:
            print_report({**result.verdict.report, "junit_xml": _junit(written)})
        _print_launch(summary, keep)
    if result.verdict.exit_code:
        raise typer.Exit(result.verdict.exit_code)


def _append(path: Path | None, text: str) -> None:
    if path is None:
        return
    try:
        with path.open("a") as handle:
            handle.write(text)
    except OSError as exc:
        err.print(f"--summary-md {path}: {exc.strerror}; the summary was not written")


def _run_launch(
    stack: str,
    outputs_file: Path | None,
    context: str | None,
    timeout: float,
    keep: bool,
    json_out: bool,
) -> smoke_launch.Launch:
    outputs = smoke_launch.load_outputs(stack, outputs_file)
    api = smoke_launch.KubernetesApi(context)
    status = None if json_out or not out.is_terminal else out.status("creating the smoke Job")

    def progress(p: smoke_launch.Progress) -> None:
        if status is not None:
            status.update(f"smoke Job: {p.state} — {escape(p.detail)}")

    def line(text: str) -> None:  # the pod's log, as it runs (never on stdout with --json)
        (err if json_out else out).print(escape(text), highlight=False, soft_wrap=True)

    with status or contextlib.nullcontext(), _interrupt_as_keyboard():
        return smoke_launch.launch(
            api, outputs, timeout_s=timeout, keep=keep, on_progress=progress, on_line=line
        )


def _junit(written: list[Path]) -> str:
    return next((str(p) for p in written if p.suffix == ".xml"), "not in the pod's log")


def _print_launch(summary: dict[str, Any], keep: bool) -> None:
    colour = {0: "green", 1: "red"}.get(summary["exit_code"], "yellow")
    where = f"Job {summary['job']} in {summary['namespace']}"
    kept = (
        "kept (--keep-job)"
        if keep
        else ("deleted" if summary["deleted"] else "NOT deleted (its TTL removes it in a day)")
    )
    out.print(
        f"[{colour}]gate: exit {summary['exit_code']}[/{colour}] — {escape(summary['reason'])} "
        f"({where}, {summary['duration_s']} s, {kept})",
        highlight=False,
    )


@contextlib.contextmanager
def _interrupt_as_keyboard() -> Iterator[None]:
    """SIGTERM (a cancelled CI job) unwinds like Ctrl-C, so the Job is deleted."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def print_report(report: dict[str, Any]) -> None:
    """The suite's measurements, failures, skips and counts."""
    table = Table(title=f"smoke: {report['target']} ({report['duration_s']} s)")
    for column in ("measurement", "value", "goal", "check"):
        table.add_column(column)
    for name, row in report["measurements"].items():
        goal = row.get("goal")
        met = row.get("goal_met")
        mark = "" if met is None else (" [green]met[/green]" if met else " [yellow]missed[/yellow]")
        table.add_row(
            name,
            f"{row.get('value')} {row.get('unit', '')}",
            "-" if goal is None else f"<= {goal}{mark}",
            row["test"].split("::")[-1][:60],
        )
    out.print(table)
    for test in report["tests"]:
        if test["outcome"] in ("failed", "error"):
            out.print(f"[red]{test['outcome']}[/red] {test['id']}\n{test.get('message', '')}")
    allowed: dict[str, list[str]] = {}  # declared-absent capability -> reasons, one per skip
    for skip in report["skips"]:
        if skip["allowed"]:
            allowed.setdefault(skip["capability"], []).append(skip["reason"])
        else:  # the skip checked nothing the target declares absent: it failed the gate
            out.print(f"[red]skipped, not allowed[/red] {skip['test']}\n{skip['reason']}")
    for capability, reasons in allowed.items():
        out.print(f"[yellow]skipped {len(reasons)}[/yellow], {capability} absent: {reasons[0]}")
    counts = report["counts"]
    colour = "green" if report["ok"] else "red"
    out.print(
        f"[{colour}]{counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['error']} errors, {counts['skipped']} skipped "
        f"({counts['skipped_not_allowed']} not allowed)[/{colour}] — "
        f"JUnit: {report['junit_xml']}",
        highlight=False,
    )
