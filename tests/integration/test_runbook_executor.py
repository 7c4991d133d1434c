"""The runbook executor against a real twin: a page that passes with its data intact, a
verify that fails at its page line (through the command line, report included), a page
that deletes a seeded key and is caught by the data guard; and how the one bash process
per page reports failures, timeouts and early exits at page lines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest

from redisops import acl
from redisops.local.twin import Twin
from redisops.runbooks import Page, parse_page, render_script
from tests.runbooks.harness import load_page, run_page, write_report
from tests.runbooks.shell import REPO, Timeouts, run_script

pytestmark = pytest.mark.integration

PASSING = """
    # A passing procedure

    <!-- runbook: shards=3 replicas=1 data-loss=none -->

    ## Preconditions

    ```sh gke no-twin
    kubectl get pods -n redis
    ```

    ## Steps

    ```sh run
    STATUS=$(redisops local status --json)
    test "$REDISOPS_TARGET" = local
    ```

    ## Verify

    ```sh verify
    echo "$STATUS" | python -c 'import json, sys; assert json.load(sys.stdin)["healthy"]'
    ```

    ## Rollback

    Nothing to undo.
"""

# Line 16 fails: the twin is not a GKE target. Line 17 must not run.
FAILING_VERIFY = """
    # A failing verify

    ## Steps

    ```sh run
    touch "$MARKER_DIR/steps-ran"
    ```

    ## Verify

    ```sh verify
    python -c 'import sys; sys.exit(0)'
    python -c '
    import sys
    sys.exit(0)'
    python -c 'import sys; sys.exit(3)'
    touch "$MARKER_DIR/after-failure"
    ```

    ## Rollback

    Nothing.
"""

DELETES_A_KEY = """
    # A page that loses a seeded key
    <!-- runbook: data-loss={loss} -->

    ## Steps

    ```sh run
    python - <<'EOF'
    import os
    from pathlib import Path
    from redisops.client import Endpoint, connect_cluster
    from redisops.local.twin import Twin
    twin = Twin(Path(os.environ["REDISOPS_STATE_DIR"]))
    nodes = [Endpoint(host="127.0.0.1", port=p) for p in twin.settings().ports]
    rc = connect_cluster(nodes, twin.client_tls("admin"), twin.credentials("admin"))
    key = next(rc.scan_iter(match="smoke:runbook:*:seed:*", count=1000))
    assert rc.delete(key) == 1
    print("deleted", key)
    EOF
    ```

    ## Verify

    ```sh verify
    true
    ```

    ## Rollback

    None: the key is gone.
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.md"
    path.write_text(dedent(text).lstrip("\n"))
    return path


def test_a_passing_page_runs_every_block_and_keeps_every_key(
    session_twin: Twin, tmp_path: Path
) -> None:
    page = load_page(write(tmp_path, "passing", PASSING))
    result = run_page(page, session_twin, work_dir=tmp_path / "logs")
    assert result.passed, result.failure
    assert (result.blocks_run, result.blocks_total) == (2, 2)
    guard = result.guard
    assert guard is not None
    assert (guard.seeded_keys, guard.stream_entries, guard.lost) == (2048, 500, 0)
    assert guard.writes > 0 and guard.writes_acked > 0  # 3 x 1: replicas acknowledge
    assert result.not_tested == [f"{page.source}:7"]
    write_report([result], tmp_path / "runbooks.json")
    row = json.loads((tmp_path / "runbooks.json").read_text())["pages"][0]
    assert row["status"] == "passed" and row["guard"]["keys_checked"] == guard.keys_checked
    # Nothing the page or the report shows holds a password of the twin.
    shown = Path(result.log or "").read_text() + (tmp_path / "runbooks.json").read_text()
    for role in acl.ROLES:
        assert session_twin.credentials(role).password.get_secret_value() not in shown


def test_a_failing_verify_names_its_page_line_and_stops_the_page(
    session_twin: Twin, tmp_path: Path
) -> None:
    """Through the command line, as a person would run it; the report names page:line."""
    path = write(tmp_path, "failing", FAILING_VERIFY)
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "tests.runbooks.run", "run", str(path), "--json"),
            *("--state-dir", str(session_twin.layout.root), "--report", str(report)),
            *("--logs", str(tmp_path / "logs")),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "MARKER_DIR": str(tmp_path)},
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    (row,) = json.loads(report.read_text())["pages"]
    assert row == json.loads(proc.stdout)[0]
    assert row["failure"].startswith(
        f"{path}:16: `python -c 'import sys; sys.exit(3)'` exited 3\n"
    ), row["failure"]
    assert (tmp_path / "steps-ran").exists()
    assert not (tmp_path / "after-failure").exists()
    assert row["guard"]["lost"] == 0


@pytest.mark.parametrize(
    ("loss", "passed"), [("none", False), ("allowed", True)], ids=["data-loss=none", "allowed"]
)
def test_the_data_guard_catches_a_deleted_seeded_key(
    session_twin: Twin, tmp_path: Path, loss: str, passed: bool
) -> None:
    page = load_page(write(tmp_path, "deletes", DELETES_A_KEY.replace("{loss}", loss)))
    result = run_page(page, session_twin, work_dir=tmp_path / "logs")
    assert result.guard is not None and result.guard.lost_seeded == 1
    assert result.passed is passed, result.failure
    if not passed:
        assert result.failure is not None
        assert re.match(
            rf"{re.escape(page.source)}:2: data guard: lost 1 of 2048 seeded keys "
            r"\(e\.g\. smoke:runbook:[0-9a-f]+:seed:\d+\)",
            result.failure,
        ), result.failure


def test_a_page_for_another_shape_is_refused_before_anything_runs(
    session_twin: Twin, tmp_path: Path
) -> None:
    text = PASSING.replace("shards=3 replicas=1", "shards=4 replicas=2")
    result = run_page(load_page(write(tmp_path, "four", text)), session_twin, work_dir=tmp_path)
    assert not result.passed and result.guard is None and result.blocks_run == 0
    assert "needs a twin of shards=4 replicas=2" in (result.failure or "")
    assert "this twin has shards=3 replicas=1" in (result.failure or "")


# ---- the one bash process, without a twin ----------------------------------------------


def script_page(body: str, meta: str = "") -> Page:
    text = f"# T\n{meta}\n## Steps\n\n" + dedent(body).lstrip("\n")
    return parse_page(text, "runbooks/t.md", "t", kind="procedure").require_valid()


SHELL_CASES = [
    (
        "inside-a-function",
        """
        ```sh run
        check() {
          test -e /nonexistent
        }
        ```

        ```sh verify
        check
        ```
        """,
        r"runbooks/t\.md:12: `check` exited 1 "
        r"\(inside it: runbooks/t\.md:7: `test -e /nonexistent`\)",
    ),
    (
        "pipefail",
        """
        ```sh run
        echo a \\
          | grep -q nothing-like-it \\
          | cat
        ```
        """,
        r"runbooks/t\.md:6: `echo a \| grep -q nothing-like-it \| cat` exited 1",
    ),
    (
        "unset-variable",
        """
        ```sh run
        echo "$NO_SUCH_VARIABLE"
        ```
        """,
        r"runbooks/t\.md:6: `echo \"\$NO_SUCH_VARIABLE\"` exited 1\n"
        r".*\n(.*\n)*.*NO_SUCH_VARIABLE: unbound",
    ),
    (
        "command-substitution",
        """
        ```sh run
        true
        X=$(false)
        ```
        """,
        r"runbooks/t\.md:7: `X=\$\(false\)` exited 1",
    ),
    (
        "early-exit",
        """
        ```sh run
        exit 0
        ```

        ```sh verify
        true
        ```
        """,
        r"runbooks/t\.md:6: the page stopped early \(exit 0\) after `exit 0`",
    ),
    (
        "syntax",
        """
        ```sh run
        if true; then echo; fi fi
        ```
        """,
        r"runbooks/t\.md:6: bash: syntax error near unexpected token `fi'",
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [c[1:] for c in SHELL_CASES], ids=[c[0] for c in SHELL_CASES]
)
def test_failures_are_reported_at_page_lines(tmp_path: Path, body: str, expected: str) -> None:
    outcome = run_script(
        render_script(script_page(body)),
        state_dir=tmp_path,
        work_dir=tmp_path,
        timeouts=Timeouts(block_s=30, page_s=60),
    )
    assert outcome.failure is not None and re.match(expected, outcome.failure), outcome.failure


def test_a_block_that_hangs_is_stopped_at_its_timeout(tmp_path: Path) -> None:
    body = """
        ```sh run
        echo started
        sleep 60 &
        sleep 60
        ```
    """
    page = script_page(body, meta="<!-- runbook: block-timeout=1 -->\n")
    outcome = run_script(
        render_script(page),
        state_dir=tmp_path,
        work_dir=tmp_path,
        timeouts=Timeouts(block_s=page.meta.block_timeout, page_s=page.meta.timeout),
    )
    assert outcome.duration_s < 15
    assert outcome.failure is not None
    assert outcome.failure.startswith(
        "runbooks/t.md:9: `sleep 60` still running after the block timeout of 1 s"
    ), outcome.failure
    assert "started" in outcome.failure  # the end of the output comes with it


def test_blocks_share_one_shell_and_see_the_target(tmp_path: Path) -> None:
    body = """
        ```sh run
        cd redisops
        VALUE=one
        ```

        ```sh verify
        test "$VALUE" = one && test "$(basename "$PWD")" = redisops
        test "$REDISOPS_TARGET" = local && test "$REDISOPS_STATE_DIR" = "$EXPECTED_STATE"
        test "$(command -v redisops)" = "$EXPECTED_BIN/redisops"
        ```
    """
    outcome = run_script(
        render_script(script_page(body)),
        state_dir=tmp_path,
        work_dir=tmp_path,
        timeouts=Timeouts(block_s=30, page_s=60),
        extra_env={"EXPECTED_STATE": str(tmp_path), "EXPECTED_BIN": str(Path(sys.prefix) / "bin")},
    )
    assert outcome.ok, outcome.failure
    assert (outcome.blocks_run, outcome.exit_code) == (2, 0)
