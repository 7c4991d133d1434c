"""Development mode: the proxy against one plain `redis://` node, auth disabled."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from smoke_tests.sse_client import Subscription
from tests.conftest import free_port, requires_redis
from tests.integration.proxies import stop, wait_ready
from tests.integration.servers import standalone_redis


def test_a_single_redis_node_round_trips_events(tmp_path: Path) -> None:
    requires_redis()
    with standalone_redis(tmp_path / "redis") as redis_port:
        port = free_port()
        config = tmp_path / "proxy.json"
        config.write_text(
            json.dumps(
                {
                    "port": port,
                    "redis_mode": "single",
                    "redis_url": f"redis://127.0.0.1:{redis_port}/0",
                    "auth_mode": "disabled",
                }
            )
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "sse_proxy", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc=proc)
            with Subscription(f"{url}/v1/streams/agent_updates") as sub:
                posted = httpx.post(
                    f"{url}/v1/streams/agent_updates/events", json={"sender": "dev"}
                ).json()["id"]
                assert sub.wait_for(lambda evs: any(e.id == posted for e in evs), 5)
                time.sleep(0.1)
            assert [e.json() for e in sub.entries()] == [{"sender": "dev"}]
            # No reconcile runs against a development node: the proxy loads the publish
            # function itself the first time a keyed POST needs it.
            events = f"{url}/v1/streams/agent_updates/events"
            keyed = [
                httpx.post(events, json={"sender": "dev"}, headers={"Idempotency-Key": "k-1"})
                for _ in range(2)
            ]
            assert [r.status_code for r in keyed] == [201, 200], keyed[0].text
            assert keyed[0].json()["id"] == keyed[1].json()["id"]
        finally:
            stop(proc)
