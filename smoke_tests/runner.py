"""Run the smoke suite and report: JUnit XML, a JSON report with every number, a summary."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

SUITE_DIR = Path(__file__).parent


class Collector:
    """A pytest plugin that keeps each check's outcome and measurements."""

    def __init__(self) -> None:
        self.tests: dict[str, dict[str, Any]] = {}

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
    counts = {
        outcome: sum(1 for t in tests if t["outcome"] == outcome)
        for outcome in ("passed", "failed", "error", "skipped")
    }
    report = {
        "target": target,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 2),
        "ok": exit_code == 0 and counts["failed"] == 0 and counts["error"] == 0,
        "exit_code": exit_code,
        "counts": counts,
        "measurements": measurements(tests),
        "tests": tests,
        "junit_xml": str(junit),
    }
    (report_dir / "smoke-report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
