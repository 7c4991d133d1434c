"""Twins for the runbook pages: one per shape the pages declare, started when a page
first needs it and stopped after the last page of that shape; a fresh one for each page
that declares twin=own. Every twin is stopped by PID (Twin.down)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import redis

from redisops.errors import RedisOpsError
from redisops.local.twin import Twin
from redisops.runbooks import Page
from tests.conftest import free_base_port, free_port
from tests.runbooks.harness import wait_healthy

Shape = tuple[int, int, bool, bool]


class TwinPool:
    def __init__(self, root: Path, pages: Sequence[Page]) -> None:
        self.root = root
        self.shared: dict[Shape, Twin] = {}
        self.own: dict[str, Twin] = {}
        # the last page of each shape on a shared twin: its twin stops after it
        self.last_page = {p.meta.shape: p.source for p in pages if p.meta.twin == "shared"}
        self.started = 0

    def twin_for(self, page: Page) -> Twin:
        shape = page.meta.shape
        if page.meta.twin == "own":
            twin = self.own[page.source] = self._start(shape)
            return twin
        if shape not in self.shared:
            self.shared[shape] = self._start(shape)
        return self.shared[shape]

    def done_with(self, page: Page) -> None:
        """Stop the page's own twin, or its shape's shared twin after the last page of that
        shape; a shared twin the page broke is healed (`up`), or replaced when it cannot be."""
        own = self.own.pop(page.source, None)
        if own is not None:
            own.down(purge=False)
            return
        shape = page.meta.shape
        twin = self.shared.get(shape)
        if twin is None:
            return
        if self.last_page.get(shape) == page.source:
            twin.down(purge=False)
            del self.shared[shape]
        elif wait_healthy(twin, within_s=1.0) is not None:
            self._heal(shape, twin)

    def close(self) -> None:
        for twin in [*self.own.values(), *self.shared.values()]:
            twin.down(purge=False)
        self.own.clear()
        self.shared.clear()

    def _heal(self, shape: Shape, twin: Twin) -> None:
        try:
            healthy = twin.up().healthy and wait_healthy(twin) is None
        except (RedisOpsError, redis.RedisError, OSError):
            healthy = False
        if not healthy:
            twin.down(purge=True)
            del self.shared[shape]

    def _start(self, shape: Shape) -> Twin:
        shards, replicas, proxy, monitoring = shape
        self.started += 1
        root = self.root / f"twin-{self.started}-{shards}x{replicas}"
        shutil.rmtree(root, ignore_errors=True)
        twin = Twin(root)
        options: dict[str, object] = {
            "shards": shards,
            "replicas": replicas,
            "base_port": free_base_port(shards * (1 + replicas)),
            "proxy_port": free_port(),
            "sse_proxy": proxy,
            "monitoring": monitoring,
        }
        if monitoring:
            options["monitoring_port"] = free_base_port(10 + shards * (1 + replicas))
        try:
            report = twin.up(**options)
        except BaseException:
            twin.down(purge=False)
            raise
        if not report.healthy:
            twin.down(purge=False)
            raise RuntimeError(f"a {shards}x{replicas} twin did not come up: {report.findings}")
        return twin
