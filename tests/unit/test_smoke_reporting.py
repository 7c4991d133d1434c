"""The smoke suite's own arithmetic: unavailability windows and the report table."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from redisops import acl
from redisops.log import JsonFormatter
from smoke_tests import capabilities
from smoke_tests.acl_matrix import PROBES, concrete_stream
from smoke_tests.canary import CanaryLog, Write
from smoke_tests.capabilities import Declared, judge
from smoke_tests.probes import resp
from smoke_tests.runner import judge_skips, measurements
from smoke_tests.targets import KubernetesTarget


def log_of(times: list[float]) -> CanaryLog:
    return CanaryLog(writes=[Write(i, t, True, "n") for i, t in enumerate(times)])


def test_unavailability_is_the_longest_gap_around_and_after_the_event() -> None:
    log = log_of([0.0, 0.01, 0.02, 3.02, 3.03, 3.5])
    assert log.unavailability(0.015) == pytest.approx(3.0)


def test_unavailability_ignores_gaps_before_the_event() -> None:
    log = log_of([0.0, 5.0, 5.01, 5.02])
    assert log.unavailability(5.005) == pytest.approx(0.01)


def test_unavailability_is_infinite_without_a_write_after_the_event() -> None:
    assert log_of([0.0, 0.01]).unavailability(1.0) == float("inf")


def test_successes_after_can_exclude_the_crashed_node() -> None:
    log = CanaryLog(writes=[Write(1, 1.0, True, "a"), Write(2, 2.0, False, "b")])
    assert [w.seq for w in log.successes_after(0.5, away_from="a")] == [2]
    assert [w.seq for w in log.successes_after(0.5, acked=True)] == [1]


def test_measurements_flatten_properties_into_rows() -> None:
    tests = [
        {"id": "t::a", "measurements": {"x": 1.5, "x.unit": "s", "x.goal": 2, "x.goal_met": True}},
        {"id": "t::b", "measurements": {"y": 3}},
    ]
    assert measurements(tests) == {
        "x": {"test": "t::a", "value": 1.5, "unit": "s", "goal": 2, "goal_met": True},
        "y": {"test": "t::b", "value": 3},
    }


def test_matrix_covers_every_role_with_allowed_and_denied_probes() -> None:
    for role in acl.ROLES:
        if role == acl.REPLICATION:
            pass
        outcomes = {p.allowed for p in PROBES if p.role == role}
        assert outcomes == {True, False} or role == acl.ADMIN, role


def test_concrete_stream_prefers_a_fixed_name() -> None:
    assert concrete_stream(("standup:*", "agent_updates")) == "agent_updates"
    assert concrete_stream(("standup:*",)) == "standup:smoke-probe"


def test_resp_encoding_keeps_empty_arguments() -> None:
    assert resp("AUTH", "default", "") == b"*3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$0\r\n\r\n"


def test_json_log_lines_are_parseable() -> None:
    record = logging.LogRecord("redisops", logging.INFO, __file__, 1, "started %s", ("x",), None)
    payload = json.loads(JsonFormatter().format(record))
    assert payload["msg"] == "started x" and payload["level"] == "info"


# ---- skips ---------------------------------------------------------------------------


def skip_message(declared: Declared, capability: str) -> str:
    """The message `require` skips with, as pytest reports it."""
    with pytest.raises(pytest.skip.Exception) as skipped:
        declared.require(capability)
    return f"Skipped: {skipped.value.msg}"


def test_require_skips_only_for_a_capability_declared_absent() -> None:
    declared = Declared({capabilities.SSE: "target t runs no SSE proxy"})
    declared.require(capabilities.BACKUPS)  # present: the check runs
    message = skip_message(declared, capabilities.SSE)
    assert judge(message, declared) == capabilities.Skip(
        capabilities.SSE, "target t runs no SSE proxy", allowed=True
    )


def test_a_skip_naming_a_capability_the_target_has_is_not_allowed() -> None:
    message = skip_message(Declared({capabilities.SSE: "no proxy"}), capabilities.SSE)
    assert judge(message, Declared({})).allowed is False


def test_a_bare_skip_is_not_allowed() -> None:
    skip = judge("Skipped: this client cannot offer TLS 1.1; inconclusive", Declared({}))
    assert skip == capabilities.Skip(None, "this client cannot offer TLS 1.1; inconclusive", False)


def test_no_skip_is_allowed_when_the_target_never_declared_anything() -> None:
    message = skip_message(Declared({capabilities.SSE: "no proxy"}), capabilities.SSE)
    assert judge(message, None).allowed is False


def test_the_backup_checks_existing_skip_counts_as_the_backups_capability() -> None:
    message = "Skipped: target local has no backups configured"
    assert judge(message, Declared({capabilities.BACKUPS: "none"})).allowed is True
    assert judge(message, Declared({})).allowed is False


def test_a_kubernetes_target_declares_absent_what_its_file_leaves_out() -> None:
    held = (acl.SMOKE, acl.PUBLISHER, acl.READER)
    spec = {
        "name": "dev", "shards": 3, "replicas": 1, "node_timeout_ms": 2000,
        "streams": ["agent_updates"], "mutual_tls": True, "can_disrupt": False,
        "namespace": "redis", "nodes": [{"endpoint": "redis-0.redis.svc:6379"}],
        "tls": {"ca": "/tls/ca.crt", "cert": "/tls/tls.crt", "key": "/tls/tls.key"},
        "users": {r: {"username": r, "password_file": f"/users/{r}"} for r in held},
        "sse_proxy": None, "backups": None,
    }  # fmt: skip
    absent = Declared.of(KubernetesTarget(spec)).absent
    expected = {capabilities.SSE, capabilities.BACKUPS, capabilities.DISRUPTION}
    expected |= {capabilities.credentials(r) for r in acl.ROLES if r not in held}
    assert set(absent) == expected
    disruption = Declared.of(KubernetesTarget({**spec, "can_disrupt": True}), no_disruption=True)
    assert disruption.absent[capabilities.DISRUPTION] == "--no-disruption given"


def test_the_report_names_each_skip_and_whether_it_was_allowed() -> None:
    declared = Declared({capabilities.DISRUPTION: "--no-disruption given"})
    tests: list[dict[str, Any]] = [
        {"id": "a", "outcome": "passed"},
        {"id": "b", "outcome": "skipped", "message": skip_message(declared, "disruption")},
        {"id": "c", "outcome": "skipped", "message": "Skipped: inconclusive"},
    ]
    assert judge_skips(tests, declared) == [
        {
            "test": "b",
            "capability": "disruption",
            "reason": "--no-disruption given",
            "allowed": True,
        },
        {"test": "c", "capability": None, "reason": "inconclusive", "allowed": False},
    ]
    assert tests[2]["skip"] == {"capability": None, "reason": "inconclusive", "allowed": False}
