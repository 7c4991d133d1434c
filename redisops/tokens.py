"""Signed development tokens for the SSE proxy (HS256), as the twin and the tests need them.

Production tokens come from the platform's identity provider; this only mints tokens for
a secret the caller holds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jwt


def mint(
    secret: str,
    subject: str,
    streams: Sequence[str],
    publish: Sequence[str],
    ttl_s: int,
    *,
    now: float | None = None,
) -> str:
    """An HS256 JWT with `sub`, `streams`, `publish`, `iat` and `exp`."""
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": subject,
        "streams": list(streams),
        "publish": list(publish),
        "iat": issued,
        "exp": issued + ttl_s,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def expires_in(token: str) -> float:
    """Seconds until an (unverified) token's `exp`; negative once expired, -inf if unreadable."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        return float(claims["exp"]) - time.time()
    except (jwt.InvalidTokenError, KeyError, TypeError, ValueError):
        return float("-inf")
