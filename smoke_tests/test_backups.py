"""Backups: the newest complete backup is younger than the schedule allows."""

from __future__ import annotations

import pytest

from redisops.backup.catalog import freshness
from redisops.backup.storage import open_storage
from redisops.errors import ConfigError, OperationError
from smoke_tests import capabilities
from smoke_tests.capabilities import Declared
from smoke_tests.conftest import Measure
from smoke_tests.targets import Target


def test_the_newest_complete_backup_is_recent_enough(
    target: Target, declared: Declared, measure: Measure
) -> None:
    declared.require(capabilities.BACKUPS)
    assert target.backups is not None
    location, max_age_s = target.backups.location, target.backups.max_age_s
    try:
        # Object reads only (three requests): the smoke Job's identity is objectViewer.
        state = freshness(open_storage(location), max_age_s)
    except (ConfigError, OperationError) as exc:
        pytest.fail(f"cannot read the backups in {location}: {exc}")
    assert state.latest is not None, f"no complete backup in {location}"
    measure("backup_age", state.age_s or 0.0, goal=max_age_s)
    measure("backup_keys", state.latest.keys, unit="count")
    assert state.fresh, (
        f"the newest backup in {location}, {state.latest.id}, is {state.age_s:.0f} s old "
        f"(allowed {max_age_s:.0f} s): is the backup CronJob running?"
    )
