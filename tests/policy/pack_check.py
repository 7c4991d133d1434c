"""The policy pack under the real pulumi-policy 1.21, in the pack's own virtualenv.

Run by `make policy` (not collected by pytest: the project's virtualenv has no
pulumi-policy, and cannot have it next to protobuf 6):

    .venv/bin/python -m tests.policy.plans reports/policy-plans.json
    POLICY_PLANS=reports/policy-plans.json infra/policy/.venv/bin/python tests/policy/pack_check.py

It feeds the recorded dev and prod plans (tests/policy/plans.py: the engine's property
shape, secrets still wrapped) and their mutations (tests/policy/mutations.py) to every
adapted policy, twice:
- through each policy's `validate` with real ResourceValidationArgs / StackValidationArgs,
  their properties deserialized and proxied by pulumi-policy's own functions;
- through the pack as the Pulumi CLI runs it: `python -u -m pulumi.policy <engine> .` in
  infra/policy, with PULUMI_STACK and PULUMI_CONFIG set, then gRPC GetAnalyzerInfo,
  Analyze and AnalyzeStack, the calls the engine makes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unittest
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import grpc  # type: ignore[import-untyped, unused-ignore]  # noqa: E402
import pulumi  # noqa: E402
from google.protobuf import empty_pb2, json_format, struct_pb2  # noqa: E402
from pulumi.runtime import proto  # noqa: E402
from pulumi.runtime.proto import analyzer_pb2_grpc  # noqa: E402
from pulumi_policy import (  # type: ignore[import-not-found, unused-ignore]  # noqa: E402
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.deserialize import (  # type: ignore[import-not-found, unused-ignore]  # noqa: E402
    deserialize_properties,
)
from pulumi_policy.proxy import (  # type: ignore[import-not-found, unused-ignore]  # noqa: E402
    UNKNOWN_STRING_VALUE,
    unknown_checking_proxy,
)

from infra.policy import pack, rules  # noqa: E402
from tests.policy import mutations  # noqa: E402

PACK_DIR = ROOT / "infra" / "policy"
PROJECT = "redis-platform"
Resources = list[dict[str, Any]]


def _plans() -> dict[str, Any]:
    path = os.environ.get("POLICY_PLANS") or (sys.argv[1] if len(sys.argv) > 1 else "")
    if not path:
        raise SystemExit("give the plans' JSON (tests/policy/plans.py) as POLICY_PLANS or argv")
    plans: dict[str, Any] = json.loads(Path(path).read_text())
    return plans


PLANS = _plans()


def _struct(props: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    json_format.ParseDict(props, struct)
    return struct


def _engine_props(props: dict[str, Any]) -> Any:
    """What pulumi-policy's Analyze makes of the properties the engine sends."""
    return unknown_checking_proxy(deserialize_properties(json_format.MessageToDict(_struct(props))))


_OPTIONS = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def _configure(stack: str) -> None:
    """What pulumi-policy does before each call, from PULUMI_STACK and PULUMI_CONFIG."""
    pulumi.runtime.configure(pulumi.runtime.Settings(project=PROJECT, stack=stack, dry_run=True))
    pulumi.runtime.set_all_config(PLANS[stack]["config"], [])


def _validate(stack: str, resources: Resources) -> list[tuple[str, str, str | None]]:
    """(policy, message, urn) of every violation every policy reports for `resources`."""
    _configure(stack)
    # deserialized and proxied once per resource, as pulumi-policy does per request
    props = [_engine_props(r["properties"]) for r in resources]
    stack_args = StackValidationArgs(
        [
            PolicyResource(r["type"], p, r["urn"], r["name"], _OPTIONS, None, None, [], {})
            for r, p in zip(resources, props, strict=True)
        ]
    )
    reported: list[tuple[str, str, str | None]] = []
    for policy in pack.policies():

        def report(message: str, urn: str | None = None, name: str = policy.name) -> None:
            reported.append((name, message, urn))

        if isinstance(policy, ResourceValidationPolicy):
            for r, p in zip(resources, props, strict=True):
                args = ResourceValidationArgs(r["type"], p, r["urn"], r["name"], _OPTIONS, None)
                policy.validate(args, report)
        else:
            policy.validate(stack_args, report)
    return reported


class AdaptedPolicies(unittest.TestCase):
    def test_one_mandatory_policy_per_rule_of_its_scope(self) -> None:
        policies = pack.policies()
        assert [p.name for p in policies] == [r.name for r in rules.RULES]
        for policy, rule in zip(policies, rules.RULES, strict=True):
            assert policy.enforcement_level == EnforcementLevel.MANDATORY
            expected = (
                ResourceValidationPolicy if rule.scope == "resource" else StackValidationPolicy
            )
            assert isinstance(policy, expected)

    def test_recorded_plans_pass_every_policy(self) -> None:
        for stack in ("dev", "prod"):
            with self.subTest(stack=stack):
                assert _validate(stack, PLANS[stack]["resources"]) == []

    def test_each_policy_refuses_the_plan_changed_to_break_it(self) -> None:
        for mutation in mutations.MUTATIONS:
            for stack in mutation.stacks:
                with self.subTest(mutation=mutation.name, stack=stack):
                    plain = [mutations.unwrap_secrets(r) for r in PLANS[stack]["resources"]]
                    reported = _validate(stack, mutation.applied(plain))
                    expected = {mutation.rule} if mutation.rule else set()
                    assert {name for name, _, _ in reported} == expected, reported
                    assert all(message for _, message, _ in reported)

    def test_values_unknown_during_preview_are_not_judged(self) -> None:
        resources: Resources = json.loads(json.dumps(PLANS["prod"]["resources"]))
        (acl,) = mutations.kube(resources, "Secret", "redis-acl")
        acl["stringData"] = UNKNOWN_STRING_VALUE  # computed from the passwords
        (sts,) = mutations.kube(resources, "StatefulSet", "redis-cluster")
        mutations.container(sts, "exporter")["image"] = UNKNOWN_STRING_VALUE
        assert _validate("prod", resources) == []


@contextmanager
def _served(stack: str) -> Iterator[Any]:
    """The pack started the way the CLI starts it (pulumi-analyzer-policy-python: the
    virtualenv's python -u -m pulumi.policy <engine address> ., in the pack's directory),
    and an Analyzer client of it."""
    env = {
        **os.environ,
        "PULUMI_STACK": stack,
        "PULUMI_PROJECT": PROJECT,
        "PULUMI_DRY_RUN": "true",
        "PULUMI_CONFIG": json.dumps(PLANS[stack]["config"]),
    }
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", "."],
        cwd=PACK_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()
        if not port.isdigit():
            process.kill()
            raise AssertionError(f"the pack did not start: {port!r} {process.communicate()[1]}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.terminate()  # our own child, by its handle
        process.communicate(timeout=10)  # and closes its pipes


def _request(r: dict[str, Any]) -> Any:
    return proto.AnalyzeRequest(
        urn=r["urn"], type=r["type"], name=r["name"], properties=_struct(r["properties"])
    )


def _stack_request(resources: Resources) -> Any:
    return proto.AnalyzeStackRequest(
        resources=[
            proto.AnalyzerResource(
                urn=r["urn"],
                type=r["type"],
                name=r["name"],
                properties=_struct(r["properties"]),
                parent=r.get("parent", ""),
            )
            for r in resources
        ]
    )


class ServedPack(unittest.TestCase):
    def test_the_cli_sees_mandatory_policies_and_a_clean_prod_plan(self) -> None:
        resources = PLANS["prod"]["resources"]
        with _served("prod") as analyzer:
            info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
            assert info.name == pack.PACK
            assert sorted(p.name for p in info.policies) == sorted(r.name for r in rules.RULES)
            assert all(p.enforcementLevel == proto.MANDATORY for p in info.policies)
            for r in resources:
                assert list(analyzer.Analyze(_request(r)).diagnostics) == [], r["name"]
            assert list(analyzer.AnalyzeStack(_stack_request(resources)).diagnostics) == []

    def test_prod_is_told_by_the_stacks_config_and_refusals_are_mandatory(self) -> None:
        plain = [mutations.unwrap_secrets(r) for r in PLANS["prod"]["resources"]]
        (tag,) = [m for m in mutations.MUTATIONS if m.name == "exporter-tag"]
        (no_pdb,) = [m for m in mutations.MUTATIONS if m.name == "no-pdb"]
        tagged = next(r for r in tag.applied(plain) if r["name"] == "statefulset")
        with _served("prod") as analyzer:
            (diagnostic,) = analyzer.Analyze(_request(tagged)).diagnostics
            assert diagnostic.policyName == "images-pinned-by-digest"
            assert diagnostic.enforcementLevel == proto.MANDATORY
            assert "not pinned by digest" in diagnostic.message
            (diagnostic,) = analyzer.AnalyzeStack(_stack_request(no_pdb.applied(plain))).diagnostics
            assert diagnostic.policyName == "redis-availability"
            assert diagnostic.urn == tagged["urn"]
        with _served("dev") as analyzer:  # a tag is fine in dev
            assert list(analyzer.Analyze(_request(tagged)).diagnostics) == []


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=1)
