"""Client core against the sandbox server core, in memory: handshake, buffering, heartbeats, resume."""

from __future__ import annotations

import pytest
from voice_gateway_pair import DISCOVERED, KEY, SESSION_ID, USER_ID, Pair, client_config

from clank.errors import AuthenticationFailed, SessionInvalidated, UsageError
from clank.protocol import voice_gateway as client
from clank.sandbox import voice_gateway_core as server
from clank.wire import voice_gateway as vg

STREAMER = "444"
STREAMER_VIDEO = vg.Video(
    user_id=STREAMER,
    audio_ssrc=10,
    video_ssrc=11,
    rtx_ssrc=12,
    streams=(vg.VideoStream(ssrc=11, rtx_ssrc=12, rid="100", quality=100, active=True),),
)


def connected_pair(**client_overrides: object) -> Pair:
    pair = Pair(client_config(**client_overrides)) if client_overrides else Pair()
    pair.connect()
    assert pair.client.phase is client.Phase.CONNECTED
    return pair


def test_full_handshake_follows_the_reference_trace() -> None:
    pair = Pair()
    pair.open()
    assert pair.sent_ops == [vg.VoiceOp.IDENTIFY]
    identify = pair.sent_texts[0]["d"]
    assert identify["server_id"] == "111" and identify["channel_id"] == "222"
    assert identify["streams"] == [{"type": "screen", "rid": "100", "quality": 100}]
    assert identify["max_dave_protocol_version"] == 1
    ready, need = pair.of(client.Ready)[0], pair.of(client.NeedIpDiscovery)[0]
    assert ready.ssrc == 20 and ready.streams[0].ssrc == 21 and ready.streams[0].rtx_ssrc == 22
    assert (need.ip, need.port, need.ssrc) == ("127.0.0.1", 7004, 20)
    assert pair.client.phase is client.Phase.DISCOVERY

    pair.discover()
    select = pair.sent_texts[-1]
    assert select["op"] == vg.VoiceOp.SELECT_PROTOCOL
    assert select["d"]["data"] == {
        "address": DISCOVERED[0],
        "port": DISCOVERED[1],
        "mode": vg.MODE_AES256_GCM,
    }
    codecs = {c["name"]: c for c in select["d"]["codecs"]}
    assert codecs["H264"]["payload_type"] == 103 and codecs["H264"]["decode"] is True
    assert codecs["VP8"]["rtx_payload_type"] == 106 and codecs["opus"]["payload_type"] == 120
    assert select["d"]["experiments"] == ["fixed_keyframe_interval"]  # echoed from Ready

    (established,) = pair.of(client.SessionEstablished)
    assert established.secret_key == KEY and established.mode == vg.MODE_AES256_GCM
    assert established.dave_protocol_version == 1 and established.video_codec == "H264"
    assert established.ssrc == 20
    assert pair.client.phase is client.Phase.CONNECTED and pair.client.next_deadline() is not None
    (described,) = pair.server_of(server.SessionDescribed)
    assert described.session.codec_for_payload_type(104) == vg.H264_DECODE
    assert pair.server.session is not None and pair.server.session.user_id == USER_ID


def test_messages_before_the_session_description_are_replayed_in_order() -> None:
    pair = Pair()
    pair.open()  # Ready received; the server now sends early traffic before op4
    pair.to_client(pair.server.send_dave_binary(vg.VoiceOp.DAVE_MLS_EXTERNAL_SENDER, b"\x40\x41sender"))
    pair.to_client(pair.server.send_video(STREAMER_VIDEO))
    pair.to_client(pair.server.send_speaking(STREAMER, 10, 1))
    pair.to_client(pair.server.send_prepare_epoch(1, 1))
    pair.to_client(pair.server.send_client_flags(STREAMER, 2))
    assert not pair.of(client.DaveBinary) and not pair.of(client.VideoState)

    pair.discover()
    kinds = [type(e) for e in pair.client_events if not isinstance(e, client.Ready | client.NeedIpDiscovery)]
    assert kinds == [
        client.SessionEstablished,
        client.DaveBinary,
        client.VideoState,
        client.Speaking,
        client.DaveJson,
        client.ClientFlags,
    ]
    assert pair.of(client.DaveBinary)[0] == client.DaveBinary(25, b"\x40\x41sender")
    assert pair.of(client.DaveJson)[0].payload == vg.DavePrepareEpoch(1, 1)
    assert pair.client.ssrc_map()[11].user_id == STREAMER
    assert pair.client.statistics().replayed == 5


def test_heartbeat_carries_nonce_and_seq_ack_from_text_and_binary_frames() -> None:
    pair = connected_pair()
    pair.to_client(pair.server.send_dave_binary(vg.VoiceOp.DAVE_MLS_EXTERNAL_SENDER, b"x"))
    binary_seq = pair.server.session.last_seq if pair.server.session else -1
    deadline = pair.client.next_deadline()
    assert deadline is not None
    pair.advance(deadline - pair.now)
    heartbeat = [t for t in pair.sent_texts if t["op"] == vg.VoiceOp.HEARTBEAT][-1]["d"]
    assert heartbeat["seq_ack"] == binary_seq == 3  # Ready 1, op4 2, op25 3 (binary)
    assert heartbeat["t"] == int(pair.now * 1000)
    (ack,) = pair.of(client.HeartbeatAck)
    assert ack.latency == 0.0
    (received,) = pair.server_of(server.HeartbeatReceived)
    assert received.seq_ack == 3 and received.acked
    assert pair.server.seq_ack_violations == 0


def test_heartbeat_before_any_seq_sends_minus_one() -> None:
    core = client.VoiceGatewayCore(client_config())
    core.connection_opened(0.0)
    core.receive_text('{"op":8,"d":{"v":9,"heartbeat_interval":5000}}', 0.0)
    assert core.next_deadline() == 5.0
    (beat,) = core.tick(5.0)
    assert isinstance(beat, client.SendText)
    assert vg.TextFrame.parse(beat.text).d == {"t": 5000, "seq_ack": -1}


def test_heartbeat_cap_shortens_the_cadence() -> None:
    core = client.VoiceGatewayCore(client_config(heartbeat_cap=5.0))
    core.connection_opened(0.0)
    core.receive_text('{"op":8,"d":{"heartbeat_interval":41250}}', 0.0)
    assert core.next_deadline() == 5.0


def test_server_heartbeat_request_gets_an_immediate_heartbeat() -> None:
    pair = connected_pair()
    before = pair.client.statistics().heartbeats_sent
    pair.to_client(pair.server.request_heartbeat())
    assert pair.client.statistics().heartbeats_sent == before + 1
    assert len(pair.of(client.HeartbeatAck)) == 1


def test_missed_ack_is_a_zombie_that_resumes() -> None:
    pair = connected_pair()
    pair.server.stop_acking()
    pair.advance(41.25)
    assert pair.server_of(server.HeartbeatReceived)[-1].acked is False
    assert not pair.of(client.Failed)
    pair.advance(41.25)
    (failed,) = pair.of(client.Failed)
    assert failed.action is client.CloseAction.RESUME
    assert failed.close_code == 4000
    assert pair.client.phase is client.Phase.IDLE


def test_resume_replays_missed_messages_without_a_new_select_protocol() -> None:
    pair = connected_pair()
    pair.to_client(pair.server.send_clients_connect((STREAMER,)))
    old_server = pair.server
    pair.drop(1006)
    (closed,) = pair.of(client.Closed)
    assert closed.action is client.CloseAction.RESUME
    # The server keeps talking while the client is away: these go to the replay buffer only.
    assert old_server.send_video(STREAMER_VIDEO) == []
    assert old_server.send_dave_binary(vg.VoiceOp.DAVE_MLS_WELCOME, b"\x00\x01welcome") == []

    ops_before = len(pair.sent_ops)
    pair.reconnect()
    new_ops = pair.sent_ops[ops_before:]
    assert new_ops == [vg.VoiceOp.RESUME]
    resume = pair.sent_texts[-1]["d"]
    assert resume == {
        "server_id": "111",
        "channel_id": "222",
        "session_id": SESSION_ID,
        "token": "tok-voice-333",
        "seq_ack": 3,
    }
    (resumed,) = pair.server_of(server.SessionResumed)
    assert resumed.replayed == 2
    tail = pair.client_events[pair.client_events.index(closed) + 1 :]
    assert [type(e) for e in tail] == [client.Resumed, client.VideoState, client.DaveBinary]
    assert pair.client.phase is client.Phase.CONNECTED
    assert pair.client.session is not None and pair.client.session.secret_key == KEY
    assert len(pair.of(client.SessionEstablished)) == 1  # keys and UDP kept
    assert pair.client.connected_user_ids == {STREAMER}


def test_resume_with_a_seq_outside_the_buffer_is_refused_with_4006() -> None:
    pair = connected_pair()
    pair.drop(4015)
    assert pair.of(client.Closed)[0].action is client.CloseAction.RESUME
    session = pair.sessions[SESSION_ID]
    for _ in range(server.REPLAY_BUFFER_LIMIT + 5):
        session_frame = vg.TextFrame(op=vg.VoiceOp.CLIENT_FLAGS, d={"user_id": STREAMER, "flags": 0})
        seq = session.next_seq()
        session.remember(seq, server.SendText(session_frame.op, session_frame.serialize()))
    pair.reconnect()
    closed = pair.of(client.Closed)[-1]
    assert closed.code == 4006 and closed.action is client.CloseAction.NEW_SESSION
    assert isinstance(closed.error, SessionInvalidated)
    assert pair.client.phase is client.Phase.CLOSED


def test_drop_during_the_handshake_reconnects_with_a_fresh_identify() -> None:
    pair = Pair()
    pair.open()
    pair.drop(1006)
    assert pair.of(client.Closed)[0].action is client.CloseAction.RECONNECT
    pair.reconnect()
    assert pair.sent_ops.count(vg.VoiceOp.IDENTIFY) == 2
    pair.discover()
    assert pair.client.phase is client.Phase.CONNECTED


@pytest.mark.parametrize("role", ["voice", "stream_watch"])
@pytest.mark.parametrize(("code", "policy"), sorted(client.CLOSE_POLICY.items()), ids=str)
def test_every_close_code_row_reaches_the_client_as_its_action(
    code: int, policy: client.ClosePolicy, role: str
) -> None:
    pair = connected_pair(role=role)
    pair.to_client(pair.server.close(code, "scripted"))
    (closed,) = pair.of(client.Closed)
    action = policy.action_for(role)
    assert closed.code == code and closed.action is action
    expected_phase = (
        client.Phase.IDLE
        if action in (client.CloseAction.RESUME, client.CloseAction.RECONNECT)
        else client.Phase.CLOSED
    )
    assert pair.client.phase is expected_phase
    if action is client.CloseAction.RESUME:
        pair.reconnect()
        assert pair.of(client.Resumed)


@pytest.mark.parametrize("code", [4001, 4002, 4003, 4005, 4020])
def test_refused_requests_rejoin_through_op4_on_the_voice_leg_only(code: int) -> None:
    """Before: every role re-identified with the same (possibly stale) token and server."""
    assert client.classify_close(code).action_for("voice") is client.CloseAction.NEW_SESSION
    for role in ("stream_watch", "stream_publish"):
        assert client.classify_close(code).action_for(role) is client.CloseAction.RECONNECT
    pair = connected_pair(role="voice")
    pair.to_client(pair.server.close(code, "scripted"))
    (closed,) = pair.of(client.Closed)
    assert closed.action is client.CloseAction.NEW_SESSION
    assert pair.client.phase is client.Phase.CLOSED  # no identify with the old credentials follows


def test_xchacha_only_server() -> None:
    pair = Pair(server_cfg=server.VoiceServerConfig(modes=(vg.MODE_XCHACHA20,)))
    pair.connect()
    select = next(t for t in pair.sent_texts if t["op"] == vg.VoiceOp.SELECT_PROTOCOL)
    assert select["d"]["data"]["mode"] == vg.MODE_XCHACHA20
    assert pair.of(client.SessionEstablished)[0].mode == vg.MODE_XCHACHA20


def test_dave_required_server_closes_4017_for_a_non_dave_client() -> None:
    pair = Pair(client_config(max_dave_protocol_version=0), server.VoiceServerConfig(require_dave=True))
    pair.open()
    (closed,) = pair.of(client.Closed)
    assert closed.code == 4017 and closed.action is client.CloseAction.ERROR


def test_non_dave_client_gets_version_zero_from_a_lenient_server() -> None:
    pair = Pair(client_config(max_dave_protocol_version=0))
    pair.connect()
    assert pair.of(client.SessionEstablished)[0].dave_protocol_version == 0


@pytest.mark.parametrize(
    ("overrides", "code", "error"),
    [
        ({"token": "wrong"}, 4004, AuthenticationFailed),
        ({"session_id": "unknown"}, 4006, SessionInvalidated),
    ],
)
def test_identify_rejections(overrides: dict[str, str], code: int, error: type[Exception]) -> None:
    pair = Pair(client_config(**overrides))
    pair.open()
    (closed,) = pair.of(client.Closed)
    assert closed.code == code and closed.action is client.CloseAction.NEW_SESSION
    assert isinstance(closed.error, error)


def test_dave_json_and_binary_routing_both_ways() -> None:
    pair = connected_pair()
    pair.to_client(pair.server.send_prepare_transition(3, 0))
    pair.to_client(pair.server.send_execute_transition(3))
    pair.to_client(pair.server.send_dave_binary(vg.VoiceOp.DAVE_MLS_PROPOSALS, b"\x00\x01\x02"))
    assert [e.payload for e in pair.of(client.DaveJson)] == [
        vg.DavePrepareTransition(3, 0),
        vg.DaveExecuteTransition(3),
    ]
    assert pair.of(client.DaveBinary) == [client.DaveBinary(27, b"\x00\x01\x02")]

    pair.to_server(pair.client.send_dave_binary(vg.VoiceOp.DAVE_MLS_KEY_PACKAGE, b"\x00\x01\x00\x02kp"))
    pair.to_server(pair.client.send_dave_json(vg.DaveTransitionReady(3)))
    pair.to_server(pair.client.send_dave_json(vg.DaveInvalidCommitWelcome(3)))
    assert pair.server_of(server.ClientDaveBinary) == [server.ClientDaveBinary(26, b"\x00\x01\x00\x02kp")]
    assert [e.payload for e in pair.server_of(server.ClientDaveJson)] == [
        vg.DaveTransitionReady(3),
        vg.DaveInvalidCommitWelcome(3),
    ]
    assert pair.sent_texts[-1] == {"op": 31, "d": {"transition_id": 3}}  # JSON, not binary


@pytest.mark.parametrize("fmt", list(vg.SinkWantsFormat))
def test_sink_wants_reach_the_server_in_either_format(fmt: vg.SinkWantsFormat) -> None:
    pair = connected_pair(sink_wants_format=fmt)
    wants = vg.MediaSinkWants(any=100, streams={11: 100, 13: 0}, pixel_counts={11: 921600.0})
    pair.to_server(pair.client.media_sink_wants(wants))
    sent = pair.sent_texts[-1]["d"]
    assert ("streams" in sent) is (fmt is vg.SinkWantsFormat.NESTED)
    (received,) = pair.server_of(server.ClientSinkWants)
    assert received.wants == wants
    pair.to_client(pair.server.send_media_sink_wants(wants, fmt))
    assert pair.of(client.MediaSinkWants)[0].wants == wants


def test_publisher_announcements_reach_the_server() -> None:
    pair = connected_pair(role="stream_publish")
    assert {c["name"] for c in pair.sent_texts[-1]["d"]["codecs"] if c["type"] == "video"} == {"H264"}
    resolution = vg.MaxResolution("fixed", 1280, 720)
    pair.to_server(
        pair.client.video_state_announcement(
            True, max_bitrate=2_500_000, max_framerate=30, max_resolution=resolution
        )
    )
    pair.to_server(pair.client.speaking(vg.Speaking.SOUNDSHARE))
    (video,) = pair.server_of(server.ClientVideo)
    assert video.video.audio_ssrc == 20 and video.video.video_ssrc == 21 and video.video.rtx_ssrc == 22
    assert video.video.streams[0].active and video.video.streams[0].max_resolution == resolution
    (speaking,) = pair.server_of(server.ClientSpeaking)
    assert speaking.speaking == vg.Speaking(speaking=2, ssrc=20, delay=0)
    pair.to_server(pair.client.session_update([vg.OPUS_CODEC, vg.H264_ENCODE]))
    assert pair.server_of(server.ClientSessionUpdate)[0].update.codecs == (vg.OPUS_CODEC, vg.H264_ENCODE)


def test_ssrc_map_follows_op5_op12_op13_and_ignores_ourselves() -> None:
    pair = connected_pair()
    pair.to_client(pair.server.send_speaking(USER_ID, 20, 1))
    pair.to_client(pair.server.send_video(vg.Video(user_id=USER_ID, audio_ssrc=20, video_ssrc=21)))
    assert pair.client.ssrc_map() == {}
    assert pair.client.statistics().ignored == 2
    pair.to_client(pair.server.send_speaking(STREAMER, 10, 1))
    pair.to_client(pair.server.send_video(STREAMER_VIDEO))
    ssrcs = pair.client.ssrc_map()
    assert ssrcs[10] == client.SsrcBinding(STREAMER, "audio")
    assert ssrcs[11] == client.SsrcBinding(STREAMER, "video", "100", 11, 12)
    assert ssrcs[12] == client.SsrcBinding(STREAMER, "rtx", "100", 11, 12)
    pair.to_client(pair.server.send_client_disconnect(STREAMER))
    assert pair.client.ssrc_map() == {}
    assert pair.of(client.ClientDisconnected) == [client.ClientDisconnected(STREAMER)]


def test_senders_before_the_session_are_usage_errors() -> None:
    pair = Pair()
    pair.open()
    with pytest.raises(UsageError):
        pair.client.speaking(1)


def test_sends_during_a_resume_are_held_and_flushed_after_op9() -> None:
    pair = connected_pair()
    pair.drop(1006)
    assert pair.client.send_dave_json(vg.DaveTransitionReady(7)) == []
    assert pair.client.speaking(1) == []
    pair.reconnect()
    assert [e.payload for e in pair.server_of(server.ClientDaveJson)] == [vg.DaveTransitionReady(7)]
    assert len(pair.server_of(server.ClientSpeaking)) == 1
    order = pair.sent_ops[-3:]
    assert order == [vg.VoiceOp.RESUME, vg.VoiceOp.DAVE_TRANSITION_READY, vg.VoiceOp.SPEAKING]


def test_ip_discovery_finishing_after_a_drop_is_ignored() -> None:
    pair = Pair()
    pair.open()
    pair.drop(1006)
    assert pair.client.ip_discovered("1.2.3.4", 5, pair.now) == []
