"""Settings: defaults from conf/clank.toml, env overrides, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clank.config import DEFAULT_CONFIG_PATH, Settings, load_settings, settings_table
from clank.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_toml_equals_code_defaults() -> None:
    # conf/clank.toml documents the defaults: it must not drift from the attrs defaults.
    assert load_settings(DEFAULT_CONFIG_PATH, environ={}) == Settings()


def test_every_setting_is_documented_in_toml_and_docs() -> None:
    toml = DEFAULT_CONFIG_PATH.read_text()
    docs = (ROOT / "docs" / "configuration.md").read_text()
    for key, _default, _expected in settings_table():
        leaf = key.rsplit(".", 1)[1]
        assert f"{leaf} =" in toml, f"{key} missing from conf/clank.toml"
        assert f"`{key}`" in docs, f"{key} missing from docs/configuration.md"


def test_env_overrides_with_types() -> None:
    s = load_settings(
        environ={
            "CLANK_DISCORD_TOKEN": "user-token-abcdef",
            "CLANK_API_URL": "http://127.0.0.1:9/api",
            "CLANK_WATCH_MAX_FPS": "4.5",
            "CLANK_WATCH_NACK": "off",
            "CLANK_VOICE_MODE_PREFERENCE": "aead_xchacha20_poly1305_rtpsize",
            "CLANK_DISCORD_PROPERTIES_OS": "Linux",
            "CLANK_LOG_FORMAT": "json",
        }
    )
    assert s.discord.token == "user-token-abcdef"
    assert s.discord.api_url == "http://127.0.0.1:9/api"
    assert s.watch.max_fps == 4.5
    assert s.watch.nack is False
    assert s.voice.mode_preference == ("aead_xchacha20_poly1305_rtpsize",)
    assert s.discord.properties.os == "Linux"
    assert s.log.format == "json"
    assert not s.sandbox_mode


def test_token_is_not_in_repr() -> None:
    s = load_settings(environ={"CLANK_DISCORD_TOKEN": "user-token-abcdef"})
    assert "user-token-abcdef" not in repr(s)


@pytest.mark.parametrize(
    ("toml", "key", "expected"),
    [
        ("[watch]\nmax_fps = 'fast'\n", "watch.max_fps", "a number"),
        ("[watch]\nmax_fsp = 2\n", "watch.max_fsp", "unknown key"),
        ("[nope]\nx = 1\n", "nope", "unknown key"),
        ("[watch]\njpeg_quality = 101\n", "watch.jpeg_quality", "between 1 and 100"),
        ("[log]\nformat = 'xml'\n", "log.format", "one of 'auto', 'json', 'console'"),
        ("[discord]\nguild_id = 'abc'\n", "discord.guild_id", "snowflake"),
        ("[voice]\nself_mute = 'yes'\n", "voice.self_mute", "a boolean"),
        ("[voice]\nmode_preference = ['aead_plain']\n", "voice.mode_preference", "a list of one of"),
        ("watch = 3\n", "watch", "a table"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, toml: str, key: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert info.value.key == key
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CLANK_WATCH_MAX_FPS": "abc"}, "CLANK_WATCH_MAX_FPS"),
        ({"CLANK_WATCH_NOPE": "1"}, "CLANK_WATCH_NOPE"),
        ({"CLANK_WATCH_NACK": "maybe"}, "a boolean"),
    ],
)
def test_bad_env_names_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings(environ=env)


def test_cli_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[watch]\nmax_fps = 'fast'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "clank", "--config", str(path), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "watch.max_fps" in lines[0]
