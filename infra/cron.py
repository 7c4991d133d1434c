"""Kubernetes CronJob schedules: read as the CronJob controller reads them, and the longest
gap between two runs.

The longest gap decides how old the newest backup may be before the rollout gate and the
freshness alert call it stale, so it must be the calendar's, not an approximation: a
monthly schedule waits 31 days after January's run, `0 0 29 * *` 59 days across a short
February, `0 0 29 2 *` four years. Cron's times of day are the same on every day it runs,
so the gap is computed day by day (over 28 years, the cycle after which weekdays, month
lengths and leap years repeat between 1901 and 2099) instead of run by run.

Kubernetes validates and runs schedules with robfig/cron v3 (`cron.ParseStandard`); croniter
(a kept library) expands the fields, and the rules where the two differ are robfig's:
day of week 0-6 only (no 7), descriptors in lower case only, `@every <Go duration>`, and a
day field counts as unrestricted ("*") when it is `*` or `?` with no step above 1 — so
`*/1` in one day field makes the other decide alone, while `*/2` makes either one enough.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from croniter import CroniterError, croniter

_FIELDS = ("minute", "hour", "day of month", "month", "day of week")
_DAY_MINUTES = 24 * 60
# Weekdays, month lengths and leap years repeat every 28 years (1901-2099); one year more
# so that the gap across the cycle's end is seen too.
_SPAN_START = dt.date(2024, 1, 1)
_SPAN_DAYS = (dt.date(2053, 1, 1) - _SPAN_START).days
_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_EVERY = "@every "
_NOT_KUBERNETES = re.compile(r"[LW#]", re.IGNORECASE)
# Go's time.ParseDuration units, in seconds
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1, "m": 60,
             "h": 3600}  # fmt: skip
_GO_DURATION = re.compile(r"((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


@dataclass(frozen=True)
class CronSchedule:
    """A schedule's allowed values per field (days of week 0-6, Sunday 0)."""

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    #: both day fields are restricted, so a day matching either one runs (as cron does)
    day_or: bool

    def runs_on(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days_of_month
        in_week = day.isoweekday() % 7 in self.days_of_week
        return (in_month or in_week) if self.day_or else (in_month and in_week)


def _refuse(expression: str, problem: str) -> ValueError:
    return ValueError(
        f"{expression!r}: {problem}; a schedule has 5 fields: minute hour day-of-month month "
        "day-of-week (e.g. '0 * * * *' hourly, or @hourly / @daily / @weekly)"
    )


def _every_seconds(expression: str) -> int | None:
    """`@every <Go duration>` in whole seconds (robfig: at least 1 s), or None."""
    if not expression.startswith(_EVERY):
        return None
    text = expression[len(_EVERY) :].strip()
    if not _GO_DURATION.fullmatch(text):
        raise _refuse(
            expression,
            f"{text!r} is not a Go duration like 1h, 90m or 1h30m (units ns us ms s m h; no d)",
        )
    seconds = sum(float(n) * _GO_UNITS[unit] for n, unit in _GO_PART.findall(text))
    return max(1, int(seconds))


def _check_kubernetes_syntax(expression: str) -> None:
    """Refuse what croniter reads but Kubernetes' CronJob controller does not."""
    if "=" in expression:
        raise _refuse(expression, "TZ= prefixes are refused by Kubernetes; the CronJob's "
                      "timeZone (Etc/UTC) applies")  # fmt: skip
    if expression.startswith("@"):
        if expression not in _MACROS:
            raise _refuse(
                expression,
                f"Kubernetes knows the descriptors {', '.join(_MACROS)} (lower case) and "
                "@every <duration>",
            )
        return
    fields = expression.split()
    if len(fields) != 5:
        raise _refuse(expression, f"it has {len(fields)} fields, not 5")
    for index in (2, 4):
        if _NOT_KUBERNETES.search(fields[index]):
            raise _refuse(
                expression,
                f"L, W and # in the {_FIELDS[index]} field are not understood by Kubernetes",
            )
    for index, text in enumerate(fields):
        names: dict[str, Any] = dict(croniter.ALPHACONV[index])
        for part in text.split(","):
            low, dash, high = part.split("/")[0].partition("-")
            values = [str(names.get(v.lower(), v)) for v in (low, high) if v]
            if index == 4 and any(v.isdigit() and int(v) > 6 for v in values):
                raise _refuse(
                    expression,
                    f"{part!r}: Kubernetes reads the day of week as 0-6 (Sunday is 0 or SUN), "
                    "not 7",
                )
            if dash and len(values) == 2 and all(v.isdigit() for v in values):
                start, end = (int(v) for v in values)
                if start > end:
                    raise _refuse(
                        expression,
                        f"the range {part} in the {_FIELDS[index]} field runs backwards",
                    )


def _unrestricted(text: str) -> bool:
    """robfig's star bit: some part is `*` or `?` without a step above 1."""
    for part in text.split(","):
        head, _, step = part.partition("/")
        if head in ("*", "?") and (not step or (step.isdigit() and int(step) <= 1)):
            return True
    return False


def _which_field(expression: str) -> str:
    """Name the field croniter refused (it names only the whole expression)."""
    fields = expression.split()
    for index, text in enumerate(fields):
        alone = ["*"] * len(fields)
        alone[index] = text
        try:
            croniter(" ".join(alone))
        except (CroniterError, ValueError):
            low, high = croniter.RANGES[index]
            names = " or names" if croniter.ALPHACONV[index] else ""
            return (
                f"the {_FIELDS[index]} field {text!r} is not valid: use numbers {low}-{high}"
                f"{names}, ranges a-b, lists a,b and steps */n"
            )
    return "it is not a valid schedule"


def _values(field: Sequence[int | str], low: int, high: int) -> list[int]:
    return list(range(low, high + 1)) if field == ["*"] else [int(v) for v in field]


@functools.cache
def parse_cron(expression: str) -> CronSchedule:
    """Read a CronJob schedule (not @every); ValueError names the expression and what is
    wrong."""
    expression = expression.strip()
    _check_kubernetes_syntax(expression)
    try:
        expanded = croniter(expression).expanded
    except (CroniterError, ValueError) as exc:
        raise _refuse(expression, _which_field(expression)) from exc
    minute, hour, dom, month, dow = expanded
    fields = expression.split()
    if len(fields) == 5:
        day_or = not (_unrestricted(fields[2]) or _unrestricted(fields[4]))
    else:  # the descriptors restrict at most one day field
        day_or = False
    return CronSchedule(
        expression=expression,
        minutes=tuple(sorted(_values(minute, 0, 59))),
        hours=tuple(sorted(_values(hour, 0, 23))),
        days_of_month=frozenset(_values(dom, 1, 31)),
        months=frozenset(_values(month, 1, 12)),
        days_of_week=frozenset(v % 7 for v in _values(dow, 0, 6)),
        day_or=day_or,
    )


@functools.cache
def max_cron_interval_minutes(expression: str) -> int:
    """The longest time between two consecutive runs of the schedule, in minutes (rounded
    up)."""
    every = _every_seconds(expression.strip())
    if every is not None:
        return math.ceil(every / 60)
    schedule = parse_cron(expression)
    times = sorted(h * 60 + m for h in schedule.hours for m in schedule.minutes)
    longest = max((b - a for a, b in itertools.pairwise(times)), default=0)
    previous: int | None = None
    for offset in range(_SPAN_DAYS):
        if schedule.runs_on(_SPAN_START + dt.timedelta(days=offset)):
            if previous is not None:
                gap = (offset - previous) * _DAY_MINUTES + times[0] - times[-1]
                longest = max(longest, gap)
            previous = offset
    if previous is None:
        raise _refuse(schedule.expression, "it never runs (no such day in any month)")
    if longest == 0:
        raise _refuse(schedule.expression, "it runs once in 29 years")
    return longest
