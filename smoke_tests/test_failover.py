"""Failover: no acknowledged write is lost, and how long writes fail is measured.

Graceful (every target): `CLUSTER FAILOVER` on a replica. Hard (targets that allow
disruption): kill -9 of a primary. Both put the original roles back afterwards, so the
suite leaves the cluster as it found it.
"""

from __future__ import annotations

import time

import pytest

from redisops.client import Endpoint
from smoke_tests.canary import Canary
from smoke_tests.conftest import Measure
from smoke_tests.probes import node_client, read_view, read_views, wait_healthy
from smoke_tests.targets import Target

GRACEFUL_GOAL_S = 0.5
HARD_GOAL_MARGIN_S = 1.5


def _replica_of(target: Target, primary: Endpoint) -> Endpoint:
    view = read_view(target, primary)
    me = view.myself
    for node in view.nodes:
        if node.master_id == me.node_id and not node.failed:
            return Endpoint(host=node.hostname or node.ip, port=node.port)
    raise AssertionError(f"primary {primary} has no live replica to fail over to")


def _role(target: Target, endpoint: Endpoint) -> tuple[str, str | None, str | None]:
    """(role, primary id, replication link status) as the node reports itself."""
    with node_client(target, endpoint) as client:
        info = client.info("replication")
    me = read_view(target, endpoint).myself
    return ("primary" if me.is_primary else "replica", me.master_id, info.get("master_link_status"))


def _wait_until(what: str, check: object, timeout: float) -> float:
    """Poll `check()` until true; return when it became true (monotonic)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return time.monotonic()
        except Exception:  # noqa: S110  (a node may be unreachable while we poll)
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def _followed_by_primary(target: Target, replica: Endpoint) -> bool:
    """The replica is in sync *and* its primary counts it as a healthy replica: a primary
    ignores a manual-failover request from a node it still marks failed (a node just back
    from a crash), and the request then times out after 5 s."""
    role, master_id, link = _role(target, replica)
    if role != "replica" or link != "up" or master_id is None:
        return False
    me = read_view(target, replica).myself
    for view in read_views(target).values():
        if view is not None and view.myself.node_id == master_id:
            node = view.by_id(me.node_id)
            return node is not None and node.master_id == master_id and not node.failed
    return False


def _promote(target: Target, replica: Endpoint, timeout: float) -> float:
    """Graceful failover onto `replica`; return when it reported itself primary."""
    deadline = time.monotonic() + timeout
    while True:
        _wait_until(
            f"{replica} to be in sync and followed by its primary",
            lambda: _followed_by_primary(target, replica),
            max(1.0, deadline - time.monotonic()),
        )
        with node_client(target, replica) as client:
            client.execute_command("CLUSTER", "FAILOVER")
        try:
            return _wait_until(
                f"{replica} to become primary",
                lambda: _role(target, replica)[0] == "primary",
                min(6.0, max(1.0, deadline - time.monotonic())),
            )
        except AssertionError:
            if time.monotonic() > deadline:
                raise  # Redis gives up a manual failover after 5 s; ask again until then


def _assert_nothing_lost(canary: Canary) -> tuple[int, int]:
    acked = canary.log.acked_seqs()
    stored = canary.stored_seqs()
    lost = sorted(acked - stored)
    assert not lost, f"{len(lost)} WAIT-acknowledged writes lost, e.g. {lost[:10]}"
    return len(acked), len(stored)


@pytest.mark.usefixtures("sse_canary")  # open the proxy's subscription before any failover
def test_graceful_failover_loses_no_acknowledged_write(
    target: Target, run_id: str, measure: Measure, pytestconfig: pytest.Config
) -> None:
    limit = float(pytestconfig.getoption("--graceful-failover-limit"))
    canary = Canary(target, f"smoke:{{canary}}:graceful:{run_id}")
    with canary:
        assert canary.wait_for(20, acked=True, after=0, timeout=15), (
            f"canary could not write: {canary.log.errors[-3:]}"
        )
        primary = canary.primary
        assert primary is not None
        replica = _replica_of(target, primary)
        started = time.monotonic()
        promoted = _promote(target, replica, timeout=20)
        assert canary.wait_for(20, acked=True, after=promoted, timeout=15), (
            f"no acknowledged writes after the failover: {canary.log.errors[-3:]}"
        )
    unavailable = canary.log.unavailability(started)
    measure("graceful_failover_promotion", promoted - started, goal=GRACEFUL_GOAL_S)
    measure("graceful_failover_unavailability", unavailable, goal=GRACEFUL_GOAL_S)
    acked, _ = _assert_nothing_lost(canary)
    measure("graceful_failover_acked_writes", acked, unit="count")
    role, master_id, _ = _role(target, primary)
    new_id = read_view(target, replica).myself.node_id
    assert (role, master_id) == ("replica", new_id), "old primary did not follow the new one"
    assert unavailable <= limit, f"writes failed for {unavailable:.2f} s (> {limit} s)"

    # Put the original roles back.
    _promote(target, primary, timeout=30)
    canary.delete()
    assert wait_healthy(target, timeout=15).ok


@pytest.mark.disruptive
@pytest.mark.usefixtures("disruptive", "sse_canary")
def test_primary_crash_fails_over_and_loses_no_acknowledged_write(
    target: Target, run_id: str, measure: Measure, pytestconfig: pytest.Config
) -> None:
    node_timeout = target.node_timeout_ms / 1000
    goal = node_timeout + HARD_GOAL_MARGIN_S
    limit = node_timeout + float(pytestconfig.getoption("--hard-failover-slack"))
    canary = Canary(target, f"smoke:{{canary}}:hard:{run_id}")
    with canary:
        assert canary.wait_for(20, acked=True, after=0, timeout=15), (
            f"canary could not write: {canary.log.errors[-3:]}"
        )
        victim = canary.primary
        assert victim is not None
        target.kill_node(victim)
        killed = time.monotonic()
        # Restarting the victim before its replica took over would bring it back as the
        # primary with whatever its AOF had (no failover happens then): wait for a write
        # accepted by another node first.
        assert canary.wait_for(
            1, acked=False, after=killed, timeout=limit + 5, away_from=str(victim)
        ), f"no write accepted within {limit + 5:.0f} s of the crash: {canary.log.errors[-3:]}"
        recovered = canary.log.successes_after(killed, away_from=str(victim))[0].at
        # The shard now has a primary and no replica: bring the crashed node back.
        target.restart_node(victim)
        rejoined = _wait_until(
            f"{victim} to rejoin as a replica",
            lambda: _role(target, victim)[0] == "replica" and _role(target, victim)[2] == "up",
            timeout=30,
        )
        assert canary.wait_for(10, acked=True, after=rejoined, timeout=15), (
            "writes are not acknowledged by a replica after the crashed node rejoined"
        )
    unavailable = canary.log.unavailability(killed)
    measure("hard_failover_unavailability", unavailable, goal=goal)
    measure("hard_failover_first_write_after_crash", recovered - killed)
    measure("hard_failover_time_to_redundancy", rejoined - killed)
    acked, stored = _assert_nothing_lost(canary)
    measure("hard_failover_acked_writes", acked, unit="count")
    measure("hard_failover_stored_writes", stored, unit="count")
    assert unavailable <= limit, f"writes failed for {unavailable:.2f} s (> {limit:.1f} s)"

    # Put the original roles back and leave the cluster fully redundant.
    _promote(target, victim, timeout=30)
    canary.delete()
    health = wait_healthy(target, timeout=30)
    assert health.ok, "; ".join(health.problems)
