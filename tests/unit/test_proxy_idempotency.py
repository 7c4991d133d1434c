"""Exactly-once publishing's pure parts: the header, the event fingerprint, the publish
function's arguments and reply, which failures may have applied a write, and the window
setting.

The function itself runs against real Redis in tests/integration (test_sse_proxy.py,
test_sse_resilience.py)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.exceptions

from redisops import functions
from redisops.errors import ConfigError
from sse_proxy import idempotency
from sse_proxy.backend import NotSent, never_applied
from sse_proxy.settings import load_settings

BASE: dict[str, Any] = {"redis_tls_ca_file": "/ca.crt", "jwt_secret_file": "/secret"}


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ([], None),
        (["8e03978e-40d5-43e8-bc93-6894a57f9324"], "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        (['"quoted-as-in-the-ietf-draft"'], "quoted-as-in-the-ietf-draft"),
        ([" padded "], "padded"),
        (["b64+/url_-.="], "b64+/url_-.="),
        (["x" * 128], "x" * 128),
    ],
)
def test_good_idempotency_keys_are_read_from_the_header(values: list[str], key: str | None) -> None:
    assert idempotency.header_key(values) == key


@pytest.mark.parametrize(
    "values",
    [[""], ['""'], ["x" * 129], ["has space"], ["a:b"], ["star*"], ["{tag}"], ["é"], ["a", "b"]],
)
def test_bad_idempotency_keys_name_the_header(values: list[str]) -> None:
    with pytest.raises(idempotency.BadKey, match=r"^Idempotency-Key: "):
        idempotency.header_key(values)


def test_the_fingerprint_ignores_field_order_and_sees_every_value() -> None:
    a = idempotency.fingerprint({"x": "1", "y": "2"})
    assert a == idempotency.fingerprint({"y": "2", "x": "1"})
    assert a != idempotency.fingerprint({"x": "1", "y": "3"})
    assert a != idempotency.fingerprint({"x": "1", "y": "2", "z": ""})


def test_an_event_with_a_key_has_a_bounded_number_of_fields() -> None:
    fields = {f"f{i}": "v" for i in range(idempotency.MAX_FIELDS + 1)}
    with pytest.raises(idempotency.BadKey, match="at most 2000 fields"):
        idempotency.claim("agent_updates", "k", fields, 60)


def test_the_functions_reply_tells_new_repeated_and_reused() -> None:
    fields = {"n": "1"}
    mine = idempotency.claim("agent_updates", "k", fields, 60)
    assert idempotency.outcome([1, "5-0"], mine) == idempotency.Published("5-0", created=True)
    # This request's own earlier attempt added it (its reply was lost): still "created".
    own = f"5-0 {mine.fingerprint} {mine.nonce}"
    assert idempotency.outcome([0, own], mine) == idempotency.Published("5-0", created=True)
    other = f"5-0 {mine.fingerprint} another-request"
    assert idempotency.outcome([0, other], mine) == idempotency.Published("5-0", created=False)
    reused = f"5-0 {idempotency.fingerprint({'n': '2'})} another-request"
    with pytest.raises(idempotency.KeyReused, match="first used for a different event"):
        idempotency.outcome([0, reused], mine)


def test_the_publish_function_gets_keys_window_retention_and_fields() -> None:
    claim = idempotency.claim("agent_updates", "k", {"a": "1", "b": "2"}, 60)
    args = idempotency.fcall_args(claim, {"a": "1", "b": "2"}, 1000, None)
    record = "idempotency:{agent_updates}:agent_updates:k"
    assert args[:4] == [functions.PUBLISH_ONCE, 2, "agent_updates", record]
    assert args[4:] == [60, f"{claim.fingerprint} {claim.nonce}", 1000, "", "a", "1", "b", "2"]


@pytest.mark.parametrize(
    ("error", "applied_maybe"),
    [
        # Redis answered with an error: the command did nothing.
        (redis.exceptions.ResponseError("OOM command not allowed"), False),
        (redis.exceptions.NoPermissionError("NOPERM"), False),
        (redis.exceptions.ClusterDownError("CLUSTERDOWN"), False),
        (redis.exceptions.TryAgainError("TRYAGAIN"), False),
        (redis.exceptions.BusyLoadingError("LOADING"), False),
        # The command never left the proxy.
        (
            redis.exceptions.ConnectionError("Error 111 connecting to 10.0.0.1:6379. Refused."),
            False,
        ),
        (redis.exceptions.TimeoutError("Timeout connecting to server"), False),
        (redis.exceptions.RedisClusterException("Redis Cluster cannot be connected."), False),
        (redis.exceptions.MaxConnectionsError("Too many connections"), False),
        # A pooled connection that failed its check before the command was written.
        (NotSent("the server had closed the pooled connection; nothing was sent"), False),
        # Sent, and then the connection or the reply was lost: it may have been applied.
        (redis.exceptions.ConnectionError("Connection closed by server."), True),
        (redis.exceptions.ConnectionError("Error while reading from 10.0.0.1:6379"), True),
        (redis.exceptions.TimeoutError("Timeout reading from 10.0.0.1:6379"), True),
        (redis.exceptions.TimeoutError("Timeout writing to socket"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
    ],
)
def test_only_failures_that_cannot_have_applied_a_write_allow_sending_it_again(
    error: BaseException, applied_maybe: bool
) -> None:
    assert never_applied(error) is not applied_maybe


def test_the_idempotency_window_is_a_day_by_default_and_validated() -> None:
    assert load_settings(**BASE).idempotency_window_s == 86_400
    assert load_settings(**BASE, idempotency_window_s=60).idempotency_window_s == 60
    for bad in (0, -1, 31 * 86_400, "a day"):
        with pytest.raises(ConfigError, match="sse-proxy setting idempotency_window_s"):
            load_settings(**BASE, idempotency_window_s=bad)
