"""TLS: no plaintext, client certificates where required, TLS 1.2+ only, valid certificates."""

from __future__ import annotations

import ssl
import warnings

import pytest

from redisops import acl
from smoke_tests import capabilities
from smoke_tests.capabilities import Declared
from smoke_tests.conftest import Measure
from smoke_tests.probes import cert_days_left, plaintext_probe, tls_probe
from smoke_tests.targets import Target


def _client_pair(target: Target) -> tuple[str, str]:
    tls = target.tls(acl.SMOKE)
    assert tls.cert_file, "the smoke role needs a client certificate"
    assert tls.key_file, "the smoke role needs a client key"
    return tls.cert_file, tls.key_file


def test_plaintext_connections_are_refused(target: Target) -> None:
    for endpoint in target.endpoints():
        answered, detail = plaintext_probe(endpoint)
        assert not answered, f"{endpoint} answered a plaintext PING: {detail}"


def test_tls_without_client_certificate_is_refused(target: Target, declared: Declared) -> None:
    declared.require(capabilities.CLIENT_CERTIFICATES)
    ca = target.tls(None).ca_file
    for endpoint in target.endpoints():
        probe = tls_probe(endpoint, ca, client_cert=None)
        assert not probe.accepted, f"{endpoint} accepted a client without certificate"
        assert probe.refused_by_server, f"{endpoint}: inconclusive ({probe.detail})"


def test_tls_1_1_is_refused_and_tls_1_2_accepted(target: Target) -> None:
    ca = target.tls(None).ca_file
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # TLSv1_1 is deprecated: that's the point
        old = ssl.TLSVersion.TLSv1_1
    for endpoint in target.endpoints():
        modern = tls_probe(
            endpoint, ca, client_cert=_client_pair(target), version=ssl.TLSVersion.TLSv1_2
        )
        assert modern.accepted, f"{endpoint} refused TLS 1.2: {modern.detail}"
        legacy = tls_probe(endpoint, ca, client_cert=_client_pair(target), version=old)
        assert not legacy.accepted, f"{endpoint} accepted TLS 1.1"
        if not legacy.refused_by_server:  # no capability covers this: it fails the gate
            pytest.skip(f"this client cannot offer TLS 1.1 ({legacy.detail}); inconclusive")


def test_certificates_chain_to_the_ca_name_the_host_and_are_not_expiring(
    target: Target, measure: Measure, pytestconfig: pytest.Config
) -> None:
    minimum = float(pytestconfig.getoption("--cert-min-days"))
    ca = target.tls(None).ca_file
    least: float | None = None
    for endpoint in target.endpoints():
        probe = tls_probe(endpoint, ca, client_cert=_client_pair(target), server_name=endpoint.host)
        assert probe.accepted, f"{endpoint}: {probe.detail}"
        assert probe.peer_cert is not None
        days = cert_days_left(probe.peer_cert)
        least = days if least is None else min(least, days)
    assert least is not None
    measure("cert_days_left_min", least, unit="days", goal=None)
    assert least >= minimum, f"a node certificate expires in {least:.1f} days (< {minimum})"
