"""The plan runs: every pod of the recorded dev plan as a container of the image built
here, exactly as declared (tests/containers/plan_run.py lists the few replacements), in
the order a first rollout goes, then a pod rescheduled onto a new address."""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path
from typing import Any

from devtools import pods
from devtools.engine import Engine
from tests.containers import plan_run
from tests.infra import harness

REDIS_READY_S = 180
JOB_TIMEOUT_S = 600


# Fetched from inside the pod (its port is not published): the samples, comments dropped.
OPS_SCRAPE = (
    "import urllib.request as u;"
    "t = u.urlopen('http://127.0.0.1:9122/metrics', timeout=20).read().decode();"
    "print('\\n'.join(l for l in t.splitlines() if l and not l.startswith('#')))"
)


def _wait_probe(pod: pods.RunningPod, container: str, kind: str, timeout: float) -> float:
    started = time.monotonic()
    result = pod.probe(container, kind)
    while (result is None or not result.ok) and time.monotonic() - started < timeout:
        time.sleep(1)
        result = pod.probe(container, kind)
    assert result is not None and result.ok, f"{pod.name} {kind}: {result}"
    return round(time.monotonic() - started, 1)


def _claims(prefix: str, spec: dict[str, Any]) -> dict[str, str]:
    """Each PersistentVolumeClaim of a pod -> the engine volume standing in for it."""
    return {
        v["name"]: f"{prefix}-pvc-{v['persistentVolumeClaim']['claimName']}"
        for v in spec.get("volumes", [])
        if "persistentVolumeClaim" in v
    }


def _start_redis(
    stand_in: pods.Cluster, prefix: str, name: str, spec: dict[str, Any], aliases: list[str]
) -> pods.RunningPod:
    """A StatefulSet pod with its claim, without the sidecar that cannot run here."""
    return stand_in.start_pod(
        name,
        spec,
        aliases=aliases,
        claims=_claims(prefix, spec),
        absent={"exporter": plan_run.REPLACED["exporter sidecar"]},
    )


def _run_job(
    stand_in: pods.Cluster, name: str, spec: dict[str, Any], prefix: str
) -> tuple[int, str, float]:
    started = time.monotonic()
    pod = stand_in.start_pod(name, spec, claims=_claims(prefix, spec))
    (container,) = [c["name"] for c in spec["containers"]]
    code = pod.wait_exit(container, JOB_TIMEOUT_S)
    logs = pod.logs(container)
    stand_in.delete_pod(name)
    return code, logs, round(time.monotonic() - started, 1)


def _last_json(logs: str) -> dict[str, Any]:
    """The last JSON object a command printed (one line or indented), after its logs."""
    decoder = json.JSONDecoder()
    starts = [i for i in range(len(logs)) if logs[i] == "{" and (i == 0 or logs[i - 1] == "\n")]
    for start in reversed(starts):
        try:
            value, _ = decoder.raw_decode(logs, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "level" not in value:  # not a structured log line
            return value
    raise AssertionError(f"no JSON report in the output:\n{logs[-3000:]}")


STREAMS = ("agent_updates", "agent_tasks", "standup:2026-12-02")
WRITER = """
import redis
from redis.cluster import ClusterNode
tls = "/etc/redis-platform/tls"
password = open("/etc/redis-platform/users/publisher/password").read().strip()
client = redis.RedisCluster(
    startup_nodes=[ClusterNode(n.rsplit(":", 1)[0], 6379) for n in NODES],
    ssl=True, ssl_ca_certs=f"{tls}/ca.crt", ssl_certfile=f"{tls}/tls.crt",
    ssl_keyfile=f"{tls}/tls.key", username="publisher", password=password,
)
for stream in STREAMS:
    for i in range(50):
        client.xadd(stream, {"sender": "plan-run", "action": "t", "payload": str(i)})
print({"written": {s: 50 for s in STREAMS}})  # the publisher may not XLEN
"""


def _writer_pod(plan: harness.Plan, smoke: dict[str, Any]) -> dict[str, Any]:
    """The smoke Job's pod (its certificate and the publisher's password) running a
    writer of stream entries instead of the suite."""
    spec = copy.deepcopy(smoke)
    (container,) = spec["containers"]
    nodes = plan.outputs["redisNodeEndpoints"][0]
    script = f"NODES = {list(nodes)!r}\nSTREAMS = {list(STREAMS)!r}\n{WRITER}"
    container["command"], container["args"] = ["python", "-c", script], []
    return spec


def _stop_all(pods_: list[pods.RunningPod]) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = [{} for _ in pods_]

    def stop(i: int) -> None:
        reports[i] = pods_[i].stop()

    threads = [threading.Thread(target=stop, args=(i,)) for i in range(len(pods_))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return reports


def test_the_dev_plan_runs_as_declared(
    engine: Engine,
    platform_image: str,
    dev_plan: harness.Plan,
    dev_settings: Any,
    prefix: str,
    tmp_path: Path,
) -> None:
    times: dict[str, float] = {}
    started = time.monotonic()
    chart = harness.chart_objects(dev_plan)
    jobs = plan_run.job_pods(dev_plan, dev_settings)
    with pods.cluster(engine, dev_settings.namespace, dev_settings.cluster_domain, tmp_path,
                      prefix) as stand_in:  # fmt: skip
        for obj in plan_run.objects(dev_plan, chart):
            stand_in.add_object(obj)

        # 1. the Redis pods start (prepare first) and answer their startup probes
        redis: dict[str, pods.RunningPod] = {}
        specs = {name: (spec, aliases) for name, spec, aliases in plan_run.redis_pods(
            dev_plan, dev_settings)}  # fmt: skip
        for name in specs:
            redis[name] = _start_redis(stand_in, prefix, name, *specs[name])
        for pod in redis.values():
            for probe in ("startupProbe", "livenessProbe"):
                result = pod.probe("redis", probe)
                deadline = time.monotonic() + 60
                while result is not None and not result.ok and time.monotonic() < deadline:
                    time.sleep(1)
                    result = pod.probe("redis", probe)
                assert result is not None and result.ok, f"{pod.name} {probe}: {result}"
            not_ready = pod.probe("redis", "readinessProbe")
            assert not_ready is not None and not not_ready.ok  # no cluster yet
        times["redis pods started"] = round(time.monotonic() - started, 1)

        # 2. the reconcile Job forms the cluster; every Redis pod becomes ready
        code, logs, times["reconcile Job"] = _run_job(
            stand_in, "reconcile", jobs["reconcile"], prefix
        )
        assert code == 0, f"reconcile failed:\n{logs[-4000:]}"
        for pod in redis.values():
            pod.wait_ready(REDIS_READY_S)
        times["redis ready"] = round(time.monotonic() - started, 1)

        # 3. the proxy Deployment (the chart's render with the plan's values) is ready
        proxy_spec, proxy_aliases = plan_run.proxy_pod(chart, dev_settings)
        proxy = stand_in.start_pod("sse-proxy-0", proxy_spec, aliases=proxy_aliases)
        times["proxy ready s"] = proxy.wait_ready(60)
        live = proxy.probe("sse-proxy", "livenessProbe")
        assert live is not None and live.ok, live

        # data to back up: entries on the platform's streams, written by a client pod
        #    as the publisher role (the smoke Job's pod, running a writer instead)
        code, logs, _ = _run_job(stand_in, "writer", _writer_pod(dev_plan, jobs["smoke"]), prefix)
        assert code == 0, f"writer failed:\n{logs[-3000:]}"

        # 4. the backup CronJob's container writes a backup (to the bucket's stand-in)
        code, logs, times["backup Job"] = _run_job(stand_in, "backup", jobs["backup"], prefix)
        assert code == 0, f"backup failed:\n{logs[-4000:]}"
        backup = _last_json(logs)

        # 5. the smoke Job's container runs the gate as in prod and passes
        code, logs, times["smoke Job"] = _run_job(stand_in, "smoke", jobs["smoke"], prefix)
        report = _last_json(logs)
        assert code == 0 and report["ok"], f"smoke failed:\n{logs[-6000:]}"

        # 6. the restore-drill Job restores that backup into scratch servers in its pod
        code, logs, times["drill Job"] = _run_job(stand_in, "drill", jobs["drill"], prefix)
        assert code == 0, f"drill failed:\n{logs[-4000:]}"
        drill = _last_json(logs)
        assert drill["ok"] and drill["restore"]["keys_restored"] >= len(STREAMS), drill

        # 6b. the platform metrics Deployment serves what the alerts read: the mounted
        #     certificates' expiry and the backup and drill just recorded in the bucket
        ops_spec = plan_run.ops_metrics_pod(dev_plan)
        ops = stand_in.start_pod("redis-ops-metrics-0", ops_spec, claims=_claims(prefix, ops_spec))
        times["ops metrics live s"] = _wait_probe(ops, "metrics", "livenessProbe", 60)
        code, text = ops.exec("metrics", ["python", "-c", OPS_SCRAPE], timeout=30)
        assert code == 0, text
        ops_metrics = dict(line.rsplit(" ", 1) for line in text.splitlines() if line)
        for name in ('certificate="node"', 'certificate="ca"'):
            assert (
                float(ops_metrics[f"redisops_tls_certificate_expiry_timestamp_seconds{{{name}}}"])
                > time.time()
            )
        assert float(ops_metrics["redisops_backup_last_success_timestamp_seconds"]) > 0, text
        assert float(ops_metrics["redisops_drill_last_success_timestamp_seconds"]) > 0, text
        assert ops_metrics["redisops_drill_last_run_failed"] == "0.0", text
        assert ops_metrics['redisops_source_up{source="backups"}'] == "1.0", text

        # 7. a Redis pod is deleted (preStop hands its slots off) and comes back on a new
        #    address with its volume; the cluster takes it back and the gate passes again
        moved = "redis-cluster-0"
        old_ip = redis[moved].ip
        stand_in.pods.pop(moved)
        stop = redis[moved].stop()
        redis[moved].remove()
        assert stop["redis"]["preStop"]["exit"] == 0, stop
        assert not stop["redis"]["killed"], f"{moved} outlived its grace period: {stop}"
        recreated = time.monotonic()
        redis[moved] = _start_redis(stand_in, prefix, moved, *specs[moved])
        assert redis[moved].ip != old_ip
        redis[moved].wait_ready(REDIS_READY_S)
        times["rescheduled pod ready"] = round(time.monotonic() - recreated, 1)
        code, logs, times["smoke Job again"] = _run_job(stand_in, "smoke-2", jobs["smoke"], prefix)
        assert code == 0 and _last_json(logs)["ok"], f"smoke after reschedule:\n{logs[-6000:]}"

        # 8. every pod stops through its preStop, within its grace period
        everything = [*redis.values(), proxy, ops]
        for pod, stopped in zip(everything, _stop_all(everything), strict=True):
            for container in pod.spec["containers"]:
                entry = stopped[container["name"]]
                if "preStop" in entry:
                    assert entry["preStop"]["exit"] == 0, (pod.name, entry)
                if "liveness" in entry:  # still live after everything the run did
                    assert entry["liveness"]["ok"], (pod.name, entry)
                assert not entry["killed"], f"{pod.name}/{container['name']}: {entry}"
    times["total"] = round(time.monotonic() - started, 1)
    print("plan run:", json.dumps(times), "backup:", json.dumps(backup)[:300])
    print("drill:", json.dumps(drill)[:500], "smoke:", report.get("counts"))
