"""Run Kubernetes pod specs as containers, the way the kubelet would run them.

What is mapped, field by field (anything else in a spec is refused, never dropped):

- the pod's network: a holder container owns the pod's address on a user-defined network
  (its DNS names as aliases: `<pod>.<subdomain>.<ns>.svc.<domain>` and the Services that
  select it), every container of the pod joins that network namespace (localhost is
  shared, as in a pod);
- `command`/`args` with `$(VAR)` expansion, `env` (`value`, `fieldRef` of the pod's name,
  namespace and IP, `secretKeyRef`, `configMapKeyRef`), `workingDir`;
- the security context: `runAsUser`/`runAsGroup` (`--user`), `fsGroup` and
  `supplementalGroups` (`--group-add`), `runAsNonRoot` (refused for uid 0),
  `readOnlyRootFilesystem` (`--read-only`), `capabilities`, `allowPrivilegeEscalation`
  (`no-new-privileges`), the memory limit;
- volumes: `emptyDir` (a volume made world-writable as the kubelet makes it; `medium:
  Memory` on tmpfs), PersistentVolumeClaims (named volumes that outlive the pod, group
  owned by `fsGroup` as the kubelet's ownership change leaves them), ConfigMaps and
  Secrets written as files with the declared `items`, `defaultMode`/`mode`, given to
  group `fsGroup` with group read added (as the kubelet's ownership change does), mounted
  read-only;
- init containers run first, in order, each to success; `exec`, `httpGet` and
  `tcpSocket` probes are executed as declared; `preStop` (exec) runs before a stop, and
  the stop waits `terminationGracePeriodSeconds` before the engine kills; `restartPolicy`
  becomes the engine's restart policy of the pod's containers.

Not enforced, and said here rather than silently assumed: `emptyDir.sizeLimit`, resource
requests (scheduling only), probe `periodSeconds`/`failureThreshold` while waiting for a
pod (probes are polled each second until they pass, and liveness is run again before each
stop), and a Job's `backoffLimit`/`activeDeadlineSeconds` (the caller runs a Job's pod
once, with its own deadline).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import ipaddress
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devtools.dns import NxdomainServer
from devtools.engine import Engine, EngineError

POD_KEYS = {
    "containers",
    "initContainers",
    "volumes",
    "securityContext",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "enableServiceLinks",
    "automountServiceAccountToken",
    "serviceAccountName",
    # scheduling: one machine, nothing to place
    "nodeSelector",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
    "hostname",
    "subdomain",
}
CONTAINER_KEYS = {
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env",
    "workingDir",
    "ports",
    "resources",
    "securityContext",
    "volumeMounts",
    "startupProbe",
    "livenessProbe",
    "readinessProbe",
    "lifecycle",
    "terminationMessagePolicy",
}
POD_SECURITY_KEYS = {
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "fsGroup",
    "supplementalGroups",
    "seccompProfile",
}
CONTAINER_SECURITY_KEYS = {
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "readOnlyRootFilesystem",
    "allowPrivilegeEscalation",
    "capabilities",
    "seccompProfile",
    "privileged",
}
RESTART = {"Always": "always", "OnFailure": "on-failure", "Never": "no"}
MEMORY_UNITS = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
}


class PodError(Exception):
    """A pod could not run as declared, or did not behave as its spec requires."""


def memory_bytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]i?|k)?", quantity)
    if match is None:
        raise PodError(f"memory quantity {quantity!r} is not understood")
    return int(match.group(1)) * MEMORY_UNITS.get(match.group(2) or "", 1)


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` escapes,
    undefined references stay as written."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", repl, text)


@dataclass
class ProbeResult:
    container: str
    kind: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class Cluster:
    """The stand-in for the API server and the kubelet: the objects pods refer to, the
    network they share, the images the declared references resolve to."""

    engine: Engine
    namespace: str
    cluster_domain: str
    workdir: Path
    prefix: str
    #: ConfigMaps and Secrets by (kind, name)
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    network: str = ""
    subnet: ipaddress.IPv4Network | None = None
    _next_host: int = 10
    pods: dict[str, RunningPod] = field(default_factory=dict)
    #: NXDOMAIN for every name the engine's resolver does not know (None: not root, so
    #: no port 53; then the pods keep the engine's default resolver options)
    dns: NxdomainServer | None = None

    # ---- lifecycle ----------------------------------------------------------------

    def create_network(self) -> None:
        """A user-defined network on a free /24 (the engine refuses overlapping ones)."""
        self.network = f"{self.prefix}-net"
        for third in range(200, 250):
            subnet = ipaddress.IPv4Network(f"10.{third}.{(hash(self.prefix) % 200) + 20}.0/24")
            proc = self.engine.run(
                ["network", "create", "--subnet", str(subnet), self.network], check=False
            )
            if proc.returncode == 0:
                self.subnet = subnet
                with contextlib.suppress(PermissionError):
                    self.dns = NxdomainServer(str(subnet.network_address + 1))
                return
            if "overlap" not in proc.stderr and "Pool overlaps" not in proc.stderr:
                raise EngineError(f"docker network create failed: {proc.stderr.strip()}")
        raise EngineError("no free /24 for the pod network in 10.200-249.x")

    def allocate_ip(self) -> str:
        assert self.subnet is not None, "create_network() first"
        address = self.subnet.network_address + self._next_host
        self._next_host += 1
        return str(address)

    def cleanup(self) -> None:
        """Remove every container, volume and network of this cluster (by name prefix)."""
        names = self.engine.run(
            ["ps", "-aq", "--filter", f"name=^{self.prefix}-"], check=False
        ).stdout.split()
        if names:
            self.engine.run(["rm", "-f", "-v", *names], check=False)
        volumes = self.engine.run(
            ["volume", "ls", "-q", "--filter", f"name=^{self.prefix}-"], check=False
        ).stdout.split()
        if volumes:
            self.engine.run(["volume", "rm", "-f", *volumes], check=False)
        if self.network:
            self.engine.run(["network", "rm", self.network], check=False)
        if self.dns is not None:
            self.dns.close()
            self.dns = None

    # ---- objects ------------------------------------------------------------------

    def add_object(self, manifest: Mapping[str, Any]) -> None:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        self.objects[(kind, name)] = dict(manifest)

    def data_of(self, kind: str, name: str) -> dict[str, bytes]:
        """A ConfigMap's or Secret's keys as bytes (stringData wins, as the API merges)."""
        obj = self.objects.get((kind, name))
        if obj is None:
            raise PodError(f"{kind} {name!r} does not exist in the plan")
        data: dict[str, bytes] = {}
        for key, value in (obj.get("data") or {}).items():
            data[key] = base64.b64decode(value) if kind == "Secret" else str(value).encode()
        for key, value in (obj.get("binaryData") or {}).items():
            data[key] = base64.b64decode(value)
        for key, value in (obj.get("stringData") or {}).items():
            data[key] = str(value).encode()
        return data

    def start_pod(
        self,
        name: str,
        spec: Mapping[str, Any],
        *,
        aliases: list[str] | None = None,
        claims: Mapping[str, str] | None = None,
        ip: str | None = None,
        absent: Mapping[str, str] | None = None,
    ) -> RunningPod:
        """Start a pod: holder, volumes, init containers (each to success), containers.
        `absent`: containers not run, each with the reason (reported, never silent)."""
        unknown = set(spec) - POD_KEYS
        if unknown:
            raise PodError(f"pod {name}: fields not run here: {sorted(unknown)}")
        declared = {c["name"] for c in spec.get("containers") or []}
        if set(absent or {}) - declared:
            raise PodError(f"pod {name}: no containers {sorted(set(absent or {}) - declared)}")
        kept = dict(spec)
        kept["containers"] = [c for c in spec["containers"] if c["name"] not in (absent or {})]
        pod = RunningPod(self, name, kept, ip or self.allocate_ip(), dict(claims or {}))
        pod.absent = dict(absent or {})
        self.pods[name] = pod
        pod.start(aliases or [])
        return pod

    def delete_pod(self, name: str) -> None:
        pod = self.pods.pop(name)
        pod.stop()
        pod.remove()


@dataclass
class RunningPod:
    cluster: Cluster
    name: str
    spec: dict[str, Any]
    ip: str
    #: volume name -> engine volume of a PersistentVolumeClaim (outlives the pod)
    claims: dict[str, str]
    probes: list[ProbeResult] = field(default_factory=list)
    stop_report: dict[str, Any] = field(default_factory=dict)
    #: declared containers not run, with the reason
    absent: dict[str, str] = field(default_factory=dict)
    _run_dir: Path | None = None

    @property
    def engine(self) -> Engine:
        return self.cluster.engine

    @property
    def holder(self) -> str:
        return f"{self.cluster.prefix}-{self.name}"

    def container_name(self, container: str) -> str:
        return f"{self.cluster.prefix}-{self.name}-{container}"

    @property
    def pod_security(self) -> dict[str, Any]:
        return dict(self.spec.get("securityContext") or {})

    # ---- start --------------------------------------------------------------------

    def start(self, aliases: list[str]) -> None:
        self._run_dir = self.cluster.workdir / self.name
        if self._run_dir.exists():
            subprocess.run(["rm", "-rf", str(self._run_dir)], check=True)
        self._run_dir.mkdir(parents=True)
        containers = self.spec.get("containers") or []
        image = containers[0]["image"]
        args = ["run", "-d", "--name", self.holder, "--network", self.cluster.network]
        args += ["--ip", self.ip, "--hostname", self.spec.get("hostname", self.name)]
        for alias in aliases:
            args += ["--network-alias", alias]
        ns, domain = self.cluster.namespace, self.cluster.cluster_domain
        for search in (f"{ns}.svc.{domain}", f"svc.{domain}", domain):
            args += ["--dns-search", search]
        # The kubelet's resolv.conf: search domains, ndots:5, and for names the engine's
        # resolver does not know, an upstream that answers NXDOMAIN at once, as CoreDNS
        # does (devtools/dns.py).
        if self.cluster.dns is not None:
            args += ["--dns", self.cluster.dns.address, "--dns-option", "ndots:5"]
        args += ["--user", "65534:65534", "--read-only"]
        args += ["--cap-drop", "ALL", "--entrypoint", "sleep", image, "infinity"]
        self.engine.run(args)
        self._prepare_volumes()
        for init in self.spec.get("initContainers") or []:
            self._run_container(init, detach=False)
        for container in containers:
            self._run_container(container, detach=True)

    def _volume_name(self, volume: str) -> str:
        return f"{self.cluster.prefix}-{self.name}-{volume}"

    def _prepare_volumes(self) -> None:
        """Make each volume the way the kubelet hands it to the containers."""
        assert self._run_dir is not None
        fs_group = self.pod_security.get("fsGroup")
        fix: list[str] = []
        mounts: list[str] = []
        for volume in self.spec.get("volumes") or []:
            name = volume["name"]
            kinds = set(volume) - {"name"}
            if kinds == {"emptyDir"}:
                engine_volume = self._volume_name(name)
                opts: list[str] = []
                if (volume["emptyDir"] or {}).get("medium") == "Memory":
                    opts = ["--opt", "type=tmpfs", "--opt", "device=tmpfs"]
                self.engine.run(["volume", "create", *opts, engine_volume])
                mounts += ["-v", f"{engine_volume}:/v/{name}"]
                group = f"chgrp {fs_group} /v/{name} && " if fs_group is not None else ""
                fix.append(f"{group}chmod 2777 /v/{name}")
            elif kinds == {"persistentVolumeClaim"} or name in self.claims:
                claim = self.claims.get(name)
                if claim is None:
                    raise PodError(f"pod {self.name}: volume {name}: no claim bound")
                self.engine.run(["volume", "create", claim])
                mounts += ["-v", f"{claim}:/v/{name}"]
                if fs_group is not None:
                    fix.append(
                        f"chgrp -R {fs_group} /v/{name} && chmod -R g+rwX /v/{name} && "
                        f"find /v/{name} -type d -exec chmod g+s {{}} +"
                    )
            elif kinds in ({"configMap"}, {"secret"}):
                self._write_files(volume, fs_group)
            else:
                raise PodError(f"pod {self.name}: volume {name}: {sorted(kinds)} not run here")
        if fix:
            image = self.spec["containers"][0]["image"]
            self.engine.run(
                [
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "--user",
                    "0:0",
                    *mounts,
                    "--entrypoint",
                    "sh",
                    image,
                    "-c",
                    " && ".join(fix),
                ]
            )

    def _write_files(self, volume: Mapping[str, Any], fs_group: int | None) -> None:
        assert self._run_dir is not None
        kind = "ConfigMap" if "configMap" in volume else "Secret"
        source = volume["configMap"] if kind == "ConfigMap" else volume["secret"]
        ref = source["name"] if kind == "ConfigMap" else source["secretName"]
        data = self.cluster.data_of(kind, ref)
        default_mode = int(source.get("defaultMode", 0o644))
        items = source.get("items") or [{"key": k, "path": k} for k in sorted(data)]
        target = self._run_dir / "volumes" / volume["name"]
        target.mkdir(parents=True)
        target.chmod(0o755)
        for item in items:
            if item["key"] not in data:
                raise PodError(f"{kind} {ref!r} has no key {item['key']!r}")
            path = target / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data[item["key"]])
            mode = int(item.get("mode", default_mode))
            if fs_group is not None:
                # the kubelet gives a read-only volume's files to the pod's fsGroup and
                # adds group read (SetVolumeOwnership's 0440 mask)
                os.chown(path, 0, int(fs_group))
                mode |= 0o440
            path.chmod(mode)

    # ---- containers ---------------------------------------------------------------

    def env_of(self, container: Mapping[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for var in container.get("env") or []:
            name = var["name"]
            if "value" in var:
                env[name] = expand(str(var["value"]), env)
                continue
            source = var.get("valueFrom") or {}
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                fields = {
                    "metadata.name": self.name,
                    "metadata.namespace": self.cluster.namespace,
                    "status.podIP": self.ip,
                }
                if path not in fields:
                    raise PodError(f"env {name}: fieldRef {path} not run here")
                env[name] = fields[path]
            elif "secretKeyRef" in source or "configMapKeyRef" in source:
                kind = "Secret" if "secretKeyRef" in source else "ConfigMap"
                ref = source["secretKeyRef" if kind == "Secret" else "configMapKeyRef"]
                data = self.cluster.data_of(kind, ref["name"])
                if ref["key"] not in data:
                    raise PodError(f"env {name}: {kind} {ref['name']} has no key {ref['key']}")
                env[name] = data[ref["key"]].decode()
            else:
                raise PodError(f"env {name}: {sorted(source)} not run here")
        return env

    def _security_flags(self, container: Mapping[str, Any]) -> list[str]:
        pod = self.pod_security
        own = dict(container.get("securityContext") or {})
        unknown = (set(pod) - POD_SECURITY_KEYS) | (set(own) - CONTAINER_SECURITY_KEYS)
        if unknown or own.get("privileged"):
            raise PodError(
                f"container {container['name']}: securityContext {sorted(unknown) or 'privileged'}"
                " not run here"
            )
        merged = {**pod, **own}
        uid, gid = merged.get("runAsUser"), merged.get("runAsGroup")
        flags: list[str] = []
        if uid is not None:
            # without runAsGroup the image's group for that user applies, as on Kubernetes
            flags += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
        if merged.get("runAsNonRoot") and (uid is None or int(uid) == 0):
            raise PodError(f"container {container['name']}: runAsNonRoot with uid {uid}")
        groups = list(pod.get("supplementalGroups") or [])
        if pod.get("fsGroup") is not None:
            groups.append(pod["fsGroup"])
        for group in groups:
            flags += ["--group-add", str(group)]
        if own.get("readOnlyRootFilesystem"):
            flags.append("--read-only")
        caps = own.get("capabilities") or {}
        for cap in caps.get("drop") or []:
            flags += ["--cap-drop", cap]
        for cap in caps.get("add") or []:
            flags += ["--cap-add", cap]
        if own.get("allowPrivilegeEscalation") is False:
            flags += ["--security-opt", "no-new-privileges"]
        seccomp = (merged.get("seccompProfile") or {}).get("type", "RuntimeDefault")
        if seccomp == "Unconfined":
            flags += ["--security-opt", "seccomp=unconfined"]
        elif seccomp != "RuntimeDefault":
            raise PodError(f"container {container['name']}: seccomp {seccomp} not run here")
        return flags

    def _mount_flags(self, container: Mapping[str, Any]) -> list[str]:
        assert self._run_dir is not None
        volumes = {v["name"]: v for v in self.spec.get("volumes") or []}
        flags: list[str] = []
        for mount in container.get("volumeMounts") or []:
            if set(mount) - {"name", "mountPath", "readOnly"}:
                raise PodError(f"mount {mount}: fields not run here")
            volume = volumes.get(mount["name"])
            if volume is None:
                raise PodError(f"container {container['name']}: no volume {mount['name']}")
            ro = ",ro" if mount.get("readOnly") else ""
            if "emptyDir" in volume:
                source = self._volume_name(mount["name"])
            elif "configMap" in volume or "secret" in volume:
                source = str(self._run_dir / "volumes" / mount["name"])
                ro = ",ro"  # the kubelet mounts both read-only
            else:
                source = self.claims[mount["name"]]
            flags += ["--mount", _mount_spec(source, mount["mountPath"]) + ro]
        return flags

    def docker_run_args(self, container: Mapping[str, Any], *, detach: bool) -> list[str]:
        """`docker run` arguments for one container of this pod, exactly as declared."""
        unknown = set(container) - CONTAINER_KEYS
        if unknown:
            raise PodError(f"container {container['name']}: fields not run here: {unknown}")
        env = self.env_of(container)
        image = container["image"]
        if not self.engine.has_image(image):
            raise PodError(
                f"container {container['name']}: image {image} is not in the engine "
                "(nothing can be pulled here; build or tag it first)"
            )
        args = ["run", "--name", self.container_name(container["name"])]
        if detach:
            # the kubelet restarts a pod's containers by its restartPolicy (not init ones)
            policy = self.spec.get("restartPolicy", "Always")
            if policy not in RESTART:
                raise PodError(f"pod {self.name}: restartPolicy {policy!r} not run here")
            args += ["-d", "--restart", RESTART[policy]]
        args += ["--network", f"container:{self.holder}"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        args += self._security_flags(container)
        args += self._mount_flags(container)
        limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        if limit:
            args += ["--memory", str(memory_bytes(limit))]
        if container.get("workingDir"):
            args += ["--workdir", container["workingDir"]]
        command = [expand(c, env) for c in container.get("command") or []]
        cargs = [expand(a, env) for a in container.get("args") or []]
        if command:
            args += ["--entrypoint", command[0], image, *command[1:], *cargs]
        else:
            args += [image, *cargs]
        return args

    def _run_container(self, container: Mapping[str, Any], *, detach: bool) -> None:
        args = self.docker_run_args(container, detach=detach)
        proc = self.engine.run(args, check=False, timeout=None if detach else 600)
        if proc.returncode != 0:
            logs = proc.stdout + proc.stderr
            raise PodError(
                f"pod {self.name}: container {container['name']} failed "
                f"(exit {proc.returncode}): {logs.strip()[-3000:]}"
            )

    def container(self, name: str) -> dict[str, Any]:
        for container in self.spec.get("containers") or []:
            if container["name"] == name:
                return dict(container)
        raise PodError(f"pod {self.name}: no container {name}")

    def state(self, container: str) -> dict[str, Any]:
        info = self.engine.inspect("container", self.container_name(container))
        if info is None:
            raise PodError(f"pod {self.name}: container {container} does not exist")
        return dict(info["State"])

    def logs(self, container: str) -> str:
        proc = self.engine.run(["logs", self.container_name(container)], check=False)
        return proc.stdout + proc.stderr

    def wait_exit(self, container: str, timeout: float) -> int:
        """Wait for a (Job) container to end; its exit code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(container)
            if not state["Running"]:
                return int(state["ExitCode"])
            time.sleep(1)
        raise PodError(f"pod {self.name}: {container} still running after {timeout:.0f} s")

    def exec(self, container: str, command: list[str], timeout: float) -> tuple[int, str]:
        try:
            proc = self.engine.run(
                ["exec", self.container_name(container), *command], check=False, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return 124, f"timed out after {timeout:.0f} s"
        return proc.returncode, (proc.stdout + proc.stderr).strip()

    # ---- probes -------------------------------------------------------------------

    def probe(self, container: str, kind: str) -> ProbeResult | None:
        """Run the declared probe once (None when the container declares none)."""
        spec = self.container(container).get(kind)
        if not spec:
            return None
        timeout = float(spec.get("timeoutSeconds", 1))
        started = time.monotonic()
        if "exec" in spec:
            code, out = self.exec(container, list(spec["exec"]["command"]), timeout)
            ok, detail = code == 0, f"exit {code}: {out[-300:]}"
        elif "httpGet" in spec:
            if set(spec["httpGet"]) - {"path", "port"}:
                raise PodError(f"{container} {kind}: httpGet {sorted(spec['httpGet'])} not run")
            port = self._port(container, spec["httpGet"]["port"])
            url = f"http://{self.ip}:{port}{spec['httpGet'].get('path', '/')}"
            try:
                response = httpx.get(url, timeout=timeout)
                ok, detail = 200 <= response.status_code < 400, f"{response.status_code}"
            except httpx.HTTPError as exc:
                ok, detail = False, repr(exc)
        elif "tcpSocket" in spec:
            port = self._port(container, spec["tcpSocket"]["port"])
            try:
                with socket.create_connection((self.ip, port), timeout=timeout):
                    ok, detail = True, "connected"
            except OSError as exc:
                ok, detail = False, repr(exc)
        else:
            raise PodError(f"{container} {kind}: {sorted(spec)} not run here")
        result = ProbeResult(container, kind, ok, detail, round(time.monotonic() - started, 2))
        self.probes.append(result)
        return result

    def _port(self, container: str, port: int | str) -> int:
        if isinstance(port, int):
            return port
        for declared in self.container(container).get("ports") or []:
            if declared.get("name") == port:
                return int(declared["containerPort"])
        raise PodError(f"{container}: no port named {port}")

    def wait_ready(self, timeout: float, containers: list[str] | None = None) -> float:
        """Run each container's startup probe, then readiness, at their declared periods,
        until every container is ready; seconds it took. A container that exits fails."""
        names = containers or [c["name"] for c in self.spec.get("containers") or []]
        started = time.monotonic()
        deadline = started + timeout
        pending = {
            n: "startupProbe" if self.container(n).get("startupProbe") else "readinessProbe"
            for n in names
        }
        last: dict[str, ProbeResult | None] = {}
        next_at = dict.fromkeys(names, 0.0)
        while pending:
            now = time.monotonic()
            if now > deadline:
                detail = {n: last.get(n) and last[n].detail for n in pending}  # type: ignore[union-attr]
                logs = {n: self.logs(n)[-1500:] for n in pending}
                raise PodError(
                    f"pod {self.name} not ready after {timeout:.0f} s: {detail}; logs: {logs}"
                )
            for name, kind in list(pending.items()):
                if now < next_at[name]:
                    continue
                if not self.state(name)["Running"]:
                    raise PodError(f"pod {self.name}: {name} exited: {self.logs(name)[-2000:]}")
                result = self.probe(name, kind)
                last[name] = result
                period = float((self.container(name).get(kind) or {}).get("periodSeconds", 10))
                if result is None or result.ok:
                    if kind == "startupProbe":
                        pending[name] = "readinessProbe"
                        next_at[name] = 0.0
                        continue
                    del pending[name]
                else:
                    # poll faster than declared while waiting: only the outcome is asserted
                    next_at[name] = now + min(period, 1.0)
            time.sleep(0.2)
        return round(time.monotonic() - started, 1)

    # ---- stop ---------------------------------------------------------------------

    def stop(self) -> dict[str, Any]:
        """preStop hooks, then SIGTERM, then after the grace period the engine kills;
        per container: whether the hook succeeded, exit code, seconds, killed or not."""
        grace = int(self.spec.get("terminationGracePeriodSeconds", 30))
        report: dict[str, Any] = {}
        started = time.monotonic()
        for container in self.spec.get("containers") or []:
            name = container["name"]
            entry: dict[str, Any] = {}
            lifecycle = container.get("lifecycle") or {}
            if set(lifecycle) - {"preStop"} or set(lifecycle.get("preStop") or {}) - {"exec"}:
                raise PodError(f"{name}: lifecycle {lifecycle} not run here (exec preStop only)")
            hook = (lifecycle.get("preStop") or {}).get("exec")
            if self.state(name)["Running"] and container.get("livenessProbe"):
                live = self.probe(name, "livenessProbe")
                entry["liveness"] = {"ok": bool(live and live.ok), "detail": live and live.detail}
            if hook and self.state(name)["Running"]:
                code, out = self.exec(name, list(hook["command"]), float(grace))
                entry["preStop"] = {"exit": code, "output": out[-500:]}
            report[name] = entry
        remaining = max(1, int(grace - (time.monotonic() - started)))
        names = [self.container_name(c["name"]) for c in self.spec.get("containers") or []]
        stop_started = time.monotonic()
        self.engine.run(["stop", "-t", str(remaining), *names], check=False, timeout=grace + 60)
        for container in self.spec.get("containers") or []:
            state = self.state(container["name"])
            entry = report[container["name"]]
            entry["exit"] = int(state["ExitCode"])
            entry["oom"] = bool(state.get("OOMKilled"))
            entry["killed"] = entry["oom"] or entry["exit"] == 137
            if entry["killed"]:
                entry["log_tail"] = self.logs(container["name"])[-1500:]
        report["seconds"] = round(time.monotonic() - stop_started, 1)
        self.engine.run(["stop", "-t", "1", self.holder], check=False)
        self.stop_report = report
        return report

    def remove(self) -> None:
        containers = [self.holder] + [
            self.container_name(c["name"])
            for c in [*(self.spec.get("initContainers") or []), *self.spec["containers"]]
        ]
        self.engine.run(["rm", "-f", *containers], check=False)
        for volume in self.spec.get("volumes") or []:
            if "emptyDir" in volume:
                self.engine.run(
                    ["volume", "rm", "-f", self._volume_name(volume["name"])], check=False
                )


def _mount_spec(source: str, target: str) -> str:
    if source.startswith("/"):
        return f"type=bind,source={source},target={target}"
    # nocopy: the engine would otherwise copy the image directory's owner and mode onto
    # the volume, undoing the ownership the kubelet's rules gave it
    return f"type=volume,source={source},target={target},volume-nocopy=true"


def job_spec(job: Mapping[str, Any]) -> dict[str, Any]:
    """The pod spec of a Job (or of a CronJob's job template), a copy of its own: callers
    adapt it, and the manifest (a recorded plan's, shared by tests) must not change."""
    spec = job["spec"]
    if "jobTemplate" in spec:
        spec = spec["jobTemplate"]["spec"]
    return copy.deepcopy(dict(spec["template"]["spec"]))


@contextlib.contextmanager
def cluster(
    engine: Engine, namespace: str, cluster_domain: str, workdir: Path, prefix: str
) -> Iterator[Cluster]:
    """A Cluster whose network, containers and volumes are removed at the end."""
    stand_in = Cluster(engine, namespace, cluster_domain, workdir, prefix)
    stand_in.cleanup()  # what a crashed earlier run of the same prefix left
    stand_in.create_network()
    try:
        yield stand_in
    finally:
        for pod in list(stand_in.pods.values()):
            with contextlib.suppress(EngineError, PodError, subprocess.TimeoutExpired):
                if not pod.stop_report:
                    pod.stop()
        stand_in.cleanup()
