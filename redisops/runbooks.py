"""Runbook pages as data: their fenced blocks, what each is for, and the bash script that
runs a page's executable blocks against the twin.

The convention is documented in runbooks/README.md ("Executable procedures"): a block's
info string says whether it runs everywhere (`sh run`), only on GKE (`sh gke`, followed
by its twin equivalent `sh twin`, or `sh gke no-twin`), asserts (`sh verify`) or undoes a
step (`sh rollback`); an HTML comment at the top of a page declares the twin it needs.

Pure: text in, data out. `check_page` finds every breach of the convention with its
page and line; `render_script` lays the executable blocks out on the lines they have in
the page, so bash's `$LINENO` (and its own error messages) are page lines. Running the
script is the test suite's job (tests/runbooks).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from redisops import alerts
from redisops.errors import ConfigError

BlockKind = Literal["run", "gke", "twin", "verify", "rollback", "plain", "other"]
PageKind = Literal["alert", "procedure"]

MARKERS: tuple[BlockKind, ...] = ("run", "gke", "twin", "verify", "rollback")
# Blocks executed on the twin by default; rollback blocks only on request.
EXECUTED: frozenset[BlockKind] = frozenset({"run", "twin", "verify"})
SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console", ""})
NO_TWIN = "no-twin"
ROLLBACK_SECTION = "Rollback"
# The environment variable naming the file the script reports its progress to.
CONTROL_ENV = "RUNBOOK_CONTROL"

_FENCE_OPEN = re.compile(r"^(?P<indent> {0,12})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_HEADING = re.compile(r"^(?P<level>#{1,6})\s+(?P<title>.*?)\s*#*\s*$")
_META_OPEN = re.compile(r"^\s*<!--\s*runbook:(?P<rest>.*)$")
_HEREDOC_START = re.compile(r"(?<!<)<<(?!<)(?P<strip>-?)")
_HEREDOC_WORD = re.compile(r"\s*(?P<q>['\"]?)(?P<word>[A-Za-z_][A-Za-z0-9_]*)(?P=q)")
# What would switch off the executor's error handling or replace its traps.
_FORBIDDEN = re.compile(
    r"(?:^|[;&|({])\s*(?P<what>set\s+\+[a-zA-Z]*[eu]\b|set\s+\+o\s+(?:errexit|pipefail|nounset)"
    r"|trap\b)",
    re.M,
)
# Tools of GKE that the twin does not have a cluster for, at a command's start or in $(...).
GKE_TOOLS = ("kubectl", "pulumi", "gcloud", "helm")
_GKE_COMMAND = re.compile(rf"(?:^|[;&|(]|\$\()\s*(?P<tool>{'|'.join(GKE_TOOLS)})\b", re.M)


@dataclass(frozen=True)
class Problem:
    """One breach of the convention, at a page line."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


class RunbookError(ConfigError):
    """A runbook page breaks the convention of runbooks/README.md."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Command:
    """One shell command of a block as written: continuation lines, multi-line quotes and
    here-documents included. Lines are page lines."""

    line: int
    end_line: int
    text: str

    @property
    def display(self) -> str:
        """The command's first line, continuation lines joined (for messages)."""
        lines = self.text.split("\n")
        shown = lines[0].strip()
        rest = lines[1:]
        while shown.endswith("\\") and rest:
            shown = f"{shown[:-1].rstrip()} {rest.pop(0).strip()}"
        if rest:
            shown += " ..."
        return shown if len(shown) <= 160 else shown[:157] + "..."


@dataclass(frozen=True)
class Block:
    """A fenced code block: `line` is its opening fence, `end_line` its closing one."""

    source: str
    kind: BlockKind
    info: str
    line: int
    end_line: int
    section: str | None
    lines: tuple[str, ...]
    no_twin: bool = False

    @property
    def first_line(self) -> int:
        return self.line + 1

    @property
    def text(self) -> str:
        return "".join(f"{line}\n" for line in self.lines)

    @property
    def is_shell(self) -> bool:
        return self.kind != "other"

    @property
    def executed(self) -> bool:
        return self.kind in EXECUTED

    @property
    def commands(self) -> tuple[Command, ...]:
        return split_commands(self.lines, self.first_line)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass(frozen=True)
class Meta:
    """What a page declares in `<!-- runbook: ... -->` (defaults when it declares nothing)."""

    shards: int = 3
    replicas: int = 1
    proxy: bool = False
    monitoring: bool = False
    data_loss: Literal["none", "allowed"] = "none"
    twin: Literal["shared", "own"] = "shared"
    rollback: Literal["safe", "manual"] = "manual"
    timeout: int = 300
    block_timeout: int = 120
    line: int | None = None  # where the comment is, when there is one

    @property
    def shape(self) -> tuple[int, int, bool, bool]:
        """What a twin must be like to run the page: shards, replicas, proxy, monitoring."""
        return (self.shards, self.replicas, self.proxy, self.monitoring)

    def describe_shape(self) -> str:
        yes = {True: "yes", False: "no"}
        return (
            f"shards={self.shards} replicas={self.replicas} proxy={yes[self.proxy]} "
            f"monitoring={yes[self.monitoring]}"
        )


@dataclass(frozen=True)
class Page:
    """A parsed runbook page with the problems found while reading it."""

    source: str
    name: str
    kind: PageKind
    meta: Meta
    blocks: tuple[Block, ...]
    headings: tuple[int, ...]  # lines of every heading, any level
    line_count: int
    problems: tuple[Problem, ...] = field(default=())

    @property
    def executable(self) -> bool:
        """Whether the executor runs this page: it has a `sh run`/`sh twin`/`sh verify` block."""
        return any(b.executed for b in self.blocks)

    def executed_blocks(self, with_rollback: bool = False) -> tuple[Block, ...]:
        return tuple(
            b for b in self.blocks if b.executed or (with_rollback and b.kind == "rollback")
        )

    def not_tested(self) -> tuple[Block, ...]:
        """`sh gke no-twin` steps: only Kubernetes can do them; nothing runs them here."""
        return tuple(b for b in self.blocks if b.kind == "gke" and b.no_twin)

    def require_valid(self) -> Page:
        if self.problems:
            raise RunbookError(self.problems)
        return self


# ---- reading a page -------------------------------------------------------------------


def page_kind(name: str) -> PageKind:
    """Alert pages are named after an alert of redisops/alerts.py; every other page is a
    procedure."""
    known = set(alerts.BY_NAME) | set(alerts.EXTERNAL_ALERTS)
    return "alert" if name in known else "procedure"


def parse_page(text: str, source: str, name: str, kind: PageKind | None = None) -> Page:
    """Read a page: its blocks, headings and metadata, and every breach of the convention.

    `source` names the page in messages (`runbooks/restore-drill.md`), `name` is its file
    name without `.md`; `kind` defaults to what `page_kind(name)` says.
    """
    lines = text.splitlines()
    reader = _Reader(source, lines)
    reader.read()
    page = Page(
        source=source,
        name=name,
        kind=kind or page_kind(name),
        meta=Meta(),
        blocks=tuple(reader.blocks),
        headings=tuple(reader.headings),
        line_count=len(lines),
        problems=tuple(reader.problems),
    )
    meta, meta_problems = parse_meta(reader.meta_comments, source, reader.first_section)
    page = replace(page, meta=meta, problems=(*page.problems, *meta_problems))
    return replace(page, problems=(*page.problems, *check_page(page)))


class _Reader:
    """One pass over a page's lines: fences, headings, runbook comments."""

    def __init__(self, source: str, lines: list[str]) -> None:
        self.source = source
        self.lines = lines
        self.blocks: list[Block] = []
        self.headings: list[int] = []
        self.problems: list[Problem] = []
        self.meta_comments: list[tuple[int, str]] = []
        self.first_section: int | None = None
        self.section: str | None = None

    def read(self) -> None:
        number = 0
        while number < len(self.lines):
            line = self.lines[number]
            fence = _FENCE_OPEN.match(line)
            if fence:
                number = self._block(number, fence)
                continue
            self._prose(number + 1, line)
            number += 1

    def _prose(self, line_no: int, line: str) -> None:
        heading = _HEADING.match(line)
        if heading:
            self.headings.append(line_no)
            if len(heading["level"]) == 2:
                self.section = heading["title"]
                if self.first_section is None:
                    self.first_section = line_no
            return
        meta = _META_OPEN.match(line)
        if meta:
            self.meta_comments.append((line_no, self._comment_text(line_no, meta["rest"])))

    def _comment_text(self, line_no: int, rest: str) -> str:
        """The comment's body up to `-->`, which may be on a later line."""
        parts = [rest]
        index = line_no  # the next line, 0-based
        while "-->" not in parts[-1] and index < len(self.lines):
            parts.append(self.lines[index])
            index += 1
        body = " ".join(parts)
        if "-->" not in body:
            self.problems.append(
                Problem(self.source, line_no, "runbook comment is not closed: end it with -->")
            )
            return ""
        return body.split("-->", 1)[0]

    def _block(self, start: int, fence: re.Match[str]) -> int:
        """Read the block opened on 0-based line `start`; return the index after it."""
        marker, indent, info = fence["fence"], len(fence["indent"]), fence["info"].strip()
        closing = re.compile(rf"^ *{re.escape(marker[0])}{{{len(marker)},}}\s*$")
        content: list[str] = []
        number = start + 1
        while number < len(self.lines) and not closing.match(self.lines[number]):
            content.append(_dedent(self.lines[number], indent))
            number += 1
        if number == len(self.lines):
            self.problems.append(
                Problem(self.source, start + 1, f"code block {marker}{info} is never closed")
            )
        kind, no_twin, problem = classify(info)
        if problem:
            self.problems.append(Problem(self.source, start + 1, problem))
        self.blocks.append(
            Block(
                source=self.source,
                kind=kind,
                info=info,
                line=start + 1,
                end_line=number + 1,
                section=self.section,
                lines=tuple(content),
                no_twin=no_twin,
            )
        )
        return number + 1


def _dedent(line: str, indent: int) -> str:
    stripped = line.lstrip(" ")
    return line[min(indent, len(line) - len(stripped)) :]


def classify(info: str) -> tuple[BlockKind, bool, str | None]:
    """A block's kind from its info string, whether it is `no-twin`, and what is wrong
    with the info string (None when nothing is)."""
    words = info.split()
    language = words[0] if words else ""
    if language not in SHELL_LANGUAGES:
        return "other", False, None
    if len(words) < 2:
        return "plain", False, None
    marker, rest = words[1], words[2:]
    usage = "use sh run, sh gke, sh gke no-twin, sh twin, sh verify or sh rollback"
    if language != "sh":
        return "plain", False, f"```{info}: markers follow `sh` (```sh {marker}); {usage}"
    if marker not in MARKERS:
        return "plain", False, f"```{info}: unknown marker {marker!r}; {usage}"
    kind: BlockKind = MARKERS[MARKERS.index(marker)]
    if kind == "gke" and rest == [NO_TWIN]:
        return kind, True, None
    if rest:
        return kind, False, f"```{info}: unexpected {' '.join(rest)!r} after `sh {marker}`; {usage}"
    return kind, False, None


# ---- the runbook comment --------------------------------------------------------------


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not value.isdigit() or int(value) < minimum:
            raise ValueError(f"an integer >= {minimum}")
        return int(value)

    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(" or ".join(allowed))
        return value

    return parse


def _yes_no(value: str) -> bool:
    if value not in ("yes", "no"):
        raise ValueError("yes or no")
    return value == "yes"


# key in the comment -> (Meta field, parser of its value)
META_KEYS: dict[str, tuple[str, Callable[[str], object]]] = {
    "shards": ("shards", _integer(3)),
    "replicas": ("replicas", _integer(0)),
    "proxy": ("proxy", _yes_no),
    "monitoring": ("monitoring", _yes_no),
    "data-loss": ("data_loss", _choice("none", "allowed")),
    "twin": ("twin", _choice("shared", "own")),
    "rollback": ("rollback", _choice("safe", "manual")),
    "timeout": ("timeout", _integer(1)),
    "block-timeout": ("block_timeout", _integer(1)),
}


def parse_meta(
    comments: Sequence[tuple[int, str]], source: str, first_section: int | None
) -> tuple[Meta, list[Problem]]:
    """The page's `<!-- runbook: key=value ... -->` comment (at most one, before the
    first `##` section) as Meta, and what is wrong with it."""
    problems: list[Problem] = []
    if not comments:
        return Meta(), problems
    (line, body), *others = comments
    for other, _ in others:
        problems.append(
            Problem(
                source, other, f"a second runbook comment; merge it into the one on line {line}"
            )
        )
    if first_section is not None and line > first_section:
        problems.append(
            Problem(
                source,
                line,
                f"the runbook comment must be at the top of the page, before its first "
                f"section (line {first_section})",
            )
        )
    values: dict[str, object] = {}
    for token in body.split():
        problem = _meta_token(token, values)
        if problem:
            problems.append(Problem(source, line, f"runbook comment: {problem}"))
    meta = Meta(line=line, **values)  # type: ignore[arg-type]
    return meta, problems


def _meta_token(token: str, values: dict[str, object]) -> str | None:
    key, sep, value = token.partition("=")
    if not sep:
        return f"{token!r}: expected key=value, e.g. shards=3"
    if key not in META_KEYS:
        return f"unknown key {key!r}; known keys: {', '.join(META_KEYS)}"
    attribute, parse = META_KEYS[key]
    if attribute in values:
        return f"{key} is given twice"
    try:
        values[attribute] = parse(value)
    except ValueError as exc:
        return f"{key}={value}: expected {exc}"
    return None


# ---- the convention -------------------------------------------------------------------


def check_page(page: Page) -> list[Problem]:
    """Every breach of the convention besides the info strings and the comment."""
    return [
        *_unmarked(page),
        *_unpaired_gke(page),
        *_executed_in_rollback(page),
        *_forbidden_commands(page),
        *_gke_tools_executed(page),
        *_page_level(page),
    ]


def _unmarked(page: Page) -> Iterator[Problem]:
    if page.kind != "procedure":
        return  # alert pages keep plain blocks: the reader's commands, not executed
    for block in page.blocks:
        if block.kind != "plain" or block.info.split()[1:]:
            continue  # marked blocks, and bad markers (reported by classify)
        what = f"```{block.info}" if block.info else "a block without an info string"
        yield Problem(
            page.source,
            block.line,
            f"{what} on a procedure page: say what it is (sh run, sh gke + sh twin, "
            "sh gke no-twin, sh verify, sh rollback; or a language such as text, json)",
        )


def _unpaired_gke(page: Page) -> Iterator[Problem]:
    blocks = list(page.blocks)
    for index, block in enumerate(blocks):
        if block.kind != "gke" or block.no_twin:
            continue
        wanted = "rollback" if block.section == ROLLBACK_SECTION else "twin"
        if not any(b.kind == wanted for b in _until_next_gke_or_heading(page, blocks, index)):
            yield Problem(
                page.source,
                block.line,
                f"```sh gke has no twin equivalent: follow it (before the next sh gke block "
                f"or heading) with a ```sh {wanted} block, or mark it ```sh gke no-twin "
                "when only Kubernetes can do it",
            )


def _until_next_gke_or_heading(page: Page, blocks: list[Block], index: int) -> Iterator[Block]:
    start = blocks[index].end_line
    stop = min((h for h in page.headings if h > start), default=page.line_count + 1)
    for block in blocks[index + 1 :]:
        if block.line > stop or block.kind == "gke":
            return
        yield block


def _executed_in_rollback(page: Page) -> Iterator[Problem]:
    for block in page.blocks:
        if block.section == ROLLBACK_SECTION and block.executed:
            yield Problem(
                page.source,
                block.line,
                f"```{block.info} in the Rollback section would run on every run; mark it "
                "```sh rollback (run only with --with-rollback, on pages with rollback=safe)",
            )


def _forbidden_commands(page: Page) -> Iterator[Problem]:
    for block in page.blocks:
        if not (block.executed or block.kind == "rollback"):
            continue
        for command in block.commands:
            found = _FORBIDDEN.search(_code_only(command.text))
            if found:
                yield Problem(
                    page.source,
                    command.line,
                    f"`{found['what']}` in an executed block: the executor runs pages with "
                    "`set -euo pipefail` and its own traps, so that every failure is reported",
                )


def _gke_tools_executed(page: Page) -> Iterator[Problem]:
    for block in page.blocks:
        if not (block.executed or block.kind == "rollback"):
            continue
        for command in block.commands:
            # Quoted text is blanked out, except what runs in $(...) inside double quotes.
            found = _GKE_COMMAND.search(_code_only(command.text)) or _GKE_COMMAND.search(
                "\n".join(re.findall(r"\$\([^)]*", command.text))
            )
            if found:
                yield Problem(
                    page.source,
                    command.line,
                    f"`{found['tool']}` in a ```sh {block.kind} block: the twin has no GKE; put "
                    "it in a ```sh gke block followed by its ```sh twin equivalent",
                )


def _page_level(page: Page) -> Iterator[Problem]:
    line = page.meta.line or 1
    if page.meta.rollback == "safe" and not any(b.kind == "rollback" for b in page.blocks):
        yield Problem(page.source, line, "rollback=safe, but the page has no ```sh rollback block")
    if page.kind == "procedure" and not page.executable:
        yield Problem(
            page.source,
            line,
            "a procedure page needs at least one block the twin executes (sh run, sh twin "
            "or sh verify): every procedure is exercised by `make runbooks`",
        )


# ---- commands -------------------------------------------------------------------------


def split_commands(lines: Sequence[str], first_line: int) -> tuple[Command, ...]:
    """A block's lines as commands: blank and comment lines dropped; a command goes on
    over `\\` line ends, open quotes and here-documents. `first_line` is the page line
    of `lines[0]`."""
    commands: list[Command] = []
    index = 0
    while index < len(lines):
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        end = _command_end(lines, index)
        text = "\n".join(lines[index : end + 1])
        commands.append(Command(line=first_line + index, end_line=first_line + end, text=text))
        index = end + 1
    return tuple(commands)


def _command_end(lines: Sequence[str], start: int) -> int:
    end = start
    while end + 1 < len(lines) and _continues("\n".join(lines[start : end + 1])):
        end += 1
    for strip_tabs, word in _heredocs("\n".join(lines[start : end + 1])):
        while end + 1 < len(lines):
            end += 1
            body = lines[end].lstrip("\t") if strip_tabs else lines[end]
            if body == word:
                break
    return end


def _continues(text: str) -> bool:
    """Whether `text` needs the next line: it ends in `\\` or leaves a quote open."""
    return _scan(text)[1] or text.endswith("\\")


def _heredocs(text: str) -> list[tuple[bool, str]]:
    """(strip tabs, delimiter) of each here-document `text` opens (`<<EOF`, `<<-'EOF'`)."""
    found = []
    for start in _HEREDOC_START.finditer(_code_only(text)):
        word = _HEREDOC_WORD.match(text, start.end())
        if word:
            found.append((start["strip"] == "-", word["word"]))
    return found


def _code_only(text: str) -> str:
    """`text` with comments and the contents of quotes blanked out (same length)."""
    return _scan(text)[0]


def _scan(text: str) -> tuple[str, bool]:
    """`text` with comments and quoted text replaced by spaces (quote characters and new
    lines kept, so positions match), and whether a quote is still open at its end."""
    out: list[str] = []
    quote: str | None = None
    index = 0
    while index < len(text):
        char = text[index]
        if quote is None and char == "#" and (index == 0 or text[index - 1] in " \t\n;|&("):
            while index < len(text) and text[index] != "\n":
                out.append(" ")
                index += 1
            continue
        if char == "\\" and quote != "'":
            pair = text[index : index + 2]
            out.append(" " * len(pair) if quote else pair)
            index += len(pair)
            continue
        if quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
        elif quote is not None and char != "\n":
            char = " "
        out.append(char)
        index += 1
    return "".join(out), quote is not None


# ---- the script -----------------------------------------------------------------------


@dataclass(frozen=True)
class Script:
    """The bash script of one page: the executed blocks' lines on their page lines, so
    script line N is page line N; `lines` holds one entry per script line."""

    page: Page
    lines: tuple[str, ...]
    blocks: tuple[Block, ...]

    @property
    def text(self) -> str:
        return "".join(f"{line}\n" for line in self.lines)

    def page_line(self, script_line: int) -> int | None:
        """The page line of a script line, when it holds a line of an executed block."""
        for block in self.blocks:
            if block.first_line <= script_line < block.end_line:
                return script_line
        return None

    def command_at(self, script_line: int) -> Command | None:
        """The command of an executed block that covers the script line."""
        for block in self.blocks:
            if block.first_line <= script_line < block.end_line:
                return next(
                    (c for c in block.commands if c.line <= script_line <= c.end_line), None
                )
        return None

    def block_at(self, index: int) -> Block:
        return self.blocks[index]


_HEADER = (
    f'exec {{__rb_ctl}}>>"${CONTROL_ENV}"; '
    'trap \'printf "fail %s %s\\n" "$?" "$LINENO" >&"$__rb_ctl"\' ERR; '
    'trap \'printf "cmd %s\\n" "$LINENO" >&"$__rb_ctl"\' DEBUG; '
    "set -Eeuo pipefail"
)


def render_script(page: Page, with_rollback: bool = False) -> Script:
    """The page's executed blocks (and its rollback blocks, when asked) as one bash script.

    Every other page line is blank. Line 1 sets up the control channel (the file named
    by $RUNBOOK_CONTROL): an ERR trap records `fail <status> <line>`, a DEBUG trap
    `cmd <line>` before each top-level command; each block's opening fence line records
    `block <index>` and prints a header into the output; a last line records `done`.
    """
    page.require_valid()
    blocks = page.executed_blocks(with_rollback)
    lines = [""] * max(page.line_count, 1)
    lines[0] = _HEADER
    for index, block in enumerate(blocks):
        marker = (
            f"printf 'block %s\\n' {index} >&\"$__rb_ctl\"; "
            f"printf '\\n==> %s\\n' {shlex.quote(f'{block.where}  sh {block.kind}')}"
        )
        slot = block.line - 1
        lines[slot] = f"{lines[slot]}; {marker}" if lines[slot] else marker
        for offset, text in enumerate(block.lines):
            lines[block.first_line - 1 + offset] = text
    lines.append("printf 'done\\n' >&\"$__rb_ctl\"")
    return Script(page=page, lines=tuple(lines), blocks=blocks)


def procedure_order(readme: str) -> list[str]:
    """The pages of the index's Procedures table (runbooks/README.md), in its order."""
    names: list[str] = []
    in_table = False
    for line in readme.splitlines():
        heading = _HEADING.match(line)
        if heading and len(heading["level"]) == 2:
            in_table = heading["title"] == "Procedures"
            continue
        if in_table and line.startswith("|"):
            names += [n for n in re.findall(r"\]\(([\w.-]+)\.md\)", line) if n not in names]
    return names
