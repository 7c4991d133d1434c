"""A logical digest of one key: equal digests mean equal values, whatever the encoding.

Used to compare a sample of keys between a backup (loaded into a scratch server) and the
cluster it was restored into. DUMP payloads would differ across Redis versions and
encodings, and `DEBUG DIGEST-VALUE` is disabled on these servers.
"""

from __future__ import annotations

import hashlib
from typing import Any


def key_digest(client: Any, key: bytes) -> str | None:
    """SHA-256 of the key's type, value and whether it expires; None if it does not exist.

    `client` is a redis-py client (or cluster client) with decode_responses=False.
    """
    kind = client.type(key)
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    parts: list[bytes] = [kind.encode()]
    if kind == "none":
        return None
    if kind == "string":
        parts.append(client.get(key) or b"")
    elif kind == "hash":
        items = client.hgetall(key)
        parts += [k + b"\0" + v for k, v in sorted(items.items())]
    elif kind == "list":
        parts += list(client.lrange(key, 0, -1))
    elif kind == "set":
        parts += sorted(client.smembers(key))
    elif kind == "zset":
        parts += [
            m + b"\0" + repr(float(s)).encode()
            for m, s in client.zrange(key, 0, -1, withscores=True)
        ]
    elif kind == "stream":
        for entry_id, fields in client.xrange(key, "-", "+"):
            parts.append(_bytes(entry_id))
            parts += [k + b"\0" + v for k, v in sorted(fields.items())]
        for group in sorted(client.xinfo_groups(key), key=lambda g: _bytes(g["name"])):
            parts.append(
                b"group\0"
                + _bytes(group["name"])
                + b"\0"
                + _bytes(group["last-delivered-id"])
                + b"\0"
                + str(group["pending"]).encode()
            )
    else:
        parts.append(b"unsupported-type")
    parts.append(b"ttl" if client.pttl(key) >= 0 else b"persistent")
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
