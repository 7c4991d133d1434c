"""TLS material for the local twin: a CA, the node certificate and per-role client certificates.

On GKE the same shapes come from pulumi-tls; here they are made with `cryptography`.
Node certificates carry Extended Key Usage serverAuth *and* clientAuth: the cluster bus
and replication are mutual TLS with the node's own certificate, and with serverAuth only
replication fails and cluster formation hangs with nothing logged.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from redisops.errors import ConfigError

CA_VALID_DAYS = 3650
LEAF_VALID_DAYS = 365
# Leaf certificates are reissued when fewer days than this remain (the smoke suite fails
# under 14 days, so the twin renews well before that).
RENEW_BEFORE_DAYS = 30


@dataclass(frozen=True)
class Issued:
    """A private key and its certificate, both PEM."""

    key_pem: bytes
    cert_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_ca(common_name: str = "redis-platform local CA", days: int = CA_VALID_DAYS) -> Issued:
    """A self-signed ECDSA P-256 certificate authority."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def issue(
    ca: Issued,
    common_name: str,
    *,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server_auth: bool,
    client_auth: bool,
    days: int = LEAF_VALID_DAYS,
) -> Issued:
    """Issue a leaf certificate signed by `ca` with the given SANs and key usages."""
    if not (server_auth or client_auth):
        raise ValueError("a certificate needs serverAuth, clientAuth or both")
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError("tls: the CA key is not an EC key; delete the CA to regenerate it")
    ca_cert = ca.certificate
    key = ec.generate_private_key(ec.SECP256R1())
    usages = []
    if server_auth:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client_auth:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM))


NODE_COMMON_NAME = "redis-node"


def issue_node(ca: Issued, dns_names: Sequence[str], ip_addresses: Sequence[str]) -> Issued:
    """The node certificate: serverAuth for clients, clientAuth for the cluster bus and
    replication (mutual TLS with the node's own certificate)."""
    return issue(
        ca,
        NODE_COMMON_NAME,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        server_auth=True,
        client_auth=True,
    )


def issue_client(ca: Issued, role: str) -> Issued:
    """A role's client certificate (clientAuth only; the role name as its subject)."""
    return issue(ca, role, server_auth=False, client_auth=True)


def days_until_expiry(cert: x509.Certificate, now: dt.datetime | None = None) -> float:
    """Days (fractional) until `cert` expires; negative once it has."""
    remaining = cert.not_valid_after_utc - (now or _now())
    return remaining.total_seconds() / 86400


def covers(cert: x509.Certificate, dns_names: Iterable[str], ip_addresses: Iterable[str]) -> bool:
    """Whether the certificate's SANs include every given name and address."""
    dns_names, ip_addresses = list(dns_names), list(ip_addresses)
    if not dns_names and not ip_addresses:
        return True
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ip = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    return set(dns_names) <= have_dns and {str(ipaddress.ip_address(a)) for a in ip_addresses} <= (
        have_ip
    )


def subject_alt_names(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The certificate's DNS names and IP addresses (empty when it has no SANs)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    dns = tuple(san.get_values_for_type(x509.DNSName))
    ips = tuple(str(a) for a in san.get_values_for_type(x509.IPAddress))
    return dns, ips


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as `AB:CD:...` (what `openssl x509 -fingerprint -sha256` shows)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def load_bundle(pem: bytes, what: str = "certificate file") -> list[x509.Certificate]:
    """Every certificate of a PEM file (a CA file may be a bundle during a CA rotation)."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ConfigError(f"tls: {what} holds no readable PEM certificate ({exc})") from exc
    return certs


def bundle_pem(*pems: bytes) -> bytes:
    """Concatenate the certificates of `pems` in order, each once (by DER)."""
    seen: set[bytes] = set()
    parts: list[bytes] = []
    for pem in pems:
        for cert in load_bundle(pem, "bundle part"):
            der = cert.public_bytes(serialization.Encoding.DER)
            if der not in seen:
                seen.add(der)
                parts.append(cert.public_bytes(serialization.Encoding.PEM))
    return b"".join(parts)


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether `ca` signed `cert` (name and signature, not validity dates)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def key_matches(cert: x509.Certificate, key_pem: bytes) -> bool:
    """Whether the private key `key_pem` belongs to `cert`."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    return bool(
        key.public_key().public_bytes(encoding, public)
        == cert.public_key().public_bytes(encoding, public)
    )


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` with mode 0600, atomically (no window with wider rights)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@dataclass(frozen=True)
class TlsLayout:
    """Where the twin keeps its TLS files."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def node_cert(self) -> Path:
        return self.root / "node.crt"

    @property
    def node_key(self) -> Path:
        return self.root / "node.key"

    # During a CA rotation (redisops.certs): the new CA before it signs (phase add), the
    # old one after (phase switch, until retire); ca.crt is then a bundle of both.
    @property
    def ca_next_cert(self) -> Path:
        return self.root / "ca-next.crt"

    @property
    def ca_next_key(self) -> Path:
        return self.root / "ca-next.key"

    @property
    def ca_old_cert(self) -> Path:
        return self.root / "ca-old.crt"

    @property
    def ca_old_key(self) -> Path:
        return self.root / "ca-old.key"

    @property
    def rotation_record(self) -> Path:
        return self.root / "rotation.json"

    def client_cert(self, role: str) -> Path:
        return self.root / "clients" / f"{role}.crt"

    def client_key(self, role: str) -> Path:
        return self.root / "clients" / f"{role}.key"


def _load(cert_path: Path, key_path: Path) -> Issued | None:
    if not (cert_path.exists() and key_path.exists()):
        return None
    try:
        issued = Issued(key_path.read_bytes(), cert_path.read_bytes())
        issued.certificate  # noqa: B018  (parse to detect a damaged file)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"tls: cannot read {cert_path} or {key_path} ({exc}); delete them to regenerate"
        ) from exc
    return issued


def _fresh(issued: Issued | None, dns: Sequence[str], ips: Sequence[str]) -> bool:
    return (
        issued is not None
        and days_until_expiry(issued.certificate) > RENEW_BEFORE_DAYS
        and covers(issued.certificate, dns, ips)
    )


def ensure_twin_tls(
    layout: TlsLayout,
    roles: Sequence[str],
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
) -> list[str]:
    """Create or renew the twin's TLS files; return the names of the files (re)written.

    Existing, valid material is kept, so running twice changes nothing. A node
    certificate that no longer covers the twin's names, or expires within
    RENEW_BEFORE_DAYS, is reissued from the same CA (so clients keep trusting it).
    """
    written: list[str] = []
    ca = _load(layout.ca_cert, layout.ca_key)
    if ca is None or days_until_expiry(ca.certificate) <= RENEW_BEFORE_DAYS:
        ca = new_ca()
        write_private(layout.ca_key, ca.key_pem)
        write_private(layout.ca_cert, ca.cert_pem)
        written += [str(layout.ca_cert), str(layout.ca_key)]
        force = True
    else:
        force = False
    node = _load(layout.node_cert, layout.node_key)
    if force or not _fresh(node, dns_names, ip_addresses):
        node = issue_node(ca, dns_names, ip_addresses)
        write_private(layout.node_key, node.key_pem)
        write_private(layout.node_cert, node.cert_pem)
        written += [str(layout.node_cert), str(layout.node_key)]
    for role in roles:
        existing = _load(layout.client_cert(role), layout.client_key(role))
        if force or not _fresh(existing, (), ()):
            client = issue_client(ca, role)
            write_private(layout.client_key(role), client.key_pem)
            write_private(layout.client_cert(role), client.cert_pem)
            written += [str(layout.client_cert(role)), str(layout.client_key(role))]
    return written
