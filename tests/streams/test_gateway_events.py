"""Typed gateway dispatch payloads (clank.wire.gateway_events): examples, error tables, fuzzing."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clank.errors import MalformedMessage
from clank.wire.gateway import Op
from clank.wire.gateway_events import (
    STREAM_KEY_KIND,
    GuildVoiceStates,
    ReadySupplemental,
    StreamCreate,
    StreamDelete,
    StreamKey,
    StreamServerUpdate,
    StreamUpdate,
    VoiceServerUpdate,
    VoiceState,
    dave_group_id_for_stream,
    dave_group_id_for_voice,
    stream_create_frame,
    stream_delete_frame,
    stream_ping_frame,
    stream_set_paused_frame,
    stream_watch_frame,
)

# --- voice states -----------------------------------------------------------------------------

DOC_VOICE_STATE = {
    "guild_id": "111",
    "channel_id": "222",
    "user_id": "333",
    "session_id": "90326bd25d71d39b9ef95b299e3872ff",
    "deaf": False,
    "mute": False,
    "self_deaf": False,
    "self_mute": True,
    "self_video": False,
    "self_stream": True,
    "suppress": False,
    "request_to_speak_timestamp": None,
    "member": {"nick": "x"},
}


def test_voice_state_parses_the_documented_example() -> None:
    vs = VoiceState.parse(DOC_VOICE_STATE)
    assert vs == VoiceState(
        guild_id="111",
        channel_id="222",
        user_id="333",
        session_id="90326bd25d71d39b9ef95b299e3872ff",
        self_mute=True,
        self_stream=True,
    )


def test_voice_state_partial_entries_take_the_guild_from_the_caller() -> None:
    vs = VoiceState.parse({"user_id": 444, "channel_id": "222", "self_video": True}, guild_id="111")
    assert (vs.guild_id, vs.user_id, vs.self_video, vs.self_stream, vs.session_id) == (
        "111",
        "444",
        True,
        False,
        None,
    )


def test_voice_state_channel_null_means_left() -> None:
    assert VoiceState.parse({**DOC_VOICE_STATE, "channel_id": None}).channel_id is None


@pytest.mark.parametrize(
    "patch",
    [
        {"user_id": None},
        {"user_id": "abc"},
        {"user_id": True},
        {"user_id": "1" * 21},
        {"user_id": -1},
        {"channel_id": 1.5},
        {"guild_id": ["111"]},
        {"self_stream": "true"},
        {"self_video": 1},
        {"session_id": 5},
    ],
)
def test_voice_state_rejects_wrong_types(patch: dict[str, object]) -> None:
    with pytest.raises(MalformedMessage):
        VoiceState.parse({**DOC_VOICE_STATE, **patch})


def test_voice_server_update_hides_the_token() -> None:
    vsu = VoiceServerUpdate.parse(
        {"token": "66d29164ee8cd919", "guild_id": "111", "endpoint": "smart.loyal.discord.media:1337"}
    )
    assert vsu.endpoint == "smart.loyal.discord.media:1337"
    assert vsu.token == "66d29164ee8cd919"
    assert "66d29164ee8cd919" not in repr(vsu)


def test_voice_server_update_reallocation_and_missing_token() -> None:
    assert (
        VoiceServerUpdate.parse(
            {"token": "t", "guild_id": None, "channel_id": "9", "endpoint": None}
        ).endpoint
        is None
    )
    with pytest.raises(MalformedMessage):
        VoiceServerUpdate.parse({"guild_id": "111", "endpoint": "x"})


# --- stream keys ------------------------------------------------------------------------------

VALID_KEYS = [
    ("guild:111:222:444", StreamKey(kind="guild", guild_id="111", channel_id="222", owner_id="444")),
    ("call:222:444", StreamKey(kind="call", guild_id=None, channel_id="222", owner_id="444")),
    (
        "guild:18446744073709551615:1:2",
        StreamKey(kind="guild", guild_id="18446744073709551615", channel_id="1", owner_id="2"),
    ),
]

INVALID_KEYS = [
    "",
    "test:444",
    "guild:111:222",
    "guild:111:222:444:5",
    "guild:111::444",
    "guild:a:222:444",
    "GUILD:111:222:444",
    "call:222",
    "call:222:444:1",
    "guild:111:222:444 ",
    "guild:111:222:\uff11\uff12",  # full-width digits are not snowflakes
    "guild:111:222:123456789012345678901",
    "nonsense",
]


@pytest.mark.parametrize(("text", "expected"), VALID_KEYS)
def test_stream_key_round_trips(text: str, expected: StreamKey) -> None:
    key = StreamKey.parse(text)
    assert key == expected
    assert str(key) == key.serialize() == text


@pytest.mark.parametrize("text", INVALID_KEYS)
def test_stream_key_rejects_everything_else(text: str) -> None:
    with pytest.raises(MalformedMessage) as info:
        StreamKey.parse(text)
    assert info.value.kind == STREAM_KEY_KIND


def test_stream_key_synthesis() -> None:
    assert str(StreamKey.for_guild("111", "222", "444")) == "guild:111:222:444"
    assert str(StreamKey.for_call("222", "444")) == "call:222:444"
    assert StreamKey.for_voice_channel(None, "222", "444").kind == "call"
    assert StreamKey.for_voice_channel("111", "222", "444") == StreamKey.for_guild("111", "222", "444")
    with pytest.raises(MalformedMessage):
        StreamKey.for_guild("111", "2:22", "444")


def test_dave_group_ids() -> None:
    assert dave_group_id_for_stream("1278201813102755892") == 1278201813102755891
    assert dave_group_id_for_voice("222") == 222
    for bad in ("0", "", "x1", "-5"):
        with pytest.raises(MalformedMessage):
            dave_group_id_for_stream(bad)
    with pytest.raises(MalformedMessage):
        dave_group_id_for_voice("abc")


# --- Go Live dispatches -----------------------------------------------------------------------


def test_stream_create_parses_the_documented_example() -> None:
    sc = StreamCreate.parse(
        {
            "stream_key": "guild:111:222:444",
            "rtc_server_id": "1278201813102755892",
            "rtc_channel_id": "1278201813102755893",
            "region": "us-east",
            "viewer_ids": ["333"],
            "paused": False,
            "unknown_field": {"tolerated": True},
        }
    )
    assert sc == StreamCreate(
        stream_key=StreamKey.for_guild("111", "222", "444"),
        rtc_server_id="1278201813102755892",
        rtc_channel_id="1278201813102755893",
        region="us-east",
        viewer_ids=("333",),
        paused=False,
    )


def test_stream_create_minimal_and_bad_key() -> None:
    sc = StreamCreate.parse({"stream_key": "call:222:444"})
    assert (sc.rtc_server_id, sc.rtc_channel_id, sc.region, sc.viewer_ids, sc.paused) == (
        None,
        None,
        None,
        (),
        False,
    )
    for bad in ({}, {"stream_key": 5}, {"stream_key": "test:444"}):
        with pytest.raises(MalformedMessage) as info:
            StreamCreate.parse(bad)
        assert info.value.kind == STREAM_KEY_KIND
    with pytest.raises(MalformedMessage) as info:
        StreamCreate.parse({"stream_key": "guild:1:2:3", "viewer_ids": "333"})
    assert info.value.kind != STREAM_KEY_KIND


def test_stream_server_update_hides_the_token_and_reads_reallocation() -> None:
    ssu = StreamServerUpdate.parse(
        {
            "token": "91f8016f34a5cd17",
            "stream_key": "guild:111:222:444",
            "guild_id": None,
            "endpoint": "e.d:1",
        }
    )
    assert (ssu.endpoint, ssu.token, ssu.guild_id) == ("e.d:1", "91f8016f34a5cd17", None)
    assert "91f8016f34a5cd17" not in repr(ssu)
    realloc = StreamServerUpdate.parse({"stream_key": "guild:111:222:444", "endpoint": None, "token": None})
    assert realloc.endpoint is None
    assert realloc.token is None


def test_stream_update_marks_absent_fields_as_unchanged() -> None:
    assert StreamUpdate.parse({"stream_key": "guild:1:2:3"}) == StreamUpdate(
        stream_key=StreamKey.parse("guild:1:2:3")
    )
    su = StreamUpdate.parse({"stream_key": "guild:1:2:3", "viewer_ids": [], "paused": True})
    assert (su.viewer_ids, su.paused) == ((), True)


def test_stream_delete() -> None:
    sd = StreamDelete.parse(
        {"stream_key": "guild:111:222:444", "reason": "stream_ended", "unavailable": False}
    )
    assert sd == StreamDelete(stream_key=StreamKey.parse("guild:111:222:444"), reason="stream_ended")
    with pytest.raises(MalformedMessage):
        StreamDelete.parse({"stream_key": "guild:111:222:444", "unavailable": "no"})


def test_dispatch_values_round_trip_through_their_converter() -> None:
    """The family's converter writes what it reads (stream keys as text, tuples as lists)."""
    key = StreamKey.parse("guild:111:222:444")
    values: list[
        VoiceState | VoiceServerUpdate | StreamCreate | StreamServerUpdate | StreamUpdate | StreamDelete
    ] = [
        VoiceState.parse(DOC_VOICE_STATE),
        VoiceServerUpdate("tok", "111", None, "voice.example:443"),
        StreamCreate(key, "555", "666", "us-east", ("1", "2"), paused=True),
        StreamServerUpdate(key, "stream.example:443", "tok", "111"),
        StreamUpdate(key, viewer_ids=(), paused=False),
        StreamDelete(key, "stream_ended", unavailable=True),
    ]
    for value in values:
        d = value.serialize()
        assert json.loads(json.dumps(d)) == d
        assert type(value).parse(d) == value
    assert values[2].serialize()["stream_key"] == "guild:111:222:444"


def test_guild_voice_states_fill_the_guild_and_skip_bad_entries() -> None:
    gvs = GuildVoiceStates.parse(
        {
            "id": "111",
            "name": "g",
            "voice_states": [
                {"user_id": "444", "channel_id": "222", "self_stream": True},
                {"user_id": "nope"},
                "garbage",
                {"user_id": "555", "channel_id": "222", "self_video": True},
            ],
        }
    )
    assert [(v.guild_id, v.user_id) for v in gvs.voice_states] == [("111", "444"), ("111", "555")]
    assert gvs.invalid_voice_states == 2
    assert gvs.complete
    assert not GuildVoiceStates.parse({"id": "111"}).complete
    with pytest.raises(MalformedMessage):
        GuildVoiceStates.parse({"id": "111", "voice_states": {}})
    with pytest.raises(MalformedMessage):
        GuildVoiceStates.parse({"voice_states": []})


def test_ready_supplemental_voice_states() -> None:
    rs = ReadySupplemental.parse(
        {
            "guilds": [
                {"id": "111", "voice_states": [{"user_id": "444", "channel_id": "222", "self_stream": True}]},
                {"voice_states": []},
                {"id": "112", "embedded_activities": []},
            ],
            "merged_members": [],
        }
    )
    assert [g.guild_id for g in rs.guilds] == ["111", "112"]
    assert rs.invalid_guilds == 1
    assert rs.guilds[0].voice_states[0].guild_id == "111"
    assert ReadySupplemental.parse({}) == ReadySupplemental()


def test_outgoing_go_live_frames() -> None:
    key = StreamKey.for_guild("111", "222", "444")
    assert stream_create_frame("111", "222").op == Op.STREAM_CREATE
    assert int(Op.STREAM_CREATE) == 18
    assert stream_create_frame("111", "222").d == {
        "type": "guild",
        "guild_id": "111",
        "channel_id": "222",
        "preferred_region": None,
    }
    assert stream_create_frame(None, "222", "us-east").d["type"] == "call"
    assert (stream_delete_frame(key).op, stream_delete_frame(key).d) == (
        19,
        {"stream_key": "guild:111:222:444"},
    )
    assert (stream_watch_frame(key).op, stream_watch_frame(key).d) == (
        20,
        {"stream_key": "guild:111:222:444"},
    )
    assert (stream_ping_frame(key).op, stream_ping_frame(key).d) == (21, {"stream_key": "guild:111:222:444"})
    assert stream_set_paused_frame(key, True).op == 22
    assert stream_set_paused_frame(key, True).d == {"stream_key": "guild:111:222:444", "paused": True}
    assert '"op":20' in stream_watch_frame(key).serialize()


# --- fuzzing: only MalformedMessage may escape ------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=8,
)

FIELD_NAMES = [
    "guild_id",
    "channel_id",
    "user_id",
    "session_id",
    "self_stream",
    "self_video",
    "self_mute",
    "token",
    "endpoint",
    "stream_key",
    "rtc_server_id",
    "rtc_channel_id",
    "region",
    "viewer_ids",
    "paused",
    "reason",
    "unavailable",
    "id",
    "voice_states",
    "guilds",
]
key_like = st.sampled_from(["guild:1:2:3", "call:2:3", "test:3", "guild:1:2", ""]) | st.text(max_size=20)
field_values = json_values | key_like | st.lists(json_values | key_like, max_size=3)
shaped_payloads = st.dictionaries(st.sampled_from(FIELD_NAMES), field_values, max_size=8)
flat_payloads = st.dictionaries(st.sampled_from(FIELD_NAMES), json_scalars | key_like, max_size=6)

PARSERS: list[Callable[[object], object]] = [
    VoiceState.parse,
    VoiceServerUpdate.parse,
    StreamCreate.parse,
    StreamServerUpdate.parse,
    StreamUpdate.parse,
    StreamDelete.parse,
    GuildVoiceStates.parse,
    ReadySupplemental.parse,
]


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.__qualname__)
@given(data=json_values | shaped_payloads)
def test_parsers_raise_only_malformed_message(parser: Callable[[object], object], data: object) -> None:
    try:
        parser(data)
    except MalformedMessage:
        pass


@given(
    guilds=st.lists(
        st.fixed_dictionaries(
            {"id": st.sampled_from(["1", "2", 3, "x"]), "voice_states": st.lists(flat_payloads, max_size=3)}
        ),
        max_size=3,
    )
)
def test_ready_supplemental_survives_nested_garbage(guilds: list[dict[str, object]]) -> None:
    try:
        parsed = ReadySupplemental.parse({"guilds": guilds})
    except MalformedMessage:
        return
    assert len(parsed.guilds) + parsed.invalid_guilds == len(guilds)


@given(text=st.text(max_size=60) | st.sampled_from(INVALID_KEYS))
def test_stream_key_parse_raises_only_malformed_message(text: str) -> None:
    try:
        key = StreamKey.parse(text)
    except MalformedMessage:
        return
    assert str(key) == text


snowflakes = st.integers(min_value=0, max_value=2**64 - 1).map(str)


@given(kind=st.sampled_from(["guild", "call"]), guild=snowflakes, channel=snowflakes, owner=snowflakes)
def test_stream_key_round_trips_for_any_snowflakes(kind: str, guild: str, channel: str, owner: str) -> None:
    key = (
        StreamKey.for_guild(guild, channel, owner) if kind == "guild" else StreamKey.for_call(channel, owner)
    )
    assert StreamKey.parse(str(key)) == key
    assert (key.channel_id, key.owner_id) == (channel, owner)
