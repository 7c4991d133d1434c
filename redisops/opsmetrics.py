"""The platform's own metrics: what no Redis exporter can see.

`redisops metrics serve` exposes, for Prometheus (the twin's) or Managed Prometheus (a
Deployment on GKE):

- `redisops_tls_certificate_expiry_timestamp_seconds{certificate}`: notAfter of each
  certificate file it is given (the mounted Secrets on GKE: what the next reload loads);
- `redisops_backup_last_success_timestamp_seconds`: completion of the newest *complete*
  backup (a manifest that checks out, as the restore would find it);
- `redisops_backup_last_run_failed` / `redisops_drill_last_run_failed` and
  `redisops_drill_last_success_timestamp_seconds`: from the run records the backup and
  drill commands write (`redisops.backup.runs`);
- `redisops_source_up{source}`: 0 when a source could not be read, so that silence of
  the alerts above is never taken for health.

Everything is read at scrape time (a few object reads); nothing is cached between
scrapes, so a scrape shows the state of that moment.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from redisops.backup import runs
from redisops.backup.catalog import newest_complete
from redisops.backup.storage import Storage
from redisops.errors import ConfigError

logger = logging.getLogger("redisops.metrics")


@dataclass(frozen=True)
class CertSource:
    name: str
    path: Path


def parse_cert_option(text: str) -> CertSource:
    """`NAME=PATH` (the label and the PEM file)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise ConfigError(
            f"--cert {text!r}: give NAME=PATH, e.g. --cert node=/etc/redis/tls/tls.crt"
        )
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"--cert {text!r}: NAME may hold letters, digits, - and _ only")
    return CertSource(name, Path(path))


def not_after(path: Path) -> dt.datetime:
    """The expiry of the first certificate in a PEM file."""
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc


class OpsCollector(Collector):
    """Reads its sources at every scrape."""

    def __init__(self, certs: list[CertSource], storage: Storage | None) -> None:
        self.certs = certs
        self.storage = storage

    def collect(self) -> Iterator[GaugeMetricFamily]:
        source_up = GaugeMetricFamily(
            "redisops_source_up",
            "1 when the source could be read at this scrape",
            labels=["source"],
        )
        if self.certs:
            expiry = GaugeMetricFamily(
                "redisops_tls_certificate_expiry_timestamp_seconds",
                "notAfter of the certificate (Unix time)",
                labels=["certificate"],
            )
            ok = True
            for cert in self.certs:
                try:
                    expiry.add_metric([cert.name], not_after(cert.path).timestamp())
                except (OSError, ValueError) as exc:
                    ok = False
                    logger.warning("certificate %s (%s): %s", cert.name, cert.path, exc)
            yield expiry
            source_up.add_metric(["certificates"], 1 if ok else 0)
        if self.storage is not None:
            try:
                yield from self._storage_metrics(self.storage)
                source_up.add_metric(["backups"], 1)
            except Exception as exc:  # any failure to read the location is "source down"
                logger.warning("backups at %s: %s: %s", self.storage.url, type(exc).__name__, exc)
                source_up.add_metric(["backups"], 0)
        yield source_up

    def _storage_metrics(self, storage: Storage) -> Iterator[GaugeMetricFamily]:
        storage.check()  # a location that is gone is "source down", not "no backups"
        newest = newest_complete(storage)
        backup, _ = runs.latest(storage, "backup")
        drill, drill_ok = runs.latest(storage, "drill")
        families = [
            (
                "redisops_backup_last_success_timestamp_seconds",
                "Completion of the newest complete backup (0: none)",
                newest.completed_at.timestamp() if newest else 0.0,
            ),
            (
                "redisops_backup_last_run_failed",
                "1 when the newest backup run recorded a failure",
                1.0 if backup is not None and not backup.ok else 0.0,
            ),
            (
                "redisops_backup_last_run_timestamp_seconds",
                "When the newest backup run finished (0: none recorded)",
                backup.finished_at.timestamp() if backup else 0.0,
            ),
            (
                "redisops_drill_last_success_timestamp_seconds",
                "When the newest successful restore drill finished (0: none)",
                drill_ok.finished_at.timestamp() if drill_ok else 0.0,
            ),
            (
                "redisops_drill_last_run_failed",
                "1 when the newest restore drill failed",
                1.0 if drill is not None and not drill.ok else 0.0,
            ),
        ]
        values = []
        for name, help_text, value in families:
            family = GaugeMetricFamily(name, help_text)
            family.add_metric([], value)
            values.append(family)
        yield from values
