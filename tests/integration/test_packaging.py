"""What can be tested of the image without a Docker engine: the Dockerfile's inputs and
pins, and a fresh install of the built wheel providing the console scripts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_every_path_the_dockerfile_copies_exists_and_is_not_ignored() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copies = [rest for word, rest in instructions() if word == "COPY" and "--from" not in rest]
    assert copies
    for rest in copies:
        *sources, _destination = rest.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert source.rstrip("/") in allowed, f"COPY {source}: excluded by .dockerignore"


def test_the_base_image_is_pinned_by_digest_and_the_user_is_not_root() -> None:
    args = dict(
        rest.split("=", 1) for word, rest in instructions() if word == "ARG" and "=" in rest
    )
    assert re.fullmatch(r"python:3\.11-slim-\w+@sha256:[0-9a-f]{64}", args["PYTHON_IMAGE"])
    stages = [rest for word, rest in instructions() if word == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    final = DOCKERFILE.split("FROM ${PYTHON_IMAGE}\n", 1)[1]
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    for tool in ("gcc", "build-essential", "python3-dev", "pip install"):
        assert tool not in final, f"the runtime stage should not have {tool}"
    assert "redis-tools" in final and "redis-server" in final


def test_a_fresh_install_of_the_wheel_provides_the_console_scripts(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    [wheel] = list(wheels.glob("redis_platform-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    assert "redisops = redisops.cli:main" in scripts
    assert "sse-proxy = sse_proxy.server:main" in scripts
    assert "smoke_tests/smoke.ini" in names  # the suite's own pytest settings
    assert not any(n.startswith("tests/") for n in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [venv / "bin" / "pip", "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
        timeout=300,
    )
    # The dependencies come from this environment; the code and scripts from the wheel.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    for script in ("redisops", "sse-proxy"):
        proc = subprocess.run(
            [venv / "bin" / script, "--help"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
    code = "import redisops, sse_proxy, smoke_tests; print(redisops.__file__)"
    check = subprocess.run(
        [venv / "bin" / "python", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    assert str(venv) in check.stdout
