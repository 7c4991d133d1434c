"""One SSE round trip against a proxy: POST an event, read it back over SSE.

    python -m smoke_tests.sse_check --url http://sse-proxy:8080 --token-file /path/token

The chart's `helm test` pod runs this; exit 0 when the event came back identical.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

import httpx

from smoke_tests.sse_client import Subscription


def check(url: str, token: str, timeout: float) -> tuple[bool, str]:
    stream = f"smoke:sse:check:{uuid.uuid4().hex[:12]}"
    fields = {"sender": "sse-check", "sent_at": str(time.time())}
    with Subscription(f"{url}/v1/streams/{stream}", token=token, timeout=timeout) as sub:
        if sub.statuses[-1:] != [200]:
            return False, f"subscribe answered {sub.statuses[-1:]}: {sub.body[:200]!r}"
        response = httpx.post(
            f"{url}/v1/streams/{stream}/events",
            json=fields,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )
        if response.status_code != 201:
            return False, f"publish answered {response.status_code}: {response.text[:200]}"
        entry_id = response.json()["id"]
        if not sub.wait_for(lambda evs: any(e.id == entry_id for e in evs), timeout):
            return False, f"event {entry_id} did not arrive within {timeout:.0f} s"
        event = next(e for e in sub.events if e.id == entry_id)
    if event.json() != fields:
        return False, f"event {entry_id} arrived altered: {event.data[:200]}"
    return True, f"event {entry_id} made the round trip through {stream}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    try:
        token = args.token_file.read_text().strip()
    except OSError as exc:
        print(json.dumps({"ok": False, "detail": f"token file: {exc.strerror}"}))
        sys.exit(2)
    try:
        ok, detail = check(args.url.rstrip("/"), token, args.timeout)
    except (OSError, httpx.HTTPError) as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    print(json.dumps({"ok": ok, "detail": detail}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
