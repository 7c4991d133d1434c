"""The alert definitions and their renderings: promtool accepts the rule files and every
alert fires on its failing series and stays quiet on its healthy one; the Cloud
Monitoring rendering carries the same alerts, expressions and thresholds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from redisops import alerts
from redisops.local.monitoring import TWIN_SCALE

PRODUCTION = alerts.AlertParams(backup_max_age_s=5400, drill_max_age_s=8 * 86400)
TWIN = alerts.AlertParams(backup_max_age_s=3600, drill_max_age_s=3600, scale=TWIN_SCALE)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool missing: `make monitoring` installs Debian's prometheus")
    return path


def write_rules(tmp_path: Path, params: alerts.AlertParams, annotations: bool = True) -> Path:
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(alerts.rule_groups(params, annotations=annotations)))
    return path


@pytest.mark.parametrize("params", [PRODUCTION, TWIN], ids=["production", "twin"])
def test_promtool_accepts_the_rule_file(tmp_path: Path, params: alerts.AlertParams) -> None:
    rules = write_rules(tmp_path, params)
    result = subprocess.run(
        [promtool(), "check", "rules", str(rules)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(alerts.selected(params))} rules found" in result.stdout


def test_every_alert_fires_on_its_fault_and_stays_quiet_when_healthy(tmp_path: Path) -> None:
    # promtool compares annotations too; the cases check expressions, `for` and labels.
    write_rules(tmp_path, alerts.CASE_PARAMS, annotations=False)
    cases = tmp_path / "tests.yml"
    cases.write_text(yaml.safe_dump(alerts.promtool_tests(alerts.CASE_PARAMS, "rules.yml")))
    result = subprocess.run(
        [promtool(), "test", "rules", str(cases)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    tests = alerts.promtool_tests(alerts.CASE_PARAMS, "rules.yml")["tests"]
    extra = sum(len(a.also_fires) for a in alerts.ALERTS)
    assert (
        len(tests)
        == 2 * len(alerts.ALERTS) + extra
        == len(alerts.selected(alerts.CASE_PARAMS)) * 2 + extra
    )


def test_promtool_cases_can_fail(tmp_path: Path) -> None:
    """A quiet case swapped for a firing one must make promtool fail: the cases bite."""
    write_rules(tmp_path, alerts.CASE_PARAMS, annotations=False)
    spec = alerts.promtool_tests(alerts.CASE_PARAMS, "rules.yml")
    node_down = next(t for t in spec["tests"] if t["name"].startswith("RedisNodeDown stays quiet"))
    node_down["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {"severity": "page"}}]
    spec["tests"] = [node_down]
    cases = tmp_path / "tests.yml"
    cases.write_text(yaml.safe_dump(spec))
    result = subprocess.run(
        [promtool(), "test", "rules", str(cases)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode != 0


def test_alerts_are_named_once_with_a_severity_and_both_cases() -> None:
    names = [a.name for a in alerts.ALERTS]
    assert len(names) == len(set(names))
    assert not set(names) & set(alerts.EXTERNAL_ALERTS)
    for alert in alerts.ALERTS:
        assert alert.severity in ("page", "ticket")
        assert alert.fires.series and alert.quiet.series, alert.name
        assert alert.summary and alert.description


def test_the_alerts_the_issue_names_are_all_defined() -> None:
    wanted = {
        "RedisClusterStateNotOk", "RedisClusterSlotsNotOk", "RedisNodeDown",
        "RedisPrimaryWithoutReplica", "RedisReplicaLagHigh", "RedisMemoryHigh",
        "RedisOomRejectedWrites", "RedisPersistenceWriteErrors", "RedisRejectedConnections",
        "RedisAuthFailuresSpike", "RedisTlsCertificateExpiringSoon", "RedisBackupStale",
        "RedisBackupFailed", "SseProxyDown", "SseProxyNotReady", "SseProxyHigh5xxRate",
        "SseReaderLagHigh", "SseSlowClientCutoffsSpike", "SseConnectionsNearLimit",
        "RedisRestoreDrillFailed", "RedisRestoreDrillOverdue",
    }  # fmt: skip
    assert wanted <= {a.name for a in alerts.selected(PRODUCTION)}


def test_the_twin_clock_scales_for_and_windows_and_nothing_else() -> None:
    prod = {r["alert"]: r for r in alerts.rule_groups(PRODUCTION)["groups"][0]["rules"]}
    twin = {r["alert"]: r for r in alerts.rule_groups(TWIN)["groups"][0]["rules"]}
    assert prod["RedisMemoryHigh"]["for"] == "5m" and twin["RedisMemoryHigh"]["for"] == "5s"
    assert "[5m]" in prod["RedisOomRejectedWrites"]["expr"]
    assert "[5s]" in twin["RedisOomRejectedWrites"]["expr"]
    assert prod["RedisReplicaLagHigh"]["expr"].endswith("> 10")
    assert twin["RedisReplicaLagHigh"]["expr"].endswith("> 2")  # floored: whole seconds
    assert "[5m]) > 20 or" in prod["RedisAuthFailuresSpike"]["expr"]
    assert "[5s]) > 20 or" in twin["RedisAuthFailuresSpike"]["expr"]  # counts stay
    assert "< 1209600" in twin["RedisTlsCertificateExpiringSoon"]["expr"]  # 14 days stay


def test_alerts_without_their_source_are_left_out() -> None:
    bare = alerts.AlertParams(replicas=0)
    names = {a.name for a in alerts.selected(bare)}
    assert "RedisBackupStale" not in names and "RedisRestoreDrillOverdue" not in names
    assert "RedisPrimaryWithoutReplica" not in names and "RedisReplicaLagHigh" not in names
    assert "RedisNodeDown" in names
    without_proxy = {a.name for a in alerts.selected(alerts.AlertParams(proxy=False))}
    assert without_proxy and not [n for n in without_proxy if n.startswith("Sse")]


def test_the_cloud_policies_carry_the_rules_expressions_durations_and_severities() -> None:
    rules = {r["alert"]: r for r in alerts.rule_groups(PRODUCTION)["groups"][0]["rules"]}
    policies = alerts.cloud_policies(PRODUCTION)
    assert [p["name"] for p in policies] == list(rules)
    for policy in policies:
        rule = rules[policy["name"]]
        condition = policy["conditions"][0]["condition_prometheus_query_language"]
        assert condition["query"] == rule["expr"]
        assert condition["labels"] == rule["labels"]
        assert condition["duration"] == f"{_seconds(rule.get('for', '0s'))}s"
        assert policy["severity"] == (
            "CRITICAL" if rule["labels"]["severity"] == "page" else "WARNING"
        )
        assert rule["annotations"]["runbook_url"] in policy["documentation"]["content"]


def test_metric_names_are_read_from_the_expressions() -> None:
    names = alerts.metric_names(PRODUCTION)
    assert "redis_cluster_state" in names and "sse_ready" in names and "up" in names
    assert "time" not in names and "increase" not in names


def _seconds(duration: str) -> int:
    unit = {"s": 1, "m": 60, "h": 3600}[duration[-1]]
    return int(duration[:-1]) * unit


def test_replica_lag_fires_before_redis_drops_the_stalled_replica() -> None:
    """The lag counts seconds since the replica's last ack; at repl-timeout (Redis's 60 s
    default, which conf.py keeps) the primary drops the replica and the series ends."""
    alert = alerts.BY_NAME["RedisReplicaLagHigh"]
    # A scrape (every 30 s) sees the lag past the threshold before the drop; the sample
    # stays current until the next scrape, and an evaluation (every 30 s) falls in between.
    assert alert.for_s == 0
    assert PRODUCTION.replica_lag_s + 30 < 60


def test_errors_counted_from_their_first_appearance_fire_at_once() -> None:
    for name in ("RedisOomRejectedWrites", "RedisAuthFailuresSpike", "RedisPermissionDenialsSpike"):
        alert = alerts.BY_NAME[name]
        assert alert.also_fires and "unless" in alert.expr(PRODUCTION)


def test_scope_labels_pin_every_selector() -> None:
    scoped = alerts.AlertParams(scope={"namespace": "redis", "cluster": "prod"})
    for alert in alerts.selected(scoped):
        expr = alert.expr(scoped)
        assert expr.count('job="') == expr.count(',cluster="prod",namespace="redis"'), expr
