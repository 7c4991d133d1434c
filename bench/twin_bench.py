"""Cold start and failover numbers for the local twin, repeated to show the spread.

    make bench            # or: .venv/bin/python bench/twin_bench.py --runs 5

Prints a table and, with --json, one JSON object. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redisops.local import process
from redisops.local.twin import Twin


def free_base(count: int) -> int:
    """Below the ephemeral range (redisops.local.process.free_base_port)."""
    return process.free_base_port("127.0.0.1", count)


def stats(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
        "runs": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--node-timeout", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    cold: list[float] = []
    graceful: list[float] = []
    hard: list[float] = []
    redundancy: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            twin = Twin(Path(tmp) / f"cold-{i}")
            started = time.monotonic()
            report = twin.up(
                base_port=free_base(6), node_timeout_ms=args.node_timeout, sse_proxy=False
            )
            cold.append(time.monotonic() - started)
            assert report.healthy, report.findings
            twin.down(purge=True)
        twin = Twin(Path(tmp) / "failover")
        twin.up(base_port=free_base(6), node_timeout_ms=args.node_timeout, sse_proxy=False)
        try:
            for i in range(args.runs):
                # A replica elected less than 4 x node-timeout ago makes a new manual
                # failover wait ("Failover attempt expired"): space the runs out.
                time.sleep(4 * args.node_timeout / 1000 + 1)
                out = Path(tmp) / f"report-{i}"
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "redisops",
                        "smoke",
                        "--state-dir",
                        str(twin.layout.root),
                        "-k",
                        "test_failover",
                        "--report-dir",
                        str(out),
                        "--json",
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                report = json.loads(proc.stdout)
                if not report["ok"]:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    raise SystemExit(f"failover run {i} failed")
                m = report["measurements"]
                graceful.append(m["graceful_failover_unavailability"]["value"])
                hard.append(m["hard_failover_unavailability"]["value"])
                redundancy.append(m["hard_failover_time_to_redundancy"]["value"])
        finally:
            twin.down(purge=True)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores, "
        f"Python {platform.python_version()}",
        "redis": subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.split()[2],
        "node_timeout_ms": args.node_timeout,
        "cold_start_s": stats(cold),
        "graceful_failover_unavailability_s": stats(graceful),
        "hard_failover_unavailability_s": stats(hard),
        "hard_failover_time_to_redundancy_s": stats(redundancy),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['machine']}, {result['redis']}, node-timeout {args.node_timeout} ms")
    for key, value in result.items():
        if isinstance(value, dict):
            print(
                f"  {key:40s} min {value['min']:7.3f}  median {value['median']:7.3f}  "
                f"max {value['max']:7.3f}  ({value['runs']} runs)"
            )


if __name__ == "__main__":
    main()
