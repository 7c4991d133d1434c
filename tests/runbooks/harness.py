"""One page against one twin: check the page, guard the data, run the script, judge.

Used by the `make runbooks` tests (tests/runbooks/test_procedures.py) and by the command
line (`python -m tests.runbooks.run`). A page passes when it follows the convention, its
script ran every executed block to exit 0, the data guard found nothing lost that it
promised to keep (unless the page declares data-loss=allowed) and, on a shared twin, the
twin is healthy again afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import redis
from rich.table import Table

from redisops.errors import RedisOpsError
from redisops.local.settings import TwinSettings
from redisops.local.twin import Twin
from redisops.runbooks import Page, parse_page, procedure_order, render_script
from tests.runbooks.guard import DataGuard, GuardCounts, twin_client
from tests.runbooks.shell import REPO, Timeouts, run_script

RUNBOOKS = REPO / "runbooks"
REPORT = REPO / "reports" / "runbooks.json"
LOGS = REPO / "reports" / "runbooks"
HEALTHY_WITHIN_S = 30.0


@dataclass
class PageResult:
    """What one page did; the report's row."""

    page: str
    status: Literal["passed", "failed"] = "failed"
    duration_s: float = 0.0
    blocks_run: int = 0
    blocks_total: int = 0
    data_loss: str = "none"
    rollback_run: bool = False
    guard: GuardCounts | None = None
    failure: str | None = None
    log: str | None = None
    not_tested: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "page": self.page,
            "status": self.status,
            "duration_s": self.duration_s,
            "blocks_run": self.blocks_run,
            "blocks_total": self.blocks_total,
            "data_loss": self.data_loss,
            "rollback_run": self.rollback_run,
            "guard": self.guard.as_dict() if self.guard else None,
            "failure": self.failure,
            "log": self.log,
            "not_tested": self.not_tested,
        }


def source_of(path: Path) -> str:
    """How messages name a page: relative to the repository when it is in it."""
    path = path.absolute()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def load_page(path: Path) -> Page:
    return parse_page(path.read_text(), source_of(path), path.stem)


def repository_pages() -> list[Page]:
    """Every page of runbooks/ (the index excepted), in the order they are run: the
    Procedures table of runbooks/README.md first, in its order, then the rest by name."""
    order = procedure_order((RUNBOOKS / "README.md").read_text())
    paths = [p for p in sorted(RUNBOOKS.glob("*.md")) if p.name != "README.md"]
    rank = {name: i for i, name in enumerate(order)}
    paths.sort(key=lambda p: (rank.get(p.stem, len(rank)), p.stem))
    return [load_page(p) for p in paths]


def shape_problem(page: Page, settings: TwinSettings) -> str | None:
    """Why the twin cannot run the page: other shards or replicas than it declares, or no
    proxy / monitoring when it needs them (a twin with them runs pages that do not)."""
    meta = page.meta
    wrong = [
        f"{what}={have}"
        for what, have, ok in (
            ("shards", settings.shards, settings.shards == meta.shards),
            ("replicas", settings.replicas, settings.replicas == meta.replicas),
            ("proxy", "no", settings.sse_proxy or not meta.proxy),
            ("monitoring", "no", settings.monitoring or not meta.monitoring),
        )
        if not ok
    ]
    if not wrong:
        return None
    return (
        f"{page.source}:{meta.line or 1}: the page needs a twin of {meta.describe_shape()}; "
        f"this twin has {' '.join(wrong)} (start one of that shape with `redisops local up`)"
    )


def run_page(
    page: Page, twin: Twin, *, work_dir: Path = LOGS, with_rollback: bool = False
) -> PageResult:
    """Run one page against `twin` inside the data guard; never raises for the page's
    own failures (they are in the result)."""
    started = time.monotonic()
    rollback = with_rollback and page.meta.rollback == "safe"
    result = PageResult(
        page=page.source,
        data_loss=page.meta.data_loss,
        rollback_run=rollback,
        not_tested=[b.where for b in page.not_tested()],
    )
    failures = _refusals(page, twin)
    if not failures:
        failures = _guarded_run(page, twin, work_dir, rollback, result)
    result.failure = "\n".join(failures) or None
    result.status = "failed" if failures else "passed"
    result.duration_s = round(time.monotonic() - started, 2)
    return result


def _refusals(page: Page, twin: Twin) -> list[str]:
    if page.problems:
        return [str(p) for p in page.problems]
    if not page.executable:
        return []
    problem = shape_problem(page, twin.settings())
    return [problem] if problem else []


def _guarded_run(
    page: Page, twin: Twin, work_dir: Path, rollback: bool, result: PageResult
) -> list[str]:
    if not page.executable:
        return []
    script = render_script(page, with_rollback=rollback)
    guard = DataGuard(lambda: twin_client(twin))
    try:
        guard.seed()
    except (redis.RedisError, OSError) as exc:
        return [f"{page.source}:1: the data guard could not seed the twin: {exc}"]
    guard.start_writer()
    try:
        outcome = run_script(
            script,
            state_dir=twin.layout.root,
            work_dir=work_dir,
            timeouts=Timeouts(block_s=page.meta.block_timeout, page_s=page.meta.timeout),
        )
    finally:
        guard.stop_writer()
    result.blocks_run, result.blocks_total = outcome.blocks_run, outcome.blocks_total
    result.log = str(outcome.log)
    failures = [outcome.failure] if outcome.failure else []
    result.guard = guard.check()
    failures += _guard_failures(page, result.guard)
    guard.cleanup()
    if page.meta.twin == "shared":
        failures += _health_failures(page, twin)
    return failures


def _guard_failures(page: Page, counts: GuardCounts) -> list[str]:
    where = f"{page.source}:{page.meta.line or 1}"
    if counts.read_error:
        return [f"{where}: data guard: the twin's data cannot be read: {counts.read_error}"]
    if counts.lost and page.meta.data_loss == "none":
        return [
            f"{where}: data guard: {counts.describe_loss()}; the page declares data-loss=none "
            "(a page whose procedure loses data says so and declares data-loss=allowed)"
        ]
    return []


def _health_failures(page: Page, twin: Twin) -> list[str]:
    problem = wait_healthy(twin)
    if problem is None:
        return []
    return [
        f"{page.source}:{page.meta.line or 1}: the page left the shared twin unhealthy "
        f"({problem}); restore it in the page, or declare twin=own"
    ]


def wait_healthy(twin: Twin, within_s: float = HEALTHY_WITHIN_S) -> str | None:
    """None once the twin is healthy and of its declared shape; else what is wrong."""
    deadline = time.monotonic() + within_s
    while True:
        problem = _unhealthy(twin)
        if problem is None or time.monotonic() > deadline:
            return problem
        time.sleep(0.5)


def _unhealthy(twin: Twin) -> str | None:
    try:
        status = twin.status()
    except (RedisOpsError, OSError) as exc:
        return str(exc)
    settings = twin.settings()
    down = [str(n["port"]) for n in status["nodes"] if not n["running"]]
    if down:
        return f"nodes down: {', '.join(down)}"
    if not status["healthy"]:
        return "not every node reports cluster_state ok"
    roles = [n["role"] for n in status["nodes"]]
    if roles.count("primary") != settings.shards:
        return f"{roles.count('primary')} primaries for {settings.shards} shards"
    return None


# ---- the report -----------------------------------------------------------------------


def write_report(results: Sequence[PageResult], path: Path = REPORT) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "passed": sum(r.passed for r in results),
        "failed": sum(not r.passed for r in results),
        "pages": [r.as_dict() for r in results],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")


def results_table(results: Sequence[PageResult]) -> Table:
    table = Table(title="runbooks", title_justify="left")
    table.add_column("page", overflow="fold")
    for column in ("status", "s", "blocks", "keys", "acked", "lost", "data-loss"):
        table.add_column(column, justify="left" if column == "status" else "right")
    for r in results:
        g = r.guard
        colour = "green" if r.passed else "red"
        table.add_row(
            r.page,
            f"[{colour}]{r.status}[/{colour}]",
            f"{r.duration_s:.1f}",
            f"{r.blocks_run}/{r.blocks_total}",
            str(g.keys_checked) if g else "-",
            str(g.writes_acked) if g else "-",
            str(g.lost) if g else "-",
            r.data_loss,
        )
    return table
