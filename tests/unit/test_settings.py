from __future__ import annotations

import json
from pathlib import Path

import pytest

from redisops.errors import ConfigError
from redisops.local.settings import TwinLayout, TwinSettings, settings_from_options


def test_defaults_are_a_three_by_one_twin_on_7000() -> None:
    settings = settings_from_options()
    assert (settings.shards, settings.replicas, settings.base_port) == (3, 1, 7000)
    assert settings.ports == list(range(7000, 7006))
    desired = settings.desired()
    assert [n.zone for n in desired.nodes] == ["zone-a", "zone-b", "zone-c"] * 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"shards": 2}, "--shards: must be at least 3"),
        ({"shards": 40}, "--shards: at most 16"),
        ({"replicas": -1}, "--replicas: must be 0 or more"),
        ({"node_timeout_ms": 50}, "--node-timeout-ms: must be between 200 and 60000"),
        ({"base_port": 80}, "--base-port: ports 80-85"),
        ({"base_port": 55531}, "choose a base port between 1024 and 55530"),
        ({"streams": ("*",)}, "would match every key"),
    ],
)
def test_bad_options_name_the_option_and_the_fix(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_options(**options)
    assert message in str(info.value)


def test_settings_round_trip_through_the_state_file(tmp_path: Path) -> None:
    layout = TwinLayout(tmp_path)
    assert layout.load_settings() is None
    settings = TwinSettings(shards=4, replicas=2, base_port=9000)
    layout.save_settings(settings)
    assert layout.load_settings() == settings


@pytest.mark.parametrize("content", ["{not json", json.dumps({"settings": {"shards": "x"}}), "[]"])
def test_unreadable_state_is_a_config_error_with_the_way_out(tmp_path: Path, content: str) -> None:
    layout = TwinLayout(tmp_path)
    layout.state_file.write_text(content)
    with pytest.raises(ConfigError, match="is unreadable") as info:
        layout.load_settings()
    assert "down --purge" in str(info.value)
    assert layout.state_file.read_text() == content  # nothing deleted
