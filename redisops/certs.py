"""Certificates: what the files hold and what the nodes serve (`certs status`), and the
twin's rotations of the node certificate, the client certificates and the CA.

Every rotation reloads the files on every node without a restart (reconcile's TLS
reload: `CONFIG SET tls-*-file` re-reads them) and ends proven: each node serves the
certificate on disk, every node says `cluster_state:ok`, every replica's link is up.

The CA rotates with an overlap, as a password does (`redisops.rotation`):

- add: a new CA is made (`ca-next.*`); `ca.crt`, which nodes and clients trust, becomes
  the bundle old + new. Certificates of either CA are accepted; nodes still serve ones
  of the old CA, so clients that trust only the old CA keep working.
- switch: the new CA signs (`ca.key`); node and client certificates are re-issued from
  it; the bundle stays (new + old), so clients still holding old-CA certificates and the
  cluster bus (mutual TLS with each node's own certificate) keep working mid-reload.
- retire: `ca.crt` holds the new CA only; certificates of the old CA are refused.

Key material is written with mode 0600 and never logged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from redisops import acl
from redisops.alerts import AlertParams
from redisops.client import Endpoint, TlsClient, served_certificate
from redisops.errors import ConfigError
from redisops.local import checks
from redisops.local.settings import DEFAULT_STATE_DIR, TwinSettings
from redisops.local.twin import Twin
from redisops.reconcile import ReconcileOptions, reconcile
from redisops.rotation import Phase, check_order, next_phase, read_phase, write_phase
from redisops.tls import (
    Issued,
    TlsLayout,
    bundle_pem,
    days_until_expiry,
    fingerprint,
    issue_client,
    issue_node,
    issued_by,
    key_matches,
    load_bundle,
    new_ca,
    subject_alt_names,
    write_private,
)

# The RedisTlsCertificateExpiringSoon alert's window: status fails where the alert fires.
EXPIRY_DAYS = AlertParams().cert_days
Progress = Callable[[str], None]
What = Literal["node", "client", "ca"]
WHATS: tuple[What, ...] = ("node", "client", "ca")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# ---- status ------------------------------------------------------------------------------


@dataclass
class CertInfo:
    """One certificate: from a file (`path`) or served by a node."""

    name: str
    path: str | None
    subject: str = ""
    issuer: str = ""
    not_after: str = ""
    days_left: float | None = None
    fingerprint: str = ""
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "subject": self.subject,
            "issuer": self.issuer,
            "not_after": self.not_after,
            "days_left": None if self.days_left is None else round(self.days_left, 2),
            "fingerprint_sha256": self.fingerprint,
            "problems": self.problems,
        }


def describe(
    name: str, cert: x509.Certificate, path: str | None, now: dt.datetime | None = None
) -> CertInfo:
    """Subject, expiry and fingerprint of `cert`; a problem when it expires within the
    alert's window."""
    days = days_until_expiry(cert, now)
    info = CertInfo(
        name=name,
        path=path,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc.isoformat(),
        days_left=days,
        fingerprint=fingerprint(cert),
    )
    if days < 0:
        info.problems.append(f"expired {-days:.1f} days ago")
    elif days < EXPIRY_DAYS:
        info.problems.append(f"expires in {days:.1f} days (< {EXPIRY_DAYS}): renew it now")
    return info


def trust_problem(cert: x509.Certificate, cas: Sequence[x509.Certificate], ca_path: str) -> str:
    """'' when a CA of the bundle signed `cert`, else what is wrong."""
    if any(issued_by(cert, ca) for ca in cas):
        return ""
    return f"not signed by any CA in {ca_path}: nodes and clients refuse it"


def read_certs(path: Path, what: str) -> list[x509.Certificate]:
    """The certificates of a PEM file; ConfigError naming the file when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{what} {path}: cannot read it ({exc.strerror}); check the path"
        ) from exc
    return load_bundle(data, f"{what} {path}")


@dataclass
class NodeCert:
    node: str
    served: CertInfo | None
    matches_file: bool | None  # None: no file to compare with
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "served": self.served.as_dict() if self.served else None,
            "matches_file": self.matches_file,
            "problems": self.problems,
        }


@dataclass
class CertStatus:
    target: str
    ca_file: str
    files: list[CertInfo]
    nodes: list[NodeCert]
    ca_rotation: str | None = None

    @property
    def problems(self) -> list[str]:
        found = [f"{f.name} ({f.path}): {p}" for f in self.files for p in f.problems]
        found += [f"{n.node}: {p}" for n in self.nodes for p in n.problems]
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "expiry_threshold_days": EXPIRY_DAYS,
            "ca_file": self.ca_file,
            "ca_rotation": self.ca_rotation,
            "files": [f.as_dict() for f in self.files],
            "nodes": [n.as_dict() for n in self.nodes],
            "problems": self.problems,
        }


def _file_infos(
    name: str, path: Path, cas: Sequence[x509.Certificate], ca_path: str
) -> list[CertInfo]:
    try:
        cert = read_certs(path, name)[0]
    except ConfigError as exc:
        return [CertInfo(name=name, path=str(path), problems=[str(exc)])]
    info = describe(name, cert, str(path))
    problem = trust_problem(cert, cas, ca_path)
    if problem:
        info.problems.append(problem)
    return [info]


def node_status(endpoint: Endpoint, tls: TlsClient, expected: x509.Certificate | None) -> NodeCert:
    """The certificate `endpoint` serves now, and whether it is `expected`."""
    try:
        der = served_certificate(endpoint, tls)
    except OSError as exc:  # ssl.SSLError included: a certificate the CA file does not trust
        return NodeCert(str(endpoint), None, None, [f"TLS handshake failed: {exc}"])
    served = x509.load_der_x509_certificate(der)
    info = describe("served", served, None)
    node = NodeCert(str(endpoint), info, None, list(info.problems))
    if expected is not None:
        node.matches_file = der == _der(expected)
        if not node.matches_file:
            node.problems.append(
                "serves another certificate than the node certificate file (stale: reload "
                "it with `redisops reconcile --reload-tls`)"
            )
    return node


def status(
    endpoints: Sequence[Endpoint],
    tls: TlsClient,
    *,
    node_cert: Path | None = None,
    client_certs: Sequence[tuple[str, Path]] = (),
    target: str = "nodes",
    ca_rotation: str | None = None,
) -> CertStatus:
    """Every certificate of the CA file, the node certificate file and the client
    certificate files, and what each node serves."""
    ca_path = Path(tls.ca_file)
    cas = read_certs(ca_path, "CA file")
    files = [
        describe("ca" if len(cas) == 1 else f"ca[{i}]", cert, str(ca_path))
        for i, cert in enumerate(cas)
    ]
    expected = None
    if node_cert is not None:
        files += _file_infos("node", node_cert, cas, str(ca_path))
        if files[-1].fingerprint:  # readable: what every node must serve
            expected = read_certs(node_cert, "node certificate")[0]
    for name, path in client_certs:
        files += _file_infos(name, path, cas, str(ca_path))
    nodes = [node_status(ep, tls, expected) for ep in endpoints]
    return CertStatus(target, str(ca_path), files, nodes, ca_rotation)


def twin_status(twin: Twin) -> CertStatus:
    """`status` of the twin: its CA, node and role certificates, each node's served one."""
    settings = twin.settings()
    layout = twin.layout.tls
    phase = read_phase(layout.rotation_record)
    return status(
        checks.endpoints(settings),
        twin.client_tls(acl.MONITORING),
        node_cert=layout.node_cert,
        client_certs=[(f"client:{r}", layout.client_cert(r)) for r in acl.ROLES],
        target="local",
        ca_rotation=phase if phase in ("add", "switch") else None,
    )


# ---- rotations on the twin --------------------------------------------------------------


@dataclass
class CertRotation:
    """What one rotation did on the twin and what it proved."""

    what: What
    phase: Phase | None = None
    repeated: bool = False
    before: Phase | None = None
    written: list[str] = field(default_factory=list)
    nodes: list[NodeCert] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    next_command: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and all(not n.problems for n in self.nodes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": "local",
            "what": self.what,
            "phase": self.phase,
            "repeated": self.repeated,
            "state_before": None if self.what != "ca" else (self.before or "idle"),
            "ok": self.ok,
            "written": self.written,
            "nodes": [n.as_dict() for n in self.nodes],
            "problems": self.problems + [f"{n.node}: {p}" for n in self.nodes for p in n.problems],
            "notes": self.notes,
            "next_command": self.next_command,
        }


def signing_ca(layout: TlsLayout) -> Issued:
    """The CA that signs now: the certificate of `ca.crt` that belongs to `ca.key`."""
    try:
        key = layout.ca_key.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"tls: cannot read the CA key {layout.ca_key} ({exc.strerror}); start the twin "
            "with `redisops local up` first"
        ) from exc
    for cert in read_certs(layout.ca_cert, "CA file"):
        try:
            if key_matches(cert, key):
                return Issued(key, _pem(cert))
        except ValueError as exc:
            raise ConfigError(f"tls: the CA key {layout.ca_key} is unreadable ({exc})") from exc
    raise ConfigError(
        f"tls: no certificate in {layout.ca_cert} belongs to {layout.ca_key}; restore the "
        "pair (or run the CA rotation's current phase again)"
    )


def _write_pair(issued: Issued, cert_path: Path, key_path: Path, written: list[str]) -> None:
    write_private(key_path, issued.key_pem)
    write_private(cert_path, issued.cert_pem)
    written += [str(cert_path), str(key_path)]


def _reissue_node(layout: TlsLayout, ca: Issued, written: list[str]) -> Issued:
    """A new node key and certificate from `ca`, for the names the current one has."""
    current = read_certs(layout.node_cert, "node certificate")[0]
    dns, ips = subject_alt_names(current)
    node = issue_node(ca, dns, ips)
    _write_pair(node, layout.node_cert, layout.node_key, written)
    return node


def _reissue_clients(layout: TlsLayout, ca: Issued, written: list[str]) -> None:
    for role in acl.ROLES:
        _write_pair(
            issue_client(ca, role), layout.client_cert(role), layout.client_key(role), written
        )


def _reload(twin: Twin, settings: TwinSettings, progress: Progress) -> list[str]:
    """Every node re-reads its TLS files and must then serve the node certificate file."""
    progress(f"reloading TLS on {len(settings.ports)} nodes (CONFIG SET tls-*-file)")
    report = reconcile(
        settings.desired(),
        twin.client_tls(acl.OPERATOR),
        twin.credentials(acl.OPERATOR),
        ReconcileOptions(
            reload_tls=True,
            admin=twin.credentials(acl.ADMIN),
            expected_cert_pem=twin.layout.tls.node_cert.read_text(),
            progress=progress,
        ),
    )
    return [] if report.healthy else [f"reconcile: {report.summary()}"]


def _prove(twin: Twin, settings: TwinSettings, result: CertRotation, logins: bool) -> None:
    """Nodes serve the file's certificate; the cluster is whole; roles log in (`logins`)."""
    expected = read_certs(twin.layout.tls.node_cert, "node certificate")[0]
    tls = twin.client_tls(acl.MONITORING)
    result.nodes = [node_status(ep, tls, expected) for ep in checks.endpoints(settings)]
    result.problems += checks.cluster_problems(twin, settings)
    if not logins:
        return
    for role in acl.ROLES:
        password = twin.credentials(role).password.get_secret_value()
        for endpoint in checks.endpoints(settings):
            got = checks.login(endpoint, twin.client_tls(role), role, password)
            if got != checks.ACCEPTED:
                result.problems.append(f"{endpoint}: {role} with its certificate: {got}")


def rotate_node(twin: Twin, progress: Progress = lambda _m: None) -> CertRotation:
    """A new node key and certificate from the current CA, reloaded on every node."""
    settings = twin.settings()
    result = CertRotation("node")
    _reissue_node(twin.layout.tls, signing_ca(twin.layout.tls), result.written)
    result.problems += _reload(twin, settings, progress)
    _prove(twin, settings, result, logins=False)
    return result


def rotate_clients(twin: Twin, progress: Progress = lambda _m: None) -> CertRotation:
    """New client certificates for every role from the current CA (clients read them at
    each connection; the nodes need no reload)."""
    settings = twin.settings()
    result = CertRotation("client")
    progress(f"issuing client certificates for {len(acl.ROLES)} roles")
    _reissue_clients(twin.layout.tls, signing_ca(twin.layout.tls), result.written)
    _prove(twin, settings, result, logins=True)
    return result


def ca_command(state_dir: Path) -> Callable[[Phase], str]:
    extra = "" if state_dir == DEFAULT_STATE_DIR else f" --state-dir {state_dir}"
    return lambda phase: f"redisops certs rotate --what ca --phase {phase} --target local{extra}"


def ca_phase(twin: Twin) -> Phase | None:
    return read_phase(twin.layout.tls.rotation_record)


def _ca_add(layout: TlsLayout, result: CertRotation) -> None:
    current = signing_ca(layout)
    if not (layout.ca_next_cert.exists() and layout.ca_next_key.exists()):
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
        _write_pair(new_ca(f"redis-platform local CA {stamp}"), layout.ca_next_cert,
                    layout.ca_next_key, result.written)  # fmt: skip
    write_private(layout.ca_cert, bundle_pem(current.cert_pem, layout.ca_next_cert.read_bytes()))
    result.written.append(str(layout.ca_cert))
    result.notes.append(
        f"give every client that verifies the nodes the bundle {layout.ca_cert} before "
        "switch: from switch on, nodes serve certificates of the new CA"
    )


def _ca_switch(layout: TlsLayout, result: CertRotation) -> None:
    if layout.ca_next_cert.exists() and layout.ca_next_key.exists():
        new = Issued(layout.ca_next_key.read_bytes(), layout.ca_next_cert.read_bytes())
    elif layout.ca_old_cert.exists():  # an interrupted switch: the new CA signs already
        new = signing_ca(layout)
    else:
        raise ConfigError(
            f"the new CA ({layout.ca_next_cert}) is missing; run the CA rotation's phase add again"
        )
    if not layout.ca_old_cert.exists():
        old = signing_ca(layout)
        _write_pair(old, layout.ca_old_cert, layout.ca_old_key, result.written)
    write_private(layout.ca_cert, bundle_pem(new.cert_pem, layout.ca_old_cert.read_bytes()))
    write_private(layout.ca_key, new.key_pem)
    result.written += [str(layout.ca_cert), str(layout.ca_key)]
    _reissue_node(layout, new, result.written)
    _reissue_clients(layout, new, result.written)
    result.notes.append(
        "clients holding certificates of the old CA keep working until retire: give them "
        "certificates of the new CA before then"
    )


def _ca_retire(layout: TlsLayout, result: CertRotation) -> None:
    new = signing_ca(layout)
    leaves = [("node", layout.node_cert)] + [(r, layout.client_cert(r)) for r in acl.ROLES]
    for name, path in leaves:
        if not issued_by(read_certs(path, f"{name} certificate")[0], new.certificate):
            raise ConfigError(
                f"{path} is not signed by the new CA: retiring the old one would lock it "
                "out; run the CA rotation's phase switch again"
            )
    write_private(layout.ca_cert, new.cert_pem)
    result.written.append(str(layout.ca_cert))


def _ca_finish(layout: TlsLayout, phase: Phase) -> None:
    if phase == "switch":
        layout.ca_next_cert.unlink(missing_ok=True)
        layout.ca_next_key.unlink(missing_ok=True)
    elif phase == "retire":
        layout.ca_old_cert.unlink(missing_ok=True)
        layout.ca_old_key.unlink(missing_ok=True)
    write_phase(layout.rotation_record, phase)


def rotate_ca(twin: Twin, phase: str, progress: Progress = lambda _m: None) -> CertRotation:
    """One phase of the CA rotation on the twin (add, switch, retire), proven."""
    settings = twin.settings()
    layout = twin.layout.tls
    done = ca_phase(twin)
    command = ca_command(twin.layout.root)
    repeated = check_order(done, phase, "the twin's CA rotation", command)
    typed = cast(Phase, phase)
    result = CertRotation("ca", typed, repeated, done)
    result.next_command = command(next_phase(typed)) if typed != "retire" else ""
    if not repeated:
        {"add": _ca_add, "switch": _ca_switch, "retire": _ca_retire}[typed](layout, result)
    result.problems += _reload(twin, settings, progress)
    _prove(twin, settings, result, logins=True)
    if result.ok:
        _ca_finish(layout, typed)
    return result
