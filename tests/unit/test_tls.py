from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from redisops.tls import (
    TlsLayout,
    covers,
    days_until_expiry,
    ensure_twin_tls,
    issue,
    new_ca,
    write_private,
)


def eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_node_certificate_serves_and_authenticates_as_client() -> None:
    ca = new_ca()
    node = issue(
        ca,
        "node",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1"],
        server_auth=True,
        client_auth=True,
    )
    assert eku(node.certificate) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    assert node.certificate.issuer == ca.certificate.subject
    assert covers(node.certificate, ["localhost"], ["127.0.0.1"])
    assert not covers(node.certificate, ["redis-0.redis"], [])


def test_client_certificate_is_client_only() -> None:
    client = issue(new_ca(), "reader", server_auth=False, client_auth=True)
    assert eku(client.certificate) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_days_until_expiry() -> None:
    cert = issue(new_ca(), "x", server_auth=True, client_auth=False, days=20).certificate
    assert 19.9 < days_until_expiry(cert) <= 20
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    assert days_until_expiry(cert, later) < 0


def test_private_files_are_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "key.pem"
    write_private(path, b"secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b"secret"


def test_twin_tls_is_created_once_and_kept(tmp_path: Path) -> None:
    layout = TlsLayout(tmp_path / "tls")
    first = ensure_twin_tls(layout, ["reader"], ["localhost"], ["127.0.0.1"])
    assert len(first) == 6
    for path in first:
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    assert ensure_twin_tls(layout, ["reader"], ["localhost"], ["127.0.0.1"]) == []


def test_node_certificate_is_reissued_from_the_same_ca_when_names_change(tmp_path: Path) -> None:
    layout = TlsLayout(tmp_path / "tls")
    ensure_twin_tls(layout, [], ["localhost"], ["127.0.0.1"])
    ca_before = layout.ca_cert.read_bytes()
    written = ensure_twin_tls(layout, [], ["localhost"], ["127.0.0.1", "127.0.0.2"])
    assert written == [str(layout.node_cert), str(layout.node_key)]
    assert layout.ca_cert.read_bytes() == ca_before
    cert = x509.load_pem_x509_certificate(layout.node_cert.read_bytes())
    assert covers(cert, [], ["127.0.0.2"])
