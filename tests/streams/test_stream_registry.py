"""StreamRegistry (clank.protocol.streams): dispatch tables, orderings, watch requests, ranking."""

from __future__ import annotations

import pytest

from clank.errors import WatchError
from clank.protocol.stream_events import RANK_RULES, StreamEvent
from clank.protocol.stream_table import PENDING_CREDENTIALS_LIMIT, PENDING_CREDENTIALS_TTL
from clank.protocol.stream_watches import STREAM_PING_INTERVAL, StreamPingPolicy
from clank.protocol.streams import StreamRegistry
from clank.wire.gateway_events import StreamKey

ME = "333"
GUILD = "111"
CHANNEL = "222"
OTHER_CHANNEL = "223"
ALICE = "444"
BOB = "555"
KEY_ALICE = f"guild:{GUILD}:{CHANNEL}:{ALICE}"
KEY_BOB = f"guild:{GUILD}:{CHANNEL}:{BOB}"
KEY_ME = f"guild:{GUILD}:{CHANNEL}:{ME}"
TOKEN = "tok-watch-333-secret"


def voice_state(
    user: str,
    *,
    channel: str | None = CHANNEL,
    stream: bool = False,
    video: bool = False,
    guild: str | None = GUILD,
) -> dict[str, object]:
    return {
        "guild_id": guild,
        "channel_id": channel,
        "user_id": user,
        "session_id": "sess",
        "self_stream": stream,
        "self_video": video,
        "self_mute": False,
        "self_deaf": False,
    }


def stream_create(key: str, rtc_server_id: str = "900000000000000123", **extra: object) -> dict[str, object]:
    return {
        "stream_key": key,
        "rtc_server_id": rtc_server_id,
        "rtc_channel_id": str(int(rtc_server_id) + 1),
        "region": "local",
        "viewer_ids": [ME],
        "paused": False,
        **extra,
    }


def server_update(
    key: str, endpoint: str | None = "127.0.0.1:7003", token: str | None = TOKEN
) -> dict[str, object]:
    return {"stream_key": key, "guild_id": None, "endpoint": endpoint, "token": token}


def stream_delete(key: str, reason: str = "stream_ended") -> dict[str, object]:
    return {"stream_key": key, "reason": reason, "unavailable": False}


def names(events: list[StreamEvent]) -> list[str]:
    return [e.name for e in events]


def fields(events: list[StreamEvent], name: str) -> dict[str, object]:
    [event] = [e for e in events if e.name == name]
    return event.log_fields()


@pytest.fixture
def registry() -> StreamRegistry:
    return StreamRegistry(ME, guild_ids=[GUILD])


# --- VOICE_STATE_UPDATE -----------------------------------------------------------------------


def test_self_stream_true_is_the_early_go_live_signal(registry: StreamRegistry) -> None:
    events = registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ALICE, stream=True), 1.0)
    assert names(events) == ["stream_discovery_user_go_live", "stream_discovery_go_live_bootstrap_seeded"]
    assert fields(events, "stream_discovery_go_live_bootstrap_seeded")["stream_key"] == KEY_ALICE
    stream = registry.stream_for_user(ALICE)
    assert stream is not None
    assert str(stream.key) == KEY_ALICE
    assert not stream.created
    assert not stream.has_credentials
    assert registry.primary_stream() == stream
    # A repeated state of a user who is already live (e.g. a mute toggle) reports nothing new.
    assert registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ALICE, stream=True), 2.0) == []


def test_self_stream_false_ends_the_stream_before_stream_delete(registry: StreamRegistry) -> None:
    registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ALICE, stream=True), 1.0)
    registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE), 2.0)
    events = registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ALICE, stream=False), 3.0)
    assert names(events) == ["stream_discovery_user_go_live_ended"]
    assert fields(events, "stream_discovery_user_go_live_ended")["reason"] == "self_stream_false"
    assert registry.streams() == ()
    assert registry.primary_stream() is None
    late = registry.handle_dispatch("STREAM_DELETE", stream_delete(KEY_ALICE), 4.0)
    assert names(late) == ["stream_discovery_delete_unknown_stream"]


def test_self_stream_false_for_a_user_who_never_streamed_is_quiet(registry: StreamRegistry) -> None:
    assert registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ALICE), 1.0) == []
    assert registry.member(ALICE) is not None


def test_channel_null_means_the_user_left_voice(registry: StreamRegistry) -> None:
    registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ALICE, stream=True, video=True), 1.0)
    events = registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ALICE, channel=None), 2.0)
    assert names(events) == ["stream_discovery_user_go_live_ended", "stream_discovery_webcam_stopped"]
    assert fields(events, "stream_discovery_user_go_live_ended")["reason"] == "left_voice"
    assert registry.member(ALICE) is None
    assert registry.stream_for_user(ALICE) is None
    assert registry.sharers() == ()


def test_moving_channel_replaces_the_provisional_stream(registry: StreamRegistry) -> None:
    registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ALICE, stream=True), 1.0)
    events = registry.handle_dispatch(
        "VOICE_STATE_UPDATE", voice_state(ALICE, channel=OTHER_CHANNEL, stream=True), 2.0
    )
    assert names(events) == [
        "stream_discovery_user_go_live",
        "stream_discovery_user_go_live_ended",
        "stream_discovery_go_live_bootstrap_seeded",
    ]
    assert [str(s.key) for s in registry.streams()] == [f"guild:{GUILD}:{OTHER_CHANNEL}:{ALICE}"]


def test_webcam_is_tracked_per_user(registry: StreamRegistry) -> None:
    events = registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(BOB, video=True), 1.0)
    assert names(events) == ["stream_discovery_webcam_started"]
    registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ALICE, stream=True), 1.0)
    sharers = {s.user_id: (s.go_live, s.webcam) for s in registry.sharers()}
    assert sharers == {ALICE: (True, False), BOB: (False, True)}
    assert names(registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(BOB), 2.0)) == [
        "stream_discovery_webcam_stopped"
    ]
    assert [s.user_id for s in registry.sharers()] == [ALICE]


# --- STREAM_* ---------------------------------------------------------------------------------


def test_watch_flow_of_appendix_c1(registry: StreamRegistry) -> None:
    registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ALICE, stream=True), 10.0)
    request = registry.request_watch(ALICE, 10.5)
    assert [(f.op, f.d) for f in request.frames] == [(20, {"stream_key": KEY_ALICE})]
    assert request.synthesized
    created = registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE), 11.0)
    assert names(created) == ["stream_discovery_stream_created"]
    assert fields(created, "stream_discovery_stream_created")["was_known"] is True
    creds = registry.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ALICE), 11.25)
    assert names(creds) == ["stream_discovery_credentials_received"]
    logged = fields(creds, "stream_discovery_credentials_received")
    assert logged["latency_ms"] == 1250  # from discovery (the voice state), not from STREAM_CREATE
    assert logged["endpoint"] == "127..."  # first label only, as clanky logged it
    watched = registry.watched_stream()
    assert watched is not None
    assert watched.has_credentials
    assert registry.has_credentials(ALICE)
    assert registry.has_credentials(StreamKey.parse(KEY_ALICE))
    assert (watched.rtc_server_id, watched.rtc_channel_id) == ("900000000000000123", "900000000000000124")
    assert watched.dave_group_id == 900000000000000122
    assert (watched.endpoint, watched.token, watched.credentials_received_at) == (
        "127.0.0.1:7003",
        TOKEN,
        11.25,
    )
    deleted = registry.handle_dispatch("STREAM_DELETE", stream_delete(KEY_ALICE), 20.0)
    assert names(deleted) == ["stream_discovery_stream_deleted"]
    assert fields(deleted, "stream_discovery_stream_deleted")["was_watched"] is True
    assert fields(deleted, "stream_discovery_stream_deleted")["age_ms"] == 10000
    assert registry.watching_key is None
    assert registry.watched_stream() is None
    assert registry.streams() == ()


def test_credentials_before_stream_create_are_kept(registry: StreamRegistry) -> None:
    early = registry.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ALICE), 1.0)
    assert names(early) == ["stream_discovery_server_update_no_stream"]
    assert registry.stream_for_user(ALICE) is None
    assert registry.statistics().pending_credentials == 1
    created = registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE), 2.0)
    assert names(created) == ["stream_discovery_stream_created", "stream_discovery_credentials_received"]
    assert fields(created, "stream_discovery_credentials_received")["from_pending"] is True
    assert registry.has_credentials(ALICE)
    assert registry.statistics().pending_credentials == 0


def test_credentials_for_a_provisional_stream_wait_for_rtc_server_id(registry: StreamRegistry) -> None:
    registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ALICE, stream=True), 1.0)
    assert names(registry.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ALICE), 2.0)) == [
        "stream_discovery_credentials_received"
    ]
    assert not registry.has_credentials(ALICE)  # no rtc_server_id before STREAM_CREATE
    registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE), 3.0)
    assert registry.has_credentials(ALICE)


def test_pending_credentials_expire_and_are_bounded(registry: StreamRegistry) -> None:
    registry.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ALICE), 0.0)
    expired = registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE), PENDING_CREDENTIALS_TTL)
    assert names(expired) == [
        "stream_discovery_pending_credentials_dropped",
        "stream_discovery_stream_created",
    ]
    assert not registry.has_credentials(ALICE)
    keys = [f"guild:{GUILD}:{CHANNEL}:{1000 + i}" for i in range(PENDING_CREDENTIALS_LIMIT + 1)]
    events: list[StreamEvent] = []
    for key in keys:
        events += registry.handle_dispatch("STREAM_SERVER_UPDATE", server_update(key), 100.0)
    dropped = [e.log_fields() for e in events if e.name == "stream_discovery_pending_credentials_dropped"]
    assert dropped == [{"stream_key": keys[0], "reason": "overflow"}]
    assert registry.statistics().pending_credentials == PENDING_CREDENTIALS_LIMIT


def test_reallocation_clears_credentials_until_the_next_update(registry: StreamRegistry) -> None:
    registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE), 1.0)
    registry.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ALICE), 1.0)
    events = registry.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ALICE, None, None), 2.0)
    assert names(events) == ["stream_discovery_stream_reallocating"]
    assert fields(events, "stream_discovery_stream_reallocating")["known"] is True
    stream = registry.stream_for_user(ALICE)
    assert stream is not None
    assert (stream.endpoint, stream.token, stream.credentials_received_at) == (None, None, None)
    registry.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ALICE, "10.0.0.1:9"), 3.0)
    assert registry.has_credentials(ALICE)
    unknown = registry.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_BOB, None), 3.0)
    assert fields(unknown, "stream_discovery_stream_reallocating")["known"] is False


def test_stream_create_on_a_new_server_drops_old_credentials(registry: StreamRegistry) -> None:
    registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE, "900"), 1.0)
    registry.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ALICE), 1.0)
    registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE, "900"), 2.0)
    assert registry.has_credentials(ALICE)
    registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE, "800"), 3.0)
    assert not registry.has_credentials(ALICE)


def test_stream_update_changes_viewers_and_paused(registry: StreamRegistry) -> None:
    registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE), 1.0)
    events = registry.handle_dispatch(
        "STREAM_UPDATE", {"stream_key": KEY_ALICE, "viewer_ids": [], "paused": True}, 2.0
    )
    assert events[0].log_fields() == {
        "stream_key": KEY_ALICE,
        "viewer_count": 0,
        "paused": True,
        "own": False,
    }
    stream = registry.stream_for_user(ALICE)
    assert stream is not None
    assert (stream.viewer_ids, stream.paused, stream.region) == ((), True, "local")
    assert names(registry.handle_dispatch("STREAM_UPDATE", {"stream_key": KEY_BOB}, 2.0)) == [
        "stream_discovery_update_unknown_stream"
    ]


def test_delete_of_an_unknown_watched_stream_is_a_refused_watch(registry: StreamRegistry) -> None:
    registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(BOB, video=True), 1.0)
    registry.request_watch(BOB, 1.0)
    events = registry.handle_dispatch("STREAM_DELETE", stream_delete(KEY_BOB, "unauthorized"), 2.0)
    assert events[0].log_fields() == {
        "stream_key": KEY_BOB,
        "reason": "unauthorized",
        "unavailable": False,
        "was_watched": True,
    }
    assert registry.watching_key is None


def test_guild_filter_and_ignored_dispatches(registry: StreamRegistry) -> None:
    assert (
        registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ALICE, stream=True, guild="999"), 1.0)
        == []
    )
    assert registry.handle_dispatch("STREAM_CREATE", stream_create(f"guild:999:{CHANNEL}:{ALICE}"), 1.0) == []
    assert registry.handle_dispatch("STREAM_CREATE", stream_create(f"call:{CHANNEL}:{ALICE}"), 1.0) == []
    assert registry.handle_dispatch("MESSAGE_CREATE", {"content": "hi"}, 1.0) == []
    stats = registry.statistics()
    assert (stats.out_of_scope, stats.dispatches_ignored, stats.streams) == (3, 1, 0)


def test_dm_call_streams_without_a_guild_filter() -> None:
    registry = StreamRegistry(ME)
    registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ALICE, stream=True, guild=None), 1.0)
    stream = registry.stream_for_user(ALICE)
    assert stream is not None
    assert str(stream.key) == f"call:{CHANNEL}:{ALICE}"


# --- malformed input becomes events -----------------------------------------------------------

MALFORMED: list[tuple[str, object, str]] = [
    ("VOICE_STATE_UPDATE", None, "stream_discovery_malformed_dispatch"),
    ("VOICE_STATE_UPDATE", {"user_id": "x"}, "stream_discovery_malformed_dispatch"),
    (
        "VOICE_STATE_UPDATE",
        {**voice_state(ALICE), "self_stream": "yes"},
        "stream_discovery_malformed_dispatch",
    ),
    ("STREAM_CREATE", {"stream_key": "test:444"}, "stream_discovery_invalid_stream_key"),
    ("STREAM_CREATE", {"stream_key": "guild:111:222"}, "stream_discovery_invalid_stream_key"),
    ("STREAM_CREATE", {"rtc_server_id": "1"}, "stream_discovery_invalid_stream_key"),
    ("STREAM_CREATE", [KEY_ALICE], "stream_discovery_malformed_dispatch"),
    (
        "STREAM_CREATE",
        {"stream_key": KEY_ALICE, "rtc_server_id": "abc"},
        "stream_discovery_malformed_dispatch",
    ),
    ("STREAM_SERVER_UPDATE", {"stream_key": 7, "endpoint": "e"}, "stream_discovery_invalid_stream_key"),
    ("STREAM_SERVER_UPDATE", {"stream_key": KEY_ALICE, "token": 5}, "stream_discovery_malformed_dispatch"),
    ("STREAM_UPDATE", {"stream_key": KEY_ALICE, "paused": "no"}, "stream_discovery_malformed_dispatch"),
    ("STREAM_DELETE", {"stream_key": "call:1"}, "stream_discovery_invalid_stream_key"),
    ("STREAM_DELETE", "stream_ended", "stream_discovery_malformed_dispatch"),
    ("GUILD_CREATE", {"id": GUILD, "voice_states": "none"}, "stream_discovery_malformed_dispatch"),
    ("GUILD_CREATE", {"voice_states": []}, "stream_discovery_malformed_dispatch"),
    ("READY_SUPPLEMENTAL", {"guilds": {}}, "stream_discovery_malformed_dispatch"),
]


@pytest.mark.parametrize(("dispatch", "data", "expected"), MALFORMED)
def test_malformed_payloads_become_events(
    registry: StreamRegistry, dispatch: str, data: object, expected: str
) -> None:
    events = registry.handle_dispatch(dispatch, data, 1.0)
    assert names(events) == [expected]
    assert events[0].log_fields()["dispatch"] == dispatch
    assert registry.statistics().malformed == 1
    assert registry.streams() == ()


# --- scans of existing voice states -----------------------------------------------------------


def guild_create(*states: dict[str, object]) -> dict[str, object]:
    return {
        "id": GUILD,
        "name": "g",
        "voice_states": [{k: v for k, v in s.items() if k != "guild_id"} for s in states],
    }


def test_guild_create_scan_seeds_streams_that_were_live_before_we_connected(registry: StreamRegistry) -> None:
    events = registry.handle_dispatch(
        "GUILD_CREATE",
        guild_create(
            voice_state(ALICE, stream=True),
            voice_state(BOB, video=True),
            voice_state(ME, stream=True),
            voice_state("666", stream=True, channel=OTHER_CHANNEL),
        ),
        5.0,
    )
    assert names(events) == [
        "stream_discovery_existing_streamer_detected",
        "stream_discovery_go_live_bootstrap_seeded",
        "stream_discovery_webcam_started",
        "stream_discovery_user_go_live",  # our own state: tracked, not seeded
        "stream_discovery_existing_streamer_detected",
        "stream_discovery_go_live_bootstrap_seeded",
        "stream_discovery_guild_create_scan_complete",
    ]
    assert events[0].log_fields() == {
        "user_id": ALICE,
        "guild_id": GUILD,
        "channel_id": CHANNEL,
        "source": "guild_create_voice_states",
    }
    assert events[-1].log_fields() == {
        "guild_id": GUILD,
        "total_voice_states": 4,
        "existing_streamers": 2,
        "streamer_user_ids": [ALICE, "666"],
        "invalid_voice_states": 0,
    }
    assert sorted(s.owner_id for s in registry.streams()) == [ALICE, "666"]
    assert registry.own_stream is None
    own = registry.own_voice_state
    assert own is not None
    assert own.self_stream


def test_guild_create_without_streamers_reports_no_scan_event(registry: StreamRegistry) -> None:
    assert registry.handle_dispatch("GUILD_CREATE", guild_create(voice_state(ALICE)), 1.0) == []
    assert registry.handle_dispatch("GUILD_CREATE", {"id": GUILD}, 1.0) == []
    assert registry.handle_dispatch("GUILD_CREATE", {"id": GUILD, "voice_states": ["junk"]}, 1.0) == []


def test_a_complete_guild_snapshot_removes_users_who_left(registry: StreamRegistry) -> None:
    registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ALICE, stream=True), 1.0)
    events = registry.handle_dispatch("GUILD_CREATE", guild_create(voice_state(BOB)), 2.0)
    assert names(events) == ["stream_discovery_user_go_live_ended"]
    assert registry.member(ALICE) is None
    assert registry.streams() == ()
    # Without a voice_states list the snapshot says nothing about who is in voice.
    registry.handle_dispatch("GUILD_CREATE", {"id": GUILD}, 3.0)
    assert registry.member(BOB) is not None


def test_ready_supplemental_scan(registry: StreamRegistry) -> None:
    data = {
        "guilds": [
            {"id": GUILD, "voice_states": [{"user_id": ALICE, "channel_id": CHANNEL, "self_stream": True}]},
            {"id": "999", "voice_states": [{"user_id": BOB, "channel_id": "1", "self_stream": True}]},
        ]
    }
    events = registry.handle_dispatch("READY_SUPPLEMENTAL", data, 1.0)
    assert names(events) == [
        "stream_discovery_existing_streamer_detected",
        "stream_discovery_go_live_bootstrap_seeded",
        "stream_discovery_ready_supplemental_scan_complete",
    ]
    assert events[0].log_fields()["source"] == "ready_supplemental_voice_states"
    assert [s.owner_id for s in registry.streams()] == [ALICE]


# --- our own Go Live --------------------------------------------------------------------------


def test_own_stream_of_appendix_c2_is_kept_apart(registry: StreamRegistry) -> None:
    created = registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ME, "700"), 1.0)
    assert fields(created, "stream_discovery_stream_created")["own"] is True
    creds = registry.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ME), 1.5)
    assert fields(creds, "stream_discovery_credentials_received")["own"] is True
    live = registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ME, stream=True), 2.0)
    assert names(live) == ["stream_discovery_user_go_live"]
    own = registry.own_stream
    assert own is not None
    assert own.has_credentials
    assert own.dave_group_id == 699
    assert registry.streams() == ()
    assert registry.primary_stream() is None
    with pytest.raises(WatchError) as info:
        registry.request_watch(StreamKey.parse(KEY_ME), 2.0)
    assert info.value.reason == "own_stream"
    paused = registry.handle_dispatch("STREAM_UPDATE", {"stream_key": KEY_ME, "paused": True}, 3.0)
    assert fields(paused, "stream_discovery_stream_updated")["own"] is True
    ended = registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(ME, stream=False), 4.0)
    assert fields(ended, "stream_discovery_user_go_live_ended")["reason"] == "self_stream_false"
    assert registry.own_stream is None


def test_own_stream_delete(registry: StreamRegistry) -> None:
    registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ME), 1.0)
    events = registry.handle_dispatch("STREAM_DELETE", stream_delete(KEY_ME, "user_requested"), 2.0)
    assert fields(events, "stream_discovery_stream_deleted")["own"] is True
    assert registry.own_stream is None


# --- watch requests and keepalive -------------------------------------------------------------


def test_request_watch_needs_a_stream_or_a_voice_state(registry: StreamRegistry) -> None:
    with pytest.raises(WatchError) as info:
        registry.request_watch(ALICE, 1.0)
    assert info.value.reason == "target_not_in_voice"
    registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(BOB), 1.0)
    request = registry.request_watch(BOB, 1.0)
    assert (str(request.stream_key), request.synthesized) == (KEY_BOB, True)
    assert request.event.log_fields() == {
        "stream_key": KEY_BOB,
        "user_id": BOB,
        "synthesized": True,
        "replaced_key": None,
    }


def test_several_watches_run_at_once_and_stop_one_by_one(registry: StreamRegistry) -> None:
    registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE), 1.0)
    registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_BOB), 1.0)
    first = registry.request_watch(ALICE, 2.0)
    assert not first.synthesized
    second = registry.request_watch(StreamKey.parse(KEY_BOB), 3.0)
    assert [(f.op, f.d["stream_key"]) for f in second.frames] == [(20, KEY_BOB)]  # alice's carries on
    assert second.watch_frame.op == 20
    assert registry.watch_requested_at == 3.0
    assert [str(k) for k in registry.watches.watched_keys()] == [KEY_ALICE, KEY_BOB]
    stop = registry.stop_watch()
    assert stop is not None
    assert (stop.op, stop.d) == (19, {"stream_key": KEY_BOB})
    assert registry.watching_key == StreamKey.parse(KEY_ALICE)
    stop = registry.stop_watch(StreamKey.parse(KEY_ALICE))
    assert stop is not None and stop.d == {"stream_key": KEY_ALICE}
    assert registry.watching_key is None
    assert registry.stop_watch() is None


def test_op21_as_a_health_check_only_while_the_leg_fails() -> None:
    registry = StreamRegistry(ME, guild_ids=[GUILD], ping_policy=StreamPingPolicy(only_when_failing=True))
    registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE), 0.0)
    key = registry.request_watch(ALICE, 10.0).stream_key
    registry.watch_leg_state(key, connected=True, healthy=True, now=11.0)
    assert registry.next_keepalive_at() is None
    assert registry.keepalive_due(10_000.0) == []
    registry.watch_leg_state(key, connected=True, healthy=False, now=10_001.0)
    [ping] = registry.keepalive_due(10_001.0)  # at once, then every interval while failing
    assert ping.op == 21
    assert registry.next_keepalive_at() == 10_001.0 + STREAM_PING_INTERVAL
    registry.watch_leg_state(key, connected=True, healthy=True, now=10_002.0)
    assert registry.keepalive_due(20_000.0) == []
    book = registry.watches.book(key)
    assert book is not None and book.pings_sent == 1


def test_registry_listeners_get_each_dispatch_s_events_once(registry: StreamRegistry) -> None:
    seen: list[str] = []
    unsubscribe = registry.subscribe(lambda events: seen.extend(e.name for e in events))
    registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE), 1.0)
    registry.handle_dispatch("TYPING_START", {}, 1.0)
    unsubscribe()
    registry.handle_dispatch("STREAM_DELETE", stream_delete(KEY_ALICE), 2.0)
    assert seen == ["stream_discovery_stream_created"]


def test_keepalive_pings_while_watching() -> None:
    registry = StreamRegistry(ME, guild_ids=[GUILD], ping_policy=StreamPingPolicy(only_when_failing=False))
    assert registry.keepalive_due(1000.0) == []
    registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE), 0.0)
    registry.request_watch(ALICE, 10.0)
    assert registry.next_keepalive_at() == 10.0 + STREAM_PING_INTERVAL
    assert registry.keepalive_due(10.0 + STREAM_PING_INTERVAL - 0.001) == []
    [ping] = registry.keepalive_due(10.0 + STREAM_PING_INTERVAL)
    assert (ping.op, ping.d) == (21, {"stream_key": KEY_ALICE})
    assert registry.keepalive_due(10.0 + STREAM_PING_INTERVAL + 1) == []
    assert len(registry.keepalive_due(10.0 + 2 * STREAM_PING_INTERVAL)) == 1
    registry.handle_dispatch("STREAM_DELETE", stream_delete(KEY_ALICE), 200.0)
    assert registry.next_keepalive_at() is None
    assert registry.keepalive_due(10_000.0) == []


# --- primary ranking --------------------------------------------------------------------------


def test_rank_rules_match_clanky() -> None:
    assert [(r.name, r.weight) for r in RANK_RULES] == [
        ("preferred_target", 100),
        ("active", 10),
        ("credentials_received", 5),
        ("discovered", 1),
    ]


# Each stream: (owner, discovered_at, created, credentials)
RANKING = [
    pytest.param([("444", 1.0, False, False), ("555", 2.0, False, False)], None, "555", id="newest-wins"),
    pytest.param([("555", 2.0, False, False), ("444", 2.0, False, False)], None, "444", id="tie-smaller-id"),
    pytest.param(
        [("444", 1.0, True, True), ("555", 9.0, False, False)], None, "444", id="active-beats-newer"
    ),
    pytest.param(
        [("444", 1.0, False, True), ("555", 9.0, False, False)], None, "444", id="credentials-beat-newer"
    ),
    pytest.param(
        [("444", 1.0, True, True), ("555", 9.0, False, False)], "555", "555", id="preferred-beats-active"
    ),
    pytest.param(
        [("444", 1.0, True, True), ("555", 9.0, True, True)], "nobody", "555", id="unknown-preference"
    ),
]


@pytest.mark.parametrize(("streams", "preferred", "expected"), RANKING)
def test_primary_stream_ranking(
    streams: list[tuple[str, float, bool, bool]], preferred: str | None, expected: str
) -> None:
    registry = StreamRegistry(ME, guild_ids=[GUILD])
    for owner, discovered_at, created, credentials in streams:
        key = f"guild:{GUILD}:{CHANNEL}:{owner}"
        registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(owner, stream=True), discovered_at)
        if created:
            registry.handle_dispatch("STREAM_CREATE", stream_create(key), discovered_at)
        if credentials:
            registry.handle_dispatch("STREAM_SERVER_UPDATE", server_update(key), discovered_at)
    primary = registry.primary_stream(preferred_owner_id=preferred if preferred is not None else "nobody")
    assert primary is not None
    assert primary.owner_id == expected


def test_primary_prefers_the_watched_then_the_most_recently_touched(registry: StreamRegistry) -> None:
    registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE), 1.0)
    registry.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ALICE), 1.0)
    registry.handle_dispatch("VOICE_STATE_UPDATE", voice_state(BOB, stream=True), 2.0)
    # clanky upserted with the touched user as preference: Bob's fresh signal becomes primary.
    primary = registry.primary_stream()
    assert primary is not None
    assert primary.owner_id == BOB
    registry.request_watch(ALICE, 3.0)
    assert registry.preferred_owner_id == ALICE
    primary = registry.primary_stream(preferred_owner_id=BOB)
    assert primary is not None
    assert primary.owner_id == ALICE


# --- secrets ----------------------------------------------------------------------------------


def test_no_token_in_events_or_reprs(registry: StreamRegistry) -> None:
    events = registry.handle_dispatch("STREAM_SERVER_UPDATE", server_update(KEY_ALICE), 1.0)
    events += registry.handle_dispatch("STREAM_CREATE", stream_create(KEY_ALICE), 1.0)
    events += registry.handle_dispatch("STREAM_DELETE", stream_delete(KEY_BOB), 1.0)
    stream = registry.stream_for_user(ALICE)
    assert stream is not None
    assert stream.token == TOKEN
    texts = [
        repr(stream),
        repr(registry.sharers()),
        *(repr(e) for e in events),
        *(str(e.log_fields()) for e in events),
    ]
    assert not [t for t in texts if TOKEN in t]
    assert all(e.name.startswith("stream_discovery_") for e in events)
