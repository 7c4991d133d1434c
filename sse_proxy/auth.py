"""Who may subscribe to and publish on which streams: JWT bearer tokens.

Tokens come from `Authorization: Bearer`, from a cookie (browsers' EventSource cannot set
headers), or from `?access_token=` when explicitly allowed. Required claims: `sub`, `exp`.
`streams` lists the patterns the bearer may subscribe to, `publish` those it may publish
to. The accepted algorithms follow from the configured key, so `alg: none` or an HS256
token signed with a public key are refused.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from redisops.errors import ConfigError
from sse_proxy.settings import ProxySettings

logger = logging.getLogger("sse_proxy.auth")


class AuthError(Exception):
    """A request that cannot be authorized; `reason` is a stable machine-readable code."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Principal:
    subject: str
    streams: tuple[str, ...]
    publish: tuple[str, ...]

    def may_subscribe(self, stream: str) -> bool:
        return any(fnmatch.fnmatchcase(stream, p) for p in self.streams)

    def may_publish(self, stream: str) -> bool:
        return any(fnmatch.fnmatchcase(stream, p) for p in self.publish)


ANONYMOUS = Principal("anonymous", ("*",), ("*",))


def _patterns(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuthError(401, "invalid_claims", f"claim {name!r} must be a list of strings")
    return tuple(value)


class Authenticator:
    """Verifies tokens with the one key source the settings name."""

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self.enabled = settings.auth_mode == "jwt"
        self._key: Any = None
        self._jwks: jwt.PyJWKSet | None = None
        self._algorithms: list[str] = []
        if not self.enabled:
            return
        if settings.jwt_secret_file is not None:
            secret = _read(settings.jwt_secret_file, "jwt_secret_file").strip()
            if len(secret) < 32:
                raise ConfigError(
                    f"jwt_secret_file {settings.jwt_secret_file}: the HS256 secret has "
                    f"{len(secret)} characters; use at least 32 random ones"
                )
            self._key = secret
            self._algorithms = ["HS256"]
        elif settings.jwt_public_key_file is not None:
            pem = _read(settings.jwt_public_key_file, "jwt_public_key_file")
            try:
                key = load_pem_public_key(pem.encode())
            except ValueError as exc:
                raise ConfigError(
                    f"jwt_public_key_file {settings.jwt_public_key_file}: not a PEM public key"
                ) from exc
            if isinstance(key, rsa.RSAPublicKey):
                self._algorithms = ["RS256"]
            elif isinstance(key, ec.EllipticCurvePublicKey):
                self._algorithms = ["ES256"]
            else:
                raise ConfigError("jwt_public_key_file: only RSA (RS256) and EC (ES256) keys")
            self._key = key
        elif settings.jwt_jwks_file is not None:
            text = _read(settings.jwt_jwks_file, "jwt_jwks_file")
            try:
                self._jwks = jwt.PyJWKSet.from_json(text)
            except (jwt.PyJWKSetError, jwt.PyJWKError, ValueError) as exc:
                raise ConfigError(f"jwt_jwks_file {settings.jwt_jwks_file}: {exc}") from exc
            self._algorithms = ["RS256", "ES256"]

    def token_from(
        self,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        query: Mapping[str, str],
    ) -> str:
        header = headers.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError(401, "malformed", "Authorization header is not 'Bearer <token>'")
            return token.strip()
        cookie = cookies.get(self.settings.cookie_name)
        if cookie:
            return cookie
        if "access_token" in query:
            if not self.settings.allow_query_token:
                raise AuthError(
                    401,
                    "query_token_disabled",
                    "access_token in the URL is disabled; use the Authorization header "
                    f"or the {self.settings.cookie_name} cookie",
                )
            return query["access_token"]
        raise AuthError(
            401,
            "missing_token",
            f"no token: send Authorization: Bearer <jwt> or the {self.settings.cookie_name} cookie",
        )

    def authenticate(
        self,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        query: Mapping[str, str],
    ) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        return self.verify(self.token_from(headers, cookies, query))

    def verify(self, token: str) -> Principal:
        key = self._key
        try:
            if self._jwks is not None:
                key = self._jwks_key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                leeway=self.settings.jwt_leeway_s,
                options={"require": ["exp", "sub"], "verify_aud": bool(self.settings.jwt_audience)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError(401, "expired", "the token has expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError(401, "bad_signature", "the token's signature does not verify") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise AuthError(
                401,
                "algorithm_not_allowed",
                f"the token's algorithm is not allowed; expected {', '.join(self._algorithms)}",
            ) from exc
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(
                401, "missing_claim", f"the token lacks the {exc.claim!r} claim"
            ) from exc
        except (
            jwt.InvalidAudienceError,
            jwt.InvalidIssuerError,
            jwt.ImmatureSignatureError,
            jwt.InvalidIssuedAtError,
            jwt.exceptions.InvalidSubjectError,
        ) as exc:
            raise AuthError(
                401, "invalid_claims", f"the token's claims are invalid: {exc}"
            ) from exc
        except jwt.DecodeError as exc:
            raise AuthError(401, "malformed", "the token is not a well-formed JWT") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError(401, "invalid_token", f"the token is invalid: {exc}") from exc
        return Principal(
            subject=str(claims["sub"]),
            streams=_patterns(claims, "streams"),
            publish=_patterns(claims, "publish"),
        )

    def _jwks_key(self, token: str) -> Any:
        assert self._jwks is not None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise AuthError(401, "malformed", "the token is not a well-formed JWT") from exc
        kid = header.get("kid")
        keys = self._jwks.keys
        if kid is None and len(keys) == 1:
            return keys[0].key
        for jwk in keys:
            if jwk.key_id == kid:
                return jwk.key
        raise AuthError(401, "unknown_key", f"no key {kid!r} in the configured JWKS")


def _read(path: Any, setting: str) -> str:
    try:
        return str(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{setting} {path}: {exc.strerror}; mount the Secret there") from exc


def error_body(error: AuthError) -> bytes:
    kind = "unauthorized" if error.status == 401 else "forbidden"
    return json.dumps({"error": kind, "reason": error.reason, "detail": error.detail}).encode()
