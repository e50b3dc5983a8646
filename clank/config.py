"""Settings: frozen attrs values, loaded from TOML defaults and overridden by ``CLANK_*`` env vars.

The cattrs converter is the one edge where untyped input becomes settings. Anything wrong (an
unknown key, a wrong type, a bad value) becomes a :class:`~clank.errors.ConfigError` naming
the dotted key and the expected form; the CLI turns that into a one-line message and exit 2.

Env overrides: ``CLANK_<SECTION>_<KEY>`` for every setting (``CLANK_WATCH_MAX_FPS=4``), plus
the short aliases in :data:`ENV_ALIASES` (``CLANK_DISCORD_TOKEN``, ``CLANK_API_URL``,
``CLANK_GATEWAY_URL``, ``CLANK_LOG_FORMAT``, ...). Lists are comma separated; booleans accept
``1/0/true/false/yes/no/on/off``.
"""

from __future__ import annotations

import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs

from clank.errors import ConfigError

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[1] / "conf" / "clank.toml"

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
SinkWantsFormat = Literal["nested", "flat"]
UrlScheme = Literal["wss", "ws"]
TransportMode = Literal["aead_aes256_gcm_rtpsize", "aead_xchacha20_poly1305_rtpsize"]


def _in_range(lo: float, hi: float) -> Any:
    def check(inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
        if not lo <= value <= hi:
            raise ValueError(f"a value between {lo} and {hi}")

    return check


def _snowflake_or_empty(inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and not value.isdigit():
        raise ValueError("a numeric Discord id (snowflake) or empty")


def _url_or_empty(inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and "://" not in value:
        raise ValueError("a URL with a scheme (https://..., ws://...) or empty")


@attrs.frozen
class ClientProperties:
    os: str = "Windows"
    browser: str = "Discord Client"
    device: str = ""
    system_locale: str = "en-US"
    release_channel: str = "stable"


@attrs.frozen
class DiscordSettings:
    token: str = attrs.field(default="", repr=False)
    api_url: str = attrs.field(default="https://discord.com/api", validator=_url_or_empty)
    gateway_url: str = attrs.field(default="", validator=_url_or_empty)
    guild_id: str = attrs.field(default="", validator=_snowflake_or_empty)
    voice_channel_id: str = attrs.field(default="", validator=_snowflake_or_empty)
    voice_url_scheme: UrlScheme = "wss"
    compress: bool = False
    capabilities: int = attrs.field(default=14333, validator=_in_range(0, 2**31))
    connect_attempts: int = attrs.field(default=3, validator=_in_range(1, 100))
    properties: ClientProperties = ClientProperties()


@attrs.frozen
class VoiceSettings:
    self_mute: bool = False
    self_deaf: bool = False
    max_dave_protocol_version: int = attrs.field(default=1, validator=_in_range(0, 1))
    mode_preference: tuple[TransportMode, ...] = (
        "aead_aes256_gcm_rtpsize",
        "aead_xchacha20_poly1305_rtpsize",
    )
    receive_buffer_bytes: int = attrs.field(default=2 * 1024 * 1024, validator=_in_range(65536, 64 * 2**20))
    udp_keepalive_s: float = attrs.field(default=5.0, validator=_in_range(0, 60))


@attrs.frozen
class WatchSettings:
    auto_watch: bool = False
    max_fps: float = attrs.field(default=2.0, validator=_in_range(0.1, 60))
    preferred_pixel_count: int = attrs.field(default=1280 * 720, validator=_in_range(64 * 64, 7680 * 4320))
    jpeg_quality: int = attrs.field(default=80, validator=_in_range(1, 100))
    preferred_quality: int = attrs.field(default=100, validator=_in_range(0, 100))
    sink_wants_format: SinkWantsFormat = "nested"
    credentials_timeout_s: float = attrs.field(default=10.0, validator=_in_range(0.5, 120))
    max_concurrent_watches: int = attrs.field(default=4, validator=_in_range(1, 32))
    nack: bool = True
    reorder_delay_ms: int = attrs.field(default=120, validator=_in_range(0, 2000))
    conceal_after_s: float = attrs.field(default=3.0, validator=_in_range(0, 600))
    remb_max_kbps: int = attrs.field(default=8000, validator=_in_range(0, 100_000))


NotesProvider = Literal["offline", "openai", "anthropic"]


@attrs.frozen
class NotesSettings:
    enabled: bool = True
    provider: NotesProvider = "offline"
    url: str = attrs.field(default="", validator=_url_or_empty)
    model: str = ""
    api_key: str = attrs.field(default="", repr=False)
    timeout_s: float = attrs.field(default=30.0, validator=_in_range(1, 600))
    min_interval_s: float = attrs.field(default=2.0, validator=_in_range(0, 3600))
    periodic_s: float = attrs.field(default=10.0, validator=_in_range(1, 3600))
    change_floor: float = attrs.field(default=0.005, validator=_in_range(0, 1))
    history: int = attrs.field(default=20, validator=_in_range(1, 1000))
    context_notes: int = attrs.field(default=3, validator=_in_range(0, 50))
    # The seed's voice.streamWatch note and commentary settings (docs/vision.md).
    idle_interval_s: float = attrs.field(default=30.0, validator=_in_range(1, 3600))
    change_threshold: float = attrs.field(default=0.01, validator=_in_range(0, 1))
    commentary: bool = True
    commentary_interval_s: float = attrs.field(default=15.0, validator=_in_range(1, 3600))
    quiet_window_s: float = attrs.field(default=2.2, validator=_in_range(0, 60))


@attrs.frozen
class ApiSettings:
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8787, validator=_in_range(0, 65535))
    token: str = attrs.field(default="", repr=False)
    # Extra names the API answers to in the Host header (comma-separated), besides loopback
    # names and ``host`` itself: DNS-rebinding defence (clank.control.host_check).
    allowed_hosts: str = ""


@attrs.frozen
class LogSettings:
    format: LogFormat = "auto"
    level: LogLevel = "info"


@attrs.frozen
class SandboxSettings:
    host: str = "127.0.0.1"
    port: int = attrs.field(default=0, validator=_in_range(0, 65535))
    scenario: str = "demo"
    dave_protocol_version: int = attrs.field(default=1, validator=_in_range(0, 1))
    seed: int = 0


VisualizerKind = Literal["showcqt", "showwaves", "showspectrum", "off"]


def _even(inst: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value % 2:
        raise ValueError("an even number")


@attrs.frozen
class PublishSettings:
    width: int = attrs.field(default=1280, validator=[_in_range(16, 3840), _even])
    height: int = attrs.field(default=720, validator=[_in_range(16, 2160), _even])
    fps: int = attrs.field(default=30, validator=_in_range(1, 60))
    max_bitrate: int = attrs.field(default=2_500_000, validator=_in_range(100_000, 20_000_000))
    keyframe_interval_s: float = attrs.field(default=2.0, validator=_in_range(0.5, 30))
    credentials_timeout_s: float = attrs.field(default=10.0, validator=_in_range(0.5, 120))
    frame_queue: int = attrs.field(default=4, validator=_in_range(1, 64))
    max_image_bytes: int = attrs.field(default=8 * 1024 * 1024, validator=_in_range(1024, 64 * 2**20))
    visualizer: VisualizerKind = "showcqt"
    mtu: int = attrs.field(default=1100, validator=_in_range(200, 1400))
    pacing_factor: float = attrs.field(default=2.5, validator=_in_range(1.0, 10.0))


@attrs.frozen
class LinkSettings:
    """The share-link fallback (docs/link.md): a browser page that captures a screen and posts
    JPEG frames to a separate listener that serves only ``/share/*``."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8788, validator=_in_range(0, 65535))
    public_url: str = attrs.field(default="", validator=_url_or_empty)
    ttl_minutes: int = attrs.field(default=10, validator=_in_range(1, 240))
    max_fps: float = attrs.field(default=2.0, validator=_in_range(0.1, 10))
    max_pixels: int = attrs.field(default=1280 * 720, validator=_in_range(64 * 64, 3840 * 2160))
    max_frame_bytes: int = attrs.field(default=1024 * 1024, validator=_in_range(4096, 16 * 2**20))
    text_channel_id: str = attrs.field(default="", validator=_snowflake_or_empty)
    native_grace_s: float = attrs.field(default=3.0, validator=_in_range(0, 30))


@attrs.frozen
class Settings:
    discord: DiscordSettings = DiscordSettings()
    voice: VoiceSettings = VoiceSettings()
    watch: WatchSettings = WatchSettings()
    notes: NotesSettings = NotesSettings()
    api: ApiSettings = ApiSettings()
    log: LogSettings = LogSettings()
    sandbox: SandboxSettings = SandboxSettings()
    publish: PublishSettings = PublishSettings()
    link: LinkSettings = LinkSettings()

    @property
    def sandbox_mode(self) -> bool:
        """No token configured means: run against the built-in sandbox."""
        return not self.discord.token


ENV_ALIASES: Mapping[str, str] = {
    "CLANK_DISCORD_TOKEN": "discord.token",
    "CLANK_API_URL": "discord.api_url",
    "CLANK_GATEWAY_URL": "discord.gateway_url",
    "CLANK_GUILD_ID": "discord.guild_id",
    "CLANK_CHANNEL_ID": "discord.voice_channel_id",
    "CLANK_LOG_FORMAT": "log.format",
    "CLANK_LOG_LEVEL": "log.level",
    "CLANK_HTTP_TOKEN": "api.token",
    "CLANK_HTTP_PORT": "api.port",
    "CLANK_VISION_API_KEY": "notes.api_key",
}
# Env vars that are not settings (so they are not reported as unknown keys).
ENV_IGNORED = frozenset({"CLANK_CONFIG", "CLANK_HYPOTHESIS_EXAMPLES"})

_converter = cattrs.Converter(forbid_extra_keys=True)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if tp is bool:
        return "a boolean (true/false)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if attrs.has(tp):
        return "a table"
    return str(tp)


def _fields_by_path(cls: type, prefix: str = "") -> dict[str, attrs.Attribute[Any]]:
    out: dict[str, attrs.Attribute[Any]] = {}
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        path = f"{prefix}{field.name}"
        tp = hints[field.name]
        if attrs.has(tp):
            out.update(_fields_by_path(tp, path + "."))
        else:
            out[path] = field.evolve(type=tp)
    return out


FIELDS = _fields_by_path(Settings)


def _check_shape(data: Mapping[str, Any], cls: type, prefix: str = "") -> None:
    """Reject unknown keys and wrong scalar types up front, naming the key (cattrs is terse)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    names = set(fields)
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(path, "a known setting (unknown key; see docs/configuration.md)")
        tp = hints[key]
        if attrs.has(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(path, "a table", value)
            _check_shape(value, tp, path + ".")
            continue
        _check_scalar(path, tp, value)
        validator = fields[key].validator
        if validator is not None:
            try:
                validator(None, fields[key], value)
            except ValueError as exc:
                raise ConfigError(path, str(exc), value) from None


def _check_scalar(path: str, tp: Any, value: object) -> None:
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp) or isinstance(value, bool) != any(
            isinstance(a, bool) for a in typing.get_args(tp)
        ):
            raise ConfigError(path, _describe(tp), value)
    elif origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(path, _describe(tp), value)
        for item in value:
            try:
                _check_scalar(path, typing.get_args(tp)[0], item)
            except ConfigError:
                raise ConfigError(path, _describe(tp), item) from None
    elif tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, _describe(tp), value)
    elif tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(path, _describe(tp), value)
    elif tp is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(path, _describe(tp), value)
    elif tp is str and not isinstance(value, str):
        raise ConfigError(path, _describe(tp), value)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_env_value(path: str, tp: Any, raw: str) -> object:
    origin = typing.get_origin(tp)
    if origin is tuple:
        return [
            _parse_env_value(path, typing.get_args(tp)[0], p.strip()) for p in raw.split(",") if p.strip()
        ]
    if origin is Literal:
        args = typing.get_args(tp)
        for arg in args:
            if str(arg) == raw:
                return arg
        raise ConfigError(path, _describe(tp), raw)
    if tp is bool:
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(path, _describe(tp), raw)
    if tp is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(path, _describe(tp), raw) from None
    if tp is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(path, _describe(tp), raw) from None
    return raw


def _env_path(name: str) -> str | None:
    if name in ENV_ALIASES:
        return ENV_ALIASES[name]
    if name in ENV_IGNORED or not name.startswith("CLANK_"):
        return None
    rest = name.removeprefix("CLANK_").lower()
    for section in ("discord_properties", *(f.name for f in attrs.fields(Settings))):
        if rest.startswith(section + "_"):
            key = rest.removeprefix(section + "_")
            return f"{section.replace('_', '.')}.{key}"
    return f"<env>.{rest}"


def _set_path(data: dict[str, Any], path: str, value: object) -> None:
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    for name, raw in sorted(environ.items()):
        path = _env_path(name)
        if path is None:
            continue
        field = FIELDS.get(path)
        if field is None:
            raise ConfigError(name, f"a known setting (no setting {path!r}; see docs/configuration.md)")
        _set_path(data, path, _parse_env_value(f"{name} ({path})", field.type, raw))
    return data


def _structure(data: Mapping[str, Any]) -> Settings:
    _check_shape(data, Settings)
    try:
        return _converter.structure(data, Settings)
    except cattrs.BaseValidationError as exc:
        messages = cattrs.transform_error(exc, path="$")
        raise ConfigError(_path_from_message(messages), _expected_from_message(messages)) from None
    except ValueError as exc:  # attrs validators outside a cattrs group
        raise ConfigError("?", str(exc)) from None


def _path_from_message(messages: list[str]) -> str:
    for msg in messages:
        if " @ $." in msg:
            return msg.rsplit(" @ $.", 1)[1]
    return "?"


def _expected_from_message(messages: list[str]) -> str:
    msg = messages[0] if messages else "a valid value"
    return msg.rsplit(" @ ", 1)[0]


def load_settings(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Load TOML (default ``conf/clank.toml`` or ``$CLANK_CONFIG``), then env, then overrides."""
    env = os.environ if environ is None else environ
    if path is None and env.get("CLANK_CONFIG"):
        path = Path(env["CLANK_CONFIG"])
    data: dict[str, Any] = {}
    source = path if path is not None else DEFAULT_CONFIG_PATH
    if source.exists():
        try:
            data = tomllib.loads(source.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(source), f"valid TOML ({exc})") from None
    elif path is not None:
        raise ConfigError("CLANK_CONFIG", f"an existing file (no file at {path})")
    apply_env(data, env)
    for key, value in (overrides or {}).items():
        if key not in FIELDS:
            raise ConfigError(key, "a known setting")
        _set_path(data, key, value)
    return _structure(data)


def settings_table() -> list[tuple[str, object, str]]:
    """(dotted key, default, expected form) for every setting; used by docs and tests."""
    defaults = Settings()
    rows: list[tuple[str, object, str]] = []
    for path, field in FIELDS.items():
        value: object = defaults
        for part in path.split("."):
            value = getattr(value, part)
        rows.append((path, value, _describe(field.type)))
    return rows


__all__ = [
    "ApiSettings",
    "DiscordSettings",
    "LinkSettings",
    "LogSettings",
    "NotesSettings",
    "SandboxSettings",
    "Settings",
    "VoiceSettings",
    "WatchSettings",
    "load_settings",
    "settings_table",
]
