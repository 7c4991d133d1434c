"""Each pod of the plan, run from the image built here exactly as the plan declares it
(user, read-only root, dropped capabilities, volumes, environment): the failures found by
an outside run of the image, which tests on the host passed over."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from devtools import pods
from devtools.engine import Engine
from redisops import engine as redis_engine
from tests.containers import plan_run
from tests.infra import harness

# What every Job does in its first second: Python's temp directory (pytest, backup
# verify and the drill need it), and the state directory the CLI keeps.
START_CHECK = """
import os, pathlib, tempfile
fd, path = tempfile.mkstemp()
os.write(fd, b"x")
os.close(fd)
state = pathlib.Path(os.environ.get("REDISOPS_STATE_DIR", "/nonexistent/state"))
state.mkdir(parents=True, exist_ok=True)
(state / "probe").write_text("x")
print("ok", path, state)
"""


@pytest.mark.parametrize("job", ["reconcile", "backup", "smoke", "drill"])
def test_job_container_has_a_temp_and_state_directory_at_start(
    job: str,
    engine: Engine,
    platform_image: str,
    dev_plan: harness.Plan,
    dev_settings: Any,
    prefix: str,
    tmp_path: Path,
) -> None:
    spec = plan_run.declared_jobs(dev_plan, dev_settings)[job]
    (container,) = spec["containers"]
    container["command"], container["args"] = ["python", "-c", START_CHECK], []
    with pods.cluster(engine, "redis", "cluster.local", tmp_path, prefix) as stand_in:
        for registration in dev_plan.kube("Secret") + dev_plan.kube("ConfigMap"):
            stand_in.add_object(registration.manifest)
        stand_in.add_object(
            {"kind": "ConfigMap", "metadata": {"name": "redis-smoke-job"}, "data": {}}
        )
        pod = stand_in.start_pod(f"{job}-start", spec)
        code = pod.wait_exit(container["name"], timeout=60)
        assert code == 0, f"{job} crashed at start:\n{pod.logs(container['name'])[-2000:]}"


def test_backup_written_by_the_deployed_redis_is_read_by_the_image_tools(
    engine: Engine, platform_image: str, dev_plan: harness.Plan, prefix: str
) -> None:
    """The StatefulSet's Redis writes a snapshot (a stream, a function library: what every
    reconciled cluster holds); the platform image's redis-check-rdb accepts it and its
    scratch redis-server (restores, drills) loads every key."""
    statefulset = dev_plan.one("StatefulSet", "redis-cluster")
    (server,) = [
        c for c in statefulset["spec"]["template"]["spec"]["containers"] if c["name"] == "redis"
    ]
    redis_image = server["image"]
    assert engine.has_image(redis_image), (
        f"the StatefulSet runs {redis_image}, which is not built here: the engine the "
        "backups come from must be the one the tests run"
    )
    volume = f"{prefix}-dump"
    engine.run(["volume", "create", volume])
    try:
        write = (
            "redis-server --port 6390 --dir /dump --save '' --daemonize yes && sleep 0.5 && "
            "redis-cli -p 6390 XADD agent_updates '*' sender a payload p >/dev/null && "
            "redis-cli -p 6390 SET k v >/dev/null && "
            'redis-cli -p 6390 FUNCTION LOAD "#!lua name=lib\n'
            "redis.register_function('f', function() return 1 end)\" >/dev/null && "
            "redis-cli -p 6390 SAVE && redis-cli -p 6390 SHUTDOWN NOSAVE || true"
        )
        engine.run(
            [
                "run",
                "--rm",
                "--user",
                "0:0",
                "-v",
                f"{volume}:/dump",
                "--entrypoint",
                "sh",
                redis_image,
                "-c",
                f"chmod 777 /dump && {write}",
            ]
        )
        check = engine.run(
            [
                "run",
                "--rm",
                "-v",
                f"{volume}:/dump:ro",
                "--entrypoint",
                "redis-check-rdb",
                platform_image,
                "/dump/dump.rdb",
            ],
            check=False,
        )
        assert check.returncode == 0, f"redis-check-rdb refused it: {check.stdout}{check.stderr}"
        load = (
            "cp /dump/dump.rdb /tmp/ && redis-server --port 6391 --dir /tmp --save '' "
            "--daemonize yes && sleep 0.5 && redis-cli -p 6391 DBSIZE && "
            "redis-cli -p 6391 FUNCTION LIST | grep -cx lib"
        )
        loaded = engine.run(
            [
                "run",
                "--rm",
                "--tmpfs",
                "/tmp",
                "-v",
                f"{volume}:/dump:ro",
                "--entrypoint",
                "sh",
                platform_image,
                "-c",
                load,
            ],
            check=False,
        )
        assert loaded.stdout.split()[:2] == ["2", "1"], loaded.stdout + loaded.stderr
    finally:
        engine.run(["volume", "rm", "-f", volume], check=False)


def test_one_redis_build_in_the_image_the_statefulset_and_the_twin(
    engine: Engine, platform_image: str, dev_plan: harness.Plan
) -> None:
    """The StatefulSet's servers, the image's tools and the twin's servers are one release
    line, the one the settings check images against (redisops/engine.py)."""
    statefulset = dev_plan.one("StatefulSet", "redis-cluster")
    images = {c["image"] for c in statefulset["spec"]["template"]["spec"]["containers"]}
    assert platform_image in images
    versions = {}
    for tool in ("redis-server", "redis-check-rdb", "redis-cli"):
        out = engine.run(["run", "--rm", "--entrypoint", tool, platform_image, "--version"])
        versions[tool] = out.stdout.strip()
    host = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert redis_engine.server_version(versions["redis-server"]) == redis_engine.TOOLS_VERSION
    assert redis_engine.server_version(host) == redis_engine.TOOLS_VERSION, (
        f"the twin runs {host.strip()}, not the platform image's {versions['redis-server']}"
    )
    # redis-check-rdb and redis-cli print `<tool> 7.0.15`: the same release as the server
    server = versions["redis-server"].split("v=")[1].split()[0]
    assert versions["redis-check-rdb"].split()[-1] == server
    assert versions["redis-cli"].split()[-1] == server
