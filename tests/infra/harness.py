"""Run the Pulumi program under Pulumi's mock runtime and record the whole plan.

No Pulumi CLI or cluster exists here, so the program is proven this way: the real
`infra.__main__.main` runs against a monitor that records every resource registration
(type, name, parent, provider, dependencies, inputs with secrets still marked), with the
stack config read from the real `Pulumi.<stack>.yaml`. The mocks compute what pulumi-tls
and pulumi-random would (real keys, certificates and passwords, so the plan's Secrets
work in real containers) and record the secret ones, so tests can search the plan for
them; they are returned as secrets, as the engine does for `RandomPassword.result`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks, rpc
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from tests.infra import provider_values

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "redis-platform"
PROJECT_ID = "mock-project"  # the GCP project in computed values
PROJECT_NUMBER = "123456789012"  # what Google names it by in Workload Identity pools
POOLS = f"projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools"
SECRET_SIG = {rpc._special_sig_key: rpc._special_secret_sig}


def _secret(value: Any) -> dict[str, Any]:
    return {**SECRET_SIG, "value": value}


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def unwrap(value: Any) -> Any:
    """The value with secret markers removed (recursively)."""
    if is_secret(value):
        return unwrap(value["value"])
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def ints(value: Any) -> Any:
    """The mock runtime turns every number into a float; Kubernetes wants integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [ints(v) for v in value]
    return value


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    parent: str
    provider: str
    dependencies: list[str]
    custom: bool
    raw: dict[str, Any]  # inputs with secret markers

    @functools.cached_property
    def inputs(self) -> dict[str, Any]:
        """The inputs without secret markers, numbers as Kubernetes wants them (computed
        once: tests look at every resource many times; treat as read-only)."""
        inputs: dict[str, Any] = ints(unwrap(self.raw))
        return inputs

    @property
    def is_kubernetes_object(self) -> bool:
        return self.type.startswith("kubernetes:") and self.type != "pulumi:providers:kubernetes"

    @property
    def manifest(self) -> dict[str, Any]:
        """The Kubernetes object as the API server would get it."""
        return {k: v for k, v in self.inputs.items() if k != "__defaults"}

    @property
    def object_name(self) -> str:
        return str(self.inputs.get("metadata", {}).get("name", ""))


@dataclass
class Plan:
    stack: str
    resources: list[Registration] = field(default_factory=list)
    outputs: dict[str, tuple[Any, bool]] = field(default_factory=dict)  # name -> (value, secret)
    generated_secrets: list[str] = field(default_factory=list)
    invokes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    stack_references: list[str] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.resources if r.type == type_]

    def kube(self, kind: str, name: str | None = None) -> list[Registration]:
        found = [
            r for r in self.resources if r.is_kubernetes_object and r.inputs.get("kind") == kind
        ]
        if name is not None:
            found = [r for r in found if r.object_name == name]
        return found

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = self.kube(kind, name)
        assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
        return found[0].manifest

    def by_urn(self, urn: str) -> Registration | None:
        return next((r for r in self.resources if r.urn == urn), None)

    @property
    def kubernetes_objects(self) -> list[Registration]:
        return [r for r in self.resources if r.is_kubernetes_object and r.custom]


def _token(*parts: str) -> str:
    """Deterministic per resource, so two runs of the same config give the same plan
    (as a real stack keeps its generated values) and a new resource gets a new value."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]


class _Mocks(mocks.Mocks):
    """Computed fields of the providers the program uses, with unique fake values."""

    def __init__(self, plan: Plan, previous_outputs: dict[str, Any] | None = None) -> None:
        self.plan = plan
        self.previous_outputs = previous_outputs or {}

    def _real(self, typ: str, name: str, state: dict[str, Any]) -> Any:
        """Real keys, certificates and passwords (tests/infra/provider_values.py); the
        secret ones are recorded so tests can search the plan for them."""
        value = provider_values.computed(typ, self.plan.stack, name, unwrap(state))
        if typ == "tls:index/privateKey:PrivateKey":
            self.plan.generated_secrets.append(value["privateKeyPem"])
            self.plan.generated_secrets.append(value["privateKeyPemPkcs8"])
        elif typ == "random:index/randomPassword:RandomPassword":
            self.plan.generated_secrets.append(value)
        return value

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        state = dict(args.inputs)
        typ = args.typ
        if typ == "pulumi:pulumi:StackReference":
            # the stack's own outputs from its last `pulumi up` (none before the first)
            self.plan.stack_references.append(str(state.get("name")))
            return str(state.get("name")), {
                **state,
                "outputs": dict(self.previous_outputs),
                "secretOutputNames": [],
            }
        if typ == "random:index/randomPassword:RandomPassword":
            value = self._real(typ, args.name, state)
            state["result"] = _secret(value)
            state["bcryptHash"] = _secret("$2a$10$" + _token("bcrypt", args.name))
        elif typ == "tls:index/privateKey:PrivateKey":
            pems = self._real(typ, args.name, state)
            state.update({k: _secret(v) if k != "publicKeyPem" else v for k, v in pems.items()})
        elif typ == "tls:index/certRequest:CertRequest":
            state["certRequestPem"] = self._real(typ, args.name, state)
        elif typ in (
            "tls:index/selfSignedCert:SelfSignedCert",
            "tls:index/locallySignedCert:LocallySignedCert",
        ):
            state["certPem"] = self._real(typ, args.name, state)
            state["readyForRenewal"] = False
        else:
            state.update(_gcp_computed(typ, state))
        return f"{args.name}-id", state

    def call(self, args: mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        self.plan.invokes.append((args.token, dict(args.args)))
        if args.token == "gcp:storage/getProjectServiceAccount:getProjectServiceAccount":
            return {"emailAddress": "service-123@gs-project-accounts.iam.gserviceaccount.com"}, []
        if args.token == "gcp:container/getCluster:getCluster":
            return {
                "name": args.args["name"],
                "endpoint": "198.51.100.7",
                "masterAuths": [{"clusterCaCertificate": "RVhJU1RJTkctQ0E="}],
            }, []
        return {}, []


def _gcp_computed(typ: str, state: dict[str, Any]) -> dict[str, Any]:
    """What Google computes for the resources whose outputs the program uses."""
    if typ == "gcp:container/cluster:Cluster":
        return {"endpoint": "203.0.113.1", "masterAuth": {"clusterCaCertificate": "Q0EtUEVN"}}
    if typ == "gcp:serviceaccount/account:Account":
        email = f"{state['accountId']}@{PROJECT_ID}.iam.gserviceaccount.com"
        return {"email": email, "name": f"projects/{PROJECT_ID}/serviceAccounts/{email}"}
    if typ == "gcp:storage/bucket:Bucket":
        return {"url": f"gs://{state['name']}"}
    if typ == "gcp:secretmanager/secret:Secret":
        return {"name": f"projects/{PROJECT_ID}/secrets/{state['secretId']}"}
    if typ == "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig":
        return {"uptimeCheckId": "sse-proxy-healthz-1a2b"}
    if typ == "gcp:compute/globalAddress:GlobalAddress":
        return {"address": "203.0.113.10"}
    if typ == "gcp:iam/workloadIdentityPool:WorkloadIdentityPool":
        pool = state["workloadIdentityPoolId"]
        return {"name": f"{POOLS}/{pool}"}
    if typ == "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider":
        pool, provider = state["workloadIdentityPoolId"], state["workloadIdentityPoolProviderId"]
        return {"name": f"{POOLS}/{pool}/providers/{provider}"}
    return {}


class RecordingMonitor(mocks.MockMonitor):
    def __init__(self, mocks_: mocks.Mocks, plan: Plan) -> None:
        super().__init__(mocks_)
        self.plan = plan

    def RegisterResource(self, request: Any) -> Any:  # the gRPC method's name
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            self.plan.resources.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    provider=request.provider,
                    dependencies=list(request.dependencies),
                    custom=bool(request.custom),
                    raw=rpc.deserialize_properties(request.object, keep_unknowns=True),
                )
            )
        return response


def stack_config(stack: str, overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """The stack's config the way the Pulumi CLI hands it to a program: `project:key` ->
    string, structured values JSON-encoded. `overrides` replace whole top-level keys
    (None removes one)."""
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    values: dict[str, Any] = dict(document["config"])
    for key, value in (overrides or {}).items():
        full = f"{PROJECT}:{key}"
        if value is None:
            values.pop(full, None)
        else:
            values[full] = value
    return {
        key: value if isinstance(value, str) else json.dumps(value) for key, value in values.items()
    }


async def _resolve_outputs(outputs: dict[str, Any]) -> dict[str, tuple[Any, bool]]:
    resolved = {}
    for name, value in outputs.items():
        output = pulumi.Output.from_input(value)
        resolved[name] = (await output.future(), await output.is_secret())
    return resolved


def run(
    stack: str,
    overrides: dict[str, Any] | None = None,
    secret_config: dict[str, str] | None = None,
    previous_outputs: dict[str, Any] | None = None,
    plan: Plan | None = None,
) -> Plan:
    """Run infra/__main__.py's program for `stack` and return what it registered.
    `previous_outputs`: the stack's outputs from its last update (default: none yet);
    `plan`: record into this one (to see what a failing run registered)."""
    from infra import __main__ as program

    # Other tests (asyncio.run) may have left this thread without an event loop.
    asyncio.set_event_loop(asyncio.new_event_loop())
    plan = plan if plan is not None else Plan(stack)
    mock = _Mocks(plan, previous_outputs)
    secret = {f"{PROJECT}:{k}": v for k, v in (secret_config or {}).items()}
    pulumi.runtime.set_all_config({**stack_config(stack, overrides), **secret}, list(secret))
    # A fresh root stack per run: set_mocks keeps the last one, and with it the last run's
    # exports (and a failed run's error in them).
    pulumi.runtime.settings.ROOT.set(None)
    mocks.set_mocks(
        mock,
        project=PROJECT,
        stack=stack,
        preview=False,
        monitor=RecordingMonitor(mock, plan),
        organization="organization",  # what a self-managed backend calls every stack's org
    )
    _sync_await(run_pulumi_func(program.main))
    root = pulumi.runtime.settings.get_root_resource()
    assert root is not None
    plan.outputs = _sync_await(_resolve_outputs(dict(root.outputs)))  # type: ignore[attr-defined]
    return plan


_RECORDED: dict[str, Plan] = {}


def recorded(stack: str) -> Plan:
    """The plan of `stack` exactly as its stack file declares it, recorded once per test
    run and shared by every test module (treat it as read-only)."""
    if stack not in _RECORDED:
        _RECORDED[stack] = run(stack)
    return _RECORDED[stack]


_REFUSAL = """
import json, sys
import pulumi
from redisops.errors import ConfigError
from tests.infra import harness
stack, overrides, previous = json.loads(sys.argv[1])
plan = harness.Plan(stack)
try:
    harness.run(stack, overrides, previous_outputs=previous, plan=plan)
except (ConfigError, pulumi.RunError) as exc:
    refused = str(exc)
else:
    refused = None
kinds = ("kubernetes:", "tls:")
changed = sorted({r.type for r in plan.resources if r.custom and r.type.startswith(kinds)})
print(json.dumps({"refused": refused, "registered": changed}))
"""


def refusal(
    stack: str,
    overrides: dict[str, Any] | None = None,
    previous_outputs: dict[str, Any] | None = None,
) -> str | None:
    """Run the program in a fresh interpreter; the error it fails with, or None. Asserts
    that a refused run registered no Kubernetes object or certificate (it must change
    nothing). A program that fails inside an apply (checks against the last rollout's
    outputs) leaves Pulumi's runtime with registrations that never finish, so it cannot
    share a process with the next run."""
    proc = subprocess.run(
        [sys.executable, "-c", _REFUSAL, json.dumps([stack, overrides, previous_outputs])],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"refused"')]
    assert lines, f"the program crashed (exit {proc.returncode}): {proc.stderr[-2000:]}"
    answer = json.loads(lines[-1])
    refused: str | None = answer["refused"]
    if refused is not None:
        assert answer["registered"] == [], f"a refused rollout registered {answer['registered']}"
    return refused


def chart_objects(plan: Plan) -> list[dict[str, Any]]:
    """The sse-proxy chart rendered by the real Helm engine with the values the plan
    passes to `helm.v4.Chart` (hook pods dropped: Pulumi's Chart skips hooks)."""
    import helm_python

    (release,) = plan.of_type("kubernetes:helm.sh/v4:Chart")
    inputs = release.inputs
    chart = helm_python.Chart.load(inputs["chart"])
    try:
        files = chart.render(inputs["values"], name=inputs["name"], namespace=inputs["namespace"])
    finally:
        chart.close()
    return [
        doc
        for path, text in sorted(files.items())
        if path.endswith((".yaml", ".yml")) and "/tests/" not in path
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def settings(stack: str, overrides: dict[str, Any] | None = None) -> Any:
    """The validated StackSettings the program builds for `stack`."""
    from infra import settings as stack_settings

    raw = stack_config(stack, overrides)
    return stack_settings.load(stack_settings.from_pulumi_config(raw))


def error_of(stack: str, overrides: dict[str, Any]) -> str:
    """The message the stack's settings, with `overrides`, are refused with."""
    import pytest

    from redisops.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        settings(stack, overrides)
    return str(caught.value)
