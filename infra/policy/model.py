"""What the policy rules read and return, as plain data (no Pulumi import).

The Pulumi engine hands a policy pack each resource as a type token
(`kubernetes:apps/v1:StatefulSet`, `gcp:storage/bucket:Bucket`), a name, a URN and its
properties: Kubernetes-shaped camelCase, every number a float, secrets unwrapped by
pulumi-policy, values not known yet during preview (`UNKNOWN`, after pack.py's conversion).
The accessors below never raise on a missing or oddly shaped field: a rule judges what is
there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal


class Unknown:
    """A value the engine does not know yet (computed, during preview)."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN: Final = Unknown()


def is_unknown(value: Any) -> bool:
    return isinstance(value, Unknown)


def as_map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    return []


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_number(value: Any) -> float | None:
    """Numbers arrive as floats from the engine (6 -> 6.0); some fields are strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class Stack:
    """The stack being checked. Prod rules apply when its config says `environment: prod`
    or its name starts with `prod`: either is enough, a guardrail errs on the strict side."""

    name: str
    environment: str | None = None

    @property
    def is_prod(self) -> bool:
        short = self.name.rsplit("/", 1)[-1]  # org/project/stack or stack
        return self.environment == "prod" or short.startswith("prod")


@dataclass(frozen=True)
class Resource:
    """One resource of the stack: its type token, Pulumi name, properties and URN."""

    type: str
    name: str
    props: Mapping[str, Any]
    urn: str = ""

    @property
    def kind(self) -> str | None:
        """The Kubernetes kind (None for anything else)."""
        if not self.type.startswith("kubernetes:"):
            return None
        kind = self.props.get("kind")
        return kind if isinstance(kind, str) else self.type.rsplit(":", 1)[-1]

    @property
    def metadata(self) -> Mapping[str, Any]:
        return as_map(self.props.get("metadata"))

    @property
    def namespace(self) -> str:
        """The object's namespace; unset means the provider's default, `default`."""
        return as_str(self.metadata.get("namespace")) or "default"

    @property
    def object_name(self) -> str:
        return as_str(self.metadata.get("name")) or self.name

    @property
    def label(self) -> str:
        """How messages name the resource: kind namespace/name, and the Pulumi name."""
        if self.kind is None:
            return f"{self.type} '{self.name}'"
        where = f"{self.namespace}/" if "namespace" in self.metadata else ""
        return f"{self.kind} {where}{self.object_name} (Pulumi resource '{self.name}')"


@dataclass(frozen=True)
class Violation:
    """What a rule refuses; `resource` is None when the stack as a whole lacks something."""

    rule: str
    message: str
    resource: Resource | None = None

    @property
    def urn(self) -> str | None:
        return (self.resource.urn or None) if self.resource else None


Finding = tuple[Resource | None, str]
ResourceCheck = Callable[[Resource, Stack], Iterator[str]]
StackCheck = Callable[[Sequence[Resource], Stack], Iterator[Finding]]


@dataclass(frozen=True)
class Rule:
    """One guardrail. `resource` rules judge each resource alone (pulumi-policy runs them
    before the resource is created or changed); `stack` rules need several resources at
    once (a PDB selecting a StatefulSet) and run on the whole stack."""

    name: str
    description: str
    scope: Literal["resource", "stack"]
    findings: StackCheck

    def check(self, resources: Sequence[Resource], stack: Stack) -> list[Violation]:
        """The violations of this rule among `resources` (one resource, or a stack)."""
        return [
            Violation(self.name, message, res) for res, message in self.findings(resources, stack)
        ]
