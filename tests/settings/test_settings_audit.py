"""The settings audit (issue 14): every key of conf/clank.toml has a test that sets it and sees
clank behave differently. :data:`BEHAVIOUR` names that test per key; this file fails when a key
has none, when a named test is gone, or when the named test no longer mentions its key.

Adding a setting? Add its row here, pointing at a test that changes it and watches the effect.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from clank.config import ENV_ALIASES

ROOT = Path(__file__).resolve().parents[2]

S = "tests/settings/"
IDENTIFY = (
    S
    + "test_settings_link_log_identify.py::"
    + "test_token_properties_capabilities_and_compress_are_what_identify_sends"
)
LINK_URL = (
    S
    + "test_settings_link_log_identify.py::"
    + "test_public_url_and_host_decide_where_links_point_and_the_listener_binds"
)
DAVE = (
    S + "test_settings_watch_voice.py::test_max_dave_protocol_version_turns_end_to_end_encryption_on_or_off"
)
NOTES_RUN = (
    S + "test_settings_notes_provider.py::test_notes_enabled_provider_url_model_key_reach_the_endpoint"
)
BEHAVIOUR: dict[str, tuple[str, ...]] = {
    "discord.token": (
        IDENTIFY,
        "tests/run/test_run_e2e.py::test_clank_run_fails_with_one_clear_line",
    ),
    "discord.api_url": ("tests/run/test_run_e2e.py::test_clank_run_fails_with_one_clear_line",),
    "discord.gateway_url": (IDENTIFY,),
    "discord.guild_id": (S + "test_settings_link_log_identify.py::test_guild_id_must_own_the_voice_channel",),
    "discord.voice_channel_id": (
        "tests/run/test_run_cli_errors.py::test_a_wrong_channel_id_has_its_own_reason_and_exit_code",
    ),
    "discord.voice_url_scheme": (
        "tests/run/test_run_separate_sandbox.py::test_a_voice_leg_that_cannot_connect_is_visible",
    ),
    "discord.compress": (
        IDENTIFY,
        "tests/gateway/test_gateway_client.py::test_zlib_stream_compression",
    ),
    "discord.capabilities": (IDENTIFY,),
    "discord.connect_attempts": (
        S + "test_settings_link_log_identify.py::test_connect_attempts_bounds_the_first_connection",
    ),
    **{
        f"discord.properties.{leaf}": (IDENTIFY,)
        for leaf in ("os", "browser", "device", "system_locale", "release_channel")
    },
    "voice.self_mute": (
        "tests/run/test_run_settings_effect.py::test_self_mute_and_deaf_reach_the_voice_state",
    ),
    "voice.self_deaf": (
        "tests/run/test_run_settings_effect.py::test_self_mute_and_deaf_reach_the_voice_state",
    ),
    "voice.max_dave_protocol_version": (DAVE,),
    "voice.mode_preference": (
        S + "test_settings_watch_voice.py::test_mode_preference_picks_the_transport_encryption",
    ),
    "voice.receive_buffer_bytes": (
        S + "test_settings_watch_voice.py::test_receive_buffer_bytes_is_the_media_socket_rcvbuf",
    ),
    "voice.udp_keepalive_s": (
        "tests/fidelity/test_fidelity_keepalive.py::test_without_keepalives_the_strict_sandbox_stops_sending",
    ),
    "watch.auto_watch": (
        "tests/run/test_run_auto_watch.py::test_auto_watch_starts_a_watch_on_the_live_sharer",
    ),
    "watch.max_fps": (
        "tests/watch/test_video_pipeline.py::test_frames_reach_the_store_and_channel_decoding_inline",
    ),
    "watch.preferred_pixel_count": (
        "tests/watch/test_video_pipeline.py::test_frames_reach_the_store_and_channel_decoding_inline",
    ),
    "watch.jpeg_quality": (
        S + "test_settings_watch_voice.py::test_jpeg_quality_sets_the_size_of_the_frames_handed_out",
    ),
    "watch.preferred_quality": (
        S + "test_settings_watch_voice.py::test_preferred_quality_is_what_op15_asks_and_0_asks_for_no_video",
    ),
    "watch.sink_wants_format": (
        "tests/voice_gateway/test_voice_gateway_pair.py::test_sink_wants_reach_the_server_in_either_format",
    ),
    "watch.credentials_timeout_s": (
        "tests/control/test_control_link_e2e.py::test_a_native_watch_that_cannot_be_established_falls_back_to_a_link",
    ),
    "watch.max_concurrent_watches": (
        "tests/run/test_run_settings_effect.py::test_max_concurrent_watches_caps_the_go_live_watches",
    ),
    "watch.nack": (
        S + "test_settings_watch_voice.py::test_reorder_delay_decides_whether_a_late_packet_is_waited_for",
        "tests/watch/test_session_fakenet.py::test_five_percent_loss_is_repaired_with_nack_and_rtx",
    ),
    "watch.remb_max_kbps": (
        "tests/fidelity/test_fidelity_congestion_feedback.py::test_remb_can_be_switched_off",
    ),
    "watch.reorder_delay_ms": (
        S + "test_settings_watch_voice.py::test_reorder_delay_decides_whether_a_late_packet_is_waited_for",
    ),
    "watch.conceal_after_s": (
        "tests/fidelity/test_fidelity_sparse_keyframes.py::test_concealed_pictures_within_5_s_then_clean_at_the_next_keyframe",
    ),
    "notes.enabled": (
        "tests/run/test_run_ocr_notes.py::test_demo_offline_notes_contain_the_words_on_the_streamers_screen",
    ),
    "notes.provider": (
        "tests/watch_notes/test_notes_http_vision.py::test_http_500_is_counted_by_screen_notes",
    ),
    "notes.url": (NOTES_RUN,),
    "notes.model": (NOTES_RUN,),
    "notes.api_key": (
        "tests/watch_notes/test_notes_http_vision.py::test_content_parts_answer_and_no_key_means_no_header",
    ),
    "notes.timeout_s": (
        NOTES_RUN,
        "tests/watch_notes/test_notes_http_vision.py::test_slow_endpoint_times_out",
    ),
    "notes.min_interval_s": (S + "test_settings_notes.py::test_min_interval_s_spaces_scene_cut_notes",),
    "notes.periodic_s": (S + "test_settings_notes.py::test_periodic_s_spaces_notes_on_a_changing_screen",),
    "notes.change_floor": (
        S + "test_settings_notes.py::test_change_floor_decides_whether_the_screen_counts_as_changing",
    ),
    "notes.history": (
        S + "test_settings_notes.py::test_history_and_context_notes_bound_what_is_kept_and_sent",
    ),
    "notes.context_notes": (
        S + "test_settings_notes.py::test_history_and_context_notes_bound_what_is_kept_and_sent",
    ),
    "notes.idle_interval_s": (
        S + "test_settings_notes.py::test_idle_interval_s_spaces_notes_on_a_still_screen",
    ),
    "notes.change_threshold": (
        "tests/watch_notes/test_commentary_gates.py::test_one_watch_speaking_holds_silence_releases_static_never",
    ),
    "notes.commentary": (
        "tests/run/test_run_commentary.py::test_speaking_holds_the_cue_silence_releases_it_static_never",
    ),
    "notes.commentary_interval_s": (
        "tests/run/test_run_commentary.py::test_speaking_holds_the_cue_silence_releases_it_static_never",
    ),
    "notes.quiet_window_s": (
        "tests/run/test_run_commentary.py::test_speaking_holds_the_cue_silence_releases_it_static_never",
    ),
    **{
        f"{section}.{leaf}": (
            S + "test_settings_api_sandbox.py::test_api_and_sandbox_settings_are_where_and_what_clank_runs",
        )
        for section, leaf in (
            ("api", "host"),
            ("api", "port"),
            ("api", "token"),
            ("sandbox", "host"),
            ("sandbox", "port"),
            ("sandbox", "scenario"),
            ("sandbox", "seed"),
        )
    },
    "api.allowed_hosts": (
        "tests/control/test_control_host_check.py::test_a_foreign_host_gets_421_on_every_route_before_auth",
    ),
    "log.format": (
        S + "test_settings_link_log_identify.py::test_log_format_and_level_shape_what_reaches_stderr",
    ),
    "log.level": (
        S + "test_settings_link_log_identify.py::test_log_format_and_level_shape_what_reaches_stderr",
    ),
    "sandbox.dave_protocol_version": (
        "tests/run/test_run_sandbox_dave_setting.py::test_sandbox_dave_setting_reaches_the_voice_server",
    ),
    **{
        f"publish.{leaf}": (
            S + "test_settings_publish.py::test_size_rate_bitrate_keyframes_mtu_and_pacing_reach_the_viewer",
        )
        for leaf in ("width", "height", "fps", "max_bitrate", "keyframe_interval_s", "mtu", "pacing_factor")
    },
    "publish.credentials_timeout_s": (
        S + "test_settings_publish.py::test_credentials_timeout_bounds_the_wait_for_our_stream_server",
    ),
    "publish.frame_queue": (
        S + "test_settings_publish.py::test_frame_queue_bounds_the_pushed_images_waiting",
    ),
    "publish.max_image_bytes": (
        S + "test_settings_publish.py::test_max_image_bytes_and_visualizer_change_what_the_publish_api_does",
    ),
    "publish.visualizer": (
        S + "test_settings_publish.py::test_max_image_bytes_and_visualizer_change_what_the_publish_api_does",
    ),
    "link.enabled": ("tests/control/test_control_link_e2e.py::test_link_disabled_removes_the_transport",),
    "link.host": (LINK_URL,),
    "link.port": (
        "tests/control/test_control_link_http.py::test_a_busy_port_falls_back_to_any_free_port_in_sandbox_mode",
    ),
    "link.public_url": (LINK_URL,),
    "link.ttl_minutes": (
        S + "test_settings_link_log_identify.py::test_ttl_minutes_is_how_long_a_link_lives",
    ),
    "link.max_fps": ("tests/control/test_control_link_http.py::test_frames_faster_than_the_cap_are_refused",),
    "link.max_pixels": ("tests/control/test_control_link_http.py::test_bad_frames_get_4xx_and_are_counted",),
    "link.max_frame_bytes": (
        "tests/control/test_control_link_http.py::test_bad_frames_get_4xx_and_are_counted",
    ),
    "link.text_channel_id": (
        S + "test_settings_api_sandbox.py::test_api_and_sandbox_settings_are_where_and_what_clank_runs",
    ),
    "link.native_grace_s": (
        "tests/control/test_control_link_e2e.py::test_native_ready_between_the_checkpoints_sends_no_link",
    ),
}


def _keys(table: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for name, value in table.items():
        if isinstance(value, dict):
            yield from _keys(value, f"{prefix}{name}.")
        else:
            yield prefix + name


CONF_KEYS = sorted(_keys(tomllib.loads((ROOT / "conf" / "clank.toml").read_text())))


def test_every_key_of_clank_toml_has_a_behaviour_test() -> None:
    assert sorted(BEHAVIOUR) == CONF_KEYS, {
        "without a test": sorted(set(CONF_KEYS) - set(BEHAVIOUR)),
        "not in conf/clank.toml": sorted(set(BEHAVIOUR) - set(CONF_KEYS)),
    }


def _function_source(path: Path, name: str) -> str | None:
    source = path.read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return ast.get_source_segment(source, node)
    return None


def _mentions(path: Path, body: str, key: str) -> bool:
    """The test (or its module's settings, for shared kits) names the key: leaf or env var."""
    leaf = key.rsplit(".", 1)[1]
    names = {leaf, key, "CLANK_" + key.replace(".", "_").upper()}
    names |= {alias for alias, path_ in ENV_ALIASES.items() if path_ == key}
    text = body + path.read_text()
    return any(name in text for name in names)


@pytest.mark.parametrize("key", CONF_KEYS)
def test_the_named_tests_exist_and_mention_their_key(key: str) -> None:
    for ref in BEHAVIOUR.get(key, ()):
        file, name = ref.split("::")
        path = ROOT / file
        assert path.is_file(), f"{key}: {file} is gone"
        body = _function_source(path, name)
        assert body is not None, f"{key}: {ref} is gone (renamed? point BEHAVIOUR here at its new name)"
        assert _mentions(path, body, key), f"{key}: {ref} does not mention it"
