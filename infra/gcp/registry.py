"""Artifact Registry: the Docker repository of the platform image, with cleanup."""

from __future__ import annotations

import pulumi
import pulumi_gcp.artifactregistry as artifactregistry

from infra.gcp.common import DAY_S, Cloud


class Registry(pulumi.ComponentResource):
    def __init__(
        self,
        resource_name: str,
        cloud: Cloud,
        readers: list[pulumi.Input[str]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("redis-platform:gcp:Registry", resource_name, None, opts)
        settings = cloud.gcp.registry
        assert settings is not None
        self.repository = artifactregistry.Repository(
            "repository",
            location=settings.location,
            repository_id=settings.repository,
            format="DOCKER",
            description="redis-platform images (redisops, the SSE proxy)",
            docker_config={"immutable_tags": True},
            cleanup_policy_dry_run=False,
            cleanup_policies=[
                {
                    "id": "keep-recent",
                    "action": "KEEP",
                    "most_recent_versions": {"keep_count": settings.keep_recent},
                },
                {
                    "id": "delete-untagged",
                    "action": "DELETE",
                    "condition": {
                        "tag_state": "UNTAGGED",
                        "older_than": f"{settings.untagged_days * DAY_S}s",
                    },
                },
            ],
            labels=cloud.labels,
            opts=cloud.opts(self),
        )
        for i, member in enumerate(readers):
            artifactregistry.RepositoryIamMember(
                f"reader-{i}",
                location=settings.location,
                repository=self.repository.repository_id,
                role="roles/artifactregistry.reader",
                member=member,
                opts=cloud.opts(self),
            )
        self.url = pulumi.Output.concat(
            settings.location, "-docker.pkg.dev/", cloud.gcp.project, "/", settings.repository
        )
        self.register_outputs({"url": self.url})
