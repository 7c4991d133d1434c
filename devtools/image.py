"""Build the platform image from the repository's Dockerfile on a machine without a
registry.

Nothing is pulled. When the Dockerfile's default base (the pinned
`python:3.11-slim-bookworm` digest, which CI keeps) is not in the engine, a stand-in is
made from Debian packages: `debootstrap` makes a bookworm root filesystem that is imported
as `local/debian:bookworm`, and `local/python:3.11-slim-bookworm` adds Debian's Python
3.11 on top (with this machine's extra CA certificates, which only the stand-in carries).
The project's Dockerfile then builds unchanged through its `PYTHON_IMAGE` argument.

The image is tagged by a digest of everything the build reads, so an unchanged tree is
not rebuilt: `redis-platform:<digest>` and `redis-platform:local`.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from devtools.engine import Engine, EngineError

REPO = Path(__file__).resolve().parent.parent
IMAGE_REPOSITORY = "redis-platform"
LOCAL_TAG = f"{IMAGE_REPOSITORY}:local"
DEBIAN_BASE = "local/debian:bookworm"
PYTHON_STAND_IN = "local/python:3.11-slim-bookworm"
# What the Dockerfile copies (kept in step with .dockerignore).
CONTEXT_FILES = ("Dockerfile", "pyproject.toml", "README.md", "constraints.txt")
CONTEXT_DIRS = ("redisops", "sse_proxy", "smoke_tests")
HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
HOST_EXTRA_CAS = Path("/usr/local/share/ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Trimmed from the debootstrap tree, as the slim images do.
SLIM_PATHS = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/cache/apt/archives",
    "var/lib/apt/lists",
)

PYTHON_STAND_IN_DOCKERFILE = """\
FROM local/debian:bookworm
COPY ca/ /usr/local/share/ca-certificates/
RUN apt-get update \\
 && apt-get install -y --no-install-recommends \\
      python3.11 python3.11-venv python-is-python3 ca-certificates \\
 && update-ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
# pip's own certificate bundle does not know this machine's extra CAs: use the system's.
ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt
"""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuiltImage:
    image: str
    digest: str
    built: bool
    seconds: float
    size_bytes: int
    base: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _context_paths(repo: Path) -> Iterator[Path]:
    for name in CONTEXT_FILES:
        yield repo / name
    for name in CONTEXT_DIRS:
        for path in sorted((repo / name).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                yield path


def context_digest(repo: Path = REPO, base: str = "") -> str:
    """A digest of every file the build reads, and of the base it builds on."""
    sha = hashlib.sha256(base.encode() + b"\0")
    for path in _context_paths(repo):
        sha.update(str(path.relative_to(repo)).encode() + b"\0")
        sha.update(path.read_bytes() + b"\0")
    return sha.hexdigest()[:16]


def default_base(repo: Path = REPO) -> str:
    """The PYTHON_IMAGE the Dockerfile names (a pinned digest)."""
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", (repo / "Dockerfile").read_text(), re.M)
    if match is None:
        raise EngineError("Dockerfile: no `ARG PYTHON_IMAGE=<image>` line")
    return match.group(1)


def debian_mirror(sources: Path = HOST_SOURCES) -> str:
    """The Debian mirror this machine's apt uses (deb822 sources), for debootstrap."""
    if sources.exists():
        for block in sources.read_text().split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in block.splitlines() if ":" in line and line[0] != "#"
            )
            suites = fields.get("Suites", "").split()
            if "bookworm" in suites and fields.get("URIs"):
                return fields["URIs"].split()[0].strip()
    return DEFAULT_MIRROR


def _make_debian_base(engine: Engine, progress: Progress) -> None:
    if shutil.which("debootstrap") is None:
        raise EngineError(
            f"{DEBIAN_BASE} must be made locally and debootstrap is missing: "
            "run `make container-engine` (installs docker.io and debootstrap)"
        )
    mirror = debian_mirror()
    progress(f"debootstrap bookworm from {mirror}")
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=engine.root or None) as tmp:
        rootfs = Path(tmp) / "rootfs"
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise EngineError(f"debootstrap failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        if HOST_SOURCES.exists():
            (rootfs / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
            shutil.copy(HOST_SOURCES, rootfs / "etc/apt/sources.list.d/debian.sources")
            (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        policy = rootfs / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        for rel in SLIM_PATHS:
            target = rootfs / rel
            if target.is_dir():
                shutil.rmtree(target)
                target.mkdir(parents=True)
        progress(f"import {DEBIAN_BASE}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [engine.client, "import", "-", DEBIAN_BASE],
            stdin=tar.stdout,
            env=engine.env(),
            capture_output=True,
            text=True,
            check=False,
        )
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise EngineError(f"docker import failed: {imported.stderr.strip()}")


def _build(engine: Engine, context: Path, tags: list[str], args: list[str], log: Path) -> None:
    cmd = [engine.client, "build", "--network", "host", *args]
    for tag in tags:
        cmd += ["--tag", tag]
    with log.open("w") as out:
        proc = subprocess.run(
            [*cmd, str(context)],
            env={**engine.env(), "DOCKER_BUILDKIT": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if proc.returncode != 0:
        tail = log.read_text().splitlines()[-25:]
        raise EngineError("docker build failed (" + str(log) + "):\n" + "\n".join(tail))


def _make_python_stand_in(engine: Engine, progress: Progress) -> None:
    if not engine.has_image(DEBIAN_BASE):
        _make_debian_base(engine, progress)
    progress(f"build {PYTHON_STAND_IN} (Debian's python3.11)")
    with tempfile.TemporaryDirectory(prefix="python-base-") as tmp:
        context = Path(tmp)
        (context / "Dockerfile").write_text(PYTHON_STAND_IN_DOCKERFILE)
        cas = context / "ca"
        cas.mkdir()
        if HOST_EXTRA_CAS.is_dir():
            for cert in HOST_EXTRA_CAS.glob("*.crt"):
                shutil.copy(cert, cas / cert.name)
        _build(engine, context, [PYTHON_STAND_IN], [], context / "build.log")


def resolve_base(engine: Engine, repo: Path = REPO, progress: Progress = print) -> str:
    """The Dockerfile's pinned base when the engine has it, else the local stand-in."""
    pinned = default_base(repo)
    if engine.has_image(pinned):
        return pinned
    if not engine.has_image(PYTHON_STAND_IN):
        _make_python_stand_in(engine, progress)
    return PYTHON_STAND_IN


def build_image(
    engine: Engine, repo: Path = REPO, *, progress: Progress = print, log_dir: Path | None = None
) -> BuiltImage:
    """Build (or find, when nothing changed) the platform image; returns its tag."""
    started = time.monotonic()
    base = resolve_base(engine, repo, progress)
    digest = context_digest(repo, base)
    image = f"{IMAGE_REPOSITORY}:{digest}"
    built = False
    if not engine.has_image(image):
        progress(f"build {image} on {base}")
        log = (log_dir or Path(tempfile.gettempdir())) / f"image-build-{digest}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        _build(engine, repo, [image], ["--build-arg", f"PYTHON_IMAGE={base}"], log)
        built = True
    engine.run(["tag", image, LOCAL_TAG])
    info = engine.inspect("image", image) or {}
    return BuiltImage(
        image=image,
        digest=digest,
        built=built,
        seconds=round(time.monotonic() - started, 1),
        size_bytes=int(info.get("Size", 0)),
        base=base,
    )
