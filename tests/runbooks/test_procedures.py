"""`make runbooks`: every page of runbooks/ follows the convention of its README
("Executable procedures"), and every page with executable blocks runs against a twin of
the shape it declares, inside the data guard, in the index's order.

A failure names the page and line (`runbooks/<page>.md:<line>: <command> exited N`) and
shows the end of the page's output; every page's log is in reports/runbooks/, the
results in reports/runbooks.json.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from redisops.runbooks import MARKERS, Page, render_script
from tests.conftest import requires_redis
from tests.runbooks.conftest import RESULTS
from tests.runbooks.harness import RUNBOOKS, repository_pages, run_page, write_report
from tests.runbooks.twins import TwinPool

PAGES = repository_pages()
RUNNABLE = [p for p in PAGES if p.executable]
# Beyond the page's own timeout: starting a twin, the data guard, the health check.
SLACK_S = 180


def _id(page: Page) -> str:
    return page.name


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_page_follows_the_convention(page: Page, tmp_path: Path) -> None:
    assert page.problems == (), "\n" + "\n".join(str(p) for p in page.problems)
    if page.executable:  # its script (rollback blocks included) is valid bash
        script = tmp_path / f"{page.name}.sh"
        script.write_text(render_script(page, with_rollback=True).text)
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{page.source}: {result.stderr.replace(str(script), '')}"


def test_the_index_documents_the_convention() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    assert "\n## Executable procedures\n" in index
    for marker in (*MARKERS, "gke no-twin"):
        assert f"sh {marker}" in index, f"runbooks/README.md does not document sh {marker}"


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwinPool]:
    requires_redis()
    pool = TwinPool(tmp_path_factory.mktemp("runbook-twins"), RUNNABLE)
    try:
        yield pool
    finally:
        pool.close()
        if RESULTS:
            write_report(RESULTS)


NONE_YET = pytest.param(
    None,
    marks=pytest.mark.skip(
        reason="no page of runbooks/ has executable blocks (sh run, sh twin, sh verify) yet"
    ),
    id="no-executable-page-yet",
)


@pytest.mark.integration
@pytest.mark.parametrize(
    "page",
    [
        pytest.param(p, marks=pytest.mark.timeout(p.meta.timeout + SLACK_S), id=p.name)
        for p in RUNNABLE
    ]
    or [NONE_YET],
)
def test_procedure_runs_on_the_twin(page: Page, twins: TwinPool) -> None:
    twin = twins.twin_for(page)
    try:
        result = run_page(page, twin, with_rollback=True)
    finally:
        twins.done_with(page)
    RESULTS.append(result)
    assert result.passed, "\n" + (result.failure or "")
