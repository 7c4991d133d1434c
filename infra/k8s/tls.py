"""TLS for the cluster: a private CA, the node certificate, client certificates; in Secrets.

pulumi-tls keeps keys and certificates in the (encrypted) stack state. Each certificate
has a validity and an early-renewal window: a `pulumi up` inside the window issues a new
one, the Secret changes, and the reconcile Job (whose name hashes the certificates) makes
every node re-read its files without a restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

from infra.k8s.common import CLIENT_SERVICE, HEADLESS, STATEFULSET, Platform, meta
from infra.settings import StackSettings

SERVER_USES = ["digital_signature", "key_encipherment", "server_auth", "client_auth"]
CLIENT_USES = ["digital_signature", "key_encipherment", "client_auth"]
# Who gets a client certificate, and the Secret it lands in.
CLIENTS = {
    "sse-proxy": "redis-tls-sse-proxy",
    "jobs": "redis-tls-jobs",
    "exporter": "redis-tls-exporter",
}
NODE_SECRET = "redis-tls-node"
# What the clients of `clients.namespaces` mount (in their own namespace) when Redis
# requires client certificates; `clients.podLabels` alone: in the platform's namespace.
APP_CLIENT_SECRET = "redis-client-tls"
APP_CLIENTS_SECRET = "redis-tls-clients"


def app_client_secrets(settings: StackSettings) -> dict[str, str]:
    """namespace -> name of the client-certificate Secret issued there for the configured
    client namespaces / labelled pods; none when Redis does not require client certificates."""
    if settings.redis.tls_auth_clients != "yes":
        return {}
    clients = settings.clients
    if clients.namespaces:
        return {ns: APP_CLIENT_SECRET for ns in clients.namespaces}
    if clients.pod_labels:
        return {settings.namespace: APP_CLIENTS_SECRET}
    return {}


def node_dns_names(settings: StackSettings) -> list[str]:
    """Every name a node is reached by: each pod's DNS name (short and full), the
    services, and localhost for the probes and the exporter sidecar."""
    ns, domain = settings.namespace, settings.cluster_domain
    names = []
    for ordinal in range(settings.redis.pods):
        pod = f"{STATEFULSET}-{ordinal}.{HEADLESS}"
        names += [f"{pod}.{ns}.svc.{domain}", f"{pod}.{ns}.svc", f"{pod}.{ns}"]
    for service in (CLIENT_SERVICE, HEADLESS):
        names += [service, f"{service}.{ns}", f"{service}.{ns}.svc", f"{service}.{ns}.svc.{domain}"]
    return [*names, "localhost"]


@dataclass(frozen=True)
class Issued:
    key: tls.PrivateKey
    cert: tls.LocallySignedCert
    secret: k8s.core.v1.Secret


class ClusterTls(pulumi.ComponentResource):
    """CA (ECDSA P-256) + node certificate (serverAuth and clientAuth: the bus and
    replication use it as a client certificate) + client certificates."""

    ca_cert_pem: pulumi.Output[str]
    node_cert_pem: pulumi.Output[str]
    secret_names: dict[str, str]

    def __init__(
        self,
        resource_name: str,
        platform: Platform,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("redis-platform:k8s:ClusterTls", resource_name, None, opts)
        self._platform = platform
        settings = platform.settings
        lifetimes = settings.tls
        self.ca_key = tls.PrivateKey(
            "ca-key",
            algorithm="ECDSA",
            ecdsa_curve="P256",
            opts=platform.state_opts(self),
        )
        self.ca = tls.SelfSignedCert(
            "ca",
            private_key_pem=self.ca_key.private_key_pem,
            is_ca_certificate=True,
            subject={
                "common_name": f"redis-platform {settings.environment} CA",
                "organization": "redis-platform",
            },
            validity_period_hours=lifetimes.ca_validity_hours,
            early_renewal_hours=lifetimes.ca_early_renewal_hours,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"],
            opts=platform.state_opts(self),
        )
        self.ca_cert_pem = self.ca.cert_pem
        self.node = self._issue(
            "node", NODE_SECRET, SERVER_USES, node_dns_names(settings), ["127.0.0.1"]
        )
        self.clients = {
            name: self._issue(name, secret, CLIENT_USES, [], []) for name, secret in CLIENTS.items()
        }
        # Without these, the client namespaces the NetworkPolicy admits could not complete
        # a TLS handshake with `tls-auth-clients yes`.
        self.app_clients = {
            namespace: self._issue(
                f"clients-{namespace}", secret, CLIENT_USES, [], [], namespace=namespace
            )
            for namespace, secret in app_client_secrets(settings).items()
        }
        self.node_cert_pem = self.node.cert.cert_pem
        self.secret_names = {"node": NODE_SECRET, **CLIENTS}
        self.register_outputs({"ca_cert_pem": self.ca_cert_pem, "secret_names": self.secret_names})

    def _issue(
        self,
        name: str,
        secret_name: str,
        uses: list[str],
        dns_names: Sequence[str],
        ip_addresses: Sequence[str],
        namespace: str | None = None,
    ) -> Issued:
        lifetimes = self._platform.settings.tls
        parent = self._platform.state_opts(self)
        key = tls.PrivateKey(f"{name}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=parent)
        request = tls.CertRequest(
            f"{name}-csr",
            private_key_pem=key.private_key_pem,
            subject={"common_name": f"redis-platform {name}", "organization": "redis-platform"},
            dns_names=list(dns_names),
            ip_addresses=list(ip_addresses),
            opts=parent,
        )
        cert = tls.LocallySignedCert(
            f"{name}-cert",
            cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=self.ca_key.private_key_pem,
            ca_cert_pem=self.ca.cert_pem,
            validity_period_hours=lifetimes.validity_hours,
            early_renewal_hours=lifetimes.early_renewal_hours,
            allowed_uses=uses,
            opts=parent,
        )
        secret = k8s.core.v1.Secret(
            f"{name}-tls",
            metadata=meta(secret_name, namespace or self._platform.ns, "tls"),
            type="kubernetes.io/tls",
            string_data={
                "ca.crt": self.ca.cert_pem,
                "tls.crt": cert.cert_pem,
                "tls.key": pulumi.Output.secret(key.private_key_pem),
            },
            opts=self._platform.opts(self),
        )
        return Issued(key, cert, secret)
