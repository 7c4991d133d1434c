"""The runbook run's summary table at the end of the pytest output."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from tests.runbooks.harness import PageResult, results_table

RESULTS: list[PageResult] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    buffer = io.StringIO()
    Console(file=buffer, width=140, color_system=None).print(results_table(RESULTS))
    terminalreporter.write_sep("-", "runbooks (reports/runbooks.json)")
    terminalreporter.write(buffer.getvalue())
