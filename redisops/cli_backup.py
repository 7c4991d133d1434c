"""`redisops backup …`, `redisops restore`, `redisops drill …`."""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from redisops import acl
from redisops.backup import catalog, runs
from redisops.backup.create import create_backup
from redisops.backup.drill import drill_backup, drill_local
from redisops.backup.drill_job import as_dict, drill_job
from redisops.backup.manifest import BACKUP_ID
from redisops.backup.restore import RestoreReport, Target, restore
from redisops.backup.storage import Storage, open_storage
from redisops.cli_common import (
    DEFAULT_STATE,
    CaOpt,
    CertOpt,
    JsonOut,
    KeyOpt,
    NodeOpt,
    PasswordFileOpt,
    StateDir,
    TargetOpt,
    UserOpt,
    cluster_access,
    emit,
    given_options,
    local_backup_location,
    logger,
    out,
    refuse_local_cluster_flags,
    refuse_unused,
    show_progress,
)
from redisops.errors import ConfigError

backup_app = typer.Typer(help="RDB snapshots with manifests: create, list, verify, prune.")
drill_app = typer.Typer(help="Prove that backups restore.")

LocationOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        help="Backup location: gs://bucket/prefix or file:///dir (default for --target "
        "local: the twin's backups directory).",
    ),
]


# list, verify, prune, status: only a location (no cluster) is needed
StorageTargetOpt = Annotated[
    str | None,
    typer.Option("--target", help="'local' for the twin's backups directory; else give --from."),
]


def _location(location: str | None, target: str | None, state_dir: Path) -> str:
    if target is not None and target != "local":
        raise ConfigError(
            f"--target {target!r}: only 'local' (the twin's backups) is known; or give --from"
        )
    if location:
        return location
    if target == "local":
        return local_backup_location(state_dir)
    raise ConfigError("--from (or --to) is required: gs://bucket/prefix or file:///dir")


def _split(location: str, backup: str | None = None) -> tuple[str, str | None]:
    """`…/20261126T013000Z` names one backup inside a location; refused when `backup` (the
    one asked for otherwise, None: not asked) names another."""
    head, _, tail = location.rstrip("/").rpartition("/")
    if BACKUP_ID.match(tail) and "://" in head:
        if backup is not None and backup != tail:
            raise ConfigError(
                f"--from names backup {tail}, and {backup!r} was asked for too; give the "
                f"location alone ({head}) with the backup, or only --from"
            )
        return head, tail
    return location, None


@contextlib.contextmanager
def _transfer(enabled: bool, shards: int = 0) -> Iterator[Any]:
    if not enabled:
        yield lambda shard, n: None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
    ) as bars:
        tasks: dict[int, Any] = {}

        def advance(shard: int, n: int) -> None:
            if shard not in tasks:
                tasks[shard] = bars.add_task(f"shard {shard}", total=None)
            bars.advance(tasks[shard], n)

        yield advance


@contextlib.contextmanager
def _counting(enabled: bool, label: str, total: int | None) -> Iterator[Any]:
    if not enabled:
        yield lambda phase, n: None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
    ) as bars:
        task = bars.add_task(label, total=total)

        def advance(phase: str, n: int) -> None:
            if phase == "keys":
                bars.advance(task, n)

        yield advance


# ---- backup create / list / verify / prune / status -------------------------------------


@dataclass
class Outcome:
    ok: bool = True
    detail: str = ""
    ran: bool = True

    def judge(self, ok: bool, detail: str) -> None:
        self.ok, self.detail = ok, detail


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def recorded(storage: Storage, kind: runs.Kind) -> Iterator[Outcome]:
    """Record the run's outcome in `storage` (`redisops.backup.runs`) however it ends: a
    failed run leaves no manifest, and the backup-failed alert reads this record."""
    outcome = Outcome()
    # SIGTERM (a Job's deadline, an eviction) would end Python without `finally`: make it
    # an exception, so the run is recorded as failed before the process exits.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield outcome
    except ConfigError:
        # Bad usage or configuration (exit 2) is not a run: nothing is recorded for a
        # typo. A CronJob whose configuration stays wrong shows as RedisBackupStale.
        outcome.ran = False
        raise
    except BaseException as exc:
        if not isinstance(exc, typer.Exit) or exc.exit_code != 0:
            outcome.judge(False, f"{type(exc).__name__}: {str(exc)[:300]}")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        try:
            if outcome.ran:
                runs.record_run(storage, kind, outcome.ok, outcome.detail)
        except Exception as exc:  # the run's own result matters more than its record
            logger.warning("could not record the %s run in %s: %s", kind, storage.url, exc)


@backup_app.command("create")
def backup_create(
    to: Annotated[
        str | None, typer.Option("--to", help="gs://bucket/prefix or file:///dir.")
    ] = None,
    target: TargetOpt = None,
    node: NodeOpt = None,
    ca: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    user: UserOpt = None,
    password_file: PasswordFileOpt = None,
    state_dir: StateDir = DEFAULT_STATE,
    json_out: JsonOut = False,
) -> None:
    """One RDB per shard (from a replica when one is in sync), manifest written last; only
    new objects, never one replaced."""
    storage = open_storage(_location(to, target, state_dir))
    with recorded(storage, "backup") as outcome:
        # Inside the record: a node that cannot be reached is a failed backup run too.
        access = cluster_access(
            acl.BACKUP,
            target=target,
            state_dir=state_dir,
            nodes=node,
            ca=ca,
            cert=cert,
            key=key,
            user=user,
            password_file=password_file,
        )
        source = f"local twin {access.twin.layout.root}" if access.twin else ",".join(node or [])
        with _transfer(show_progress(json_out)) as progress:
            manifest = create_backup(
                access.endpoints,
                access.tls,
                access.credentials,
                storage,
                source=source,
                progress=progress,
            )
        outcome.detail = manifest.id
    if json_out:
        emit({"location": storage.url, **manifest.model_dump(mode="json")})
        return
    seconds = (manifest.completed_at - manifest.started_at).total_seconds()
    out.print(
        f"backup {manifest.id} in {storage.url}: {len(manifest.shards)} shards, "
        f"{manifest.keys} keys, {manifest.size / 1e6:.1f} MB in {seconds:.1f} s "
        f"({manifest.size / 1e6 / max(seconds, 1e-3):.0f} MB/s)"
    )


def _storage(location: str | None, target: str | None, state_dir: Path) -> Storage:
    return open_storage(_location(location, target, state_dir))


@backup_app.command("list")
def backup_list(
    location: LocationOpt = None,
    target: StorageTargetOpt = None,
    state_dir: StateDir = DEFAULT_STATE,
    json_out: JsonOut = False,
) -> None:
    """Complete backups, newest last; incomplete ones, and index entries that are ignored
    or name no complete backup, are reported as such."""
    storage = _storage(location, target, state_dir)
    survey = catalog.survey(storage)
    entries = survey.backups
    if json_out:
        emit(
            {
                "location": storage.url,
                "problems": survey.problems,
                "backups": [
                    {
                        "id": e.id,
                        "complete": e.complete,
                        "problem": e.problem,
                        "keys": e.manifest.keys if e.manifest else None,
                        "size": e.manifest.size if e.manifest else sum(e.objects.values()),
                        "completed_at": e.manifest.completed_at if e.manifest else None,
                        "shards": len(e.manifest.shards) if e.manifest else None,
                    }
                    for e in entries
                ],
            }
        )
        return
    table = Table(title=f"backups in {storage.url}")
    for column in ("id", "state", "shards", "keys", "size", "completed"):
        table.add_column(column)
    for e in entries:
        if e.manifest:
            table.add_row(
                e.id,
                "[green]complete[/green]",
                str(len(e.manifest.shards)),
                str(e.manifest.keys),
                f"{e.manifest.size / 1e6:.1f} MB",
                e.manifest.completed_at.isoformat(timespec="seconds"),
            )
        else:
            table.add_row(e.id, f"[yellow]incomplete[/yellow] ({e.problem})", "-", "-", "-", "-")
    out.print(table)
    for problem in survey.problems:
        out.print(f"[yellow]problem[/yellow]: {escape(problem)}", highlight=False, soft_wrap=True)


@backup_app.command("verify")
def backup_verify(
    backup: Annotated[str, typer.Argument(help="Backup id, or 'latest'.")],
    location: LocationOpt = None,
    target: StorageTargetOpt = None,
    state_dir: StateDir = DEFAULT_STATE,
    json_out: JsonOut = False,
) -> None:
    """Checksums, sizes and redis-check-rdb for every shard. Exit 1 on any problem."""
    location, named = _split(_location(location, target, state_dir), backup)
    storage = open_storage(location)
    manifest = catalog.resolve(storage, named or backup)
    checks = catalog.verify(storage, manifest)
    ok = all(c.ok for c in checks)
    if json_out:
        emit(
            {
                "backup": manifest.id,
                "ok": ok,
                "shards": [
                    {"shard": c.shard, "ok": c.ok, "problems": c.problems, "keys": c.keys_read}
                    for c in checks
                ],
            }
        )
    else:
        for c in checks:
            state = "[green]ok[/green]" if c.ok else "[red]FAILED[/red]"
            out.print(f"shard {c.shard} ({c.object}): {state} {'; '.join(c.problems)}")
        out.print(f"backup {manifest.id}: {'verified' if ok else 'CORRUPT'}")
    if not ok:
        raise typer.Exit(1)


@backup_app.command("prune")
def backup_prune(
    keep_last: Annotated[int, typer.Option(help="Always keep this many newest backups.")],
    keep_days: Annotated[float, typer.Option(help="Keep every backup younger than this.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, delete nothing.")] = False,
    location: LocationOpt = None,
    target: StorageTargetOpt = None,
    state_dir: StateDir = DEFAULT_STATE,
    json_out: JsonOut = False,
) -> None:
    """Delete old backups from a file:// location (GCS uses bucket lifecycle rules)."""
    storage = _storage(location, target, state_dir)
    plan = catalog.prune(storage, keep_last, keep_days, dry_run=dry_run)
    if json_out:
        emit(
            {"location": storage.url, "dry_run": dry_run, "keep": plan.keep, "delete": plan.delete}
        )
    else:
        verb = "would delete" if dry_run else "deleted"
        out.print(f"{verb} {len(plan.delete)} backup(s), kept {len(plan.keep)}")
        for backup_id in plan.delete:
            out.print(f"  {verb} {backup_id}")


@backup_app.command("status")
def backup_status(
    max_age: Annotated[
        float | None, typer.Option(help="Seconds a backup may be old (schedule + slack).")
    ] = None,
    prometheus: Annotated[
        bool, typer.Option("--prometheus", help="Print Prometheus text-format metrics.")
    ] = False,
    location: LocationOpt = None,
    target: StorageTargetOpt = None,
    state_dir: StateDir = DEFAULT_STATE,
    json_out: JsonOut = False,
) -> None:
    """Age of the newest complete backup; exit 1 when there is none or it is too old."""
    if prometheus and json_out:
        raise ConfigError("--json and --prometheus are two formats of one answer: choose one")
    storage = _storage(location, target, state_dir)
    state = catalog.freshness(storage, max_age)
    if prometheus:
        out.file.write(state.prometheus())
    elif json_out:
        emit(
            {
                "location": storage.url,
                "latest": state.latest.id if state.latest else None,
                "completed_at": state.latest.completed_at if state.latest else None,
                "age_s": state.age_s,
                "max_age_s": max_age,
                "fresh": state.fresh,
            }
        )
    else:
        if state.latest is None:
            out.print(f"[red]no complete backup[/red] in {storage.url}")
        else:
            colour = "green" if state.fresh else "red"
            out.print(
                f"newest backup {state.latest.id}: [{colour}]{state.age_s:.0f} s old[/{colour}]"
                + (f" (allowed {max_age:.0f} s)" if max_age is not None else "")
            )
    if not state.fresh:
        raise typer.Exit(1)


# ---- restore ------------------------------------------------------------------------


def _print_restore(report: RestoreReport) -> None:
    colour = "green" if report.verified else "red"
    out.print(
        f"[{colour}]{'verified' if report.verified else 'NOT VERIFIED'}[/{colour}]: "
        f"backup {report.backup} ({report.method} path), {report.keys_restored} of "
        f"{report.keys_in_backup} keys ({report.keys_expired} expired since the snapshot), "
        f"{report.sample_checked} sampled keys compared, "
        f"{len(report.sample_mismatches)} differ"
    )
    out.print(
        f"RTO {report.rto_s:.1f} s; copy {report.copy_s:.1f} s, "
        f"{report.keys_per_s:,.0f} keys/s, {report.mb_per_s:.1f} MB/s of RDB"
    )


def restore_cmd(
    ctx: typer.Context,
    location: LocationOpt = None,
    backup: Annotated[str, typer.Option(help="Backup id, or 'latest'.")] = "latest",
    force: Annotated[
        bool, typer.Option("--force", help="Empty a non-empty target first (FLUSHALL).")
    ] = False,
    target: TargetOpt = None,
    node: NodeOpt = None,
    ca: CaOpt = None,
    cert: CertOpt = None,
    key: KeyOpt = None,
    user: UserOpt = None,
    password_file: PasswordFileOpt = None,
    state_dir: StateDir = DEFAULT_STATE,
    json_out: JsonOut = False,
) -> None:
    """Restore a backup into a cluster of any shape (as admin), then verify it."""
    asked = backup if given_options(ctx, "backup")["--backup"] else None
    location, named = _split(_location(location, target, state_dir), asked)
    if target == "local":  # before anything is read: the mistake is the command line's
        refuse_local_cluster_flags(node, ca, cert, key, user, password_file)
    storage = open_storage(location)
    manifest = catalog.resolve(storage, named or backup)
    access = cluster_access(
        acl.ADMIN,
        target=target,
        state_dir=state_dir,
        nodes=node,
        ca=ca,
        cert=cert,
        key=key,
        user=user,
        password_file=password_file,
    )
    with _counting(show_progress(json_out), f"restoring {manifest.id}", manifest.keys) as progress:
        if access.twin is not None:
            from redisops.local.restore import restore_into_twin

            report = restore_into_twin(
                access.twin, storage, manifest, force=force, progress=progress
            )
        else:
            report = restore(
                storage,
                manifest,
                Target(access.endpoints, access.tls, access.credentials),
                force=force,
                progress=progress,
            )
    if json_out:
        emit({**report.model_dump(mode="json"), "verified": report.verified})
    else:
        _print_restore(report)
    if not report.verified:
        raise typer.Exit(1)


# ---- drills -------------------------------------------------------------------------


@drill_app.command("restore")
def drill_restore(
    ctx: typer.Context,
    target: TargetOpt = None,
    location: LocationOpt = None,
    backup: Annotated[str, typer.Option(help="Backup to prove (without --target).")] = "latest",
    shards: Annotated[
        int, typer.Option(help="Shards of the scratch cluster (without --target).")
    ] = 4,
    max_age: Annotated[
        float | None, typer.Option(help="Fail when the backup is older (seconds).")
    ] = None,
    state_dir: StateDir = DEFAULT_STATE,
    json_out: JsonOut = False,
) -> None:
    """--target local: back up the twin now, restore into a scratch twin with one more
    shard, verify. Otherwise: restore an existing backup (--from) into a scratch cluster."""
    say = logger.info
    if target == "local":
        from redisops.local.twin import Twin

        refuse_unused(
            "--target local (it backs up the twin now and restores into one more shard)",
            given_options(ctx, "backup", "shards"),
        )
        twin = Twin(state_dir)
        storage = _storage(location, target, state_dir)
        with recorded(storage, "drill") as outcome:
            report = drill_local(twin, storage, max_age_s=max_age, say=say)
            outcome.judge(report.ok, "; ".join(report.problems) or report.backup_id)
    elif target is not None:
        raise ConfigError(f"--target {target!r}: only 'local'; or give --from for a backup")
    else:
        storage = _storage(location, None, state_dir)
        with recorded(storage, "drill") as outcome:
            report = drill_backup(
                storage, backup, scratch_shards=shards, max_age_s=max_age, say=say
            )
            outcome.judge(report.ok, "; ".join(report.problems) or report.backup_id)
    if json_out:
        emit(report.model_dump(mode="json"))
    else:
        _print_restore(report.restore)
        rpo = report.rpo_before_s if target == "local" else report.rpo_s
        out.print(
            f"drill {'passed' if report.ok else 'FAILED'}: RPO "
            + ("n/a (no backup before)" if rpo is None else f"{rpo:.0f} s")
            + f", RTO {report.restore.rto_s:.1f} s"
            + (f" — {'; '.join(report.problems)}" if report.problems else "")
        )
    if not report.ok:
        raise typer.Exit(1)


@drill_app.command("job-spec")
def drill_job_spec(
    namespace: Annotated[str, typer.Option(help="The scratch namespace the Job runs in.")],
    image: Annotated[str, typer.Option(help="The platform image (pinned by digest).")],
    location: Annotated[str, typer.Option("--from", help="gs://bucket/prefix of backups.")],
    service_account: Annotated[
        str, typer.Option(help="Kubernetes ServiceAccount bound to the drill identity.")
    ],
    shards: Annotated[int, typer.Option(help="Shards of the scratch cluster.")] = 4,
    max_age: Annotated[float | None, typer.Option(help="Fail on an older backup (s).")] = None,
) -> None:
    """Print the GKE restore-drill Job as JSON (for `kubectl apply -f -`)."""
    job = drill_job(
        namespace=namespace,
        image=image,
        location=location,
        service_account=service_account,
        scratch_shards=shards,
        max_backup_age_s=None if max_age is None else int(max_age),
    )
    out.file.write(json.dumps(as_dict(job), indent=2) + "\n")
