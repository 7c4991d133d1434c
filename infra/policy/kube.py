"""Reading Kubernetes objects as plain data: pod templates, selectors, and the files a
container sees from the ConfigMaps and Secrets of the stack."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infra.policy.model import (
    UNKNOWN,
    Resource,
    Unknown,
    as_list,
    as_map,
    as_str,
    is_unknown,
)

_TEMPLATED = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job"}
)
ALL_CONTAINERS = ("initContainers", "containers", "ephemeralContainers")


@dataclass(frozen=True)
class PodTemplate:
    """The pods a workload runs: their labels and spec."""

    labels: Mapping[str, Any]
    spec: Mapping[str, Any]


def pod_template(res: Resource) -> PodTemplate | None:
    """The pod template of a workload (a Pod is its own), or None."""
    kind, spec = res.kind, as_map(res.props.get("spec"))
    if kind == "Pod":
        return PodTemplate(as_map(res.metadata.get("labels")), spec)
    if kind == "CronJob":
        spec = as_map(as_map(spec.get("jobTemplate")).get("spec"))
    elif kind not in _TEMPLATED:
        return None
    template = as_map(spec.get("template"))
    return PodTemplate(
        as_map(as_map(template.get("metadata")).get("labels")), as_map(template.get("spec"))
    )


def containers(
    spec: Mapping[str, Any], groups: Sequence[str] = ("initContainers", "containers")
) -> Iterator[Mapping[str, Any]]:
    """The containers of a pod spec, of the given groups."""
    for group in groups:
        for container in as_list(spec.get(group)):
            if isinstance(container, Mapping):
                yield container


def container_name(container: Mapping[str, Any]) -> str:
    return as_str(container.get("name")) or "?"


def argv_of(container: Mapping[str, Any]) -> list[str]:
    """The container's command and args (the known strings)."""
    tokens = as_list(container.get("command")) + as_list(container.get("args"))
    return [t for t in tokens if isinstance(t, str)]


def option(argv: Sequence[str], name: str) -> str | None:
    """The value of `--name value` or `--name=value` (the last one given)."""
    value = None
    for i, token in enumerate(argv):
        if token == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif token.startswith(f"--{name}="):
            value = token.split("=", 1)[1]
    return value


def selects(selector: Any, labels: Mapping[str, Any]) -> bool:
    """Whether a LabelSelector selects pods with `labels` (an empty one selects all). An
    unknown selector is taken to select (unknown is not judged)."""
    if is_unknown(selector):
        return True
    selector = as_map(selector)
    for key, value in as_map(selector.get("matchLabels")).items():
        if not is_unknown(value) and labels.get(key) != value:
            return False
    for expression in map(as_map, as_list(selector.get("matchExpressions"))):
        label, operator = as_str(expression.get("key")) or "", expression.get("operator")
        values = as_list(expression.get("values"))
        present = label in labels
        if operator == "In" and labels.get(label) not in values:
            return False
        if operator == "NotIn" and present and labels.get(label) in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def service_selects(selector: Any, labels: Mapping[str, Any]) -> bool:
    """Whether a Service's selector (a plain map; empty selects no pods) selects `labels`."""
    if is_unknown(selector):
        return True
    selector = as_map(selector)
    return bool(selector) and all(is_unknown(v) or labels.get(k) == v for k, v in selector.items())


def _decoded(value: Any) -> str | Unknown | None:
    if is_unknown(value):
        return UNKNOWN
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return None


Files = dict[str, str | Unknown]


def object_files(res: Resource) -> Files | Unknown:
    """The files a ConfigMap or Secret holds (base64 `data` of Secrets and `binaryData`
    decoded; `stringData` wins, as in the API server). UNKNOWN when none is known yet."""
    props = res.props
    if res.kind == "ConfigMap":
        plain, encoded = props.get("data"), props.get("binaryData")
    else:  # a Secret: outputs carry `data` only, inputs may carry `stringData`
        plain, encoded = props.get("stringData"), props.get("data")
    if is_unknown(plain) or is_unknown(encoded):
        return UNKNOWN
    files: Files = {}
    for key, value in as_map(encoded).items():
        decoded = _decoded(value)
        if decoded is not None:
            files[key] = decoded
    for key, value in as_map(plain).items():
        if isinstance(value, str | Unknown):
            files[key] = value
    return files


ObjectIndex = Mapping[tuple[str, str, str], Files | Unknown]


def object_index(resources: Sequence[Resource]) -> dict[tuple[str, str, str], Files | Unknown]:
    """(kind, namespace, name) -> files, for every ConfigMap and Secret of the stack."""
    return {
        (str(r.kind), r.namespace, r.object_name): object_files(r)
        for r in resources
        if r.kind in ("ConfigMap", "Secret")
    }


@dataclass(frozen=True)
class MountedFile:
    """A file in a container: which ConfigMap or Secret key provides it."""

    source: str  # e.g. "ConfigMap redis/redis-cluster-config key redis.conf"
    content: str | Unknown | None  # None: the object or key is not in the stack


# (kind, object name, file path -> key, or None for "every key under its own name")
_Source = tuple[str, str, dict[str, str] | None]


def _volume_sources(volume: Mapping[str, Any]) -> list[_Source]:
    found = []
    projected = as_list(as_map(volume.get("projected")).get("sources"))
    for source in [volume, *map(as_map, projected)]:
        for field, kind, name_key in (
            ("configMap", "ConfigMap", "name"),
            ("secret", "Secret", "secretName"),
        ):
            ref = as_map(source.get(field))
            name = as_str(ref.get(name_key)) or as_str(ref.get("name"))
            if not name:
                continue
            items = [as_map(i) for i in as_list(ref.get("items"))]
            paths = (
                {as_str(i.get("path")) or "": as_str(i.get("key")) or "" for i in items}
                if items
                else None
            )
            found.append((kind, name, paths))
    return found


class PodFiles:
    """The files a container sees from the ConfigMaps and Secrets it mounts, looked up in
    the stack's own objects (paths from anywhere else are not verifiable)."""

    def __init__(
        self,
        namespace: str,
        spec: Mapping[str, Any],
        container: Mapping[str, Any],
        objects: ObjectIndex,
    ) -> None:
        self._namespace = namespace
        self._objects = objects
        volumes = {as_str(v.get("name")): v for v in map(as_map, as_list(spec.get("volumes")))}
        self._mounts: list[tuple[str, str | None, list[_Source]]] = []
        for mount in map(as_map, as_list(container.get("volumeMounts"))):
            path, sub = as_str(mount.get("mountPath")), as_str(mount.get("subPath"))
            volume = volumes.get(as_str(mount.get("name")))
            if path and volume is not None:
                self._mounts.append((path.rstrip("/"), sub, _volume_sources(volume)))

    def lookup(self, path: str) -> MountedFile | None:
        """The file at `path`, or None when no ConfigMap or Secret volume provides it."""
        for mount_path, sub, sources in self._mounts:
            if sub is not None:
                if path != mount_path:
                    continue
                relative = sub
            elif path.startswith(mount_path + "/"):
                relative = path[len(mount_path) + 1 :]
            else:
                continue
            for kind, name, items in sources:
                key = items.get(relative) if items is not None else relative
                if key is None or (items is None and "/" in key):
                    continue
                files = self._objects.get((kind, self._namespace, name))
                source = f"{kind} {self._namespace}/{name} key {key}"
                if files is None:
                    return MountedFile(source, None)
                content = UNKNOWN if isinstance(files, Unknown) else files.get(key)
                return MountedFile(source, content)
        return None
