"""Where the smoke suite runs: endpoints, TLS material, role credentials, capabilities.

A target describes a live deployment. `local` is the twin (read through
`redisops local status --json`); the `kubernetes` target comes with the Pulumi program.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redisops.client import Credentials, Endpoint, TlsClient


class TargetError(Exception):
    """The target cannot be used: the message says what is missing."""


@dataclass(frozen=True)
class TargetNode:
    endpoint: Endpoint
    zone: str | None = None


@dataclass(frozen=True)
class SseProxy:
    """Where the target's SSE proxy answers, a token granting every stream, and the
    signing secret for minting narrower tokens (None where the target does not share it)."""

    url: str
    token: str
    secret_file: str | None = None


@dataclass(frozen=True)
class Backups:
    """Where the target's backups go and how old the newest may be."""

    location: str
    max_age_s: float


class Target(ABC):
    """What the smoke checks need to know about a deployment."""

    name: str
    shards: int
    replicas: int
    node_timeout_ms: int
    streams: tuple[str, ...]
    mutual_tls: bool
    #: whether checks may crash nodes (kill -9); never on prod
    can_disrupt: bool
    #: the SSE proxy, when the target runs one
    sse: SseProxy | None = None
    #: backups, when the target is expected to have them
    backups: Backups | None = None

    @abstractmethod
    def nodes(self) -> list[TargetNode]:
        """Every Redis node of the deployment."""

    @abstractmethod
    def tls(self, role: str | None) -> TlsClient:
        """TLS settings for a client of `role` (None: CA only, no client certificate)."""

    @abstractmethod
    def credentials(self, role: str) -> Credentials | None:
        """The role's credentials, or None when this target does not expose them."""

    def endpoints(self) -> list[Endpoint]:
        return [n.endpoint for n in self.nodes()]

    def kill_node(self, endpoint: Endpoint) -> None:
        raise TargetError(f"target {self.name} does not allow crashing nodes")

    def restart_node(self, endpoint: Endpoint) -> None:
        raise TargetError(f"target {self.name} does not allow restarting nodes")


class LocalTarget(Target):
    """The local twin, described by `redisops local status --json`."""

    name = "local"

    def __init__(self, status: dict[str, Any], state_dir: Path) -> None:
        try:
            settings = status["settings"]
            self.shards = int(settings["shards"])
            self.replicas = int(settings["replicas"])
            self.node_timeout_ms = int(settings["node_timeout_ms"])
            self.streams = tuple(status["streams"])
            self.mutual_tls = bool(status["tls"]["mutual"])
            self._ca = str(status["tls"]["ca"])
            self._clients = dict(status["tls"]["clients"])
            self._users = dict(status["users"])
            self._nodes = [
                TargetNode(Endpoint(host=n["host"], port=int(n["port"])), n.get("zone"))
                for n in status["nodes"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise TargetError(f"status of the local twin lacks {exc}; upgrade redisops") from exc
        self.state_dir = state_dir
        self.can_disrupt = True
        proxy = status.get("sse_proxy") or {}
        if proxy.get("enabled") and proxy.get("token"):
            self.sse = SseProxy(proxy["url"], proxy["token"], proxy.get("jwt_secret_file"))
        backups = status.get("backups") or {}
        if backups.get("max_age_s") is not None:
            self.backups = Backups(backups["location"], float(backups["max_age_s"]))

    @classmethod
    def load(cls, state_dir: Path) -> LocalTarget:
        return cls(local_status(state_dir), state_dir)

    def nodes(self) -> list[TargetNode]:
        return list(self._nodes)

    def tls(self, role: str | None) -> TlsClient:
        if role is None:
            return TlsClient(ca_file=self._ca)
        client = self._clients[role]
        return TlsClient(ca_file=self._ca, cert_file=client["cert"], key_file=client["key"])

    def credentials(self, role: str) -> Credentials | None:
        user = self._users.get(role)
        if user is None:
            return None
        return Credentials.from_file(user["username"], user["password_file"])

    def kill_node(self, endpoint: Endpoint) -> None:
        for node in local_status(self.state_dir)["nodes"]:
            if node["port"] == endpoint.port and node["pid"]:
                os.kill(int(node["pid"]), signal.SIGKILL)
                return
        raise TargetError(f"node {endpoint} is not running")

    def restart_node(self, endpoint: Endpoint) -> None:
        _redisops("local", "start-node", str(endpoint.port), "--state-dir", str(self.state_dir))


def _redisops(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "redisops", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode not in (0, 1):
        raise TargetError(f"redisops {' '.join(args)} failed: {proc.stderr.strip()[-300:]}")
    return proc


def local_status(state_dir: Path) -> dict[str, Any]:
    proc = _redisops("local", "status", "--json", "--state-dir", str(state_dir))
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except ValueError as exc:
        raise TargetError(f"redisops local status --json printed no JSON: {proc.stderr}") from exc
    return result


def load_target(name: str, state_dir: Path | None) -> Target:
    if name == "local":
        return LocalTarget.load(state_dir or Path(".redisops/local"))
    raise TargetError(f"unknown target {name!r}; known targets: local")
