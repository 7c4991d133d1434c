"""The recorded dev and prod plans as the Pulumi engine hands them to a policy pack.

Every registration of the mock run (tests/infra/harness.py), and the objects of the SSE
proxy's chart rendered by the real Helm engine: under the mocks `helm.v4.Chart` has no
children, but in a real preview the engine registers each of its objects, in the release
namespace, and the pack sees them. Properties keep the engine's shape: numbers as floats,
secrets wrapped with Pulumi's signature (pulumi-policy unwraps them), internal keys
(`__defaults`) dropped.

`python -m tests.policy.plans OUT.json` writes both stacks (and their config) for
`pack_check.py`, which runs where the project's packages are not installed.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from pathlib import Path
from typing import Any

from tests.infra import harness
from tests.policy.mutations import unwrap_secrets

STACKS = ("dev", "prod")
CHART = "kubernetes:helm.sh/v4:Chart"


def _floats(value: Any) -> Any:
    """What the engine's protobuf Struct makes of numbers (YAML gives ints)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


def _token(obj: dict[str, Any]) -> str:
    group, _, version = str(obj["apiVersion"]).rpartition("/")
    return f"kubernetes:{group or 'core'}/{version}:{obj['kind']}"


def _chart_children(plan: harness.Plan) -> list[dict[str, Any]]:
    children = []
    for release in plan.of_type(CHART):
        namespace = release.inputs["namespace"]
        for obj in harness.chart_objects(plan):
            obj = copy.deepcopy(obj)
            obj["metadata"].setdefault("namespace", namespace)
            name = f"{release.inputs['name']}:{namespace}/{obj['metadata']['name']}"
            children.append(
                {
                    "urn": f"{release.urn}${_token(obj)}::{name}",
                    "type": _token(obj),
                    "name": name,
                    "parent": release.urn,
                    "properties": _floats(obj),
                }
            )
    return children


@functools.cache
def _engine_resources(stack: str) -> str:
    plan = harness.recorded(stack)
    resources = [
        {
            "urn": r.urn,
            "type": r.type,
            "name": r.name,
            "parent": r.parent,
            "properties": {k: v for k, v in r.raw.items() if not k.startswith("__")},
        }
        for r in plan.resources
    ]
    return json.dumps(resources + _chart_children(plan))  # also proves it is plain JSON


def engine_resources(stack: str) -> list[dict[str, Any]]:
    """Every resource of the stack's recorded plan, secrets still wrapped (a fresh copy)."""
    resources: list[dict[str, Any]] = json.loads(_engine_resources(stack))
    return resources


def plain_resources(stack: str) -> list[dict[str, Any]]:
    """The same with secrets unwrapped, as pulumi-policy gives them to a policy."""
    return [unwrap_secrets(r) for r in engine_resources(stack)]


def config(stack: str) -> dict[str, str]:
    """The stack's config as the CLI passes it to the pack (PULUMI_CONFIG)."""
    return harness.stack_config(stack)


def dump(path: Path) -> None:
    """Write both stacks' resources and config for the policy pack's own virtualenv."""
    document = {s: {"config": config(s), "resources": engine_resources(s)} for s in STACKS}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


if __name__ == "__main__":
    dump(Path(sys.argv[1]))
