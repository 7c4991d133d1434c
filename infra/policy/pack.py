"""The rules of `rules.py` as pulumi-policy policies, every one MANDATORY.

Imported only inside the policy pack's own virtualenv (infra/policy/.venv): pulumi-policy
pins protobuf 5, the project's google-cloud-storage needs 6, so they cannot share one.
Importing this module starts nothing; `__main__.py` serves the policies with `PolicyPack`.

Which stack: the Pulumi CLI starts the pack with PULUMI_STACK and PULUMI_CONFIG (the
stack's config) set, and pulumi-policy configures the Pulumi runtime from them before each
validation. The stack is prod when its own `redis-platform:environment` (what the program
itself reads) is `prod`, or its name starts with `prod` (model.Stack.is_prod).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
from pulumi_policy import (  # type: ignore[import-not-found, unused-ignore]
    EnforcementLevel,
    Policy,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Secret,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import (  # type: ignore[import-not-found, unused-ignore]
    UnknownValueError,
)

from infra.policy import model, rules

PACK = "redis-platform"
PROJECT = "redis-platform"  # the config namespace of the program's settings


def current_stack() -> model.Stack:
    """The stack being previewed or updated, as the CLI described it to the pack."""
    environment = pulumi.Config(PROJECT).get("environment")
    return model.Stack(name=pulumi.get_stack() or "", environment=environment)


def plain(value: Any) -> Any:
    """Properties as plain dicts and lists, with values unknown during preview turned into
    `model.UNKNOWN`. pulumi-policy's proxies raise on reading an unknown value, which
    would abort a whole-stack rule over one computed field elsewhere."""
    if isinstance(value, Secret):
        return plain(value.value)
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key in value:
            try:
                result[key] = plain(value[key])
            except UnknownValueError:
                result[key] = model.UNKNOWN
        return result
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items: list[Any] = []
        for index in range(len(value)):
            try:
                items.append(plain(value[index]))
            except UnknownValueError:
                items.append(model.UNKNOWN)
        return items
    return value


def _resource_policy(rule: model.Rule) -> Any:
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        resource = model.Resource(args.resource_type, args.name, plain(args.props), args.urn)
        for violation in rule.check([resource], current_stack()):
            report(violation.message, None)  # pulumi-policy prefixes the description

    return ResourceValidationPolicy(
        name=rule.name,
        description=rule.description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def _stack_policy(rule: model.Rule) -> Any:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        resources = [
            model.Resource(r.resource_type, r.name, plain(r.props), r.urn) for r in args.resources
        ]
        for violation in rule.check(resources, current_stack()):
            report(violation.message, violation.urn)

    return StackValidationPolicy(
        name=rule.name,
        description=rule.description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
    )


def policies(selected: Sequence[model.Rule] | None = None) -> list[Policy]:
    """One MANDATORY policy per rule: resource rules as ResourceValidationPolicy (they run
    before each resource is created or changed), stack rules as StackValidationPolicy."""
    return [
        _resource_policy(rule) if rule.scope == "resource" else _stack_policy(rule)
        for rule in (rules.RULES if selected is None else selected)
    ]
