"""The backup schedule's longest gap, which sets how old the newest backup may be before
the rollout gate and the freshness alert complain. Each expected gap below was worked out
by hand from the calendar (and, where robfig/cron — what Kubernetes runs CronJobs with —
reads a field differently from croniter, by robfig's rules); an independent oracle
(croniter stepping run by run) checks the fast day-by-day computation on top."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from croniter import croniter

from infra.cron import max_cron_interval_minutes, parse_cron

DAY = 24 * 60

# (schedule, its true longest gap in minutes, why)
GAPS = [
    ("* * * * *", 1, "every minute"),
    ("0 * * * *", 60, "hourly"),
    ("@hourly", 60, "a Kubernetes macro"),
    ("@daily", DAY, ""),
    ("@midnight", DAY, ""),
    ("@weekly", 7 * DAY, ""),
    ("@monthly", 31 * DAY, "December 1 to January 1 (and others)"),
    ("@yearly", 366 * DAY, "across a leap year's February 29"),
    ("@annually", 366 * DAY, ""),
    ("*/15 * * * *", 15, ""),
    ("*/7 * * * *", 7, "56 -> 00 is only 4 minutes"),
    ("0 */5 * * *", 5 * 60, "20:00 -> 00:00 is only 4 hours"),
    ("0 3 * * *", DAY, ""),
    ("0 0,6,12,18 * * *", 6 * 60, ""),
    ("30 1,13 * * *", 12 * 60, ""),
    ("30 2 * * 0", 7 * DAY, "Sundays"),
    ("0 0 * * MON", 7 * DAY, "day names"),
    ("0 0 * * sat,SUN", 6 * DAY, "Sunday to Saturday"),
    ("0 9-17 * * 1-5", 64 * 60, "Friday 17:00 to Monday 09:00"),
    ("0 2 * * MON-FRI", 3 * DAY, "Friday to Monday"),
    ("0 3 1 * 1", 7 * DAY, "the 1st or any Monday, as cron reads both day fields"),
    ("0 0 13 * 5", 7 * DAY, "the 13th or any Friday"),
    ("0 0 1 * *", 31 * DAY, "the longest month"),
    ("0 0 29 * *", 59 * DAY, "January 29 to March 29 when February has 28 days"),
    ("0 0 31 * *", 61 * DAY, "e.g. March 31 to May 31"),
    ("0 0 30 * *", 60 * DAY, "January 30 to March 30 in a leap year"),
    ("0 0 1 */2 *", 62 * DAY, "July 1 to September 1"),
    ("0 0 1 JAN,JUL *", 184 * DAY, "July 1 to January 1"),
    ("0 0 29 2 *", 1461 * DAY, "only in leap years"),
    ("0 0 1 2 *", 366 * DAY, "February 1 to February 1 across February 29"),
    ("15 4 1-7 * 0", 7 * DAY, "both day fields restricted: either matches"),
    ("0 0 ? * *", DAY, "? means any, as in Kubernetes"),
    ("0 0 */2 * 1", 2 * DAY, "a step above 1 restricts: odd days or Mondays"),
]

# Where robfig/cron and croniter disagree (croniter is no oracle for these).
ROBFIG = [
    ("0 0 */1 * 1", 7 * DAY, "*/1 is unrestricted for robfig: Mondays only"),
    ("0 0 1 * */1", 31 * DAY, "*/1 in the day of week: the 1st only"),
    ("@every 1h", 60, "robfig's interval descriptor"),
    ("@every 90m", 90, ""),
    ("@every 1h30m", 90, ""),
    ("@every 2.5h", 150, ""),
    ("@every 30s", 1, "rounded up to a minute"),
]


@pytest.mark.parametrize(("expression", "minutes", "why"), GAPS + ROBFIG)
def test_longest_gap_is_the_calendars(expression: str, minutes: int, why: str) -> None:
    assert max_cron_interval_minutes(expression) == minutes, why


def _oracle(expression: str, start: dt.datetime, end: dt.datetime) -> int:
    """The longest gap by stepping through every run with croniter itself."""
    runs = croniter(expression, start - dt.timedelta(minutes=1))
    previous = runs.get_next(dt.datetime)
    longest = 0
    while previous < end:
        current = runs.get_next(dt.datetime)
        longest = max(longest, int((current - previous).total_seconds() // 60))
        previous = current
    return longest


@pytest.mark.parametrize(
    "expression",
    [e for e, minutes, _ in GAPS if minutes >= DAY and not e.startswith("@")],
)
def test_day_by_day_computation_agrees_with_stepping_every_run(expression: str) -> None:
    # eight years hold every leap-year case; the weekday cases repeat within them
    oracle = _oracle(expression, dt.datetime(2024, 1, 1), dt.datetime(2032, 1, 1))
    assert max_cron_interval_minutes(expression) == oracle


@pytest.mark.parametrize("expression", [e for e, minutes, _ in GAPS if minutes < DAY])
def test_short_schedules_agree_with_stepping_every_run(expression: str) -> None:
    oracle = _oracle(expression, dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 15))
    assert max_cron_interval_minutes(expression) == oracle


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("* * * *", "5 fields"),
        ("0 0 * * * *", "5 fields"),
        ("*/0 * * * *", ""),
        ("a * * * *", ""),
        ("0 24 * * *", ""),
        ("5-2 * * * *", ""),
        ("0 0 31 2 *", "never runs"),
        ("0 0 30 2 *", "never runs"),
        ("0 0 L * *", "Kubernetes"),
        ("0 0 15W * *", "Kubernetes"),
        ("0 0 * * 1#2", "Kubernetes"),
        ("@reboot", "Kubernetes"),
        ("TZ=Europe/Paris 0 3 * * *", "timeZone"),
        ("0 0 * * 7", "0-6 (Sunday is 0 or SUN), not 7"),
        ("0 0 * * 5-7", "not 7"),
        ("0 0 * * 1,7", "not 7"),
        ("@HOURLY", "lower case"),
        ("@every 1d", "not a Go duration"),
        ("@every", "lower case"),
        ("", "5 fields"),
    ],
)
def test_bad_schedule_is_refused_naming_it(expression: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(expression))) as info:
        max_cron_interval_minutes(expression)
    assert problem in str(info.value)


def test_fields_are_read_by_the_library() -> None:
    schedule = parse_cron("*/20 1-3 1,15 JAN-MAR SUN")
    assert schedule.minutes == (0, 20, 40)
    assert schedule.hours == (1, 2, 3)
    assert schedule.days_of_month == frozenset({1, 15})
    assert schedule.months == frozenset({1, 2, 3})
    assert schedule.days_of_week == frozenset({0})
    assert schedule.day_or  # both day fields restricted: either one matching is enough
    assert not parse_cron("0 0 * * 1").day_or
