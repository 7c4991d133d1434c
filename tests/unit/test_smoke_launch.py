"""The rollout gate's launcher (`redisops smoke --stack`): its decisions over Kubernetes
objects, the reports read back from a pod's log, and the loop against a scripted API
server (there is none on these machines; the kubernetes client's own models are used)."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import (
    V1ContainerState,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1Job,
    V1JobCondition,
    V1JobStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodCondition,
    V1PodStatus,
)
from kubernetes.client.exceptions import ApiException
from typer.testing import CliRunner

from redisops import smoke_launch as sl
from redisops.cli import app
from redisops.errors import ConfigError, RedisOpsError, Unavailable

# ---- reports through the log ------------------------------------------------------------


def report(ok: bool = True, failed: int = 0) -> dict[str, Any]:
    counts = {"passed": 9, "failed": failed, "error": 0, "skipped": 0, "skipped_not_allowed": 0}
    return {"target": "kubernetes", "ok": ok, "counts": counts, "duration_s": 1.0}


def framed_log(files: dict[str, bytes], before: str = "", after: str = "") -> str:
    lines = [before] if before else []
    for name, data in files.items():
        lines += sl.frame(name, data)
    if after:
        lines.append(after)
    return "\n".join(lines) + "\n"


def test_reports_framed_into_a_log_come_back_byte_identical() -> None:
    junit = ("<testsuite>" + "<testcase name='x'/>" * 4000 + "</testsuite>").encode()
    big = random.Random(1).randbytes(20_000)  # incompressible: several parts
    log = framed_log(
        {"smoke-junit.xml": junit, "blob": big},
        before="collected 20 items",
        after='{"ok": true}',
    )
    assert len(sl.frame("blob", big)) > 3  # it spans many lines
    frames = sl.read_frames(log)
    assert frames.files == {"smoke-junit.xml": junit, "blob": big}
    assert frames.problems == []
    assert frames.other_lines == ["collected 20 items", '{"ok": true}']


def test_a_log_missing_a_part_or_altered_gives_no_report_and_says_why() -> None:
    data = random.Random(2).randbytes(20_000)
    lines = sl.frame("smoke-report.json", data)
    truncated = sl.read_frames("\n".join(lines[:-1]))
    assert truncated.files == {}
    assert truncated.problems == [
        f"smoke-report.json: 1 of {len(lines)} parts missing from the log"
    ]
    digest = lines[0].split(" ")[3]
    altered = [line.replace(digest, "0" * 64) for line in lines]
    assert "digest does not match" in sl.read_frames("\n".join(altered)).problems[0]
    garbage = [*lines[:-1], lines[-1][:-8] + "!!!!!!!!"]
    assert sl.read_frames("\n".join(garbage)).files == {}


def test_a_retried_container_s_complete_copy_wins_over_its_broken_first() -> None:
    first = sl.frame("smoke-report.json", json.dumps(report(ok=False)).encode())
    second = sl.frame("smoke-report.json", json.dumps(report()).encode())
    frames = sl.read_frames("\n".join([*first[:-1], "restart", *second]))
    assert json.loads(frames.files["smoke-report.json"])["ok"] is True
    assert frames.problems == []


def test_a_line_that_only_looks_like_a_frame_is_shown_not_decoded() -> None:
    frames = sl.read_frames(f"{sl.FRAME} is what the launcher reads\n")
    assert frames.files == {} and frames.other_lines == [f"{sl.FRAME} is what the launcher reads"]


def test_frame_reports_frames_what_the_suite_wrote(tmp_path: Path) -> None:
    (tmp_path / "smoke-report.json").write_text(json.dumps(report()))
    lines = sl.frame_reports(tmp_path)  # no JUnit file: only the report
    assert sl.read_frames("\n".join(lines)).files.keys() == {"smoke-report.json"}


def test_new_lines_leaves_out_frames_and_what_was_shown() -> None:
    log = "a\nb\n" + "\n".join(sl.frame("x", b"y")) + "\nc\n"
    fresh, shown = sl.new_lines(log, 1)
    assert fresh == ["b", "c"] and shown == 4
    assert sl.new_lines(log, shown) == ([], 4)


# ---- the stack's outputs and the run's Job ----------------------------------------------


def smoke_spec(namespace: str = "redis", args: list[str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"generateName": "redis-smoke-", "namespace": namespace, "labels": {"a": "b"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": "smoke"}},
                "spec": {
                    "containers": [
                        {"name": "smoke", "image": "i", "args": args or ["smoke", "--json"]}
                    ]
                },
            },
        },
    }


def outputs(stack: str = "dev", **spec: Any) -> sl.StackOutputs:
    return sl.parse_outputs(stack, {"namespace": "redis", "smokeJob": smoke_spec(**spec)}, "t")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "not the JSON object `pulumi stack output --json` prints"),
        ({"namespace": "redis"}, "stack dev has no smokeJob output; run `pulumi up -s dev`"),
        ({"namespace": "redis", "smokeJob": {"kind": "Pod"}}, "smokeJob is not a Kubernetes Job"),
        (
            {"namespace": "redis", "smokeJob": smoke_spec(namespace="other")},
            "smokeJob is for namespace 'other', the stack's namespace is 'redis'",
        ),
        (
            {"namespace": "redis", "smokeJob": {"kind": "Job", "spec": {}}},
            "smokeJob has no pod template with containers; re-run `pulumi up -s dev`",
        ),
        (
            {
                "namespace": "redis",
                "smokeJob": {"kind": "Job", "spec": {"template": {"spec": {"containers": [1]}}}},
            },
            "smokeJob has no pod template with containers",
        ),
    ],
)
def test_outputs_the_gate_cannot_use_are_refused_by_name(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^t: ") as caught:
        sl.parse_outputs("dev", value, "t")
    assert message in str(caught.value)


def test_outputs_come_from_a_file_or_from_pulumi(tmp_path: Path) -> None:
    good = {"namespace": "redis", "smokeJob": smoke_spec()}
    path = tmp_path / "out.json"
    path.write_text(json.dumps(good))
    assert sl.load_outputs("dev", path).namespace == "redis"
    seen: list[list[str]] = []

    def pulumi(argv: list[str]) -> str:
        seen.append(argv)
        return json.dumps(good)

    got = sl.load_outputs("prod", None, run=pulumi)
    assert got.stack == "prod"
    assert seen == [["pulumi", "stack", "output", "--json", "--stack", "prod"]]
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        sl.load_outputs("dev", path)
    with pytest.raises(ConfigError, match="No such file"):
        sl.load_outputs("dev", tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="not a stack name"):
        sl.load_outputs("dev; rm -rf /", path)


def test_no_pulumi_on_the_machine_means_the_gate_could_not_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(Unavailable, match=r"pulumi is not installed.*--outputs-file"):
        sl.load_outputs("dev", None)


def fake_pulumi(tmp_path: Path, script: str) -> str:
    """A `pulumi` on PATH that runs `script` (sh), in place of the real CLI."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "pulumi"
    exe.write_text(f"#!/bin/sh\n{script}\n")
    exe.chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin"


def test_pulumi_that_hangs_or_fails_means_the_gate_could_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", fake_pulumi(tmp_path, "sleep 5"))
    monkeypatch.setattr(sl, "PULUMI_TIMEOUT_S", 0.3)
    with pytest.raises(Unavailable, match=r"pulumi stack output .* did not answer in 0.3 s"):
        sl.load_outputs("dev", None)


def test_pulumi_refusing_is_could_not_run_with_its_own_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusing = fake_pulumi(tmp_path, "echo 'error: no stack named dev' >&2; exit 255")
    monkeypatch.setenv("PATH", refusing)
    with pytest.raises(Unavailable, match="no stack named dev"):
        sl.load_outputs("dev", None)


def test_each_run_gets_its_own_job_labelled_for_clean_up() -> None:
    job = sl.job_for_run(outputs(), "20261204-abc123")
    meta = job["metadata"]
    assert meta["name"] == "redis-smoke-20261204-abc123" and "generateName" not in meta
    assert meta["labels"] == {"a": "b", sl.RUN_LABEL: "20261204-abc123", sl.STACK_LABEL: "dev"}
    assert job["spec"]["template"]["metadata"]["labels"][sl.RUN_LABEL] == "20261204-abc123"
    assert sl.job_for_run(outputs(), "x") != sl.job_for_run(outputs(), "y")
    assert outputs().smoke_job["metadata"]["generateName"] == "redis-smoke-"  # not mutated
    assert sl.new_run_id() != sl.new_run_id()


def test_prod_refuses_a_job_that_would_run_destructive_checks() -> None:
    with pytest.raises(ConfigError, match="prod runs only non-destructive"):
        sl.job_for_run(outputs("prod"), "r")
    safe = outputs("prod", args=["smoke", "--no-disruption"])
    assert sl.job_for_run(safe, "r")["metadata"]["name"] == "redis-smoke-r"


# ---- Job and pod states -----------------------------------------------------------------


def job(*conditions: tuple[str, str | None], succeeded: int = 0, failed: int = 0) -> V1Job:
    return V1Job(
        status=V1JobStatus(
            succeeded=succeeded or None,
            failed=failed or None,
            conditions=[
                V1JobCondition(type=kind, status="True", reason=reason, message="m")
                for kind, reason in conditions
            ]
            or None,
        )
    )


def pod(
    phase: str = "Running",
    waiting: str | None = None,
    unschedulable: bool = False,
    name: str = "redis-smoke-r-x",
) -> V1Pod:
    statuses = None
    if waiting is not None:
        state = V1ContainerState(waiting=V1ContainerStateWaiting(reason=waiting, message="why"))
        statuses = [
            V1ContainerStatus(
                name="smoke", state=state, image="i", image_id="", ready=False, restart_count=0
            )
        ]
    conditions = None
    if unschedulable:
        conditions = [
            V1PodCondition(
                type="PodScheduled", status="False", reason="Unschedulable", message="0/3 nodes"
            )
        ]
    return V1Pod(
        metadata=V1ObjectMeta(
            name=name, creation_timestamp=dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
        ),
        status=V1PodStatus(phase=phase, container_statuses=statuses, conditions=conditions),
    )


@pytest.mark.parametrize(
    ("the_job", "pods", "elapsed", "state", "detail"),
    [
        (job(("Complete", None)), [pod("Succeeded")], 30, "succeeded", "completed"),
        (job(succeeded=1), [], 30, "succeeded", "succeeded"),
        (job(("Failed", "BackoffLimitExceeded")), [pod("Failed")], 30, "failed", "Backoff"),
        (job(failed=1), [pod("Failed")], 30, "failed", "pod failed"),
        (job(("Failed", "DeadlineExceeded")), [], 900, "cannot-run", "activeDeadlineSeconds"),
        (job(), [pod("Pending", waiting="ImagePullBackOff")], 20, "cannot-run", "ImagePullBack"),
        (
            job(),
            [pod("Pending", waiting="CreateContainerConfigError")],
            5,
            "cannot-run",
            "container smoke CreateContainerConfigError: why",
        ),
        (job(), [pod("Pending", waiting="ContainerCreating")], 5, "pending", "Pending"),
        (job(), [pod("Pending", unschedulable=True)], 60, "pending", "Pending"),
        (job(), [pod("Pending", unschedulable=True)], 400, "cannot-run", "unschedulable"),
        (job(), [], 1, "pending", "no pod yet"),
        (job(), [pod("Running")], 10, "running", "Running"),
        (job(), [pod("Running")], 1300, "cannot-run", "timed out after 1200 s"),
        (job(("Complete", None)), [pod("Succeeded")], 5000, "succeeded", "completed"),
    ],
)
def test_the_run_s_state_from_the_job_and_its_pods(
    the_job: V1Job, pods: list[V1Pod], elapsed: float, state: str, detail: str
) -> None:
    progress = sl.judge(the_job, pods, elapsed, 1200)
    assert (progress.state, detail in progress.detail) == (state, True), progress


def frames_with(value: dict[str, Any] | None) -> sl.Frames:
    if value is None:
        return sl.Frames({}, [], [])
    return sl.Frames({"smoke-report.json": json.dumps(value).encode()}, [], [])


@pytest.mark.parametrize(
    ("state", "the_report", "code", "reason"),
    [
        ("succeeded", report(), 0, "every check passed"),
        ("failed", report(ok=False, failed=2), 1, "2 checks failed"),
        ("succeeded", report(ok=False, failed=1), 1, "1 checks failed"),
        ("failed", report(), 1, "after a passing report"),
        ("failed", None, 2, "no smoke report could be read"),
        ("succeeded", None, 2, "no smoke report could be read"),
        ("cannot-run", report(), 2, "the detail"),
        ("cannot-run", None, 2, "the detail"),
    ],
)
def test_the_gate_s_exit_code(
    state: sl.State, the_report: dict[str, Any] | None, code: int, reason: str
) -> None:
    result = sl.verdict(sl.Progress(state, "the detail"), frames_with(the_report))
    assert result.exit_code == code and reason in result.reason, result


# ---- the loop against a scripted API ----------------------------------------------------


class ScriptedApi:
    """An API server that plays a script: each read returns the next Job state."""

    def __init__(
        self, states: list[V1Job], log: str, refuse: dict[str, ApiException] | None = None
    ):
        self.states = states
        self.log = log
        self.refuse = refuse or {}
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.reads = 0

    def _maybe_refuse(self, what: str) -> None:
        if what in self.refuse:
            raise self.refuse[what]

    def create_job(self, namespace: str, body: dict[str, Any]) -> Any:
        self._maybe_refuse("create")
        self.created.append(body)
        return body

    def read_job(self, namespace: str, name: str) -> Any:
        self._maybe_refuse("read")
        state = self.states[min(self.reads, len(self.states) - 1)]
        self.reads += 1
        return state

    def list_pods(self, namespace: str, selector: str) -> list[Any]:
        assert selector == f"job-name={self.created[0]['metadata']['name']}"
        return [pod("Running")]

    def pod_log(self, namespace: str, pod_name: str) -> str:
        return self.log

    def delete_job(self, namespace: str, name: str) -> None:
        self._maybe_refuse("delete")
        self.deleted.append(name)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(api: ScriptedApi, **kwargs: Any) -> sl.Launch:
    clock = Clock()
    return sl.launch(
        api,
        outputs(),
        timeout_s=kwargs.pop("timeout_s", 60),
        run_id="r1",
        clock=clock,
        sleep=kwargs.pop("sleep", clock.sleep),
        **kwargs,
    )


def test_a_passing_run_streams_the_log_returns_the_reports_and_deletes_the_job() -> None:
    junit = b"<testsuite tests='9'/>"
    log = framed_log(
        {"smoke-report.json": json.dumps(report()).encode(), "smoke-junit.xml": junit},
        before="9 passed",
        after='{"ok": true}',
    )
    api = ScriptedApi([job(), job(), job(("Complete", None))], log)
    printed: list[str] = []
    states: list[str] = []
    result = run(api, on_line=printed.append, on_progress=lambda p: states.append(p.state))
    assert result.verdict.exit_code == 0
    assert result.files["smoke-junit.xml"] == junit
    assert printed == ["9 passed", '{"ok": true}']  # each line once, frames left out
    assert states == ["running", "running", "succeeded"]
    assert api.deleted == ["redis-smoke-r1"] and result.deleted


def test_a_failed_check_is_exit_1_with_the_report() -> None:
    log = framed_log({"smoke-report.json": json.dumps(report(ok=False, failed=1)).encode()})
    api = ScriptedApi([job(("Failed", "BackoffLimitExceeded"))], log)
    result = run(api)
    assert (result.verdict.exit_code, result.verdict.report) == (1, report(ok=False, failed=1))
    assert api.deleted == ["redis-smoke-r1"]


def test_a_job_that_never_finishes_times_out_as_could_not_run_and_is_deleted() -> None:
    api = ScriptedApi([job()], "still running\n")
    result = run(api, timeout_s=30)
    assert result.verdict.exit_code == 2 and "timed out after 30 s" in result.verdict.reason
    assert api.deleted == ["redis-smoke-r1"]


def test_an_interrupt_while_waiting_still_deletes_the_job() -> None:
    api = ScriptedApi([job()], "")

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(Unavailable, match="interrupted: Job redis-smoke-r1 in redis deleted"):
        run(api, sleep=interrupted)
    assert api.deleted == ["redis-smoke-r1"]
    api.refuse["delete"] = ApiException(status=403, reason="Forbidden")
    with pytest.raises(Unavailable, match=r"NOT deleted .*TTL"):
        run(api, sleep=interrupted)


def test_a_log_read_that_fails_right_at_the_end_is_read_again() -> None:
    log = framed_log({"smoke-report.json": json.dumps(report()).encode()})

    class Flaky(ScriptedApi):
        calls = 0

        def pod_log(self, namespace: str, pod_name: str) -> str:
            self.calls += 1
            if self.calls == 2:  # the read right after the Job completed
                raise ApiException(status=500, reason="Internal Server Error")
            return self.log

    api = Flaky([job(), job(("Complete", None))], log)
    result = run(api)
    assert result.verdict.exit_code == 0, result.verdict


def test_an_interrupt_while_creating_the_job_still_deletes_it() -> None:
    class Interrupted(ScriptedApi):
        def create_job(self, namespace: str, body: dict[str, Any]) -> Any:
            super().create_job(namespace, body)
            raise KeyboardInterrupt  # the server created it; the answer never arrived

    api = Interrupted([job()], "")
    with pytest.raises(Unavailable, match="interrupted: Job redis-smoke-r1 in redis deleted"):
        run(api)
    assert api.deleted == ["redis-smoke-r1"]


def test_keep_leaves_the_job_for_debugging() -> None:
    api = ScriptedApi([job(("Complete", None))], framed_log({"smoke-report.json": b"{}"}))
    result = run(api, keep=True)
    assert api.deleted == [] and not result.deleted


def test_rbac_refusals_name_the_rights_the_gate_needs() -> None:
    api = ScriptedApi([job()], "", refuse={"create": ApiException(status=403, reason="Forbidden")})
    with pytest.raises(Unavailable, match=r"create Job redis-smoke-r1 in redis: .*403") as caught:
        run(api)
    assert "create/get/delete on jobs" in str(caught.value)
    assert api.deleted == []  # nothing was created, nothing to delete


def test_losing_the_api_server_mid_run_is_could_not_run_and_the_job_is_still_deleted() -> None:
    api = ScriptedApi([job()], "")
    api.refuse["read"] = ApiException(status=503, reason="Service Unavailable")
    with pytest.raises(Unavailable, match="read Job redis-smoke-r1: the API server answered 503"):
        run(api)
    assert api.deleted == ["redis-smoke-r1"]


def test_a_failed_delete_is_reported_not_raised() -> None:
    api = ScriptedApi([job(("Complete", None))], framed_log({"smoke-report.json": b"{}"}))
    api.refuse["delete"] = ApiException(status=403, reason="Forbidden")
    assert run(api).deleted is False


def test_no_server_at_all_is_explained() -> None:
    assert "no Kubernetes API server reachable" in sl.explain(ConnectionRefusedError("refused"))


# ---- the command line -------------------------------------------------------------------


class Ran:
    def __init__(self, exit_code: int, output: str) -> None:
        self.exit_code, self.output = exit_code, output


def cli(*args: str) -> Ran:
    """As `redisops smoke` runs (main() turns RedisOpsError into its exit code)."""
    result = CliRunner().invoke(app, ["smoke", *args])
    if isinstance(result.exception, RedisOpsError):
        return Ran(result.exception.exit_code, str(result.exception))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.output)


def test_stack_with_target_flags_is_refused_by_name(tmp_path: Path) -> None:
    result = cli("--stack", "dev", "--target", "local", "--no-disruption")
    assert result.exit_code == 2
    assert "--target, --no-disruption: not used with --stack" in result.output


def test_stack_flags_without_stack_are_refused() -> None:
    result = cli("--keep-job")
    assert result.exit_code == 2 and "--keep-job: not used with --target" in result.output
    result = cli("--timeout", "5")
    assert result.exit_code == 2 and "--timeout: used only with --stack" in result.output


def test_a_missing_outputs_file_is_exit_2_naming_it(tmp_path: Path) -> None:
    result = cli("--stack", "dev", "--outputs-file", str(tmp_path / "none.json"))
    assert result.exit_code == 2 and "none.json" in result.output


def test_no_kubernetes_credentials_is_exit_2_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.json"
    path.write_text(json.dumps({"namespace": "redis", "smokeJob": smoke_spec()}))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = cli("--stack", "dev", "--outputs-file", str(path))
    assert result.exit_code == 2 and "get-credentials" in result.output


def test_the_markdown_summary_names_the_verdict_the_failures_and_the_way_back() -> None:
    failing = {
        **report(ok=False, failed=1),
        "tests": [
            {
                "id": "test_acl.py::test_reader_cannot_xadd",
                "outcome": "failed",
                "message": "E   assert 'OK' == 'NOPERM'",
            }
        ],
        "skips": [{"test": "test_tls.py::test_x", "allowed": False, "reason": "no tls"}],
    }
    summary = {
        "job": "redis-smoke-r",
        "namespace": "redis",
        "exit_code": 1,
        "reason": "1 checks failed",
        "duration_s": 12.5,
        "report": failing,
    }
    text = sl.markdown(summary)
    assert text.startswith("### Smoke gate: FAILED (exit 1)")
    assert "| 9 | 1 | 0 | 0 | 0 |" in text
    assert "`test_acl.py::test_reader_cannot_xadd`: E   assert 'OK' == 'NOPERM'" in text
    assert "skipped without leave** `test_tls.py::test_x`: no tls" in text
    assert "runbooks/rollback-release.md" in text
    passing = sl.markdown({**summary, "exit_code": 0, "report": report()})
    assert "passed (exit 0)" in passing and "Roll back" not in passing
    assert "could not run (exit 2)" in sl.markdown_unavailable("prod", "no cluster")


def test_a_gate_that_could_not_run_still_writes_its_summary(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    result = cli(
        "--stack", "dev", "--outputs-file", str(tmp_path / "none.json"),
        "--summary-md", str(summary),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "could not run (exit 2)" in summary.read_text()
    assert "none.json" in summary.read_text()
