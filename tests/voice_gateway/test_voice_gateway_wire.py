"""Voice gateway wire format: frames, payload round trips, and garbage that fails only one way."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clank.errors import MalformedMessage
from clank.wire import voice_gateway as vg

KEY = bytes(range(32))

# One valid value per payload type; each must survive serialize -> JSON -> parse unchanged.
SAMPLES: list[Any] = [
    vg.Identify("111", "222", "333", "sess", "tok", True, (vg.SCREEN_STREAM,), 1),
    vg.Identify("111", None, "333", "sess", "tok"),
    vg.Resume("111", "222", "sess", "tok", 7),
    vg.Ready(
        12871,
        "127.0.0.1",
        1234,
        (vg.MODE_AES256_GCM, vg.MODE_XCHACHA20),
        ("fixed_keyframe_interval",),
        (vg.ReadyStream("video", "100", 12872, 12873, 100, False),),
    ),
    vg.SelectProtocol("udp", "203.0.113.5", 50123, vg.MODE_AES256_GCM, vg.codecs_for_role("voice"), ("x",)),
    vg.SessionDescription(vg.MODE_XCHACHA20, KEY, "opus", "H264", "89f1", 1, 60),
    vg.Hello(41250.0, 9),
    vg.Hello(13750.5),
    vg.Heartbeat(1_700_000_000_000, 5),
    vg.Heartbeat(1),
    vg.HeartbeatAck(42),
    vg.Speaking(1, 20, delay=0),
    vg.Speaking(2, 10, user_id="444"),
    vg.ClientsConnect(("444", "555")),
    vg.ClientDisconnect("444"),
    vg.Video(
        "444",
        10,
        11,
        12,
        (
            vg.VideoStream(
                11, 12, "video", "100", 100, True, 2_500_000, 30, vg.MaxResolution("fixed", 1280, 720)
            ),
        ),
    ),
    vg.Video(audio_ssrc=10, video_ssrc=0, rtx_ssrc=0, streams=()),
    vg.Video(user_id="444", video_ssrc=11),
    vg.SessionUpdate(codecs=(vg.OPUS_CODEC, vg.H264_ENCODE)),
    vg.SessionUpdate(video_codec="VP8", keyframe_interval=60),
    vg.ClientFlags("444", 2),
    vg.ClientPlatform("444", 1),
    vg.DavePrepareTransition(3, 0),
    vg.DaveExecuteTransition(3),
    vg.DaveTransitionReady(3),
    vg.DavePrepareEpoch(1, 1),
    vg.DavePrepareEpoch(1, 1, 4),
    vg.DaveInvalidCommitWelcome(3),
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_payload_round_trip(value: Any) -> None:
    frame = vg.TextFrame.parse(vg.text_frame(value, seq=4))
    assert frame.op == value.OP and frame.seq == 4
    assert type(value).parse(json.loads(json.dumps(frame.d))) == value


# The exact text frames the hand-written serializers produced before the converter (same order
# as SAMPLES): key order, omitted keys and number forms are part of what peers see.
GOLDEN: list[str] = [
    '{"op":0,"d":{"server_id":"111","channel_id":"222","user_id":"333","session_id":"sess","token":"tok","video":true,"streams":[{"type":"screen","rid":"100","quality":100}],"max_dave_protocol_version":1}}',
    '{"op":0,"d":{"server_id":"111","user_id":"333","session_id":"sess","token":"tok","max_dave_protocol_version":0}}',
    '{"op":7,"d":{"server_id":"111","channel_id":"222","session_id":"sess","token":"tok","seq_ack":7}}',
    '{"op":2,"d":{"ssrc":12871,"ip":"127.0.0.1","port":1234,"modes":["aead_aes256_gcm_rtpsize","aead_xchacha20_poly1305_rtpsize"],"experiments":["fixed_keyframe_interval"],"streams":[{"type":"video","rid":"100","ssrc":12872,"rtx_ssrc":12873,"quality":100,"active":false}]}}',
    '{"op":1,"d":{"protocol":"udp","data":{"address":"203.0.113.5","port":50123,"mode":"aead_aes256_gcm_rtpsize"},"codecs":[{"name":"opus","type":"audio","priority":1000,"payload_type":120},{"name":"H264","type":"video","priority":1000,"payload_type":103,"rtx_payload_type":104,"encode":false,"decode":true},{"name":"VP8","type":"video","priority":2000,"payload_type":105,"rtx_payload_type":106,"encode":false,"decode":true}],"experiments":["x"]}}',
    '{"op":4,"d":{"mode":"aead_xchacha20_poly1305_rtpsize","secret_key":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31],"audio_codec":"opus","video_codec":"H264","media_session_id":"89f1","dave_protocol_version":1,"keyframe_interval":60}}',
    '{"op":8,"d":{"v":9,"heartbeat_interval":41250}}',
    '{"op":8,"d":{"heartbeat_interval":13750.5}}',
    '{"op":3,"d":{"t":1700000000000,"seq_ack":5}}',
    '{"op":3,"d":{"t":1,"seq_ack":-1}}',
    '{"op":6,"d":{"t":42}}',
    '{"op":5,"d":{"speaking":1,"delay":0,"ssrc":20}}',
    '{"op":5,"d":{"speaking":2,"ssrc":10,"user_id":"444"}}',
    '{"op":11,"d":{"user_ids":["444","555"]}}',
    '{"op":13,"d":{"user_id":"444"}}',
    '{"op":12,"d":{"user_id":"444","audio_ssrc":10,"video_ssrc":11,"rtx_ssrc":12,"streams":[{"type":"video","rid":"100","ssrc":11,"rtx_ssrc":12,"active":true,"quality":100,"max_bitrate":2500000,"max_framerate":30,"max_resolution":{"type":"fixed","width":1280,"height":720}}]}}',
    '{"op":12,"d":{"audio_ssrc":10,"video_ssrc":0,"rtx_ssrc":0,"streams":[]}}',
    '{"op":12,"d":{"user_id":"444","video_ssrc":11}}',
    '{"op":14,"d":{"codecs":[{"name":"opus","type":"audio","priority":1000,"payload_type":120},{"name":"H264","type":"video","priority":1000,"payload_type":103,"rtx_payload_type":104,"encode":true,"decode":false}]}}',
    '{"op":14,"d":{"video_codec":"VP8","keyframe_interval":60}}',
    '{"op":18,"d":{"user_id":"444","flags":2}}',
    '{"op":20,"d":{"user_id":"444","platform":1}}',
    '{"op":21,"d":{"transition_id":3,"protocol_version":0}}',
    '{"op":22,"d":{"transition_id":3}}',
    '{"op":23,"d":{"transition_id":3}}',
    '{"op":24,"d":{"protocol_version":1,"epoch":1}}',
    '{"op":24,"d":{"protocol_version":1,"epoch":1,"transition_id":4}}',
    '{"op":31,"d":{"transition_id":3}}',
]


@pytest.mark.parametrize(
    ("value", "golden"), zip(SAMPLES, GOLDEN, strict=True), ids=lambda v: type(v).__name__
)
def test_payload_serializes_to_golden_bytes(value: Any, golden: str) -> None:
    assert vg.text_frame(value) == golden


def test_media_sink_wants_serializes_to_golden_bytes() -> None:
    wants = vg.MediaSinkWants(100, {12346: 100, 12347: 0}, {12346: 921600.0})
    assert vg.sink_wants_frame(wants, vg.SinkWantsFormat.NESTED) == (
        '{"op":15,"d":{"any":100,"12346":100,"12347":0,"streams":{"12346":100,"12347":0},"pixelCounts":{"12346":921600.0}}}'
    )
    assert vg.sink_wants_frame(wants, vg.SinkWantsFormat.FLAT) == (
        '{"op":15,"d":{"any":100,"12346":100,"12347":0,"pixelCounts":{"12346":921600.0}}}'
    )


def test_liberal_accept_rules() -> None:
    """Unknown keys, null-as-absent, integral floats, integer snowflakes, boolean speaking flags."""
    assert vg.Speaking.parse({"speaking": True, "ssrc": 7.0, "user_id": 444, "delay": None, "x": []}) == (
        vg.Speaking(1, 7, "444")
    )
    assert vg.Heartbeat.parse(None) == vg.Heartbeat(0)
    assert vg.DavePrepareEpoch.parse({"protocol_version": 1.0, "epoch": 2, "transition_id": None}) == (
        vg.DavePrepareEpoch(1, 2)
    )
    stream = vg.VideoStream.parse({"type": "", "active": None})
    assert stream == vg.VideoStream(0, rid=None, quality=None)  # absent rid/quality: None, not defaults
    ready = vg.ReadyStream.parse({"ssrc": 5, "rid": "", "type": None, "quality": 0})
    assert ready == vg.ReadyStream("video", "100", 5, 6, 100, False)
    assert vg.SessionDescription.parse({"mode": "m", "secret_key": list(KEY)}).audio_codec is None
    assert vg.ClientFlags.parse({"user_id": "1", "flags": None}) == vg.ClientFlags("1", 0)
    assert vg.Ready.parse({"ssrc": 1, "ip": "h", "port": 2}).modes == ()


@pytest.mark.parametrize(
    ("kind", "d", "reason"),
    [
        (vg.Speaking, {"speaking": 1, "ssrc": "x"}, "speaking.ssrc is missing or not an integer"),
        (vg.Speaking, {"speaking": 1}, "speaking.ssrc is missing"),
        (vg.Speaking, {"speaking": 1, "ssrc": 2, "user_id": ""}, "speaking.user_id is not a snowflake"),
        (vg.Heartbeat, {"t": 1, "seq_ack": "x"}, "heartbeat.seq_ack is not an integer"),
        (vg.DaveExecuteTransition, [], "dave_execute_transition payload is not an object"),
        (vg.Ready, {"ssrc": 1, "ip": "h", "port": 70000}, "ready.port out of range"),
        (vg.Ready, {"ssrc": 1, "ip": "h", "port": 1, "streams": [{}]}, "ready.stream.ssrc is missing"),
        (vg.Ready, {"ssrc": 1, "ip": "h", "port": 1, "modes": [1]}, "ready.modes holds a non-string"),
        (vg.SelectProtocol, {"protocol": "udp", "data": 1}, "select_protocol.data payload is not an object"),
        (vg.SelectProtocol, {"protocol": "udp", "data": {}}, "select_protocol.data.address is missing"),
        (vg.Hello, {"heartbeat_interval": 0}, "hello.heartbeat_interval out of range"),
        (vg.Video, {"streams": {}}, "video.streams is not a list"),
    ],
)
def test_errors_name_the_field(kind: Any, d: Any, reason: str) -> None:
    with pytest.raises(MalformedMessage) as info:
        kind.parse(d)
    assert info.value.reason.startswith(reason) and info.value.close_code == 4002


def test_reference_examples_parse() -> None:
    ready = vg.Ready.parse(
        {
            "ssrc": 1,
            "ip": "1.2.3.4",
            "port": 9,
            "modes": [],
            "heartbeat_interval": 1,
            "streams": [{"type": "video", "rid": "100", "ssrc": 7, "quality": 100, "active": False}],
        }
    )
    assert ready.streams[0].rtx_ssrc == 8  # missing rtx_ssrc defaults to ssrc + 1
    assert vg.Heartbeat.parse({"t": 5, "seq_ack": -1}) == vg.Heartbeat(5, None)
    assert vg.Heartbeat.parse(99) == vg.Heartbeat(99)
    assert vg.HeartbeatAck.parse(99) == vg.HeartbeatAck(99)
    identify = vg.Identify.parse(
        {"server_id": 111, "user_id": "333", "session_id": "s", "token": "t", "video": True, "streams": []}
    )
    assert (
        identify.server_id == "111"
        and identify.channel_id is None
        and identify.max_dave_protocol_version == 0
    )
    assert vg.Heartbeat(5).serialize() == {"t": 5, "seq_ack": -1}


def test_identify_serialization_matches_the_reference_shape() -> None:
    identify = vg.Identify("111", "222", "333", "s", "t", True, (vg.SCREEN_STREAM,), 1)
    assert identify.serialize() == {
        "server_id": "111",
        "channel_id": "222",
        "user_id": "333",
        "session_id": "s",
        "token": "t",
        "video": True,
        "streams": [{"type": "screen", "rid": "100", "quality": 100}],
        "max_dave_protocol_version": 1,
    }


def test_secrets_stay_out_of_reprs() -> None:
    assert "tok" not in repr(vg.Identify("1", "2", "3", "s", "tok-secret"))
    assert "tok-secret" not in repr(vg.Resume("1", "2", "s", "tok-secret"))
    desc = vg.SessionDescription(vg.MODE_AES256_GCM, KEY)
    assert "secret_key" not in repr(desc) and repr(KEY) not in repr(desc)


def test_media_sink_wants_both_formats() -> None:
    nested = {"any": 100, "streams": {"12346": 100, "12347": 0}, "pixelCounts": {"12346": 921600.0}}
    flat = {"12346": 100, "12347": 0, "any": 100, "pixelCounts": {"12346": 921600.0}}
    expected = vg.MediaSinkWants(100, {12346: 100, 12347: 0}, {12346: 921600.0})
    assert vg.MediaSinkWants.parse(nested) == expected == vg.MediaSinkWants.parse(flat)
    assert expected.serialize() == nested | flat  # flat keys beside the nested map
    assert expected.serialize(vg.SinkWantsFormat.FLAT) == flat
    assert vg.MediaSinkWants.parse({}) == vg.MediaSinkWants()
    assert vg.MediaSinkWants.parse({"any": 5, "future": "x"}) == vg.MediaSinkWants(any=5)
    with pytest.raises(TypeError):
        expected.streams[1] = 2  # type: ignore[index]


def test_codec_table_constants() -> None:
    voice = vg.codecs_for_role("voice")
    assert voice == vg.codecs_for_role("stream_watch")
    assert [(c.name, c.payload_type, c.rtx_payload_type, c.priority) for c in voice] == [
        ("opus", 120, None, 1000),
        ("H264", 103, 104, 1000),
        ("VP8", 105, 106, 2000),
    ]
    assert all(c.decode and not c.encode for c in voice if c.type == "video")
    publish = [c for c in vg.codecs_for_role("stream_publish") if c.type == "video"]
    assert publish == [vg.H264_ENCODE] and publish[0].encode and not publish[0].decode
    assert vg.pick_mode([vg.MODE_XCHACHA20, vg.MODE_AES256_GCM]) == vg.MODE_AES256_GCM
    assert vg.pick_mode([vg.MODE_XCHACHA20]) == vg.MODE_XCHACHA20
    assert vg.pick_mode(["xsalsa20_poly1305"]) is None


def test_opcode_table_names() -> None:
    assert vg.VoiceOp.CLIENT_FLAGS == 18 and vg.VoiceOp.NO_ROUTE == 32
    assert vg.VoiceOp.DAVE_MLS_INVALID_COMMIT_WELCOME == 31
    assert vg.DAVE_JSON_OPS.isdisjoint(vg.DAVE_BINARY_OPS)
    assert vg.SERVER_BINARY_OPS | vg.CLIENT_BINARY_OPS == vg.DAVE_BINARY_OPS


def test_binary_frames_reference_bytes() -> None:
    assert vg.ServerBinaryFrame.parse(b"\x00\x05\x19abc") == vg.ServerBinaryFrame(5, 25, b"abc")
    assert vg.ServerBinaryFrame(70_000, 29, b"x").serialize() == b"\x11\x70\x1dx"
    assert vg.ClientBinaryFrame.parse(b"\x1akp") == vg.ClientBinaryFrame(26, b"kp")
    assert vg.ClientBinaryFrame(28, b"c").serialize() == b"\x1cc"
    assert vg.TransitionPayload.parse(b"\x00\x03commit") == vg.TransitionPayload(3, b"commit")
    assert vg.TransitionPayload(3, b"w").serialize() == b"\x00\x03w"


def test_text_frame_omits_absent_seq() -> None:
    assert vg.TextFrame(9, None).serialize() == '{"op":9,"d":null}'
    assert vg.TextFrame.parse('{"op":9,"d":null}') == vg.TextFrame(9)


@pytest.mark.parametrize(
    "data",
    [
        vg.ServerBinaryFrame(5, 25, b"external-sender").serialize(),
        vg.ServerBinaryFrame(8, 30, vg.TransitionPayload(3, b"welcome").serialize()).serialize(),
    ],
)
def test_every_truncation_of_a_server_binary_frame(data: bytes) -> None:
    for cut in range(len(data) + 1):
        prefix = data[:cut]
        if cut < 3:
            with pytest.raises(MalformedMessage):
                vg.ServerBinaryFrame.parse(prefix)
        else:
            frame = vg.ServerBinaryFrame.parse(prefix)
            assert frame.payload == data[3:cut]
            try:
                vg.TransitionPayload.parse(frame.payload)
            except MalformedMessage:
                assert len(frame.payload) < 2


@given(st.binary(max_size=40))
def test_binary_parsers_raise_only_malformed_message(data: bytes) -> None:
    for parse in (vg.ServerBinaryFrame.parse, vg.ClientBinaryFrame.parse, vg.TransitionPayload.parse):
        try:
            value = parse(data)
        except MalformedMessage as exc:
            assert exc.close_code == 4002
        else:
            assert value.serialize() == data


@given(st.binary(max_size=40) | st.text(max_size=40))
def test_text_frame_parser_raises_only_malformed_message(data: bytes | str) -> None:
    try:
        vg.TextFrame.parse(data)
    except MalformedMessage as exc:
        assert exc.close_code == 4002


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
_KEYS = st.sampled_from(
    [
        "ssrc",
        "ip",
        "port",
        "modes",
        "streams",
        "user_id",
        "user_ids",
        "speaking",
        "t",
        "seq_ack",
        "secret_key",
        "mode",
        "data",
        "codecs",
        "any",
        "pixelCounts",
        "transition_id",
        "protocol_version",
        "epoch",
        "heartbeat_interval",
        "server_id",
        "session_id",
        "token",
        "video_ssrc",
        "max_resolution",
        "123",
    ]
)
_PAYLOADS = _JSON | st.dictionaries(_KEYS, _JSON, max_size=6)
_TYPES = sorted({type(v) for v in SAMPLES} | {vg.MediaSinkWants}, key=lambda t: t.__name__)


@given(d=_PAYLOADS)
def test_payload_parsers_raise_only_malformed_message(d: Any) -> None:
    # Generation dominates the cost, so every parser sees every generated payload.
    for kind in _TYPES:
        try:
            kind.parse(d)
        except MalformedMessage as exc:
            assert exc.close_code == 4002


@given(data=st.data())
def test_mutated_valid_payloads_raise_only_malformed_message(data: st.DataObject) -> None:
    """Replace or delete one field somewhere inside a valid payload (nested streams included)."""
    value = data.draw(st.sampled_from(SAMPLES))
    d = json.loads(json.dumps(value.serialize()))
    container: Any = d
    while True:
        keys: list[Any] = sorted(container) if isinstance(container, dict) else list(range(len(container)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        child = container[key]
        if isinstance(child, dict | list) and child and data.draw(st.booleans()):
            container = child
            continue
        if isinstance(container, dict) and data.draw(st.booleans()):
            del container[key]
        else:
            container[key] = data.draw(_JSON)
        break
    try:
        type(value).parse(d)
    except MalformedMessage as exc:
        assert exc.close_code == 4002
