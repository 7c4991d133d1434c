"""The platform's function library on real twins: `local up` loads it, reconcile loads it
where it is missing or different (and says so in a dry run), reports libraries nobody
asked for; a restarted node keeps it (a new primary gets it: test_twin_lifecycle.py's
scale-out). Backups and restores:
test_restore_function.py."""

from __future__ import annotations

import json
from typing import Any

from redisops import acl, functions
from redisops.local.settings import HOST
from redisops.local.twin import Twin
from redisops.reconcile import ReconcileOptions, reconcile
from tests.conftest import free_base_port
from tests.integration.libraries import cli, everywhere, libraries, node, ports

OTHER_CODE = functions.CODE.replace("-- ", "-- an older version: ", 1)
FOREIGN = "#!lua name=foreign\nredis.register_function('foreign_fn', function() return 1 end)"


def dry_run(twin: Twin) -> dict[str, Any]:
    proc = cli(
        "reconcile", "--target", "local", "--dry-run", "--json",
        "--state-dir", str(twin.layout.root),
    )  # fmt: skip
    report: dict[str, Any] = json.loads(proc.stdout)
    report["exit_code"] = proc.returncode
    return report


def test_local_up_loads_the_library_on_every_primary_and_replicas_receive_it(
    session_twin: Twin,
) -> None:
    everywhere(session_twin)


def test_reconcile_loads_the_library_only_where_it_is_missing_or_different(
    session_twin: Twin,
) -> None:
    twin = session_twin
    missing, outdated, current = ports(twin, "primary")
    try:
        with node(twin, missing) as client:
            client.execute_command("FUNCTION", "DELETE", functions.LIBRARY)
        with node(twin, outdated) as client:
            client.execute_command("FUNCTION", "LOAD", "REPLACE", OTHER_CODE)

        dry = dry_run(twin)
        assert dry["exit_code"] == 1  # a shard without the function: keyed POSTs fail there
        assert [(a["code"], a["node"]) for a in dry["actions"]] == [
            ("function_load", f"{HOST}:{missing}"),
            ("function_load", f"{HOST}:{outdated}"),
        ]
        found = {f["code"]: f for f in dry["findings"]}
        assert found["function_missing"]["severity"] == "error"
        assert found["function_missing"]["node"] == f"{HOST}:{missing}"
        assert "redisops reconcile" in found["function_missing"]["fix"]
        assert found["function_outdated"]["severity"] == "warning"
        assert found["function_outdated"]["node"] == f"{HOST}:{outdated}"
        assert libraries(twin, missing) == {}  # the dry run changed nothing
        assert libraries(twin, outdated) == {functions.LIBRARY: OTHER_CODE}

        proc = cli("reconcile", "--target", "local", "--json", "--state-dir", str(twin.layout.root))
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert [(a["code"], a["node"]) for a in report["actions"]] == [
            ("function_load", f"{HOST}:{missing}"),
            ("function_load", f"{HOST}:{outdated}"),
        ]
        assert report["findings"] == []
        assert libraries(twin, current) == {functions.LIBRARY: functions.CODE}
        everywhere(twin)
        assert twin.up().actions == []
    finally:
        twin.up()


def test_a_library_nobody_asked_for_is_reported_not_deleted(session_twin: Twin) -> None:
    twin = session_twin
    primary = ports(twin, "primary")[0]
    with node(twin, primary) as client:
        client.execute_command("FUNCTION", "LOAD", FOREIGN)
    try:
        # Why it matters: the publisher may FCALL whatever is loaded.
        with node(twin, primary, acl.PUBLISHER) as publisher:
            assert publisher.execute_command("FCALL", "foreign_fn", 0) == 1
        report = twin.up()
        assert report.actions == []
        [finding] = [f for f in report.findings if f.code == "unexpected_function_library"]
        assert finding.severity == "warning" and finding.node == f"{HOST}:{primary}"
        assert "foreign" in finding.message and "FUNCTION DELETE foreign" in (finding.fix or "")
        assert libraries(twin, primary)["foreign"] == FOREIGN
    finally:
        with node(twin, primary) as client:
            client.execute_command("FUNCTION", "DELETE", "foreign")
    assert not [f for f in twin.up().findings if f.code == "unexpected_function_library"]


def test_a_node_that_restarts_keeps_the_library(own_twin: Twin) -> None:
    """Functions persist with the data (AOF/RDB): a restart needs no reconcile."""
    own_twin.up(base_port=free_base_port(6), sse_proxy=False)
    settings = own_twin.settings()
    for port in ports(own_twin, "primary"):
        own_twin.stop_node(port)
        own_twin.start_node(port)
    own_twin.wait_responding(settings)
    everywhere(own_twin)
    report = reconcile(
        settings.desired(),
        own_twin.client_tls(acl.OPERATOR),
        own_twin.credentials(acl.OPERATOR),
        ReconcileOptions(timeout_s=30),
    )
    assert not [a for a in report.actions if a.code == "function_load"]
