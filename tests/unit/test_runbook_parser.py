"""redisops.runbooks: a page's blocks and what they are for, every breach of the convention
with its page line, the runbook comment, and the script whose lines are the page's."""

from __future__ import annotations

from textwrap import dedent

import pytest

from redisops import runbooks
from redisops.runbooks import Meta, Page, RunbookError, parse_page, render_script
from tests.runbooks.guard import GUARD_PREFIX, seed_keys

SOURCE = "runbooks/p.md"


def page(text: str, kind: runbooks.PageKind = "procedure") -> Page:
    return parse_page(dedent(text).lstrip("\n"), SOURCE, "p", kind=kind)


def problems(text: str, kind: runbooks.PageKind = "procedure") -> list[tuple[int, str]]:
    return [(p.line, p.message) for p in page(text, kind).problems]


VALID = """
    # Do a thing
    <!-- runbook: shards=4 replicas=2 proxy=yes monitoring=no data-loss=allowed -->

    Intro.

    ## Preconditions

    ```sh verify
    redisops local status --json
    ```

    ## Steps

    ```sh gke
    kubectl get pods -n redis
    ```

    ```sh twin
    redisops local status \\
      --json
    python - <<'EOF'
    print("# not a comment, 'not a quote")
    EOF
    X='a
    b'  # a quote over two lines
    ```

    ```sh gke no-twin
    kubectl patch pvc data-0 -p '{}'
    ```

    ```json
    {"an": "example"}
    ```

    ## Verify

    ```sh run
    echo ok
    ```

    ## Rollback

    ```sh gke
    pulumi up -s prod
    ```

    ```sh rollback
    redisops local status
    ```
"""


def test_a_page_is_read_into_blocks_with_kind_lines_and_section() -> None:
    parsed = page(VALID)
    assert parsed.problems == ()
    got = [(b.kind, b.line, b.end_line, b.section, b.no_twin) for b in parsed.blocks]
    assert got == [
        ("verify", 8, 10, "Preconditions", False),
        ("gke", 14, 16, "Steps", False),
        ("twin", 18, 26, "Steps", False),
        ("gke", 28, 30, "Steps", True),
        ("other", 32, 34, "Steps", False),
        ("run", 38, 40, "Verify", False),
        ("gke", 44, 46, "Rollback", False),
        ("rollback", 48, 50, "Rollback", False),
    ]
    assert parsed.executable
    assert [b.line for b in parsed.executed_blocks()] == [8, 18, 38]
    assert [b.line for b in parsed.executed_blocks(with_rollback=True)] == [8, 18, 38, 48]
    assert [b.where for b in parsed.not_tested()] == ["runbooks/p.md:28"]


def test_commands_span_continuations_heredocs_and_open_quotes() -> None:
    twin = page(VALID).blocks[2]
    got = [(c.line, c.end_line, c.display) for c in twin.commands]
    assert got == [
        (19, 20, "redisops local status --json"),
        (21, 23, "python - <<'EOF' ..."),
        (24, 25, "X='a ..."),
    ]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["# only a comment", "", "echo a"], [(3, 3)]),
        (["cat <<-END", "\tbody", "\tEND", "echo after"], [(1, 3), (4, 4)]),
        (["echo 'it''s' \\", "  done"], [(1, 2)]),
        (['echo "a # b" # don\'t count this quote', "echo next"], [(1, 1), (2, 2)]),
        (["echo $((1 << 2)) <<< here", "echo next"], [(1, 1), (2, 2)]),
    ],
    ids=["comment-lines", "heredoc-strip-tabs", "continuation", "comment-quote", "not-heredoc"],
)
def test_split_commands(lines: list[str], expected: list[tuple[int, int]]) -> None:
    commands = runbooks.split_commands(lines, first_line=1)
    assert [(c.line, c.end_line) for c in commands] == expected


def test_the_runbook_comment_sets_every_key() -> None:
    meta = page(VALID).meta
    assert meta == Meta(shards=4, replicas=2, proxy=True, data_loss="allowed", line=2)
    assert meta.shape == (4, 2, True, False)


def test_a_page_without_a_comment_gets_the_defaults() -> None:
    meta = page("# T\n\n## Steps\n\n```sh run\ntrue\n```\n").meta
    assert meta == Meta()
    assert (meta.shards, meta.replicas, meta.proxy, meta.monitoring) == (3, 1, False, False)
    assert (meta.data_loss, meta.twin, meta.rollback) == ("none", "shared", "manual")


def test_the_comment_may_span_lines() -> None:
    text = """
        # T
        <!-- runbook: shards=5
             twin=own rollback=safe timeout=900 block-timeout=30 -->
        ## Steps
        ```sh run
        true
        ```
        ## Rollback
        ```sh rollback
        true
        ```
    """
    meta = page(text).meta
    assert (meta.shards, meta.twin, meta.rollback, meta.timeout, meta.block_timeout) == (
        5,
        "own",
        "safe",
        900,
        30,
    )


RUN = "```sh run\ntrue\n```\n"

# (id, page text, page kind, [(line, part of the message)])
ERRORS: list[tuple[str, str, runbooks.PageKind, list[tuple[int, str]]]] = [
    ("plain-sh", "# T\n\n```sh\necho\n```\n" + RUN, "procedure", [(3, "```sh on a procedure")]),
    ("plain-bash", "# T\n```bash\necho\n```\n" + RUN, "procedure", [(2, "```bash on a procedure")]),
    ("no-info", "# T\n```\necho\n```\n" + RUN, "procedure", [(2, "without an info string")]),
    ("alert-plain-ok", "# T\n```sh\necho\n```\n", "alert", []),
    ("alert-bad-marker", "# T\n```sh runn\necho\n```\n", "alert", [(2, "unknown marker 'runn'")]),
    ("marker-after-bash", "# T\n```bash run\necho\n```\n", "alert", [(2, "follow `sh`")]),
    ("extra-word", "# T\n" + RUN + "```sh run now\nx\n```\n", "procedure", [(5, "'now'")]),
    ("no-twin-on-verify", "# T\n```sh verify no-twin\nx\n```\n", "procedure", [(2, "no-twin")]),
    ("gke-alone", "# T\n```sh gke\nkubectl\n```\n" + RUN, "procedure", [(2, "no twin equivalent")]),
    (
        "twin-after-heading",
        "# T\n## Steps\n```sh gke\nk\n```\n### Next\n```sh twin\nr\n```\n",
        "procedure",
        [(3, "no twin equivalent")],
    ),
    (
        "twin-after-next-gke",
        "# T\n```sh gke\nk\n```\n```sh gke\nk\n```\n```sh twin\nr\n```\n",
        "procedure",
        [(2, "no twin equivalent")],
    ),
    ("gke-no-twin-ok", "# T\n```sh gke no-twin\nk\n```\n" + RUN, "procedure", []),
    (
        "run-in-rollback",
        "# T\n" + RUN + "## Rollback\n```sh run\nundo\n```\n",
        "procedure",
        [(6, "Rollback section would run")],
    ),
    (
        "gke-twin-in-rollback",
        "# T\n" + RUN + "## Rollback\n```sh gke\nk\n```\n```sh twin\nr\n```\n",
        "procedure",
        [(6, "```sh rollback block"), (9, "Rollback section would run")],
    ),
    (
        "gke-rollback-in-rollback-ok",
        "# T\n" + RUN + "## Rollback\n```sh gke\nk\n```\n```sh rollback\nr\n```\n",
        "procedure",
        [],
    ),
    ("set-plus-e", "# T\n```sh run\ntrue\nset +e\n```\n", "procedure", [(4, "`set +e`")]),
    ("set-plus-o", "# T\n```sh verify\nset +o pipefail\n```\n", "procedure", [(3, "pipefail")]),
    ("trap", "# T\n```sh run\nx; trap 'echo' EXIT\n```\n", "procedure", [(3, "`trap`")]),
    ("quoted-set-ok", "# T\n```sh run\necho 'set +e'; echo \"trap\"\n```\n", "procedure", []),
    ("gke-may-trap", "# T\n```sh gke no-twin\ntrap x EXIT\n```\n" + RUN, "procedure", []),
    (
        "kubectl-run",
        "# T\n```sh run\ntrue\nkubectl get pods\n```\n",
        "procedure",
        [(4, "`kubectl`")],
    ),
    (
        "pulumi-substituted",
        '# T\n```sh verify\nLOC="$(pulumi stack output x)"\n```\n',
        "procedure",
        [(3, "`pulumi` in a ```sh verify")],
    ),
    ("gcloud-piped", "# T\n```sh run\ntrue | gcloud x\n```\n", "procedure", [(3, "`gcloud`")]),
    ("kubectl-in-words-ok", "# T\n```sh run\necho 'use kubectl'\n```\n", "procedure", []),
    ("kubectl-in-gke-ok", "# T\n```sh gke no-twin\nkubectl get pods\n```\n" + RUN, "procedure", []),
    ("unclosed", "# T\n" + RUN + "```sh run\ntrue\n", "procedure", [(5, "never closed")]),
    ("nothing-executed", "# T\n```sh gke no-twin\nk\n```\n", "procedure", [(1, "at least one")]),
    (
        "safe-without-rollback",
        "# T\n<!-- runbook: rollback=safe -->\n" + RUN,
        "procedure",
        [(2, "no ```sh rollback block")],
    ),
    (
        "unknown-key",
        "# T\n<!-- runbook: shard=3 -->\n" + RUN,
        "procedure",
        [(2, "unknown key 'shard'")],
    ),
    ("too-few-shards", "# T\n<!-- runbook: shards=2 -->\n" + RUN, "procedure", [(2, ">= 3")]),
    ("bad-yes-no", "# T\n<!-- runbook: proxy=maybe -->\n" + RUN, "procedure", [(2, "yes or no")]),
    ("bad-choice", "# T\n<!-- runbook: data-loss=some -->\n" + RUN, "procedure", [(2, "none or")]),
    ("twice", "# T\n<!-- runbook: shards=3 shards=4 -->\n" + RUN, "procedure", [(2, "twice")]),
    ("no-equals", "# T\n<!-- runbook: shards -->\n" + RUN, "procedure", [(2, "key=value")]),
    (
        "below-first-section",
        "# T\n## Steps\n<!-- runbook: shards=3 -->\n" + RUN,
        "procedure",
        [(3, "at the top of the page")],
    ),
    (
        "second-comment",
        "# T\n<!-- runbook: shards=3 -->\n<!-- runbook: replicas=2 -->\n" + RUN,
        "procedure",
        [(3, "second runbook comment")],
    ),
    ("unclosed-comment", "# T\n<!-- runbook: shards=3\n" + RUN, "procedure", [(2, "not closed")]),
]


@pytest.mark.parametrize(
    ("text", "kind", "expected"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_each_breach_is_reported_at_its_line(
    text: str, kind: runbooks.PageKind, expected: list[tuple[int, str]]
) -> None:
    found = problems(text, kind)
    assert [line for line, _ in found] == [line for line, _ in expected], found
    for (_, message), (_, part) in zip(found, expected, strict=True):
        assert part in message


def test_problems_name_the_page_and_line_and_refuse_a_script() -> None:
    parsed = page("# T\n```sh\necho\n```\n" + RUN)
    assert str(parsed.problems[0]).startswith("runbooks/p.md:2: ```sh on a procedure page")
    with pytest.raises(RunbookError, match=r"runbooks/p\.md:2: "):
        render_script(parsed)


def test_page_kind_follows_the_alert_names() -> None:
    assert runbooks.page_kind("RedisNodeDown") == "alert"
    assert runbooks.page_kind("SseProxyUnreachable") == "alert"
    assert runbooks.page_kind("restore-drill") == "procedure"


# ---- the script and its line map ------------------------------------------------------


def test_script_lines_are_page_lines() -> None:
    parsed = page(VALID)
    script = render_script(parsed)
    assert len(script.lines) == parsed.line_count + 1  # + the `done` line
    text_lines = dedent(VALID).lstrip("\n").splitlines()
    for block in script.blocks:
        for line in range(block.first_line, block.end_line):
            assert script.lines[line - 1] == text_lines[line - 1]
            assert script.page_line(line) == line
    # not executed: gke, no-twin, json, rollback blocks and prose are blank
    for line in (2, 5, 15, 29, 33, 45, 49):
        assert script.lines[line - 1] == ""
        assert script.page_line(line) is None
    assert script.lines[0].startswith('exec {__rb_ctl}>>"$RUNBOOK_CONTROL"')
    assert "set -Eeuo pipefail" in script.lines[0]
    assert "ERR" in script.lines[0] and "DEBUG" in script.lines[0]
    assert script.lines[7].startswith("printf 'block %s\\n' 0")  # the fence of line 8
    assert "runbooks/p.md:8  sh verify" in script.lines[7]
    assert script.lines[-1] == "printf 'done\\n' >&\"$__rb_ctl\""


def test_the_line_map_finds_the_command_of_any_of_its_lines() -> None:
    script = render_script(page(VALID))
    for line in (19, 20):
        command = script.command_at(line)
        assert command is not None and command.line == 19
    heredoc = script.command_at(22)
    assert heredoc is not None and heredoc.line == 21
    assert script.command_at(15) is None  # a gke block's line
    assert script.command_at(8) is None  # a fence


def test_rollback_blocks_enter_the_script_only_when_asked() -> None:
    parsed = page(VALID)
    assert render_script(parsed).page_line(49) is None
    with_rollback = render_script(parsed, with_rollback=True)
    assert with_rollback.page_line(49) == 49
    assert with_rollback.lines[48] == "redisops local status"
    assert [b.kind for b in with_rollback.blocks] == ["verify", "twin", "run", "rollback"]


def test_a_fence_on_line_one_shares_it_with_the_header() -> None:
    parsed = parse_page("```sh run\ntrue\n```\n", SOURCE, "p", kind="alert")
    first = render_script(parsed).lines[0]
    assert first.startswith("exec ") and first.endswith("'runbooks/p.md:1  sh run'")


def test_the_index_gives_the_procedure_order() -> None:
    readme = dedent(
        """
        ## Alerts
        | A | [RedisNodeDown](RedisNodeDown.md) |
        ## Procedures
        | Procedure | When | Page |
        | --- | --- | --- |
        | b | x | [second-one](second-one.md) |
        | a | y | [first-one](first-one.md), see [second-one](second-one.md) |
        ## Escalation policy
        [x](other.md)
        """
    )
    assert runbooks.procedure_order(readme) == ["second-one", "first-one"]


def test_guard_seed_keys_cover_every_eighth_of_the_slots() -> None:
    from redis.crc import key_slot

    keys = seed_keys(f"{GUARD_PREFIX}abcd:")
    assert len(keys) == 2048 == len(set(keys))
    assert sorted(key_slot(k.encode()) // 8 for k in keys) == list(range(2048))
    assert all(k.startswith("smoke:runbook:abcd:seed:") for k in keys)
