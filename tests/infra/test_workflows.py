"""The CI/CD workflows (`.github/workflows/`) ask only for what exists: every `make`
target, `redisops` command and option, `pulumi` command and flag, stack output, config
key and Kubernetes name they use. (actionlint checks the workflow syntax: `make lint`.)
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from redisops import smoke_launch
from redisops.cli import app
from tests.infra import harness

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))

# The Pulumi CLI is not installable here, so its commands are checked against this table
# (from the CLI reference, pulumi.com/docs/iac/cli/commands/): command -> the flags we may
# use. A flag or command outside it fails the test until it is checked and added.
PULUMI: dict[tuple[str, ...], set[str]] = {
    ("login",): set(),
    ("preview",): {"--stack", "--policy-pack", "--diff", "--non-interactive", "--color"},
    ("up",): {"--stack", "--yes", "--policy-pack", "--non-interactive", "--color"},
    ("config", "set"): {"--stack", "--secret", "--path"},
    ("stack", "output"): {"--stack", "--show-secrets", "--json"},
}


def commands(script: str) -> Iterator[list[str]]:
    """Each simple command of a `run:` script, as words (continuations joined; pipes,
    `&&`, `||`, `;` and `$( … )` split apart)."""
    joined = script.replace("\\\n", " ")
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"\|\||&&|[|;]|\$\(|\)", line):
            try:
                words = shlex.split(part)
            except ValueError:
                continue  # a fragment of a quoted string split above: not a command
            while words and (re.fullmatch(r"[A-Za-z_]+=.*", words[0]) or words[0] == "exec"):
                words = words[1:]  # VAR=value prefixes, exec
            if words:
                yield words


def workflow_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text())
        for job in workflow["jobs"].values():
            for step in job.get("steps", []):
                for words in commands(step.get("run", "")):
                    found.append((path.name, words))
    return found


COMMANDS = workflow_commands()


def test_there_are_workflows_for_pull_requests_main_and_the_drill() -> None:
    names = {p.name for p in WORKFLOWS}
    assert {"pull-request.yml", "deploy.yml", "rollout.yml", "restore-drill.yml"} <= names
    triggers = {p.name: yaml.safe_load(p.read_text())[True] for p in WORKFLOWS}  # `on:`
    assert "pull_request" in triggers["pull-request.yml"]
    assert triggers["deploy.yml"]["push"]["branches"] == ["main"]
    assert "schedule" in triggers["restore-drill.yml"]


def test_the_command_splitter_finds_every_command() -> None:
    script = (
        'a=$(pulumi stack output x --stack "$S")\nmake lint \\\n  unit && redisops smoke | tee f'
    )
    assert list(commands(script)) == [
        ["pulumi", "stack", "output", "x", "--stack", "$S"],
        ["make", "lint", "unit"],
        ["redisops", "smoke"],
        ["tee", "f"],
    ]


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9-]*):", text, flags=re.MULTILINE))


def test_every_make_target_a_workflow_runs_exists() -> None:
    targets = make_targets()
    used = [(f, w[1:]) for f, w in COMMANDS if w[0] == "make"]
    assert used, "no workflow runs make"
    for name, args in used:
        missing = [a for a in args if not a.startswith("-") and a not in targets]
        assert not missing, f"{name}: make {' '.join(args)}: no target {missing}"


def _resolve(words: list[str]) -> tuple[Any, list[str]]:
    """The click command `words` name, and the words after it. (Typer carries its own
    click, so groups are told by their methods, not by class.)"""
    command: Any = typer.main.get_command(app)
    rest = words
    while hasattr(command, "list_commands") and rest and not rest[0].startswith("-"):
        sub = command.get_command(command.context_class(command), rest[0])
        assert sub is not None, (
            f"redisops has no command {' '.join(words[: len(words) - len(rest) + 1])}"
        )
        command, rest = sub, rest[1:]
    return command, rest


def test_every_redisops_command_and_option_a_workflow_uses_exists() -> None:
    used = [(f, w[1:]) for f, w in COMMANDS if w[0].endswith("redisops")]
    assert used, "no workflow runs redisops"
    for name, args in used:
        command, rest = _resolve(args)
        options = {opt for p in command.params for opt in getattr(p, "opts", [])}
        unknown = [
            a.split("=")[0] for a in rest if a.startswith("-") and a.split("=")[0] not in options
        ]
        assert not unknown, f"{name}: redisops {' '.join(args)}: unknown options {unknown}"


def test_the_rollout_gate_the_workflow_runs_is_the_stack_launcher() -> None:
    gates = [w for f, w in COMMANDS if f == "rollout.yml" and w[0].endswith("redisops")]
    assert gates and all(w[1] == "smoke" and "--stack" in w for w in gates), gates


def pulumi_uses() -> list[tuple[str, tuple[str, ...], list[str], list[str]]]:
    """(file, command, positional args, flags) of every pulumi invocation."""
    uses = []
    for name, words in COMMANDS:
        if words[0] != "pulumi":
            continue
        for size in (2, 1):
            key = tuple(words[1 : 1 + size])
            if key in PULUMI:
                rest = words[1 + size :]
                flags = [w.split("=")[0] for w in rest if w.startswith("--")]
                positional = [
                    w for i, w in enumerate(rest)
                    if not w.startswith("--") and not (i and rest[i - 1] in VALUED)
                ]  # fmt: skip
                uses.append((name, key, positional, flags))
                break
        else:
            pytest.fail(f"{name}: pulumi {' '.join(words[1:3])}: not in the checked table")
    return uses


VALUED = {"--stack", "--policy-pack", "--color"}


def test_every_pulumi_command_and_flag_is_known() -> None:
    uses = pulumi_uses()
    assert {u[1] for u in uses} >= {("preview",), ("up",), ("stack", "output")}
    for name, key, _, flags in uses:
        unknown = set(flags) - PULUMI[key]
        assert not unknown, f"{name}: pulumi {' '.join(key)}: unknown flags {unknown}"
        if key in (("preview",), ("up",), ("config", "set"), ("stack", "output")):
            assert "--stack" in flags, f"{name}: pulumi {' '.join(key)} without --stack"
        if key in (("preview",), ("up",)):
            assert "--policy-pack" in flags, f"{name}: pulumi {key[0]} without the policy pack"


def test_the_policy_pack_the_workflows_name_is_in_the_repository() -> None:
    for name, words in COMMANDS:
        if words[0] == "pulumi" and "--policy-pack" in words:
            pack = ROOT / words[words.index("--policy-pack") + 1]
            assert (pack / "PulumiPolicy.yaml").is_file(), f"{name}: no policy pack at {pack}"


def test_every_stack_output_and_config_key_a_workflow_reads_exists() -> None:
    outputs = set(harness.recorded("prod").outputs)
    settings_keys = {"platformImage"}  # the one key the pipeline writes (StackSettings)
    for name, key, positional, _ in pulumi_uses():
        if key == ("stack", "output"):
            assert positional, f"{name}: pulumi stack output without an output name"
            assert positional[0] in outputs, f"{name}: the prod stack exports no {positional[0]}"
        if key == ("config", "set"):
            assert positional[0] in settings_keys, f"{name}: config key {positional[0]}"
    assert "platform_image" in type(harness.settings("prod")).model_fields


def test_the_drill_workflow_starts_the_cronjob_the_prod_plan_declares() -> None:
    plan = harness.recorded("prod")
    creates = [
        w for f, w in COMMANDS if f == "restore-drill.yml" and w[:3] == ["kubectl", "create", "job"]
    ]
    assert len(creates) == 1
    words = creates[0]
    namespace = words[words.index("--namespace") + 1]
    source = next(w for w in words if w.startswith("--from=cronjob/")).split("/", 1)[1]
    declared = [
        r.manifest for r in plan.kube("CronJob")
        if r.object_name == source and r.manifest["metadata"].get("namespace") == namespace
    ]  # fmt: skip
    assert declared, f"prod declares no CronJob {namespace}/{source}"


def settings_of(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (key path, value) of a workflow's mappings (`env:`, `with:`, …)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from settings_of(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from settings_of(value, f"{path}[{i}]")
    else:
        yield path, node


def test_workflows_hold_no_secret_values() -> None:
    secretish = re.compile(r"(?i)(password|passphrase|token|credentials|private_key)[^.]*$")
    checked = 0
    for path in WORKFLOWS:
        text = path.read_text()
        assert "BEGIN" not in text and "PRIVATE KEY" not in text, path.name
        for key, value in settings_of(yaml.safe_load(text)):
            if secretish.search(key.rsplit(".", 1)[-1]) and not key.endswith("id-token"):
                checked += 1
                assert str(value).startswith("${{"), f"{path.name}: {key} is not a reference"
    assert checked  # the passphrase and the GitHub token are references


def jobs_with_oidc() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path in WORKFLOWS:
        for job_name, job in yaml.safe_load(path.read_text())["jobs"].items():
            if any("google-github-actions/auth" in s.get("uses", "") for s in job.get("steps", [])):
                yield path.name, job_name, job


def test_keyless_logins_ask_for_the_oidc_token_and_nothing_more() -> None:
    found = list(jobs_with_oidc())
    assert found
    for name, job_name, job in found:
        permissions = job.get("permissions", {})
        assert permissions.get("id-token") == "write", f"{name}:{job_name}"
        assert permissions.get("contents") == "read", f"{name}:{job_name}"
        assert "write-all" not in str(permissions)
        auth = next(s for s in job["steps"] if "google-github-actions/auth" in s.get("uses", ""))
        assert "credentials_json" not in auth.get("with", {}), "a key, not Workload Identity"


def test_a_cancelled_rollout_deletes_the_gate_s_job_by_the_label_the_gate_puts_on_it() -> None:
    (rollout,) = yaml.safe_load((ROOT / ".github/workflows/rollout.yml").read_text())[
        "jobs"
    ].values()
    steps = rollout["steps"]
    gate = next(s for s in steps if "redisops smoke" in s.get("run", ""))
    # exec: the runner's signal reaches the gate itself (it deletes its Job on SIGTERM)
    assert re.search(r"^\s*exec \S*redisops smoke", gate["run"], re.M), gate["run"]
    cleanup = [s for s in steps if s.get("if") == "cancelled()"]
    assert cleanup, "no step runs when the rollout is cancelled"
    assert f'--selector "{smoke_launch.STACK_LABEL}=$STACK"' in cleanup[0]["run"]


def test_jobs_that_reach_the_cluster_run_where_the_control_plane_is_reachable() -> None:
    for name, job_name, job in jobs_with_oidc():
        assert "vars.DEPLOY_RUNNER" in str(job["runs-on"]), f"{name}:{job_name}"


def environments_of_workflows() -> set[str]:
    found = set()
    for path in WORKFLOWS:
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            env = job.get("environment")
            if env is None:
                continue
            for stack in job.get("strategy", {}).get("matrix", {}).get("stack", ["dev", "prod"]):
                found.add(
                    env.replace("${{ matrix.stack }}", stack).replace("${{ inputs.stack }}", stack)
                )
    return found


def test_every_environment_a_workflow_names_is_one_the_bootstrap_sets_up() -> None:
    environments = environments_of_workflows()
    assert environments == {"dev", "prod", "preview-dev", "preview-prod", "prod-drill"}
    readme = (ROOT / "README.md").read_text()
    bootstrap = readme[readme.index("In GitHub, once: environments") :][:1200]
    for environment in environments:
        assert f"`{environment}`" in bootstrap, environment
