from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from redisops.errors import ConfigError
from sse_proxy.settings import load_settings

BASE: dict[str, Any] = {"redis_tls_ca_file": "/ca.crt", "jwt_secret_file": "/secret"}


def test_defaults_serve_the_default_streams_and_the_smoke_streams() -> None:
    settings = load_settings(**BASE)
    assert settings.served_patterns == ("agent_updates", "agent_tasks", "standup:*", "smoke:sse:*")
    assert settings.serves("standup:2026-11-25")
    assert settings.serves("smoke:sse:x")
    assert not settings.serves("smoke:other")
    assert not settings.serves("agent_updates_x")


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({**BASE, "port": 9000, "streams": ["a"]}))
    monkeypatch.setenv("SSE_PROXY_PORT", "9100")
    settings = load_settings(config)
    assert settings.port == 9100
    assert settings.streams == ["a"]


def test_a_stream_is_labelled_with_the_first_served_pattern_it_matches() -> None:
    settings = load_settings(**BASE, streams=["standup:{eu}:*", "standup:*", "agent_updates"])
    assert settings.pattern_of("standup:{eu}:daily") == "standup:{eu}:*"
    assert settings.pattern_of("standup:2026-11-25") == "standup:*"
    assert settings.pattern_of("agent_updates") == "agent_updates"
    assert settings.pattern_of("smoke:sse:x") == "smoke:sse:*"
    with pytest.raises(ValueError, match="matches none of the served patterns"):
        settings.pattern_of("agent_updates_x")


def test_retention_rules_match_in_order() -> None:
    settings = load_settings(
        **BASE,
        retention=[{"pattern": "standup:*", "max_age_s": 86400}, {"pattern": "*", "maxlen": 10}],
    )
    rule = settings.retention_for("standup:x")
    assert rule is not None and rule.max_age_s == 86400 and rule.maxlen is None
    other = settings.retention_for("agent_updates")
    assert other is not None and other.maxlen == 10


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"jwt_secret_file": None}, "needs exactly one of jwt_secret_file"),
        ({"jwt_public_key_file": "/k.pem"}, "got jwt_secret_file, jwt_public_key_file"),
        ({"redis_tls_ca_file": None}, "redis_tls_ca_file is required"),
        ({"redis_mode": "single"}, "redis_url is required"),
        ({"redis_nodes": ["nohost"]}, "is not host:port"),
        ({"streams": ["*"]}, "would match every key"),
        ({"retention": [{"pattern": "*"}]}, "set maxlen, max_age_s or both"),
        ({"port": 0}, "port"),
        ({"unknown_knob": 1}, "unknown_knob"),
    ],
)
def test_bad_settings_name_the_setting(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="sse-proxy setting") as info:
        load_settings(**{**BASE, **overrides})
    assert message in str(info.value)


def test_auth_can_be_disabled_only_explicitly() -> None:
    settings = load_settings(redis_tls_ca_file="/ca.crt", auth_mode="disabled")
    assert settings.auth_mode == "disabled"


def test_config_file_errors_are_clear(tmp_path: Path) -> None:
    broken = tmp_path / "c.json"
    broken.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(broken)
    with pytest.raises(ConfigError, match="No such file"):
        load_settings(tmp_path / "missing.json")
