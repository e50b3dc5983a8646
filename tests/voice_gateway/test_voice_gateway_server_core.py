"""Sandbox voice server core on its own: validation close codes, seq numbering, replay, timeouts."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from voice_gateway_pair import KEY, SERVER_ID, SESSION_ID, TOKEN, USER_ID, validate_identify

from clank.errors import SandboxError
from clank.sandbox import voice_gateway_core as server
from clank.wire import voice_gateway as vg

IDENTIFY = vg.Identify(
    server_id=SERVER_ID,
    channel_id="222",
    user_id=USER_ID,
    session_id=SESSION_ID,
    token=TOKEN,
    video=True,
    streams=(vg.SCREEN_STREAM,),
    max_dave_protocol_version=1,
)
SELECT = vg.SelectProtocol("udp", "127.0.0.1", 5000, vg.MODE_AES256_GCM, vg.codecs_for_role("stream_watch"))


def make_core(
    config: server.VoiceServerConfig | None = None, sessions: Any = None
) -> server.VoiceServerConnectionCore:
    ssrcs = itertools.count(20)
    known: dict[str, server.VoiceServerSession] = sessions if sessions is not None else {}
    return server.VoiceServerConnectionCore(
        config or server.VoiceServerConfig(),
        validate_identify=validate_identify,
        find_session=lambda resume: known.get(resume.session_id),
        allocate_ssrc=lambda: next(ssrcs),
        new_key=lambda: KEY,
        new_media_session_id=lambda: "abc",
    )


def frames(events: list[server.ServerEvent]) -> list[dict[str, Any]]:
    return [json.loads(e.text) for e in events if isinstance(e, server.SendText)]


def closes(events: list[server.ServerEvent]) -> list[int]:
    return [e.code for e in events if isinstance(e, server.CloseConnection)]


def described_core(config: server.VoiceServerConfig | None = None) -> server.VoiceServerConnectionCore:
    core = make_core(config)
    core.connection_opened(0.0)
    core.receive_text(vg.text_frame(IDENTIFY), 0.0)
    core.receive_text(vg.text_frame(SELECT), 0.0)
    assert core.state is server.ConnectionState.SESSION
    return core


def test_hello_then_ready_then_session_description_with_shared_seq() -> None:
    core = make_core()
    (hello,) = frames(core.connection_opened(0.0))
    assert hello == {"op": 8, "d": {"v": 9, "heartbeat_interval": 41250}}
    events = core.receive_text(vg.text_frame(IDENTIFY), 0.0)
    (ready,) = frames(events)
    assert ready["seq"] == 1 and ready["d"]["ssrc"] == 20
    assert ready["d"]["streams"] == [
        {"type": "video", "rid": "100", "ssrc": 21, "rtx_ssrc": 22, "quality": 100, "active": False}
    ]
    (desc,) = frames(core.receive_text(vg.text_frame(SELECT), 0.0))
    assert desc["seq"] == 2 and bytes(desc["d"]["secret_key"]) == KEY
    assert desc["d"]["dave_protocol_version"] == 1 and desc["d"]["media_session_id"] == "abc"
    (binary,) = core.send_dave_binary(vg.VoiceOp.DAVE_MLS_EXTERNAL_SENDER, b"es")
    assert isinstance(binary, server.SendBinary) and binary.data == b"\x00\x03\x19es"
    (text,) = frames(core.send_clients_connect(("444",)))
    assert text["seq"] == 4
    session = core.session
    assert session is not None and session.payload_type_for("vp8") == vg.VP8_DECODE


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (vg.text_frame(vg.Speaking(1, 20, delay=0)), 4003),
        (vg.text_frame(SELECT), 4003),
        ("{not json", 4002),
        ('{"op":0,"d":{"server_id":"111"}}', 4002),
        (vg.text_frame(vg.Identify(SERVER_ID, "222", USER_ID, SESSION_ID, "bad")), 4004),
        (vg.text_frame(vg.Identify(SERVER_ID, "222", USER_ID, "other", TOKEN)), 4006),
    ],
)
def test_first_message_validation(frame: str, code: int) -> None:
    core = make_core()
    core.connection_opened(0.0)
    assert closes(core.receive_text(frame, 0.0)) == [code]
    assert core.close_code == code and core.state is server.ConnectionState.CLOSED
    assert core.receive_text(vg.text_frame(IDENTIFY), 0.0) == []


def test_binary_before_identify_is_4003_and_garbage_binary_is_4002() -> None:
    core = make_core()
    assert closes(core.receive_binary(b"\x1akp", 0.0)) == [4003]
    core = make_core()
    assert closes(core.receive_binary(b"", 0.0)) == [4002]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (vg.text_frame(IDENTIFY), 4005),
        (vg.text_frame(vg.Resume(SERVER_ID, "222", SESSION_ID, TOKEN, 0)), 4005),
        (vg.text_frame(vg.SelectProtocol("webrtc", "", 0, vg.MODE_AES256_GCM)), 4012),
        (vg.text_frame(vg.SelectProtocol("udp", "1.1.1.1", 1, "xsalsa20_poly1305")), 4016),
        ('{"op":99,"d":{}}', 4001),
        ('{"op":15,"d":{"streams":[]}}', 4002),
    ],
)
def test_identified_connection_validation(frame: str, code: int) -> None:
    core = make_core()
    core.connection_opened(0.0)
    core.receive_text(vg.text_frame(IDENTIFY), 0.0)
    assert closes(core.receive_text(frame, 0.0)) == [code]


def test_second_select_protocol_is_a_bad_request() -> None:
    core = described_core()
    assert closes(core.receive_text(vg.text_frame(SELECT), 0.0)) == [4020]


def test_xchacha_only_server_rejects_aes_and_offers_only_xchacha() -> None:
    core = make_core(server.VoiceServerConfig(modes=(vg.MODE_XCHACHA20,)))
    core.connection_opened(0.0)
    (ready,) = frames(core.receive_text(vg.text_frame(IDENTIFY), 0.0))
    assert ready["d"]["modes"] == [vg.MODE_XCHACHA20]
    assert closes(core.receive_text(vg.text_frame(SELECT), 0.0)) == [4016]


def test_dave_required_and_version_negotiation() -> None:
    core = make_core(server.VoiceServerConfig(require_dave=True))
    core.connection_opened(0.0)
    non_dave = vg.Identify(SERVER_ID, "222", USER_ID, SESSION_ID, TOKEN, max_dave_protocol_version=0)
    assert closes(core.receive_text(vg.text_frame(non_dave), 0.0)) == [4017]
    core = make_core(server.VoiceServerConfig(dave_protocol_version=0))
    core.connection_opened(0.0)
    core.receive_text(vg.text_frame(IDENTIFY), 0.0)
    (desc,) = frames(core.receive_text(vg.text_frame(SELECT), 0.0))
    assert desc["d"]["dave_protocol_version"] == 0


def test_heartbeat_ack_timeout_and_seq_ack_check() -> None:
    core = described_core()
    events = core.receive_text(vg.text_frame(vg.Heartbeat(t=123, seq_ack=2)), 10.0)
    assert frames(events) == [{"op": 6, "d": {"t": 123}}]
    core.receive_text(vg.text_frame(vg.Heartbeat(t=124, seq_ack=99)), 11.0)
    assert core.seq_ack_violations == 1
    assert core.next_deadline() == pytest.approx(11.0 + 41.25 * 1.5)
    assert core.tick(11.0 + 61.0) == []
    assert closes(core.tick(11.0 + 41.25 * 1.5)) == [4009]


def test_stop_acking_keeps_receiving_heartbeats() -> None:
    core = described_core()
    core.stop_acking()
    (received,) = core.receive_text(vg.text_frame(vg.Heartbeat(t=5, seq_ack=None)), 1.0)
    assert received == server.HeartbeatReceived(5, None, acked=False)


def test_resume_replays_exactly_the_missed_frames() -> None:
    sessions: dict[str, server.VoiceServerSession] = {}
    first = make_core(sessions=sessions)
    first.connection_opened(0.0)
    first.receive_text(vg.text_frame(IDENTIFY), 0.0)
    first.receive_text(vg.text_frame(SELECT), 0.0)
    assert first.session is not None
    sessions[SESSION_ID] = first.session
    first.send_speaking("444", 10, 1)  # seq 3
    first.connection_lost()
    assert first.send_dave_binary(vg.VoiceOp.DAVE_MLS_WELCOME, b"\x00\x01w") == []  # seq 4, buffered only

    second = make_core(sessions=sessions)
    second.connection_opened(5.0)
    events = second.receive_text(vg.text_frame(vg.Resume(SERVER_ID, "222", SESSION_ID, TOKEN, 2)), 5.0)
    assert isinstance(events[0], server.SessionResumed) and events[0].replayed == 2
    assert frames(events)[0] == {"op": 9, "d": None}
    assert frames(events)[1]["seq"] == 3
    assert isinstance(events[-1], server.SendBinary) and events[-1].data[:3] == b"\x00\x04\x1e"
    assert second.state is server.ConnectionState.SESSION

    third = make_core(sessions=sessions)
    third.connection_opened(6.0)
    replay_all = third.receive_text(vg.text_frame(vg.Resume(SERVER_ID, "222", SESSION_ID, TOKEN, -1)), 6.0)
    assert isinstance(replay_all[0], server.SessionResumed) and replay_all[0].replayed == 4


@pytest.mark.parametrize(("session_id", "seq_ack"), [("unknown", 0), (SESSION_ID, 50)])
def test_resume_refusals_close_4006(session_id: str, seq_ack: int) -> None:
    sessions: dict[str, server.VoiceServerSession] = {}
    first = described_core()
    assert first.session is not None
    sessions[SESSION_ID] = first.session
    core = make_core(sessions=sessions)
    core.connection_opened(0.0)
    resume = vg.Resume(SERVER_ID, "222", session_id, TOKEN, seq_ack)
    assert closes(core.receive_text(vg.text_frame(resume), 0.0)) == [4006]


def test_client_messages_become_events() -> None:
    core = described_core()
    flat = '{"op":15,"d":{"11":100,"any":50,"pixelCounts":{"11":1000.5}}}'
    (wants,) = core.receive_text(flat, 1.0)
    assert isinstance(wants, server.ClientSinkWants)
    assert wants.wants == vg.MediaSinkWants(any=50, streams={11: 100}, pixel_counts={11: 1000.5})
    assert core.receive_text('{"op":16,"d":{}}', 1.0) == []
    (binary,) = core.receive_binary(b"\x1ccommit", 1.0)
    assert binary == server.ClientDaveBinary(28, b"commit")
    assert closes(core.receive_binary(b"\x19nope", 1.0)) == [4001]


def test_helpers_need_a_session_and_server_binary_ops() -> None:
    core = make_core()
    with pytest.raises(SandboxError):
        core.send_speaking("444", 1, 1)
    ready = described_core()
    with pytest.raises(SandboxError):
        ready.send_dave_binary(vg.VoiceOp.DAVE_MLS_KEY_PACKAGE, b"")


def test_scripted_close_is_reported_once() -> None:
    core = described_core()
    assert closes(core.close(4022, "call terminated")) == [4022]
    assert core.close(4015) == []
