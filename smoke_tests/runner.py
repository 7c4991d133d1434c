"""Run the smoke suite and report: JUnit XML, a JSON report with every number, a summary.

The gate passes when no check failed and every skipped check names a capability the
target declares absent (capabilities.py); any other skip fails it, named in the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from smoke_tests.capabilities import DECLARED, Declared, judge

SUITE_DIR = Path(__file__).parent


class Collector:
    """A pytest plugin that keeps each check's outcome and measurements."""

    def __init__(self) -> None:
        self.tests: dict[str, dict[str, Any]] = {}
        self.declared: Declared | None = None  # None: the target never loaded

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.declared = session.config.stash.get(DECLARED, None)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.tests.setdefault(
            report.nodeid,
            {"id": report.nodeid, "outcome": "passed", "duration_s": 0.0, "measurements": {}},
        )
        entry["duration_s"] = round(entry["duration_s"] + report.duration, 3)
        for name, value in report.user_properties:
            entry["measurements"][name] = value
        if report.failed:
            entry["outcome"] = "failed" if report.when == "call" else "error"
            entry["message"] = _short(report.longreprtext)
        elif report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "skipped"
            longrepr = report.longrepr
            if isinstance(longrepr, tuple) and len(longrepr) == 3:
                entry["message"] = str(longrepr[2])


def _short(text: str, limit: int = 600) -> str:
    lines = [line for line in text.splitlines() if line.startswith("E ")]
    summary = "\n".join(lines) if lines else text
    return summary[-limit:]


def judge_skips(tests: list[dict[str, Any]], declared: Declared | None) -> list[dict[str, Any]]:
    """Every skipped check with the capability it names, its reason, and whether the
    target's declarations allow it; each test entry gets the same under `skip`."""
    skips: list[dict[str, Any]] = []
    for test in tests:
        if test["outcome"] != "skipped":
            continue
        skip = judge(test.get("message", ""), declared)
        test["skip"] = dataclasses.asdict(skip)
        skips.append({"test": test["id"], **test["skip"]})
    return skips


def measurements(tests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Flatten per-test properties (`x`, `x.unit`, `x.goal`, ...) into one table."""
    table: dict[str, dict[str, Any]] = {}
    for test in tests:
        for name, value in test["measurements"].items():
            base, _, attr = name.partition(".")
            row = table.setdefault(base, {"test": test["id"]})
            row[attr or "value"] = value
    return table


def run(
    target: str,
    state_dir: Path | None,
    report_dir: Path,
    *,
    no_disruption: bool = False,
    select: str | None = None,
    target_file: Path | None = None,
    quiet_stdout: bool = False,
) -> dict[str, Any]:
    """Run the suite against `target`; return the JSON report (also written to disk)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    junit = report_dir / "smoke-junit.xml"
    args = [
        str(SUITE_DIR),
        "-c",
        str(SUITE_DIR / "smoke.ini"),
        "--rootdir",
        str(SUITE_DIR),
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
        f"--target={target}",
        "-q",
    ]
    if state_dir is not None:
        args.append(f"--state-dir={state_dir}")
    if target_file is not None:
        args.append(f"--target-file={target_file}")
    if no_disruption:
        args.append("--no-disruption")
    if select:
        args += ["-k", select]
    collector = Collector()
    started = time.monotonic()
    stdout = contextlib.redirect_stdout(sys.stderr) if quiet_stdout else contextlib.nullcontext()
    with stdout:
        exit_code = int(pytest.main(args, plugins=[collector]))
    tests = list(collector.tests.values())
    skips = judge_skips(tests, collector.declared)
    counts = {
        outcome: sum(1 for t in tests if t["outcome"] == outcome)
        for outcome in ("passed", "failed", "error", "skipped")
    }
    counts["skipped_not_allowed"] = sum(1 for s in skips if not s["allowed"])
    failing = counts["failed"] + counts["error"] + counts["skipped_not_allowed"]
    ok = exit_code == 0 and failing == 0
    report = {
        "target": target,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 2),
        "ok": ok,
        # the gate's exit code: pytest's, or 1 (tests failed) when only a skip failed it
        "exit_code": exit_code or (0 if ok else int(pytest.ExitCode.TESTS_FAILED)),
        "pytest_exit_code": exit_code,
        "counts": counts,
        "absent_capabilities": dict(collector.declared.absent) if collector.declared else None,
        "skips": skips,
        "measurements": measurements(tests),
        "tests": tests,
        "junit_xml": str(junit),
    }
    (report_dir / "smoke-report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
