"""Keyless GitHub Actions deploys (`gcp.ci`, infra/gcp/ci.py): declared only when
configured; the provider accepts only the repository's tokens; the deployer holds
predefined roles only, each needed by a resource type the plan holds, and every type of the
plan is covered by one of them."""

from __future__ import annotations

import json
import re
from typing import Any

import cel
import pytest

from infra.gcp import ci
from infra.gcp.gke import NODE_ROLES
from infra.settings import BROAD_ROLES
from redisops.errors import ConfigError
from tests.infra import harness

REPOSITORY = "example-org/redis-platform"
POOL = "gcp:iam/workloadIdentityPool:WorkloadIdentityPool"
PROVIDER = "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider"
DEPLOYER = "serviceAccount:redis-deployer@mock-project.iam.gserviceaccount.com"


def gcp_with(stack: str, **changes: Any) -> dict[str, Any]:
    gcp: dict[str, Any] = json.loads(harness.stack_config(stack)["redis-platform:gcp"])
    for key, value in changes.items():
        gcp[key] = {**gcp[key], **value} if isinstance(gcp.get(key), dict) else value
    return gcp


EXISTING = {
    # someone else's cluster: only what names it (the create-only keys would be refused)
    "gcp": gcp_with("prod")
    | {"gke": {"create": False, "name": "shared-gke", "location": "europe-west1"}},
    "network": {"apiServerCidrs": ["172.16.8.0/28"], "googleApisCidrs": ["199.36.153.8/30"]},
}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "dev": ("dev", {}),
    "prod": ("prod", {}),
    "existing": ("prod", EXISTING),
    "prod-ci": (
        "prod",
        {
            "gcp": gcp_with(
                "prod",
                ci={
                    "repository": REPOSITORY,
                    "branches": ["main"],
                    "environments": ["prod", "prod-drill"],
                    "previewEnvironments": ["preview-prod"],
                    "stateBucket": "example-pulumi-state",
                },
            )
        },
    ),
    "dev-ci": (
        "dev",
        {"gcp": gcp_with("dev", ci={"repository": REPOSITORY, "branches": ["main"]})},
    ),
    # someone else's cluster, no registry: no node account to act as, nothing to push to
    "existing-ci": (
        "prod",
        {
            **EXISTING,
            "gcp": {
                **{k: v for k, v in EXISTING["gcp"].items() if k != "registry"},
                "ci": {"repository": REPOSITORY},
            },
        },
    ),
}
_PLANS: dict[str, harness.Plan] = {}


def plan_of(variant: str) -> harness.Plan:
    if variant not in _PLANS:
        stack, overrides = VARIANTS[variant]
        _PLANS[variant] = (
            harness.recorded(stack) if not overrides else harness.run(stack, overrides)
        )
    return _PLANS[variant]


def settings_of(variant: str) -> Any:
    stack, overrides = VARIANTS[variant]
    return harness.settings(stack, overrides)


@pytest.fixture(params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=[v for v in VARIANTS if v.endswith("-ci")])
def with_ci(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def planned_types(plan: harness.Plan) -> set[str]:
    """The GCP resource types of the plan, and KUBERNETES when it declares Kubernetes
    objects (the deployer applies them through the cluster's API)."""
    types = {r.type for r in plan.resources if r.custom and r.type.startswith("gcp:")}
    if plan.kubernetes_objects:
        types.add(ci.KUBERNETES)
    return types


def deployer_project_roles(plan: harness.Plan) -> dict[str, dict[str, Any]]:
    return {
        r.inputs["role"]: r.inputs
        for r in plan.of_type("gcp:projects/iAMMember:IAMMember")
        if r.inputs["member"] == DEPLOYER
    }


# ---- present only when configured ------------------------------------------------------------


@pytest.mark.parametrize("variant", ["dev", "prod", "existing"])
def test_nothing_of_ci_without_the_section(variant: str) -> None:
    plan = plan_of(variant)
    assert not plan.of_type(POOL) and not plan.of_type(PROVIDER)
    assert not [r for r in plan.resources if DEPLOYER in json.dumps(r.inputs)]
    assert "ciWorkloadIdentityProvider" not in plan.outputs
    assert "ciServiceAccount" not in plan.outputs
    enabled = {s.inputs["service"] for s in plan.of_type("gcp:projects/service:Service")}
    assert "sts.googleapis.com" not in enabled


def test_the_provider_accepts_only_the_repositorys_tokens(with_ci: str) -> None:
    plan, settings = plan_of(with_ci), settings_of(with_ci)
    (pool,) = plan.of_type(POOL)
    (provider,) = plan.of_type(PROVIDER)
    inputs = provider.inputs
    assert inputs["oidc"] == {"issuerUri": "https://token.actions.githubusercontent.com"}
    assert inputs["workloadIdentityPoolId"] == pool.inputs["workloadIdentityPoolId"] == "github"
    mapping = inputs["attributeMapping"]
    assert mapping["google.subject"] == "assertion.sub"
    assert mapping["attribute.repository"] == "assertion.repository"
    assert mapping["attribute.ref"] == "assertion.ref"
    # never an open provider: the condition names the repository, and the narrowing asked
    condition = inputs["attributeCondition"]
    assert condition.startswith(f'assertion.repository == "{REPOSITORY}"')
    ci_settings = settings.gcp.ci
    if ci_settings.branches:
        assert 'assertion.ref in ["refs/heads/main"]' in condition
    if ci_settings.environments:
        assert 'assertion.environment in ["prod", "prod-drill"]' in condition
    if ci_settings.preview_environments:
        assert '|| assertion.environment in ["preview-prod"]' in condition
    if not ci_settings.branches and not ci_settings.environments:
        assert condition == f'assertion.repository == "{REPOSITORY}"'
    # the repository's tokens may act as the deployer, nothing else may
    (binding,) = [
        r.inputs
        for r in plan.of_type("gcp:serviceaccount/iAMMember:IAMMember")
        if r.inputs["role"] == "roles/iam.workloadIdentityUser"
        and r.inputs["serviceAccountId"].endswith(
            "/redis-deployer@mock-project.iam.gserviceaccount.com"
        )
    ]
    assert binding["member"] == (
        f"principalSet://iam.googleapis.com/{harness.POOLS}/github/attribute.repository/{REPOSITORY}"
    )


def test_the_outputs_github_needs(with_ci: str) -> None:
    plan = plan_of(with_ci)
    provider, secret = plan.outputs["ciWorkloadIdentityProvider"]
    assert not secret
    assert re.fullmatch(
        r"projects/\d+/locations/global/workloadIdentityPools/github/providers/github-actions",
        provider,
    )
    account, _ = plan.outputs["ciServiceAccount"]
    assert f"serviceAccount:{account}" == DEPLOYER
    enabled = {s.inputs["service"] for s in plan.of_type("gcp:projects/service:Service")}
    assert {"sts.googleapis.com", "iamcredentials.googleapis.com"} <= enabled
    assert "cloudresourcemanager.googleapis.com" in enabled


# ---- the deployer's roles ------------------------------------------------------------------


def test_every_type_of_the_plan_is_in_the_role_table(variant: str) -> None:
    """A resource type the program starts to declare fails here until its role is named."""
    plan, settings = plan_of(variant), settings_of(variant)
    types = planned_types(plan)
    missing = types - set(ci.ROLES_BY_TYPE)
    assert not missing, f"no role for {sorted(missing)}: add them to infra/gcp/ci.py"
    # and the settings predict the plan's types exactly (the roles are derived from them)
    assert ci.declared_types(settings) == types


def test_the_deployer_holds_exactly_the_roles_the_plans_types_need(with_ci: str) -> None:
    plan = plan_of(with_ci)
    granted = deployer_project_roles(plan)
    needed = {role for t in planned_types(plan) for role in ci.ROLES_BY_TYPE[t]}
    # every type covered by a granted role, and every granted role needed by some type
    assert set(granted) == needed
    for type_ in planned_types(plan):
        assert set(ci.ROLES_BY_TYPE[type_]) <= set(granted), type_


def test_no_primitive_roles_and_the_workloads_stay_narrow(with_ci: str) -> None:
    plan = plan_of(with_ci)
    roles = [(r.inputs["member"], r.inputs["role"]) for r in plan.resources
             if r.type.startswith("gcp:") and "role" in r.inputs]  # fmt: skip
    assert roles
    for member, role in roles:
        assert role.startswith("roles/"), role  # predefined
        assert role not in ci.PRIMITIVE_ROLES, (member, role)
        if member != DEPLOYER:  # the jobs and nodes: never a broad or admin role
            assert role not in BROAD_ROLES and not role.endswith(".admin"), (member, role)


def test_the_deployer_cannot_grant_itself_more(with_ci: str) -> None:
    plan, settings = plan_of(with_ci), settings_of(with_ci)
    admin = deployer_project_roles(plan)[ci.PROJECT_IAM_ADMIN]
    expression = admin["condition"]["expression"]
    prefix = "api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly("
    assert expression.startswith(prefix) and expression.endswith(")")
    grantable = json.loads(expression[len(prefix) : -1])
    assert ci.PROJECT_IAM_ADMIN not in grantable
    assert not set(grantable) & ci.PRIMITIVE_ROLES
    # what the program grants on the project: the nodes' roles, the deployer's own others
    project_grants = {r.inputs["role"] for r in plan.of_type("gcp:projects/iAMMember:IAMMember")}
    assert set(grantable) == project_grants - {ci.PROJECT_IAM_ADMIN}
    assert (set(NODE_ROLES) <= set(grantable)) == settings.gcp.gke.create
    # no other deployer role is conditional
    for role, inputs in deployer_project_roles(plan).items():
        assert ("condition" in inputs) == (role == ci.PROJECT_IAM_ADMIN), role


def test_the_deployers_rights_on_single_resources(with_ci: str) -> None:
    plan, settings = plan_of(with_ci), settings_of(with_ci)
    acts_as = [
        r.inputs
        for r in plan.of_type("gcp:serviceaccount/iAMMember:IAMMember")
        if r.inputs["member"] == DEPLOYER
    ]
    if settings.gcp.gke.create:  # creating node pools that run as the node account
        (grant,) = acts_as
        assert grant["role"] == "roles/iam.serviceAccountUser"
        assert grant["serviceAccountId"].endswith(
            "/redis-nodes@mock-project.iam.gserviceaccount.com"
        )
    else:
        assert acts_as == []
    pushes = [
        r.inputs
        for r in plan.of_type("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")
        if r.inputs["member"] == DEPLOYER
    ]
    if settings.gcp.registry is not None:
        (push,) = pushes
        assert push["role"] == "roles/artifactregistry.writer"
        assert push["repository"] == settings.gcp.registry.repository
    else:
        assert pushes == []
    state = [
        r.inputs
        for r in plan.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
        if r.inputs["member"] == DEPLOYER
    ]
    if settings.gcp.ci.state_bucket is not None:
        assert state == [
            {
                "bucket": "example-pulumi-state",
                "role": "roles/storage.objectAdmin",
                "member": DEPLOYER,
            }
        ]
    else:
        assert state == []


# ---- mistakes ---------------------------------------------------------------------------------


def error_of(ci_section: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        harness.settings("prod", {"gcp": gcp_with("prod", ci=ci_section)})
    return str(caught.value)


@pytest.mark.parametrize(
    "repository",
    [
        "redis-platform",  # no owner
        "example-org/redis-platform/extra",
        "https://github.com/example-org/redis-platform",
        "-org/redis-platform",
        "org-/redis-platform",
        "exa--mple/redis-platform",
        "example-org/redis platform",
        "example-org/..",
        'example-org/x" || true',
        "example-org/redis-platform\n",
        "",
        "a" * 40 + "/x",
    ],
)
def test_a_bad_repository_is_refused(repository: str) -> None:
    message = error_of({"repository": repository})
    assert "redis-platform:gcp.ci.repository:" in message, message
    assert "is not a GitHub repository: give owner/name" in message, message
    assert "example-org/redis-platform" in message


@pytest.mark.parametrize(
    "repository", ["example-org/redis-platform", "a/b", "Org-1/repo.name_x", "o/.github"]
)
def test_good_repositories(repository: str) -> None:
    settings = harness.settings("prod", {"gcp": gcp_with("prod", ci={"repository": repository})})
    assert settings.gcp.ci.repository == repository


@pytest.mark.parametrize(
    ("section", "key", "says"),
    [
        ({}, "gcp.ci.repository", "is required"),
        (
            {"repository": REPOSITORY, "branches": ["refs/heads/main"]},
            "gcp.ci.branches",
            "without refs/heads/",
        ),
        (
            {"repository": REPOSITORY, "environments": ['prod" || true']},
            "gcp.ci.environments",
            "GitHub environment name",
        ),
        (
            {"repository": REPOSITORY, "poolId": "gcp-pool"},
            "gcp.ci.poolId",
            "not starting with gcp-",
        ),
        ({"repository": REPOSITORY, "providerId": "gh"}, "gcp.ci.providerId", "4 to 32"),
        (
            {"repository": REPOSITORY, "stateBucket": "gs://state"},
            "gcp.ci.stateBucket",
            "without gs://",
        ),
        ({"repository": REPOSITORY, "branch": "main"}, "gcp.ci.branch", "not a known setting"),
    ],
)
def test_ci_mistakes_name_the_key_and_the_fix(section: dict[str, Any], key: str, says: str) -> None:
    message = error_of(section)
    assert f"redis-platform:{key}:" in message, message
    assert says in message, message


# ---- which GitHub tokens the provider accepts (its CEL condition, evaluated) -------------

CI_PROD = {
    "repository": REPOSITORY,
    "branches": ["main"],
    "environments": ["prod", "prod-drill"],
    "previewEnvironments": ["preview-prod"],
}


def token(ref: str, environment: str | None = None, repository: str = REPOSITORY) -> dict[str, str]:
    """The claims of a GitHub Actions OIDC token (those the condition may read)."""
    claims = {"repository": repository, "ref": ref, "sub": f"repo:{repository}:ref:{ref}"}
    if environment is not None:
        claims["environment"] = environment
        claims["sub"] = f"repo:{repository}:environment:{environment}"
    return claims


def accepted(condition: str, claims: dict[str, str]) -> bool:
    """As Google evaluates an attribute condition: true accepts; false or an error (a claim
    the token does not carry) rejects."""
    try:
        return cel.evaluate(condition, {"assertion": claims}) is True
    except Exception:
        return False


@pytest.mark.parametrize(
    ("claims", "ok"),
    [
        (token("refs/heads/main", "prod"), True),  # the rollout, after the approval
        (token("refs/heads/main", "prod-drill"), True),  # the weekly drill
        (token("refs/pull/7/merge", "preview-prod"), True),  # a pull request's preview
        (token("refs/pull/7/merge", "prod"), False),  # a pull request naming the rollout's
        (token("refs/heads/feature", "prod"), False),  # a dispatch from another branch
        (token("refs/heads/feature", "prod-drill"), False),
        (token("refs/heads/main", "staging"), False),  # an environment not listed
        (token("refs/heads/main"), False),  # no environment at all
        (token("refs/heads/main", "prod", repository="someone/fork"), False),
    ],
)
def test_the_provider_accepts_exactly_the_workflows_tokens(
    claims: dict[str, str], ok: bool
) -> None:
    settings = harness.settings("prod", {"gcp": gcp_with("prod", ci=CI_PROD)})
    assert settings.gcp.ci is not None
    assert accepted(ci.attribute_condition(settings.gcp.ci), claims) is ok, claims


def test_without_environments_the_branches_alone_decide() -> None:
    settings = harness.settings(
        "dev", {"gcp": gcp_with("dev", ci={"repository": REPOSITORY, "branches": ["main"]})}
    )
    condition = ci.attribute_condition(settings.gcp.ci)
    assert accepted(condition, token("refs/heads/main", "dev"))
    assert not accepted(condition, token("refs/pull/1/merge", "dev"))
    only_repository = ci.attribute_condition(
        harness.settings("dev", {"gcp": gcp_with("dev", ci={"repository": REPOSITORY})}).gcp.ci
    )
    assert accepted(only_repository, token("refs/pull/1/merge"))
    assert not accepted(only_repository, token("refs/heads/main", repository="a/b"))


def test_an_environment_both_for_rollouts_and_previews_is_refused() -> None:
    message = error_of({**CI_PROD, "previewEnvironments": ["prod"]})
    assert "redis-platform:gcp.ci.previewEnvironments:" in message, message
    assert "'prod' is also in environments" in message, message
