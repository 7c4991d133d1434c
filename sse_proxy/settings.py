"""The proxy's configuration: one typed object, from a JSON file and `SSE_PROXY_*` variables.

Environment variables override the file (`SSE_PROXY_PORT=9000`, lists as JSON:
`SSE_PROXY_STREAMS='["a", "b:*"]'`). Secrets are never values here, only paths to files
(mounted Kubernetes Secrets); they are read once at start and never logged.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from redisops.acl import DEFAULT_STREAMS, SMOKE_STREAMS, validate_stream_patterns
from redisops.errors import ConfigError


class RetentionRule(BaseModel):
    """How long streams matching `pattern` keep entries: approximate MAXLEN and/or age."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: str
    maxlen: int | None = Field(default=None, ge=1)
    max_age_s: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _something(self) -> RetentionRule:
        if self.maxlen is None and self.max_age_s is None:
            raise ValueError(f"retention rule {self.pattern!r}: set maxlen, max_age_s or both")
        return self


class ProxySettings(BaseSettings):
    """Every knob of the SSE proxy."""

    model_config = SettingsConfigDict(env_prefix="SSE_PROXY_", extra="forbid", frozen=True)

    # --- HTTP
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    cors_origins: list[str] = Field(default_factory=list)

    # --- Redis
    redis_mode: Literal["cluster", "single"] = "cluster"
    redis_nodes: list[str] = Field(
        default_factory=lambda: ["127.0.0.1:7000"],
        description="cluster mode: startup nodes, host:port",
    )
    redis_url: str | None = Field(
        default=None, description="single mode: redis://host:port or rediss://host:port"
    )
    redis_tls: bool = True
    redis_tls_ca_file: Path | None = None
    redis_tls_cert_file: Path | None = None
    redis_tls_key_file: Path | None = None
    reader_username: str = "reader"
    reader_password_file: Path | None = None
    publisher_username: str = "publisher"
    publisher_password_file: Path | None = None
    redis_concurrency: int = Field(
        default=8, ge=1, le=256, description="catch-up and publish commands in flight"
    )

    # --- streams
    streams: list[str] = Field(default_factory=lambda: list(DEFAULT_STREAMS))
    retention: list[RetentionRule] = Field(
        default_factory=lambda: [RetentionRule(pattern="*", maxlen=100_000)]
    )

    # --- delivery
    heartbeat_s: float = Field(default=15.0, gt=0, le=300)
    retry_ms: int = Field(default=3000, ge=100, le=600_000)
    client_buffer: int = Field(default=1000, ge=1, description="events queued per client")
    write_timeout_s: float = Field(default=10.0, gt=0, description="cut a client stuck this long")
    ring_size: int = Field(default=1024, ge=0, description="recent entries kept per stream")
    catchup_page: int = Field(default=500, ge=1, le=10_000)
    read_count: int = Field(default=500, ge=1, le=10_000)
    block_ms: int = Field(default=2000, ge=100, le=60_000)
    reader_linger_s: float = Field(default=30.0, ge=0)
    max_connections: int = Field(default=10_000, ge=1)
    max_payload_bytes: int = Field(default=65_536, ge=64)
    idempotency_window_s: int = Field(
        default=86_400,
        ge=1,
        le=30 * 86_400,
        description="how long a POST's Idempotency-Key is remembered (a repeat gets 200)",
    )
    shutdown_grace_s: float = Field(default=20.0, ge=0)

    # --- authorization
    auth_mode: Literal["jwt", "disabled"] = "jwt"
    jwt_secret_file: Path | None = None
    jwt_public_key_file: Path | None = None
    jwt_jwks_file: Path | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    cookie_name: str = Field(default="sse_token", pattern=r"^[A-Za-z0-9_\-]+$")
    allow_query_token: bool = False

    # --- logging
    log_json: bool | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments; the environment overrides them.
        return (env_settings, init_settings)

    @field_validator("streams")
    @classmethod
    def _streams(cls, value: list[str]) -> list[str]:
        try:
            return list(validate_stream_patterns(value))
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("redis_nodes")
    @classmethod
    def _nodes(cls, value: list[str]) -> list[str]:
        for node in value:
            host, sep, port = node.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{node!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ProxySettings:
        if self.redis_mode == "single" and not self.redis_url:
            raise ValueError("redis_url is required when redis_mode is 'single'")
        if self.redis_mode == "cluster" and not self.redis_nodes:
            raise ValueError("redis_nodes is required when redis_mode is 'cluster'")
        if self.redis_mode == "cluster" and self.redis_tls and self.redis_tls_ca_file is None:
            raise ValueError("redis_tls_ca_file is required with TLS (redis_tls true)")
        if self.auth_mode == "jwt":
            keys = [
                k
                for k in ("jwt_secret_file", "jwt_public_key_file", "jwt_jwks_file")
                if getattr(self, k) is not None
            ]
            if len(keys) != 1:
                raise ValueError(
                    "auth_mode 'jwt' needs exactly one of jwt_secret_file (HS256), "
                    "jwt_public_key_file (RS256/ES256) or jwt_jwks_file; "
                    f"got {', '.join(keys) or 'none'} (auth_mode 'disabled' turns auth off)"
                )
        return self

    # --- derived -------------------------------------------------------------------

    @property
    def served_patterns(self) -> tuple[str, ...]:
        """Configured streams plus the smoke suite's reserved round-trip streams."""
        return (*self.streams, SMOKE_STREAMS)

    def serves(self, stream: str) -> bool:
        return any(fnmatch.fnmatchcase(stream, p) for p in self.served_patterns)

    def pattern_of(self, stream: str) -> str:
        """The first served pattern `stream` matches (what its metrics are labelled with)."""
        for pattern in self.served_patterns:
            if fnmatch.fnmatchcase(stream, pattern):
                return pattern
        raise ValueError(
            f"stream {stream[:80]!r} matches none of the served patterns "
            f"{', '.join(self.served_patterns)}"
        )

    def retention_for(self, stream: str) -> RetentionRule | None:
        for rule in self.retention:
            if fnmatch.fnmatchcase(stream, rule.pattern):
                return rule
        return None


def load_settings(config_file: Path | None = None, **overrides: Any) -> ProxySettings:
    """Read the JSON config file (if any), apply the environment, validate.

    Errors name the setting and what is wrong.
    """
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = json.loads(config_file.read_text())
        except OSError as exc:
            raise ConfigError(f"config file {config_file}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ConfigError(f"config file {config_file} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {config_file}: expected a JSON object")
    data.update(overrides)
    try:
        return ProxySettings(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"sse-proxy setting {where}: {message}") from exc
