"""Role passwords in Secret Manager, for clients outside GKE (the agents read their
credentials there), each readable only by the members configured for that role."""

from __future__ import annotations

import pulumi
import pulumi_gcp.secretmanager as secretmanager

from infra.gcp.common import Cloud


def secret_id(environment: str, role: str) -> str:
    return f"redis-{environment}-{role}"


class RoleSecrets(pulumi.ComponentResource):
    """One secret per role holding the role's active password as its current version."""

    def __init__(
        self,
        resource_name: str,
        cloud: Cloud,
        passwords: dict[str, pulumi.Output[str]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("redis-platform:gcp:RoleSecrets", resource_name, None, opts)
        accessors = cloud.gcp.secret_manager.accessors
        self.ids: dict[str, str] = {}
        for role, password in passwords.items():
            name = secret_id(cloud.settings.environment, role)
            secret = secretmanager.Secret(
                f"secret-{role}",
                secret_id=name,
                replication={"auto": {}},
                labels={**cloud.labels, "redis-role": role},
                opts=cloud.opts(self),
            )
            secretmanager.SecretVersion(
                f"secret-{role}-current",
                secret=secret.id,
                secret_data=password,  # secret already (Credentials)
                opts=cloud.opts(self),
            )
            for i, member in enumerate(accessors.get(role, ())):
                secretmanager.SecretIamMember(
                    f"secret-{role}-reader-{i}",
                    secret_id=secret.secret_id,
                    role="roles/secretmanager.secretAccessor",
                    member=member,
                    opts=cloud.opts(self),
                )
            self.ids[role] = name
        self.register_outputs({"ids": self.ids})
