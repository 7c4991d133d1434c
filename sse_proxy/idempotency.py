"""Exactly-once publishing: the `Idempotency-Key` header, and the call of the publish
function that checks its record and appends the entry in one atomic step.

A POST with `Idempotency-Key: <key>` leaves a record next to the stream (same cluster
slot, `redisops.acl.idempotency_key`) holding the new entry's id, a fingerprint of the
event and the request's nonce; it expires after the proxy's `idempotency_window_s`. A
repeat within the window finds the record and gets the first id back instead of a second
entry. Because the check and the XADD are one function (`redisops.functions`, loaded by
`redisops reconcile`), the proxy may call it again after a lost reply: at most one of the
attempts appends.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redisops import functions
from redisops.acl import IDEMPOTENCY_KEY, idempotency_key

HEADER = "Idempotency-Key"
# The function passes the fields to XADD through Lua's unpack(), which takes ~8000 values.
MAX_FIELDS = 2000


class BadKey(ValueError):
    """The Idempotency-Key header is malformed."""


class KeyReused(Exception):
    """The key's record belongs to a different event."""

    def __init__(self, key: str, stream: str, entry_id: str) -> None:
        super().__init__(
            f"{HEADER} {key!r} was first used for a different event on stream {stream!r} "
            f"(entry {entry_id}); send a new key with each event, the same key only when "
            "retrying that event"
        )
        self.entry_id = entry_id


@dataclass(frozen=True)
class Claim:
    """One request's use of an Idempotency-Key."""

    key: str
    stream: str
    record: str  # the record's key name in Redis
    fingerprint: str  # of the event: a repeat must carry the same one
    nonce: str  # this request's own mark: a record with it was written by this request
    window_s: int


@dataclass(frozen=True)
class Published:
    """An entry that is in the stream: new (`created`), or added by an earlier request."""

    entry_id: str
    created: bool


def header_key(values: Sequence[str]) -> str | None:
    """The key from the Idempotency-Key header values (None when absent).

    A Structured Fields string (`"abc"`, as the IETF draft writes it) is unquoted.
    """
    if not values:
        return None
    if len(values) > 1:
        raise BadKey(f"{HEADER}: sent {len(values)} times; send it once per request")
    key = values[0].strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not IDEMPOTENCY_KEY.match(key):
        raise BadKey(
            f"{HEADER}: {key[:40]!r} is not a valid key; use 1-128 letters, digits or "
            "- _ . + / = (e.g. a UUID), a new one for each event"
        )
    return key


def fingerprint(fields: dict[str, str]) -> str:
    """A digest of the event, the same whatever the order of its fields (128 bits: it
    tells one client's events apart, and every record in Redis carries it)."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def claim(stream: str, key: str, fields: dict[str, str], window_s: int) -> Claim:
    if len(fields) > MAX_FIELDS:
        raise BadKey(
            f"{HEADER}: an event published with a key may have at most {MAX_FIELDS} fields; "
            f"this one has {len(fields)}"
        )
    return Claim(
        key=key,
        stream=stream,
        record=idempotency_key(stream, key),
        fingerprint=fingerprint(fields),
        nonce=secrets.token_hex(8),
        window_s=window_s,
    )


def fcall_args(
    claim: Claim, fields: dict[str, str], maxlen: int | None, minid: str | None
) -> list[Any]:
    """What follows FCALL: the function, its KEYS (numkeys first) and ARGV."""
    flat = [item for pair in fields.items() for item in pair]
    return [
        functions.PUBLISH_ONCE,
        2,
        claim.stream,
        claim.record,
        claim.window_s,
        f"{claim.fingerprint} {claim.nonce}",
        "" if maxlen is None else maxlen,
        "" if minid is None else minid,
        *flat,
    ]


def outcome(reply: Any, claim: Claim) -> Published:
    """What the publish function's reply means for this request."""
    created, value = int(reply[0]), str(reply[1])
    if created:
        return Published(value, created=True)
    entry_id, _, rest = value.partition(" ")
    recorded, _, nonce = rest.partition(" ")
    if recorded != claim.fingerprint:
        raise KeyReused(claim.key, claim.stream, entry_id)
    # Our own record: an earlier attempt of this very request added it (its reply was lost).
    return Published(entry_id, created=nonce == claim.nonce)
