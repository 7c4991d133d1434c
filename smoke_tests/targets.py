"""Where the smoke suite runs: endpoints, TLS material, role credentials, capabilities.

A target describes a live deployment. `local` is the twin (read through
`redisops local status --json`); `kubernetes` is a deployment on GKE, described by the
target file the Pulumi program puts in the smoke Job (infra/k8s/jobs.py `smoke_target`).
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

from redisops import tokens
from redisops.client import Credentials, Endpoint, TlsClient
from redisops.errors import ConfigError


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

    @abstractmethod
    def credential_roles(self) -> frozenset[str]:
        """The roles whose credentials the target holds (the rest it declares absent)."""

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

    def credential_roles(self) -> frozenset[str]:
        return frozenset(self._users)

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


class KubernetesTarget(Target):
    """A deployment on Kubernetes, from its target file (JSON):

    name, shards, replicas, node_timeout_ms, streams, mutual_tls, can_disrupt, namespace,
    nodes [{endpoint: host:port}], tls {ca, cert, key} (the Job's client certificate),
    users {role: {username, password_file}}, sse_proxy {url, jwt_secret_file} or null,
    backups {location, max_age_s} or null.

    Crashing a node deletes its pod with no grace period (the StatefulSet recreates it):
    only where the file says can_disrupt (dev), through the pod's ServiceAccount.
    """

    #: how long the smoke suite's SSE token lives (the suite takes minutes)
    TOKEN_TTL_S = 1800

    def __init__(self, spec: dict[str, Any], core_api: Any = None) -> None:
        try:
            self.name = str(spec["name"])
            self.shards = int(spec["shards"])
            self.replicas = int(spec["replicas"])
            self.node_timeout_ms = int(spec["node_timeout_ms"])
            self.streams = tuple(str(s) for s in spec["streams"])
            self.mutual_tls = bool(spec["mutual_tls"])
            self.can_disrupt = bool(spec["can_disrupt"])
            self.namespace = str(spec["namespace"])
            self._nodes = [TargetNode(Endpoint.parse(n["endpoint"])) for n in spec["nodes"]]
            tls = spec["tls"]
            self._tls = TlsClient(ca_file=tls["ca"], cert_file=tls["cert"], key_file=tls["key"])
            self._users = {
                role: (str(user["username"]), str(user["password_file"]))
                for role, user in spec["users"].items()
            }
            proxy = spec.get("sse_proxy")
            if proxy:
                secret_file = str(proxy["jwt_secret_file"])
                self.sse = SseProxy(str(proxy["url"]).rstrip("/"), _token(secret_file), secret_file)
            backups = spec.get("backups")
            if backups:
                self.backups = Backups(str(backups["location"]), float(backups["max_age_s"]))
        except KeyError as exc:
            raise TargetError(
                f"the target file lacks {exc}; regenerate it with `pulumi up`"
            ) from exc
        except (TypeError, ValueError, ConfigError) as exc:
            raise TargetError(f"the target file is malformed: {exc}") from exc
        if not self._nodes:
            raise TargetError("the target file lists no nodes")
        self._core_api = core_api

    @classmethod
    def load(cls, path: Path) -> KubernetesTarget:
        try:
            spec = json.loads(path.read_text())
        except OSError as exc:
            raise TargetError(f"cannot read the target file {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise TargetError(f"the target file {path} is not JSON: {exc}") from exc
        if not isinstance(spec, dict):
            raise TargetError(f"the target file {path} must hold a JSON object")
        return cls(spec)

    def nodes(self) -> list[TargetNode]:
        return list(self._nodes)

    def tls(self, role: str | None) -> TlsClient:
        if role is None:
            return TlsClient(ca_file=self._tls.ca_file)
        return self._tls  # one client certificate for the Job; the ACL user tells roles apart

    def credentials(self, role: str) -> Credentials | None:
        user = self._users.get(role)
        return None if user is None else Credentials.from_file(*user)

    def credential_roles(self) -> frozenset[str]:
        return frozenset(self._users)

    def pod_of(self, endpoint: Endpoint) -> str:
        from redisops.kube import pod_of

        pod, namespace = pod_of(endpoint.host)
        if namespace != self.namespace:
            raise TargetError(f"node {endpoint} is not in namespace {self.namespace}")
        return pod

    def kill_node(self, endpoint: Endpoint) -> None:
        if not self.can_disrupt:
            raise TargetError(f"target {self.name} does not allow crashing nodes")
        pod = self.pod_of(endpoint)
        self.core_api().delete_namespaced_pod(
            name=pod, namespace=self.namespace, grace_period_seconds=0
        )

    def restart_node(self, endpoint: Endpoint) -> None:
        """Nothing to do: the StatefulSet starts the deleted pod again by itself."""

    def core_api(self) -> Any:
        if self._core_api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException as exc:
                raise TargetError(
                    f"crashing a node needs the Kubernetes API from inside the smoke Job: {exc}"
                ) from exc
            self._core_api = client.CoreV1Api()
        return self._core_api


def _token(secret_file: str) -> str:
    """A short-lived token for the suite's own streams, signed with the proxy's secret."""
    try:
        secret = Path(secret_file).read_text().strip()
    except OSError as exc:
        raise TargetError(
            f"cannot read the SSE signing secret {secret_file}: {exc.strerror}"
        ) from exc
    if not secret:
        raise TargetError(f"the SSE signing secret {secret_file} is empty")
    own = ["smoke:sse:*"]  # the suite reads and writes only its reserved streams
    return tokens.mint(secret, "redis-smoke", own, own, KubernetesTarget.TOKEN_TTL_S)


TARGETS = ("local", "kubernetes")


def load_target(name: str, state_dir: Path | None, target_file: Path | None = None) -> Target:
    if name == "local":
        return LocalTarget.load(state_dir or Path(".redisops/local"))
    if name == "kubernetes":
        if target_file is None:
            raise TargetError("--target kubernetes needs --target-file (the smoke Job mounts it)")
        return KubernetesTarget.load(target_file)
    raise TargetError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}")
