"""The platform's namespace, locked to the Pod Security Standard `restricted`."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s.common import PART_OF

PSA_LEVEL = "restricted"


class Namespace(pulumi.ComponentResource):
    """The namespace every other object lives in; pods that are not `restricted`-clean are
    refused at admission (enforce), and reported (audit, warn)."""

    name: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        namespace: str,
        provider: k8s.Provider,
        gate: pulumi.Input[pulumi.Resource] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`gate`: what the namespace, and so every object in it, waits for (the rollout
        check). The Namespace object is named `resource_name` too."""
        super().__init__("redis-platform:k8s:Namespace", resource_name, None, opts)
        psa = {
            f"pod-security.kubernetes.io/{mode}": PSA_LEVEL for mode in ("enforce", "audit", "warn")
        }
        versions = {
            f"pod-security.kubernetes.io/{mode}-version": "latest"
            for mode in ("enforce", "audit", "warn")
        }
        self.resource = k8s.core.v1.Namespace(
            resource_name,
            metadata={"name": namespace, "labels": {**psa, **versions, **PART_OF}},
            opts=pulumi.ResourceOptions(
                parent=self, provider=provider, depends_on=[gate] if gate is not None else []
            ),
        )
        self.name = self.resource.metadata.apply(lambda m: m.name)
        self.register_outputs({"name": self.name})
