"""The platform's own metrics: run records and what `redisops metrics` reports from them,
certificate expiry, and sources that cannot be read (never silence taken for health)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from redisops import tls
from redisops.backup import runs
from redisops.backup.storage import FileStorage
from redisops.errors import ConfigError
from redisops.opsmetrics import CertSource, OpsCollector, parse_cert_option


def scrape(collector: OpsCollector) -> dict[str, float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    values = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_the_newest_record_wins_and_a_failure_does_not_hide_the_last_success(
    tmp_path: Path,
) -> None:
    storage = FileStorage(tmp_path)
    assert runs.latest_run(storage, "drill") is None
    ok = runs.record_run(storage, "drill", True, "20261203T010000Z")
    failed = runs.record_run(storage, "drill", False, "OperationError: no backup")
    latest = runs.latest_run(storage, "drill")
    assert latest is not None and not latest.ok
    assert abs((latest.finished_at - failed.finished_at).total_seconds()) < 0.01
    success = runs.latest_success(storage, "drill")
    assert success is not None and success.ok
    assert abs((success.finished_at - ok.finished_at).total_seconds()) < 0.01
    (tmp_path / "runs" / "drill" / "notes.txt").write_text("not a record")
    assert runs.latest_run(storage, "drill") == latest  # foreign names are passed over


def test_records_sort_newest_first_by_name() -> None:
    early = runs.record_name(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), True)
    late = runs.record_name(dt.datetime(2026, 12, 1, tzinfo=dt.UTC), False)
    assert sorted([early, late]) == [late, early]


def test_the_collector_reports_backups_drills_and_certificates(tmp_path: Path) -> None:
    ca = tls.new_ca()
    leaf = tls.issue(ca, "node", dns_names=("localhost",), server_auth=True, client_auth=True,
                     days=13)  # fmt: skip
    cert = tmp_path / "node.crt"
    cert.write_bytes(leaf.cert_pem)
    storage = FileStorage(tmp_path / "backups")
    runs.record_run(storage, "backup", False, "OperationError: node unreachable")
    values = scrape(OpsCollector([CertSource("node", cert)], storage))
    expiry = values['redisops_tls_certificate_expiry_timestamp_seconds{certificate="node"}']
    assert 12.9 * 86400 < expiry - dt.datetime.now(dt.UTC).timestamp() < 13.1 * 86400
    assert values["redisops_backup_last_run_failed"] == 1.0
    assert values["redisops_backup_last_success_timestamp_seconds"] == 0.0  # none complete
    assert values["redisops_drill_last_success_timestamp_seconds"] == 0.0
    assert values['redisops_source_up{source="backups"}'] == 1.0
    assert values['redisops_source_up{source="certificates"}'] == 1.0


def test_unreadable_sources_are_reported_down_not_healthy(tmp_path: Path) -> None:
    (tmp_path / "backups").write_text("a file where a directory should be")
    damaged = tmp_path / "node.crt"
    damaged.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    values = scrape(OpsCollector([CertSource("node", damaged)], FileStorage(tmp_path / "backups")))
    assert values['redisops_source_up{source="certificates"}'] == 0.0
    assert values['redisops_source_up{source="backups"}'] == 0.0
    assert "redisops_backup_last_run_failed" not in values


@pytest.mark.parametrize("text", ["node", "=/x", "node=", "no de=/x"])
def test_a_malformed_cert_option_names_the_fix(text: str) -> None:
    with pytest.raises(ConfigError, match="--cert"):
        parse_cert_option(text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["metrics", "show"], "nothing to watch"),
        (["metrics", "show", "--target", "gke"], "only 'local'"),
        (["metrics", "serve", "--listen", "9122", "--cert", "a=/x"], "host:port"),
    ],
)
def test_metrics_commands_refuse_bad_usage_with_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "redisops", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
