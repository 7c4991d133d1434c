"""What each Redis container of a stack actually runs: the redis.conf it is started with
(looked up in the stack's ConfigMaps and Secrets through its mounts), the files that
config includes, expanded in place, then the command-line options, which Redis applies
last. So a `--port 6379` in the args, or an include that turns TLS off, counts too."""

from __future__ import annotations

import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from infra.policy.kube import (
    MountedFile,
    PodFiles,
    PodTemplate,
    container_name,
    containers,
    object_index,
    pod_template,
)
from infra.policy.model import Resource, as_list, as_map, as_number, is_unknown

# The program's Redis client port and cluster bus (infra/k8s/common.py; a test checks).
REDIS_PORT: Final = 6379
BUS_PORT: Final = REDIS_PORT + 10000
REDIS_PORTS: Final = frozenset({REDIS_PORT, BUS_PORT})
REDIS_PORT_NAMES: Final = frozenset({"redis", "bus"})
MAX_INCLUDE_DEPTH: Final = 5


def is_redis_container(container: Mapping[str, Any]) -> bool:
    """A container running redis-server: named `redis`, or listening on a Redis port."""
    if container.get("name") == "redis":
        return True
    return any(
        as_number(as_map(port).get("containerPort")) in REDIS_PORTS
        for port in as_list(container.get("ports"))
    )


def redis_workloads(
    resources: Sequence[Resource], kinds: frozenset[str] | None = None
) -> Iterator[tuple[Resource, PodTemplate]]:
    """Workloads (of `kinds`, default any) whose pods run a Redis container."""
    for res in resources:
        template = pod_template(res)
        if template is None or (kinds is not None and res.kind not in kinds):
            continue
        if any(is_redis_container(c) for c in containers(template.spec, ("containers",))):
            yield res, template


@dataclass
class RedisConfig:
    """The effective configuration of one Redis container: (directive, arguments, where
    it comes from) in the order Redis reads them, and what made parts unverifiable."""

    workload: Resource
    container: str
    files: PodFiles
    directives: list[tuple[str, list[str], str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Part of it is not known yet (preview): a directive it lacks may come from that part,
    # so only what it sets is judged.
    incomplete: bool = False

    def last(self, name: str) -> tuple[list[str], str] | None:
        """Arguments and origin of the directive's last occurrence (the one that counts)."""
        for directive, args, origin in reversed(self.directives):
            if directive == name:
                return args, origin
        return None

    def where(self) -> str:
        return f"{self.workload.label}, container '{self.container}'"


def _parse(text: str) -> Iterator[tuple[str, list[str]]]:
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            tokens = shlex.split(line)
        except ValueError:  # an unbalanced quote: Redis would refuse the file anyway
            tokens = line.split()
        if tokens:
            yield tokens[0].lower(), tokens[1:]


def _expand(config: RedisConfig, mounted: MountedFile, path: str, depth: int = 0) -> None:
    if depth > MAX_INCLUDE_DEPTH:
        config.problems.append(f"nests includes deeper than {MAX_INCLUDE_DEPTH} at {path}")
        return
    if mounted.content is None:
        config.problems.append(f"reads {path} ({mounted.source}), which this stack lacks")
        return
    if is_unknown(mounted.content):
        config.incomplete = True  # computed: judged at `pulumi up`, when it is known
        return
    for directive, args in _parse(str(mounted.content)):
        if directive == "include" and args:
            included = config.files.lookup(args[0])
            if included is None:
                config.problems.append(
                    f"includes {args[0]}, which is not a ConfigMap or Secret of this stack"
                )
            else:
                _expand(config, included, args[0], depth + 1)
        else:
            config.directives.append((directive, args, f"{path} ({mounted.source})"))


def _command_line(tokens: Sequence[str]) -> Iterator[tuple[str, list[str]]]:
    """redis-server's `--name value ...` options (after the config file)."""
    name: str | None = None
    args: list[str] = []
    for token in tokens:
        if token.startswith("--"):
            if name is not None:
                yield name, args
            name, args = token[2:].lower(), []
        elif name is not None:
            args.append(token)
    if name is not None:
        yield name, args


def redis_configs(resources: Sequence[Resource]) -> Iterator[RedisConfig]:
    """The effective configuration of every Redis container the stack runs. The config
    file is the first `*.conf` argument (redis-server's, or a start script's that passes
    its arguments on, as infra/k8s/scripts/start.sh does)."""
    objects = object_index(resources)
    for workload, template in redis_workloads(resources):
        for container in containers(template.spec, ("containers",)):
            if not is_redis_container(container):
                continue
            tokens = as_list(container.get("command")) + as_list(container.get("args"))
            if any(is_unknown(t) for t in tokens):
                continue  # computed: judged at `pulumi up`
            files = PodFiles(workload.namespace, template.spec, container, objects)
            config = RedisConfig(workload, container_name(container), files)
            argv = [str(t) for t in tokens]
            conf_at = next((i for i, t in enumerate(argv) if t.endswith(".conf")), None)
            if conf_at is None:
                config.problems.append(
                    "starts Redis without a config file (Redis's defaults: plaintext port "
                    f"{REDIS_PORT}, no TLS, the default user on)"
                )
            else:
                mounted = files.lookup(argv[conf_at])
                if mounted is None:
                    config.problems.append(
                        f"reads {argv[conf_at]}, which is not a ConfigMap or Secret of this stack"
                    )
                else:
                    _expand(config, mounted, argv[conf_at])
                for name, args in _command_line(argv[conf_at + 1 :]):
                    config.directives.append((name, args, "the container's command line"))
            yield config
