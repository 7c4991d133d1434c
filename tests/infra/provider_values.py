"""What pulumi-tls and pulumi-random compute, computed for real from the declared inputs.

The recorded plan's Secrets must hold working material, because the plan run
(tests/containers) mounts them into real containers: keys are real ECDSA/RSA keys,
certificate requests and certificates are real X.509 built from the declared subject,
DNS names, IP addresses, key usages and validity (as the terraform tls provider builds
them), passwords are random strings of the declared length and alphabet. Values are kept
per resource for the life of the process, so the same config gives the same plan twice.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
import secrets
import string
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CURVES: dict[str, ec.EllipticCurve] = {
    "P224": ec.SECP224R1(),
    "P256": ec.SECP256R1(),
    "P384": ec.SECP384R1(),
    "P521": ec.SECP521R1(),
}
SUBJECT_FIELDS = {
    "commonName": NameOID.COMMON_NAME,
    "organization": NameOID.ORGANIZATION_NAME,
    "organizationalUnit": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "country": NameOID.COUNTRY_NAME,
    "province": NameOID.STATE_OR_PROVINCE_NAME,
    "locality": NameOID.LOCALITY_NAME,
}
# terraform-provider-tls's allowed_uses -> KeyUsage fields / extended key usages
KEY_USAGES = {
    "digital_signature": "digital_signature",
    "content_commitment": "content_commitment",
    "key_encipherment": "key_encipherment",
    "data_encipherment": "data_encipherment",
    "key_agreement": "key_agreement",
    "cert_signing": "key_cert_sign",
    "crl_signing": "crl_sign",
    "encipher_only": "encipher_only",
    "decipher_only": "decipher_only",
}
EXTENDED_USAGES = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
}


class UnsupportedInput(ValueError):
    """An input the real provider accepts but this computation does not know."""


def _key(state: dict[str, Any]) -> CertificateIssuerPrivateKeyTypes:
    algorithm = state.get("algorithm", "RSA")
    if algorithm == "ECDSA":
        curve = state.get("ecdsaCurve", "P224")
        if curve not in CURVES:
            raise UnsupportedInput(f"tls.PrivateKey ecdsaCurve {curve!r}")
        return ec.generate_private_key(CURVES[curve])
    if algorithm == "RSA":
        return rsa.generate_private_key(65537, int(state.get("rsaBits", 2048)))
    raise UnsupportedInput(f"tls.PrivateKey algorithm {algorithm!r}")


def _load_key(pem: str) -> CertificateIssuerPrivateKeyTypes:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return key


def _name(subject: dict[str, Any] | None) -> x509.Name:
    attributes = []
    for field, oid in SUBJECT_FIELDS.items():
        value = (subject or {}).get(field)
        if value:
            attributes.append(x509.NameAttribute(oid, str(value)))
    return x509.Name(attributes)


def _sans(state: dict[str, Any]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in state.get("dnsNames") or []]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in state.get("ipAddresses") or []]
    return names


def _pem(cert: x509.Certificate | x509.CertificateSigningRequest) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def private_key(state: dict[str, Any]) -> dict[str, str]:
    key = _key(state)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    traditional = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    try:
        openssh = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()
    except ValueError:  # P224 has no OpenSSH form; the provider leaves the field empty
        openssh = ""
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "privateKeyPem": traditional,
        "privateKeyPemPkcs8": pkcs8,
        "privateKeyOpenssh": openssh,
        "publicKeyPem": public.decode(),
    }


def cert_request(state: dict[str, Any]) -> str:
    key = _load_key(state["privateKeyPem"])
    builder = x509.CertificateSigningRequestBuilder().subject_name(_name(state.get("subject")))
    sans = _sans(state)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _pem(builder.sign(key, hashes.SHA256()))


def _certificate(
    *,
    subject: x509.Name,
    public_key: Any,
    issuer: x509.Name,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    state: dict[str, Any],
    sans: list[x509.GeneralName],
) -> str:
    now = dt.datetime.now(dt.UTC)
    hours = int(state["validityPeriodHours"])
    uses = list(state.get("allowedUses") or [])
    unknown = [u for u in uses if u not in KEY_USAGES and u not in EXTENDED_USAGES]
    if unknown:
        raise UnsupportedInput(f"allowedUses {unknown}")
    is_ca = bool(state.get("isCaCertificate", False))
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(hours=hours))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer != subject:  # Go's x509 adds the issuer's key id to what a CA signs
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    flags = {field: False for field in KEY_USAGES.values()}
    for use in uses:
        if use in KEY_USAGES:
            flags[KEY_USAGES[use]] = True
    if any(flags.values()):
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    extended = [EXTENDED_USAGES[u] for u in uses if u in EXTENDED_USAGES]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _pem(builder.sign(issuer_key, hashes.SHA256()))


def self_signed_cert(state: dict[str, Any]) -> str:
    key = _load_key(state["privateKeyPem"])
    name = _name(state.get("subject"))
    return _certificate(
        subject=name,
        public_key=key.public_key(),
        issuer=name,
        issuer_key=key,
        state=state,
        sans=_sans(state),
    )


def locally_signed_cert(state: dict[str, Any]) -> str:
    request = x509.load_pem_x509_csr(state["certRequestPem"].encode())
    ca_cert = x509.load_pem_x509_certificate(state["caCertPem"].encode())
    ca_key = _load_key(state["caPrivateKeyPem"])
    try:
        sans = list(request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    return _certificate(
        subject=request.subject,
        public_key=request.public_key(),
        issuer=ca_cert.subject,
        issuer_key=ca_key,
        state=state,
        sans=sans,
    )


def password(state: dict[str, Any]) -> str:
    alphabet = ""
    if state.get("upper", True):
        alphabet += string.ascii_uppercase
    if state.get("lower", True):
        alphabet += string.ascii_lowercase
    if state.get("numeric", True):
        alphabet += string.digits
    if state.get("special", True):
        alphabet += state.get("overrideSpecial") or "!@#$%&*()-_=+[]{}<>:?"
    if not alphabet:
        raise UnsupportedInput("RandomPassword with no character class")
    return "".join(secrets.choice(alphabet) for _ in range(int(state["length"])))


COMPUTE = {
    "tls:index/privateKey:PrivateKey": private_key,
    "tls:index/certRequest:CertRequest": cert_request,
    "tls:index/selfSignedCert:SelfSignedCert": self_signed_cert,
    "tls:index/locallySignedCert:LocallySignedCert": locally_signed_cert,
    "random:index/randomPassword:RandomPassword": password,
}


@functools.cache
def _computed(typ: str, stack: str, name: str, inputs_json: str) -> Any:
    return COMPUTE[typ](json.loads(inputs_json))


def computed(typ: str, stack: str, name: str, state: dict[str, Any]) -> Any:
    """The provider's computed value for this resource (the same for the same inputs)."""
    return _computed(typ, stack, name, json.dumps(state, sort_keys=True, default=str))
