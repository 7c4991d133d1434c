"""The policy pack's entry point. `pulumi preview --policy-pack infra/policy` (and `up`)
runs this file through `python -m pulumi.policy` from infra/policy/.venv
(PulumiPolicy.yaml); `PolicyPack` starts its gRPC server and blocks here."""

import sys
from pathlib import Path

# The CLI runs this directory as a script (runpy), which puts the directory itself first
# on sys.path (its modules would shadow any library of the same name) and not the
# repository root, where the `infra` package lives: swap one for the other.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parents[1]))

from pulumi_policy import (  # type: ignore[import-not-found, unused-ignore]  # noqa: E402
    EnforcementLevel,
    PolicyPack,
)

from infra.policy.pack import PACK, policies  # noqa: E402

PolicyPack(name=PACK, enforcement_level=EnforcementLevel.MANDATORY, policies=policies())
