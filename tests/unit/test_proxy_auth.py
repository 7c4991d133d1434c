"""Every kind of token the proxy can be handed, and what it answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from redisops.errors import ConfigError
from redisops.tokens import mint
from sse_proxy.auth import ANONYMOUS, Authenticator, AuthError
from sse_proxy.settings import load_settings

SECRET = "s" * 48


def hs256(tmp_path: Path, **overrides: Any) -> Authenticator:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    return Authenticator(
        load_settings(redis_tls_ca_file="/ca", jwt_secret_file=str(secret), **overrides)
    )


def token(claims: dict[str, Any], key: Any = SECRET, alg: str = "HS256", **headers: Any) -> str:
    return jwt.encode(claims, key, algorithm=alg, headers=headers or None)


def valid(**extra: Any) -> dict[str, Any]:
    return {"sub": "agent-7", "exp": int(time.time()) + 60, "streams": ["agent_*"], **extra}


def reason(auth: Authenticator, raw: str) -> str:
    with pytest.raises(AuthError) as info:
        auth.verify(raw)
    assert info.value.status == 401
    return info.value.reason


def test_a_valid_token_yields_its_stream_patterns(tmp_path: Path) -> None:
    principal = hs256(tmp_path).verify(mint(SECRET, "agent-7", ["agent_*"], ["agent_tasks"], 60))
    assert principal.subject == "agent-7"
    assert principal.may_subscribe("agent_updates")
    assert not principal.may_subscribe("standup:x")
    assert principal.may_publish("agent_tasks") and not principal.may_publish("agent_updates")


def test_each_invalid_token_gets_its_reason(tmp_path: Path) -> None:
    auth = hs256(tmp_path)
    now = int(time.time())
    unsigned = jwt.encode(valid(), None, algorithm="none")  # type: ignore[arg-type]
    cases = {
        "expired": token(valid(exp=now - 120)),
        "bad_signature": token(valid(), key="another-secret-that-is-long-enough-000000"),
        "algorithm_not_allowed": unsigned,
        "missing_claim": token({"sub": "x", "streams": ["*"]}),
        "malformed": "not.a.jwt",
        "invalid_claims": token(valid(streams=[1, 2])),
    }
    for expected, raw in cases.items():
        assert reason(auth, raw) == expected, expected
    assert reason(auth, token({"exp": now + 60})) == "missing_claim"
    assert reason(auth, token(valid(nbf=now + 3600))) == "invalid_claims"


def test_an_hs256_token_signed_with_a_public_key_is_refused(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "pub.pem").write_bytes(pem)
    auth = Authenticator(
        load_settings(redis_tls_ca_file="/ca", jwt_public_key_file=str(tmp_path / "pub.pem"))
    )
    assert auth.verify(token(valid(), key=key, alg="RS256")).subject == "agent-7"

    # The classic confusion attack: HS256 keyed with the public key (PyJWT will not even
    # produce it, so sign by hand).
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        + "."
        + b64(json.dumps(valid()).encode())
    )
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert reason(auth, f"{signing_input}.{b64(signature)}") == "algorithm_not_allowed"


def test_es256_tokens_verify_against_a_jwks_file_by_kid(tmp_path: Path) -> None:
    keys = {kid: ec.generate_private_key(ec.SECP256R1()) for kid in ("k1", "k2")}
    jwks = {
        "keys": [
            {
                **json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k.public_key())),
                "kid": kid,
                "alg": "ES256",
                "use": "sig",
            }
            for kid, k in keys.items()
        ]
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    auth = Authenticator(
        load_settings(redis_tls_ca_file="/ca", jwt_jwks_file=str(tmp_path / "jwks.json"))
    )
    assert auth.verify(token(valid(), key=keys["k2"], alg="ES256", kid="k2")).subject == "agent-7"
    assert reason(auth, token(valid(), key=keys["k1"], alg="ES256", kid="k2")) == "bad_signature"
    assert reason(auth, token(valid(), key=keys["k1"], alg="ES256", kid="k9")) == "unknown_key"


def test_token_sources_header_cookie_and_query_only_when_enabled(tmp_path: Path) -> None:
    auth = hs256(tmp_path)
    raw = token(valid())
    assert auth.token_from({"authorization": f"Bearer {raw}"}, {}, {}) == raw
    assert auth.token_from({}, {"sse_token": raw}, {}) == raw
    with pytest.raises(AuthError, match="disabled") as info:
        auth.token_from({}, {}, {"access_token": raw})
    assert info.value.reason == "query_token_disabled"
    assert hs256(tmp_path, allow_query_token=True).token_from({}, {}, {"access_token": raw}) == raw
    with pytest.raises(AuthError) as missing:
        auth.token_from({}, {}, {})
    assert missing.value.reason == "missing_token"
    with pytest.raises(AuthError) as basic:
        auth.token_from({"authorization": "Basic abc"}, {}, {})
    assert basic.value.reason == "malformed"


def test_disabled_auth_lets_everyone_in_and_short_secrets_are_refused(tmp_path: Path) -> None:
    open_auth = Authenticator(load_settings(redis_tls_ca_file="/ca", auth_mode="disabled"))
    assert open_auth.authenticate({}, {}, {}) is ANONYMOUS
    (tmp_path / "short").write_text("tooshort")
    with pytest.raises(ConfigError, match="at least 32"):
        Authenticator(
            load_settings(redis_tls_ca_file="/ca", jwt_secret_file=str(tmp_path / "short"))
        )
    with pytest.raises(ConfigError, match="mount the Secret"):
        Authenticator(
            load_settings(redis_tls_ca_file="/ca", jwt_secret_file=str(tmp_path / "nope"))
        )
