"""Server-Sent Events wire format: stream entries and control messages as bytes.

Each entry is encoded once and the same bytes are written to every subscriber.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping

ENTRY_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")
# An SSE field value ends at a line break, so an event name must not contain one; the
# entry's `action` becomes the event name only when it is a plain token.
EVENT_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
MAX_ID = 2**64 - 1
# Names an entry's action may not take as they are: EventSource's own (`error` would fire
# onerror, `open` onopen) and the proxy's events. They are sent as `action-<name>`.
RESERVED_EVENT_NAMES = frozenset({"error", "open", "position", "gap", "overflow"})

EntryId = tuple[int, int]


def parse_entry_id(text: str) -> EntryId:
    """`1700000000000-3` -> (1700000000000, 3); ValueError for anything else."""
    match = ENTRY_ID.match(text)
    if not match:
        raise ValueError(f"{text[:64]!r} is not a stream entry id (<milliseconds>-<sequence>)")
    ms, seq = int(match.group(1)), int(match.group(2))
    if ms > MAX_ID or seq > MAX_ID:
        raise ValueError(f"{text[:64]!r} is out of range for a stream entry id")
    return ms, seq


def format_entry_id(entry_id: EntryId) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


def entry_event(entry_id: str, fields: Mapping[str, str]) -> bytes:
    """One stream entry as an SSE event: id, event (the `action` field), JSON data.

    Field names and values arrive as text, with bytes that are not UTF-8 kept as lone
    surrogates (the Redis clients decode with `surrogateescape`). Such a value is sent as
    `{"base64": "<its bytes>"}` and such a name as `"base64:<its bytes>"`: lossless, and
    every UTF-8 field stays exactly as it was.
    """
    payload = {_key(k): _value(v) for k, v in fields.items()}
    action = payload.get("action", "")
    name = action if isinstance(action, str) and EVENT_NAME.match(action) else "message"
    if name in RESERVED_EVENT_NAMES:
        name = f"action-{name}"
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"id: {entry_id}\nevent: {name}\ndata: {data}\n\n".encode()


def _raw(text: str) -> bytes | None:
    """The original bytes of `text` when they were not UTF-8; None when they were."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")
    return None


def _key(name: str) -> str:
    raw = _raw(name)
    return name if raw is None else "base64:" + base64.b64encode(raw).decode()


def _value(value: str) -> str | dict[str, str]:
    raw = _raw(value)
    return value if raw is None else {"base64": base64.b64encode(raw).decode()}


def position_event(entry_id: str) -> bytes:
    """The client's position at connect: an `id:` so a reconnect before the first entry
    carries Last-Event-ID, with data (parsers drop id-only blocks) and a name of its own
    (no `message` handler fires)."""
    data = json.dumps({"position": entry_id}, separators=(",", ":"))
    return f"id: {entry_id}\nevent: position\ndata: {data}\n\n".encode()


def control_event(name: str, payload: Mapping[str, object]) -> bytes:
    """An event without id (gap, overflow): it must not move the client's Last-Event-ID."""
    data = json.dumps(payload, separators=(",", ":"))
    return f"event: {name}\ndata: {data}\n\n".encode()


def retry(ms: int) -> bytes:
    return f"retry: {ms}\n\n".encode()


def comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


HEARTBEAT = comment("heartbeat")
