"""The runbooks match the alerts and the CLI: one page per alert named after it with the
on-call sections, every other page a procedure, every `redisops` command and flag in a
page real, and runbooks/README.md indexing them all with their severity."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main

from redisops import alerts, runbooks
from redisops.cli import app

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
ALERT_SECTIONS = ("Meaning", "Impact", "Diagnosis", "Mitigation", "Escalation", "Verify")
PROCEDURE_SECTIONS = ("Preconditions", "Steps", "Verify", "Rollback")
ALERT_NAMES = sorted({a.name for a in alerts.ALERTS} | set(alerts.EXTERNAL_ALERTS))


def pages() -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted(RUNBOOKS.glob("*.md")) if p.name != "README.md"}


def sections(text: str) -> list[str]:
    return re.findall(r"^## (.+?)\s*$", text, re.M)


def redisops_commands(text: str) -> list[list[str]]:
    """Every `redisops ...` invocation in the page's shell code blocks (whatever their
    marker: sh, sh run, sh gke, ...), as argv (shell continuation lines joined; pipes,
    redirections and comments cut off)."""
    found = []
    page = runbooks.parse_page(text, "page.md", "page", kind="alert")
    for block in (b.text for b in page.blocks if b.is_shell):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"\|\||&&|[|;]|\$\(", line):
                try:
                    words = shlex.split(part, comments=True)
                except ValueError:
                    continue
                if "redisops" in words:
                    argv = words[words.index("redisops") + 1 :]
                    found.append([w for w in argv if not w.startswith((">", "2>"))])
    return found


def check_command(argv: list[str]) -> str | None:
    """None when `redisops argv` names a real command and real options."""
    command: Any = typer.main.get_command(app)  # typer's bundled click
    path = ["redisops"]
    words = list(argv)
    while hasattr(command, "commands") and words and not words[0].startswith("-"):
        name = words.pop(0)
        sub = command.commands.get(name)
        if sub is None:
            return f"`{' '.join(path)} {name}`: no such command"
        path.append(name)
        command = sub
    if hasattr(command, "commands"):
        return f"`{' '.join(path)}` needs a subcommand"
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for word in words:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            if flag not in known and flag != "--help":
                return f"`{' '.join(path)}` has no option {flag}"
    return None


def test_every_alert_has_a_page_named_after_it_with_the_on_call_sections() -> None:
    found = pages()
    missing = [name for name in ALERT_NAMES if name not in found]
    assert missing == [], f"alerts without a runbook page: {missing}"
    for name in ALERT_NAMES:
        text = found[name]
        assert text.startswith(f"# {name}\n"), f"{name}.md must start with '# {name}'"
        absent = [s for s in ALERT_SECTIONS if s not in sections(text)]
        assert absent == [], f"{name}.md lacks sections {absent}"


def test_every_other_page_is_a_procedure() -> None:
    for name, text in pages().items():
        if name in ALERT_NAMES:
            continue
        absent = [s for s in PROCEDURE_SECTIONS if s not in sections(text)]
        assert absent == [], (
            f"{name}.md is neither an alert's page (no alert of that name in "
            f"redisops/alerts.py) nor a procedure (lacks {absent})"
        )


def test_every_redisops_command_and_flag_in_the_runbooks_exists() -> None:
    problems = []
    count = 0
    for name, text in pages().items():
        for argv in redisops_commands(text):
            count += 1
            problem = check_command(argv)
            if problem:
                problems.append(f"{name}.md: {problem}")
    assert problems == []
    assert count >= len(ALERT_NAMES)  # the pages do use the tooling


def test_the_checker_catches_a_made_up_command_and_flag() -> None:
    assert check_command(["local", "status", "--json"]) is None
    assert check_command(["local", "frobnicate"]) is not None
    assert check_command(["backup", "create", "--target", "local", "--no-such-flag"]) is not None
    argv = redisops_commands("```sh\nX=$(redisops local status --json | jq .)\n```\n")
    assert argv == [["local", "status", "--json"]]
    marked = "```sh twin\nredisops local status \\\n  --json\n```\n\n```json\n{}\n```\n"
    assert redisops_commands(marked) == [["local", "status", "--json"]]


def test_the_index_lists_every_page_with_severity_and_escalation() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    for name in pages():
        assert f"({name}.md)" in index, f"runbooks/README.md does not link {name}.md"
    for alert in alerts.ALERTS:
        row = next((line for line in index.splitlines() if f"({alert.name}.md)" in line), "")
        assert alert.severity in row, f"README's row of {alert.name} must say {alert.severity}"
    assert "Escalation" in index


@pytest.mark.parametrize("alert", alerts.ALERTS, ids=lambda a: a.name)
def test_each_alert_links_the_page_it_has(alert: alerts.Alert) -> None:
    url = alert.runbook_url(alerts.AlertParams())
    assert url == f"runbooks/{alert.name}.md"
    assert (RUNBOOKS.parent / url).is_file()
