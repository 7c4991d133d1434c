"""The smoke suite's own arithmetic: unavailability windows and the report table."""

from __future__ import annotations

import json
import logging

import pytest

from redisops.log import JsonFormatter
from smoke_tests.acl_matrix import PROBES, concrete_stream
from smoke_tests.canary import CanaryLog, Write
from smoke_tests.probes import resp
from smoke_tests.runner import measurements


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
    from redisops import acl

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
