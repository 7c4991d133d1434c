"""Backups: the newest complete backup is younger than the schedule allows."""

from __future__ import annotations

import pytest

from redisops.backup.catalog import freshness
from redisops.backup.storage import open_storage
from smoke_tests.conftest import Measure
from smoke_tests.targets import Target


def test_the_newest_complete_backup_is_recent_enough(target: Target, measure: Measure) -> None:
    if target.backups is None:
        pytest.skip(f"target {target.name} has no backups configured")
    state = freshness(open_storage(target.backups.location), target.backups.max_age_s)
    assert state.latest is not None, f"no complete backup in {target.backups.location}"
    measure("backup_age", state.age_s or 0.0, goal=target.backups.max_age_s)
    measure("backup_keys", state.latest.keys, unit="count")
    assert state.fresh, (
        f"the newest backup {state.latest.id} is {state.age_s:.0f} s old "
        f"(allowed {target.backups.max_age_s:.0f} s)"
    )
