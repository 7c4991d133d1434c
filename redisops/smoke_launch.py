"""`redisops smoke --stack X`: the rollout gate, run by CI against a GKE stack.

The suite must run inside the namespace's network policy, next to the pods, so the gate
is a Job: created from the spec the Pulumi program exports (`smokeJob`), waited for,
its logs streamed, its reports read back, deleted. Exit 0 (every check passed), 1 (a
check failed), 2 (the gate could not run: no cluster, RBAC, a pod that cannot start, a
timeout; with the reason).

The reports leave the pod through its log: the Job's container prints the JSON report
and the JUnit XML as framed lines (`frame_reports`), which the launcher reads back
(`read_frames`). Chosen over a ConfigMap the Job writes because it needs no API rights
in the pod (the smoke identity stays read-only), no 1 MiB object limit applies, and the
reports survive as long as the pod's log does (the Job is kept a day when the launcher
cannot delete it). Each file carries its SHA-256, so a truncated log is detected, not
misread.

The decisions (Job and pod states, timeouts, framing, exit codes) are pure functions over
the kubernetes client's objects; `launch` is the thin I/O loop around them. There is no
API server on the machines this is built on: only the decisions and the loop against a
scripted API are tested here.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import gzip
import hashlib
import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from redisops.errors import ConfigError, Unavailable

FRAME = "redisops-smoke-report"
CHUNK = 3000  # base64 characters per log line: far below the runtime's 16 KiB line split
REPORT_FILES = ("smoke-report.json", "smoke-junit.xml")
RUN_LABEL = "redisops.io/smoke-run"
STACK_LABEL = "redisops.io/stack"
# Waiting reasons of a container that will not start by itself: the gate cannot run.
STUCK_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
PULUMI_TIMEOUT_S = 120.0  # `pulumi stack output` reads the state backend once
API_TIMEOUT_S = (10.0, 30.0)  # connect, read: one API call never outlasts --timeout by much
FINAL_LOG_TRIES = 3  # a log read that fails as the Job ends is read again
UNSCHEDULABLE_GRACE_S = 300.0  # a node pool may scale up for the pod meanwhile
_STACK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

# ---- the reports through the pod's log ------------------------------------------------


def frame(name: str, data: bytes, chunk: int = CHUNK) -> list[str]:
    """`data` as log lines: `<FRAME> <name> <i>/<n> <sha256> <base64 of gzip>`."""
    digest = hashlib.sha256(data).hexdigest()
    encoded = base64.b64encode(gzip.compress(data, mtime=0)).decode()
    parts = [encoded[i : i + chunk] for i in range(0, len(encoded), chunk)] or [""]
    return [f"{FRAME} {name} {i + 1}/{len(parts)} {digest} {p}" for i, p in enumerate(parts)]


def frame_reports(report_dir: Path) -> list[str]:
    """The framed lines of every report file the suite wrote (missing ones skipped)."""
    lines: list[str] = []
    for name in REPORT_FILES:
        path = report_dir / name
        if path.is_file():
            lines += frame(name, path.read_bytes())
    return lines


@dataclasses.dataclass
class Frames:
    """What a log carried: the files read back whole, and what was wrong with others."""

    files: dict[str, bytes]
    problems: list[str]
    other_lines: list[str]


def read_frames(log: str) -> Frames:
    """Read back the files `frame` wrote into a log; every other line kept in order.

    A file is returned only when all its parts arrived and its digest matches; a file
    framed twice (a retried container) counts from its last complete copy.
    """
    parts: dict[tuple[str, str], dict[int, str]] = {}
    totals: dict[tuple[str, str], int] = {}
    order: list[tuple[str, str]] = []
    other: list[str] = []
    for line in log.splitlines():
        fields = line.split(" ")
        if fields[0] != FRAME:
            other.append(line)
            continue
        if len(fields) != 5 or not re.fullmatch(r"\d+/\d+", fields[2]):
            other.append(line)  # not ours after all: shown, never decoded
            continue
        _, name, position, digest, chunk = fields
        index, total = (int(x) for x in position.split("/"))
        key = (name, digest)
        if key not in parts:
            order.append(key)
        parts.setdefault(key, {})[index] = chunk
        totals[key] = total
    files: dict[str, bytes] = {}
    problems: list[str] = []
    for key in order:
        name, digest = key
        got = parts[key]
        missing = [i for i in range(1, totals[key] + 1) if i not in got]
        if missing:
            problems.append(f"{name}: {len(missing)} of {totals[key]} parts missing from the log")
            continue
        try:
            data = gzip.decompress(base64.b64decode("".join(got[i] for i in sorted(got))))
        except (ValueError, OSError, EOFError) as exc:
            problems.append(f"{name}: not decodable ({exc})")
            continue
        if hashlib.sha256(data).hexdigest() != digest:
            problems.append(f"{name}: its digest does not match (the log was altered)")
            continue
        files[name] = data
    if files:  # a complete copy supersedes a broken earlier one of the same file
        problems = [p for p in problems if p.split(":")[0] not in files]
    return Frames(files, problems, other)


# ---- the stack's outputs and the Job of one run ---------------------------------------


@dataclasses.dataclass(frozen=True)
class StackOutputs:
    stack: str
    namespace: str
    smoke_job: dict[str, Any]


def parse_outputs(stack: str, outputs: Any, source: str) -> StackOutputs:
    """The outputs the gate needs, from `pulumi stack output --json`."""
    if not isinstance(outputs, dict):
        raise ConfigError(f"{source}: not the JSON object `pulumi stack output --json` prints")
    missing = [k for k in ("namespace", "smokeJob") if not outputs.get(k)]
    if missing:
        raise ConfigError(
            f"{source}: stack {stack} has no {', '.join(missing)} output; run `pulumi up -s "
            f"{stack}` with this repository's program first"
        )
    job = outputs["smokeJob"]
    if not isinstance(job, dict) or job.get("kind") != "Job":
        raise ConfigError(f"{source}: smokeJob is not a Kubernetes Job")
    containers = job.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    if not containers or not all(isinstance(c, dict) for c in containers):
        raise ConfigError(
            f"{source}: smokeJob has no pod template with containers; re-run `pulumi up -s "
            f"{stack}` with this repository's program"
        )
    namespace = str(outputs["namespace"])
    if job.get("metadata", {}).get("namespace", namespace) != namespace:
        raise ConfigError(
            f"{source}: smokeJob is for namespace {job['metadata']['namespace']!r}, the stack's "
            f"namespace is {namespace!r}; re-run `pulumi up -s {stack}`"
        )
    return StackOutputs(stack, namespace, job)


def load_outputs(
    stack: str,
    outputs_file: Path | None,
    run: Callable[[list[str]], str] | None = None,
) -> StackOutputs:
    """From a file of `pulumi stack output --json`, or by running it."""
    if not _STACK.match(stack):
        raise ConfigError(f"--stack {stack!r}: not a stack name (e.g. dev, prod)")
    if outputs_file is not None:
        try:
            text = outputs_file.read_text()
        except OSError as exc:
            raise ConfigError(f"--outputs-file {outputs_file}: {exc.strerror}") from exc
        source = f"--outputs-file {outputs_file}"
    else:
        text = (run or _pulumi)(["pulumi", "stack", "output", "--json", "--stack", stack])
        source = f"`pulumi stack output --json --stack {stack}`"
    try:
        outputs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not JSON ({exc})") from exc
    return parse_outputs(stack, outputs, source)


def _pulumi(argv: list[str]) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=PULUMI_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(
            f"{' '.join(argv)} did not answer in {PULUMI_TIMEOUT_S:g} s (is the state backend "
            "reachable, and `pulumi login` done?); or pass --outputs-file"
        ) from exc
    except FileNotFoundError as exc:
        raise Unavailable(
            "pulumi is not installed: install the Pulumi CLI, or pass --outputs-file with the "
            "output of `pulumi stack output --json`"
        ) from exc
    if done.returncode != 0:
        raise Unavailable(f"{' '.join(argv)}: {done.stderr.strip()[-400:]}")
    return done.stdout


def job_for_run(outputs: StackOutputs, run_id: str) -> dict[str, Any]:
    """The exported spec as one run's Job: its own name and labels; prod refuses any
    spec that would run the destructive checks."""
    job = copy.deepcopy(outputs.smoke_job)
    metadata = job.setdefault("metadata", {})
    metadata.pop("generateName", None)
    metadata["name"] = f"redis-smoke-{run_id}"
    metadata["namespace"] = outputs.namespace
    labels = {RUN_LABEL: run_id, STACK_LABEL: outputs.stack}
    metadata["labels"] = {**metadata.get("labels", {}), **labels}
    template = job["spec"]["template"]
    template.setdefault("metadata", {})
    template["metadata"]["labels"] = {**template["metadata"].get("labels", {}), **labels}
    if outputs.stack.startswith("prod"):
        for container in template["spec"]["containers"]:
            if "--no-disruption" not in container.get("args", []):
                raise ConfigError(
                    f"stack {outputs.stack}: the exported smokeJob would run destructive checks "
                    "(no --no-disruption); prod runs only non-destructive ones — re-run "
                    f"`pulumi up -s {outputs.stack}` with this repository's program"
                )
    return job


def new_run_id() -> str:
    return f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


# ---- deciding from the Job and its pods ------------------------------------------------

State = Literal["pending", "running", "succeeded", "failed", "cannot-run"]


@dataclasses.dataclass(frozen=True)
class Progress:
    state: State
    detail: str

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "cannot-run")


def judge(job: Any, pods: Sequence[Any], elapsed_s: float, timeout_s: float) -> Progress:
    """Where the run stands, from the Job and its pods (kubernetes client objects)."""
    status = job.status
    for condition in status.conditions or []:
        if condition.status != "True":
            continue
        if condition.type == "Complete":
            return Progress("succeeded", "the Job completed")
        if condition.type == "Failed":
            if condition.reason == "DeadlineExceeded":
                return Progress(
                    "cannot-run",
                    f"the Job ran past its activeDeadlineSeconds ({condition.message or ''})",
                )
            return Progress("failed", f"the Job failed: {condition.reason or condition.message}")
    if (status.succeeded or 0) >= 1:
        return Progress("succeeded", "the Job's pod succeeded")
    if (status.failed or 0) >= 1:
        return Progress("failed", "the Job's pod failed")
    stuck = _stuck(pods, elapsed_s)
    if stuck is not None:
        return Progress("cannot-run", stuck)
    if elapsed_s > timeout_s:
        return Progress("cannot-run", f"timed out after {timeout_s:.0f} s: {_phase(pods)}")
    running = any(p.status.phase == "Running" for p in pods)
    return Progress("running" if running else "pending", _phase(pods))


def _stuck(pods: Sequence[Any], elapsed_s: float) -> str | None:
    for pod in pods:
        name = pod.metadata.name
        statuses = [
            *(pod.status.init_container_statuses or []),
            *(pod.status.container_statuses or []),
        ]
        for container in statuses:
            waiting = container.state.waiting if container.state else None
            if waiting is not None and waiting.reason in STUCK_REASONS:
                why = f"{waiting.reason}: {waiting.message or ''}".strip(": ")
                return f"pod {name}: container {container.name} {why}"
        for condition in pod.status.conditions or []:
            unschedulable = (
                condition.type == "PodScheduled"
                and condition.status == "False"
                and condition.reason == "Unschedulable"
            )
            if unschedulable and elapsed_s > UNSCHEDULABLE_GRACE_S:
                return f"pod {name} unschedulable for {elapsed_s:.0f} s: {condition.message or ''}"
    return None


def _phase(pods: Sequence[Any]) -> str:
    if not pods:
        return "no pod yet"
    return ", ".join(f"pod {p.metadata.name} {p.status.phase}" for p in pods)


@dataclasses.dataclass(frozen=True)
class Verdict:
    exit_code: int  # 0 passed, 1 a check failed, 2 the gate could not run
    reason: str
    report: dict[str, Any] | None


def verdict(progress: Progress, frames: Frames) -> Verdict:
    """The gate's exit code from how the Job ended and the report its log carried."""
    raw = frames.files.get("smoke-report.json")
    report: dict[str, Any] | None = None
    if raw is not None:
        try:
            report = json.loads(raw)
        except json.JSONDecodeError:
            report = None
    if progress.state == "cannot-run":
        return Verdict(2, progress.detail, report)
    if report is None:
        why = "; ".join(frames.problems) or "no report in the pod's log"
        return Verdict(2, f"{progress.detail}, but no smoke report could be read ({why})", None)
    if progress.state == "succeeded" and report.get("ok"):
        return Verdict(0, "every check passed", report)
    counts = report.get("counts", {})
    failing = counts.get("failed", 0) + counts.get("error", 0)
    skipped = counts.get("skipped_not_allowed", 0)
    if report.get("ok"):  # the report passed, yet the container failed after it
        return Verdict(1, f"{progress.detail} after a passing report", report)
    return Verdict(1, f"{failing} checks failed, {skipped} skipped without leave", report)


def new_lines(log: str, shown: int) -> tuple[list[str], int]:
    """Lines of `log` past the first `shown`, frames left out; the new count."""
    lines = log.splitlines()
    fresh = [line for line in lines[shown:] if not line.startswith(FRAME + " ")]
    return fresh, len(lines)


# ---- the thin I/O loop ----------------------------------------------------------------


class Api(Protocol):
    """What the launcher asks of the API server (`KubernetesApi` is the real one)."""

    def create_job(self, namespace: str, body: dict[str, Any]) -> Any: ...
    def read_job(self, namespace: str, name: str) -> Any: ...
    def list_pods(self, namespace: str, selector: str) -> list[Any]: ...
    def pod_log(self, namespace: str, pod: str) -> str: ...
    def delete_job(self, namespace: str, name: str) -> None: ...


@dataclasses.dataclass
class Launch:
    """One run: what was created, how it went, what it printed."""

    job_name: str
    namespace: str
    progress: Progress
    verdict: Verdict
    files: dict[str, bytes]  # the reports read back from the log
    log: list[str]  # what the pod printed besides them
    deleted: bool
    duration_s: float


def launch(
    api: Api,
    outputs: StackOutputs,
    *,
    timeout_s: float,
    poll_s: float = 2.0,
    run_id: str | None = None,
    keep: bool = False,
    on_progress: Callable[[Progress], None] = lambda p: None,
    on_line: Callable[[str], None] = lambda line: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Launch:
    """Create the run's Job, wait for it, read its reports, delete it (also when
    interrupted: the Job never outlives the launcher unless `keep`)."""
    body = job_for_run(outputs, run_id or new_run_id())
    name, namespace = body["metadata"]["name"], outputs.namespace
    started = clock()
    shown: dict[str, int] = {}
    log = ""
    created = False
    try:
        _call(lambda: api.create_job(namespace, body), f"create Job {name} in {namespace}")
        created = True
        while True:
            job = _call(lambda: api.read_job(namespace, name), f"read Job {name}")
            pods = _call(
                lambda: api.list_pods(namespace, f"job-name={name}"), f"list pods of Job {name}"
            )
            log = _stream(api, namespace, pods, shown, on_line) or log
            progress = judge(job, pods, clock() - started, timeout_s)
            on_progress(progress)
            if progress.finished:
                break
            sleep(poll_s)
        for _ in range(FINAL_LOG_TRIES):  # the whole log, once the Job has ended
            if read_frames(log).files:
                break
            sleep(1.0)
            log = _stream(api, namespace, pods, shown, on_line) or log
    except KeyboardInterrupt:
        raise Unavailable(
            f"interrupted: Job {name} in {namespace} {_clean_up(api, namespace, name, keep)}"
        ) from None
    except Unavailable:
        if created:
            _clean_up(api, namespace, name, keep)
        raise
    except BaseException:
        _clean_up(api, namespace, name, keep)
        raise
    deleted = not keep and _delete(api, namespace, name)
    frames = read_frames(log)
    return Launch(
        name, namespace, progress, verdict(progress, frames), frames.files, frames.other_lines,
        deleted,
        round(clock() - started, 1),
    )  # fmt: skip


def _stream(
    api: Api,
    namespace: str,
    pods: Sequence[Any],
    shown: dict[str, int],
    on_line: Callable[[str], None],
) -> str:
    """Print what each started pod logged since the last call; the last pod's whole log
    ('' when none could be read: the caller keeps what it read before)."""
    log = ""
    started = [p for p in pods if p.status.phase in ("Running", "Succeeded", "Failed")]
    for pod in sorted(started, key=lambda p: p.metadata.creation_timestamp or 0):
        name = pod.metadata.name
        try:
            log = api.pod_log(namespace, name)
        except Exception:  # noqa: S112 (a log not readable yet is read on the next poll)
            continue
        lines, shown[name] = new_lines(log, shown.get(name, 0))
        for line in lines:
            on_line(line)
    return log


def _clean_up(api: Api, namespace: str, name: str, keep: bool) -> str:
    """Delete the run's Job unless kept; say what became of it."""
    if keep:
        return "kept (--keep-job)"
    if _delete(api, namespace, name):
        return "deleted"
    return "NOT deleted (the API refused; its TTL removes it within a day)"


def _delete(api: Api, namespace: str, name: str) -> bool:
    try:
        api.delete_job(namespace, name)
    except Exception:  # reported: the Job's TTL removes it within a day
        return False
    return True


def _call(action: Callable[[], Any], what: str) -> Any:
    """An API call; what the server or the network refused, as the gate's reason."""
    try:
        return action()
    except Unavailable:
        raise
    except Exception as exc:
        raise Unavailable(f"{what}: {explain(exc)}") from exc


def explain(exc: BaseException) -> str:
    """One line for an API failure, naming the likely fix."""
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None) or type(exc).__name__
    if status in (401, 403):
        return (
            f"the API server refused ({status} {reason}): the identity running the gate needs "
            "create/get/delete on jobs and get/list on pods and pods/log in the namespace"
        )
    if status == 404:
        return f"not found (404): the namespace or the Job does not exist ({reason})"
    if status is not None:
        return f"the API server answered {status} {reason}"
    return f"no Kubernetes API server reachable ({str(exc)[:200]})"


class KubernetesApi:
    """The real API, through the kubernetes client (kubeconfig or in-cluster)."""

    def __init__(self, context: str | None = None) -> None:
        from kubernetes import client, config  # imported late: slow, and only here

        try:
            config.load_kube_config(context=context)
        except Exception as kube_exc:  # then in-cluster, then the reason
            try:
                config.load_incluster_config()
            except Exception as exc:
                raise Unavailable(
                    f"no Kubernetes credentials ({kube_exc}); run `gcloud container clusters "
                    "get-credentials <cluster> --region <region>` or give --context"
                ) from exc
        self.batch = client.BatchV1Api()
        self.core = client.CoreV1Api()

    def create_job(self, namespace: str, body: dict[str, Any]) -> Any:
        return self.batch.create_namespaced_job(
            namespace, cast(Any, body), _request_timeout=API_TIMEOUT_S
        )

    def read_job(self, namespace: str, name: str) -> Any:
        return self.batch.read_namespaced_job(name, namespace, _request_timeout=API_TIMEOUT_S)

    def list_pods(self, namespace: str, selector: str) -> list[Any]:
        pods = self.core.list_namespaced_pod(
            namespace, label_selector=selector, _request_timeout=API_TIMEOUT_S
        )
        return list(pods.items)

    def pod_log(self, namespace: str, pod: str) -> str:
        return str(
            self.core.read_namespaced_pod_log(pod, namespace, _request_timeout=API_TIMEOUT_S)
        )

    def delete_job(self, namespace: str, name: str) -> None:
        self.batch.delete_namespaced_job(
            name, namespace, propagation_policy="Background", _request_timeout=API_TIMEOUT_S
        )


def write_reports(files: dict[str, bytes], report_dir: Path) -> list[Path]:
    """The reports read from the log, written where CI collects its artifacts."""
    report_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in files.items():
        path = report_dir / name
        path.write_bytes(data)
        written.append(path)
    return written


def summary(result: Launch) -> dict[str, Any]:
    """The run, for `--json` and CI's summary."""
    return {
        "job": result.job_name,
        "namespace": result.namespace,
        "state": result.progress.state,
        "detail": result.progress.detail,
        "exit_code": result.verdict.exit_code,
        "reason": result.verdict.reason,
        "deleted": result.deleted,
        "duration_s": result.duration_s,
        "report": result.verdict.report,
    }


def markdown(summary: dict[str, Any]) -> str:
    """The run as Markdown, for CI's job summary: the verdict, the counts, each failure."""
    verdict = {0: "passed", 1: "FAILED", 2: "could not run"}.get(summary["exit_code"], "?")
    lines = [
        f"### Smoke gate: {verdict} (exit {summary['exit_code']})",
        "",
        f"{summary['reason']} — Job `{summary['job']}` in `{summary['namespace']}`, "
        f"{summary['duration_s']} s.",
    ]
    report = summary.get("report")
    if report:
        counts = report.get("counts", {})
        lines += [
            "",
            "| passed | failed | errors | skipped | skipped without leave |",
            "| ---: | ---: | ---: | ---: | ---: |",
            "| {passed} | {failed} | {error} | {skipped} | {skipped_not_allowed} |".format(
                **{k: counts.get(k, 0) for k in ("passed", "failed", "error", "skipped")},
                skipped_not_allowed=counts.get("skipped_not_allowed", 0),
            ),
        ]
        failures = [t for t in report.get("tests", []) if t.get("outcome") in ("failed", "error")]
        for test in failures:
            message = str(test.get("message", "")).strip().splitlines()
            lines.append(
                f"- **{test['outcome']}** `{test['id']}`: {message[-1] if message else ''}"
            )
        for skip in report.get("skips", []):
            if not skip.get("allowed"):
                lines.append(f"- **skipped without leave** `{skip['test']}`: {skip['reason']}")
    if summary["exit_code"]:
        lines += [
            "",
            "Roll back: re-run the deploy run of the last green commit of main (it deploys "
            "that commit with the image gated then), or follow `runbooks/rollback-release.md`. "
            "The reports are in the run's artifacts.",
        ]
    return "\n".join(lines) + "\n"


def markdown_unavailable(stack: str, reason: str) -> str:
    """The summary of a gate that could not run (exit 2)."""
    return (
        f"### Smoke gate on {stack}: could not run (exit 2)\n\n{reason}\n\nNothing was "
        "checked: the rollout is not proven. Fix the cause and re-run the job.\n"
    )
