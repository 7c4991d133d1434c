"""Passwords for every ACL role, the ACL file, and the Secrets clients mount.

Passwords come from pulumi-random and stay secret in the stack state. Kubernetes gets
one Secret per role (`redis-user-<role>`: username, password) for that role's clients;
the ACL file Secret is rendered by `redisops.acl`, so it holds SHA-256 hashes only; the
replication credentials reach redis.conf through an include file in a Secret of its own.
"""

from __future__ import annotations

import hashlib

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.k8s.common import Platform, meta
from redisops import acl
from redisops.conf import render_replication_include

ACL_SECRET = "redis-acl"
ACL_KEY = "users.acl"
REPLICATION_SECRET = "redis-replication"
REPLICATION_KEY = "replication.conf"
JWT_SECRET = "sse-proxy-jwt"
PASSWORD_LENGTH = 40


def user_secret(role: str) -> str:
    return f"redis-user-{role}"


class Credentials(pulumi.ComponentResource):
    """Role passwords (two slots each for rotation), their Secrets, the ACL file and the
    replication include, and the signing secret of the SSE proxy's tokens."""

    acl_digest: pulumi.Output[str]
    passwords: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        resource_name: str,
        platform: Platform,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("redis-platform:k8s:Credentials", resource_name, None, opts)
        settings = platform.settings
        parent = pulumi.ResourceOptions(parent=self)
        slots: dict[str, list[pulumi.Output[str]]] = {}
        self.passwords = {}
        self.user_secrets: dict[str, k8s.core.v1.Secret] = {}
        for role in acl.ROLES:
            values = []
            for slot in settings.acl.slots(role):
                password = random.RandomPassword(
                    f"{role}-{slot}", length=PASSWORD_LENGTH, special=False, opts=parent
                )
                values.append(pulumi.Output.secret(password.result))
            slots[role] = values
            self.passwords[role] = values[0]  # the active slot
            self.user_secrets[role] = k8s.core.v1.Secret(
                f"user-{role}",
                metadata=meta(user_secret(role), platform.ns, "credentials"),
                type="Opaque",
                string_data={"username": role, "password": values[0]},
                opts=platform.opts(self),
            )

        streams = settings.streams.patterns
        hashes = pulumi.Output.all(
            *[pulumi.Output.all(*values) for values in slots.values()]
        ).apply(
            lambda per_role: {
                role: [acl.hash_password(p) for p in passwords]
                for role, passwords in zip(slots, per_role, strict=True)
            }
        )
        acl_text = hashes.apply(lambda h: acl.render_acl_file(h, streams))
        self.acl_text = acl_text
        # A digest of the file (hashes of hashes) names the reconcile Job: not secret.
        self.acl_digest = pulumi.Output.unsecret(
            acl_text.apply(lambda text: hashlib.sha256(text.encode()).hexdigest())
        )
        # The active replication password (as its SHA-256, what the ACL file holds too):
        # switching it must re-run reconcile, which sets masterauth on running nodes.
        self.replication_digest = pulumi.Output.unsecret(
            self.passwords[acl.REPLICATION].apply(acl.hash_password)
        )
        self.acl_secret = k8s.core.v1.Secret(
            "acl",
            metadata=meta(ACL_SECRET, platform.ns, "credentials"),
            type="Opaque",
            string_data={ACL_KEY: acl_text},
            opts=platform.opts(self),
        )
        self.replication_secret = k8s.core.v1.Secret(
            "replication",
            metadata=meta(REPLICATION_SECRET, platform.ns, "credentials"),
            type="Opaque",
            string_data={
                REPLICATION_KEY: self.passwords[acl.REPLICATION].apply(render_replication_include)
            },
            opts=platform.opts(self),
        )
        jwt = random.RandomPassword("sse-jwt", length=64, special=False, opts=parent)
        self.jwt_secret = k8s.core.v1.Secret(
            "sse-jwt",
            metadata=meta(JWT_SECRET, platform.ns, "sse-proxy"),
            type="Opaque",
            string_data={"secret": pulumi.Output.secret(jwt.result)},
            opts=platform.opts(self),
        )
        self.register_outputs(
            {
                "acl_secret": ACL_SECRET,
                "user_secrets": {role: user_secret(role) for role in acl.ROLES},
                "acl_digest": self.acl_digest,
            }
        )
