"""Client core on its own: deadlines, close classification, op12 merging, malformed input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from voice_gateway_pair import KEY, client_config

from clank.errors import HandshakeTimeout, MalformedMessage, UsageError
from clank.protocol import voice_gateway as client
from clank.wire import voice_gateway as vg

HELLO = '{"op":8,"d":{"v":9,"heartbeat_interval":41250}}'
READY = json.dumps(
    {
        "op": 2,
        "d": {"ssrc": 20, "ip": "127.0.0.1", "port": 7004, "modes": [vg.MODE_AES256_GCM], "streams": []},
        "seq": 1,
    }
)
SESSION = json.dumps(
    {
        "op": 4,
        "d": {"mode": vg.MODE_AES256_GCM, "secret_key": list(KEY), "dave_protocol_version": 1},
        "seq": 2,
    }
)


def text(op: int, d: Any, seq: int | None = None) -> str:
    return vg.TextFrame(op=op, d=d, seq=seq).serialize()


def connected_core(**overrides: Any) -> client.VoiceGatewayCore:
    core = client.VoiceGatewayCore(client_config(**overrides))
    core.connection_opened(0.0)
    core.receive_text(HELLO, 0.0)
    core.receive_text(READY, 0.0)
    core.ip_discovered("203.0.113.5", 50123, 0.0)
    events = core.receive_text(SESSION, 0.0)
    assert isinstance(events[0], client.SessionEstablished)
    return core


def test_url_helper_uses_v9_and_the_configured_scheme() -> None:
    assert client.voice_gateway_url("c-lhr1.discord.media:443") == "wss://c-lhr1.discord.media:443/?v=9"
    assert client.voice_gateway_url("127.0.0.1:7003", "ws") == "ws://127.0.0.1:7003/?v=9"
    assert client.voice_gateway_url("wss://x.example/", "ws", version=8) == "ws://x.example/?v=8"


# (phase reached by these steps, seconds until it times out)
_STEPS: list[tuple[client.Phase, list[str], bool, float]] = [
    (client.Phase.HELLO_WAIT, [], False, 10.0),
    (client.Phase.READY_WAIT, [HELLO], False, 10.0),
    (client.Phase.DISCOVERY, [HELLO, READY], False, 5.0),
    (client.Phase.SESSION_WAIT, [HELLO, READY], True, 10.0),
]


@pytest.mark.parametrize(("phase", "frames", "discover", "timeout"), _STEPS, ids=lambda v: str(v)[:20])
def test_each_handshake_step_has_a_deadline(
    phase: client.Phase, frames: list[str], discover: bool, timeout: float
) -> None:
    core = client.VoiceGatewayCore(client_config(heartbeat_cap=60.0))
    core.connection_opened(0.0)
    for frame in frames:
        core.receive_text(frame, 1.0)
    if discover:
        core.ip_discovered("10.0.0.1", 1, 1.0)
    assert core.phase is phase
    start = 0.0 if not frames else 1.0
    assert core.next_deadline() == start + timeout
    assert core.tick(start + timeout - 0.001) == []
    (failed,) = core.tick(start + timeout)
    assert isinstance(failed, client.Failed) and isinstance(failed.error, HandshakeTimeout)
    assert failed.action is client.CloseAction.RECONNECT
    assert core.phase is client.Phase.IDLE


def test_close_classification_defaults() -> None:
    assert client.classify_close(None).action is client.CloseAction.RESUME
    assert client.classify_close(1001).action is client.CloseAction.RESUME
    assert client.classify_close(1000).action is client.CloseAction.STOP
    assert client.classify_close(4999).action is client.CloseAction.NEW_SESSION
    for code in (1006, 4015, 4013):
        assert client.classify_close(code).action is client.CloseAction.RESUME
    for code in (4004, 4006):
        assert client.classify_close(code).action is client.CloseAction.NEW_SESSION
    assert client.classify_close(4009).action is client.CloseAction.RECONNECT  # "fresh connect"
    for code in (4014, 4021, 4022):
        assert client.classify_close(code).action is client.CloseAction.STOP
    for code in (4016, 4017):
        assert client.classify_close(code).action is client.CloseAction.ERROR


def test_connection_lost_is_idempotent_and_close_is_terminal() -> None:
    core = connected_core()
    (closed,) = core.connection_lost(4014, "kicked", 1.0)
    assert isinstance(closed, client.Closed) and closed.action is client.CloseAction.STOP
    assert core.connection_lost(1006, "", 1.0) == []
    with pytest.raises(UsageError):
        core.connection_opened(2.0)
    other = connected_core()
    other.close()
    assert other.connection_lost(1000, "", 1.0) == []
    assert other.next_deadline() is None


# op12 partial updates: each row applies one op12 after the previous rows and checks the map.
_V = vg.VideoStream
_MERGE_ROWS: list[tuple[str, vg.Video, dict[int, tuple[str, str | None]]]] = [
    (
        "full",
        vg.Video("444", 10, 11, 12, (_V(11, 12, rid="100"), _V(13, 14, rid="50"))),
        {
            10: ("audio", None),
            11: ("video", "100"),
            12: ("rtx", "100"),
            13: ("video", "50"),
            14: ("rtx", "50"),
        },
    ),
    (
        "streams absent, video kept: bindings preserved",
        vg.Video("444", None, 11, None, None),
        {
            10: ("audio", None),
            11: ("video", "100"),
            12: ("rtx", "100"),
            13: ("video", "50"),
            14: ("rtx", "50"),
        },
    ),
    (
        "new layer list replaces the old one",
        vg.Video("444", None, 21, 22, (_V(21, 22, rid="100"),)),
        {10: ("audio", None), 21: ("video", "100"), 22: ("rtx", "100")},
    ),
    ("video 0, streams absent: cleared", vg.Video("444", 10, 0, 0, None), {10: ("audio", None)}),
    (
        "legacy: video ssrc without streams",
        vg.Video("444", None, 31, 32, ()),
        {10: ("audio", None), 31: ("video", None), 32: ("rtx", None)},
    ),
    ("video 0, empty streams: cleared", vg.Video("444", None, 0, 0, ()), {10: ("audio", None)}),
]


def test_op12_partial_updates_merge_row_by_row() -> None:
    core = connected_core()
    for name, video, expected in _MERGE_ROWS:
        events = core.receive_text(text(12, video.serialize(), 9), 1.0)
        assert len(events) == 1 and isinstance(events[0], client.VideoState), name
        got = {ssrc: (b.kind, b.rid) for ssrc, b in core.ssrc_map().items()}
        assert got == expected, name
        assert all(b.user_id == "444" for b in core.ssrc_map().values())


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[1,2]",
        '{"d":{}}',
        '{"op":"5"}',
        '{"op":4,"d":{"mode":"m","secret_key":[1,2]}}',  # a handshake op stays strict
        '{"op":1,"seq":"7"}',
    ],
)
def test_malformed_frames_become_failed_events(frame: str) -> None:
    core = connected_core()
    events = core.receive_text(frame, 1.0)
    assert len(events) == 1 and isinstance(events[0], client.Failed), events
    assert isinstance(events[0].error, MalformedMessage)
    assert events[0].close_code == 4002
    assert core.phase is client.Phase.IDLE


@pytest.mark.parametrize(
    "frame",
    [
        '{"op":5,"d":{"speaking":1},"seq":3}',
        '{"op":5,"d":{"speaking":1,"ssrc":"x","user_id":"4"}}',
        '{"op":12,"d":{"user_id":"4","streams":{}}}',
        '{"op":15,"d":{"streams":{"abc":1}}}',
        '{"op":15,"d":{"123":"high"}}',
        '{"op":21,"d":{"transition_id":1}}',
        '{"op":6,"d":{"t":"x"}}',
        '{"op":5,"d":null}',
        '{"op":18,"d":{"streams":[]}}',
    ],
)
def test_after_the_handshake_malformed_messages_are_dropped_and_counted(frame: str) -> None:
    """Be liberal once connected: the replaced system treats every field as optional; Discord's
    shapes drift (op18 with video state, floats, streams without ssrc)."""
    core = connected_core()
    events = core.receive_text(frame, 1.0)
    assert len(events) == 1 and isinstance(events[0], client.MalformedDropped), events
    assert core.phase is client.Phase.CONNECTED
    op = json.loads(frame)["op"]
    assert core.statistics().malformed == {op: 1}


def test_integral_floats_and_streams_without_ssrc_are_accepted() -> None:
    core = connected_core()
    video = (
        '{"op":12,"d":{"user_id":"4","audio_ssrc":7.0,"video_ssrc":8,"streams":['
        '{"ssrc":8.0,"rtx_ssrc":9,"max_framerate":30.0,"active":true},{"rid":"50","active":false}]}}'
    )
    (state,) = core.receive_text(video, 1.0)
    assert isinstance(state, client.VideoState)
    assert state.audio_ssrc == 7 and [s.ssrc for s in state.streams] == [8]
    assert state.streams[0].max_framerate == 30


def test_malformed_handshake_payloads_fail_before_the_session() -> None:
    core = client.VoiceGatewayCore(client_config())
    core.connection_opened(0.0)
    (failed,) = core.receive_text('{"op":8,"d":{"heartbeat_interval":-1}}', 0.0)
    assert isinstance(failed, client.Failed) and isinstance(failed.error, MalformedMessage)
    core.connection_opened(1.0)
    core.receive_text(HELLO, 1.0)
    (failed,) = core.receive_text('{"op":2,"d":{"ip":"1.2.3.4","port":1,"modes":[]}}', 1.0)
    assert isinstance(failed, client.Failed)


def test_a_malformed_buffered_message_is_dropped_at_replay() -> None:
    core = client.VoiceGatewayCore(client_config())
    core.connection_opened(0.0)
    core.receive_text(HELLO, 0.0)
    core.receive_text(READY, 0.0)
    assert core.receive_text('{"op":11,"d":{"user_ids":"nope"},"seq":2}', 0.0) == []
    core.ip_discovered("1.1.1.1", 1, 0.0)
    events = core.receive_text(SESSION.replace('"seq": 2', '"seq": 3'), 0.0)
    assert isinstance(events[0], client.SessionEstablished)
    assert isinstance(events[-1], client.MalformedDropped) and events[-1].op == 11
    assert core.phase is client.Phase.CONNECTED


def test_server_choosing_a_mode_we_do_not_support_is_an_error() -> None:
    core = client.VoiceGatewayCore(client_config())
    core.connection_opened(0.0)
    core.receive_text(HELLO, 0.0)
    core.receive_text(READY.replace(vg.MODE_AES256_GCM, "xsalsa20_poly1305"), 0.0)
    (failed,) = core.ip_discovered("1.1.1.1", 1, 0.0)
    assert isinstance(failed, client.Failed) and failed.action is client.CloseAction.ERROR


def test_short_binary_frame_fails_and_unknown_ops_are_counted() -> None:
    core = connected_core()
    assert core.receive_text('{"op":16,"d":{"voice":"1"}}', 1.0) == []
    assert core.receive_binary(b"\x00\x09\x1a", 1.0) == []  # op26 is client -> server only
    assert core.statistics().unknown_ops == 2
    (failed,) = core.receive_binary(b"\x00\x01", 1.0)
    assert isinstance(failed, client.Failed) and isinstance(failed.error, MalformedMessage)


def test_binary_seq_is_unwrapped_against_large_text_seqs() -> None:
    core = connected_core()
    core.receive_text(text(11, {"user_ids": []}, 70_000), 1.0)
    core.receive_binary(vg.ServerBinaryFrame(70_001, 25, b"").serialize(), 1.0)
    assert core.statistics().last_seq == 70_001


def test_repr_hides_the_token_and_key() -> None:
    core = connected_core()
    assert "tok-voice-333" not in repr(core.config)
    session = core.session
    assert session is not None and str(KEY[5:9]) not in repr(session) and "secret_key" not in repr(session)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(op=st.integers(0, 40), d=_JSON, seq=st.none() | st.integers(0, 2**20))
def test_a_connected_core_never_raises_on_any_frame(op: int, d: Any, seq: int | None) -> None:
    core = connected_core()
    events = core.receive_text(json.dumps({"op": op, "d": d, "seq": seq}), 5.0)
    for event in events:
        if isinstance(event, client.Failed):
            assert isinstance(event.error, MalformedMessage)


@given(data=st.binary(max_size=64))
def test_handshaking_core_never_raises_on_any_binary(data: bytes) -> None:
    core = client.VoiceGatewayCore(client_config())
    core.connection_opened(0.0)
    core.receive_text(HELLO, 0.0)
    early = core.receive_binary(data, 0.0)
    if len(data) < 3:
        assert len(early) == 1 and isinstance(early[0], client.Failed)
        assert isinstance(early[0].error, MalformedMessage)
        return
    assert early == []
    core.receive_text(READY, 0.0)
    core.ip_discovered("1.1.1.1", 1, 0.0)
    events = core.receive_text(SESSION, 0.0)
    if data[2] in vg.SERVER_BINARY_OPS:
        assert events[-1] == client.DaveBinary(data[2], data[3:])
