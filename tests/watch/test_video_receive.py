"""The sans-io video receive core with real encoders, real DAVE and a seeded lossy link."""

from __future__ import annotations

import pytest
from watch_kit import (
    LOCAL_SSRC,
    MEDIA_SSRC,
    PT,
    RTX_PT,
    RTX_SSRC,
    STREAMER_ID,
    Link,
    Streamer,
    dave_pair,
    run_watch,
)

from clank.codecs.feedback import KeyframePolicy, KeyframeReason, KeyframeRequestKind
from clank.crypto.dave import DaveSessionCore
from clank.errors import DecryptionFailed
from clank.media.decoder import VideoCodec, VideoDecoder
from clank.media.quality import psnr
from clank.protocol.video_receive import (
    DROP_AWAITING_KEYFRAME,
    DROP_DAVE,
    DROP_SUPPRESSED,
    DROP_UNKNOWN_PT,
    DROP_UNKNOWN_SSRC,
    CodecChanged,
    DecryptDiagnostic,
    EncodedVideoFrame,
    StreamBound,
    StreamUnbound,
    VideoReceiveConfig,
    VideoReceiver,
    build_sink_wants,
)
from clank.protocol.voice_gateway import VideoState
from clank.wire import voice_gateway as vg
from clank.wire.rtcp import (
    FullIntraRequest,
    GenericNack,
    PictureLossIndication,
    ReceiverReport,
    SenderReport,
    parse_compound,
)
from clank.wire.rtp import RtpHeader

CODECS: tuple[VideoCodec, ...] = ("h264", "vp8")
PSNR_GOAL_DB = 30.0


def _receiver(watcher: DaveSessionCore | None, **overrides: object) -> VideoReceiver:
    config = VideoReceiveConfig(local_ssrc=LOCAL_SSRC, **overrides)  # type: ignore[arg-type]
    decrypt = None if watcher is None else (lambda user, frame: watcher.decrypt(user, "video", frame))
    return VideoReceiver(config, decrypt)


def _decode_and_compare(streamer: Streamer, frames: list[EncodedVideoFrame]) -> list[float]:
    decoder = VideoDecoder(streamer.codec)
    scores = []
    for frame in frames:
        for picture in decoder.decode(frame.data, frame.timestamp):
            scores.append(psnr(picture.image, streamer.sources[picture.timestamp]))
    assert decoder.statistics().errors == 0
    return scores


@pytest.fixture(scope="module")
def dave() -> tuple[DaveSessionCore, DaveSessionCore]:
    return dave_pair()


@pytest.mark.parametrize("codec", CODECS)
def test_clean_link_emits_every_frame_matching_the_source(
    codec: VideoCodec, dave: tuple[DaveSessionCore, DaveSessionCore]
) -> None:
    sender, watcher = dave
    streamer = Streamer(codec, dave=sender)
    receiver = _receiver(watcher)
    run = run_watch(streamer, receiver, frames=45, forward=Link(1))
    assert len(run.frames) == 45
    assert [f.timestamp for f in run.frames] == [i * 3000 for i in range(45)]
    scores = _decode_and_compare(streamer, run.frames)
    assert len(scores) == 45 and min(scores) >= PSNR_GOAL_DB
    stats = receiver.stream_statistics(MEDIA_SSRC)
    assert stats is not None
    assert stats.dave_ok == 45 and stats.dave_failed == 0
    assert stats.packets_lost == 0 and stats.frames_emitted == 45
    assert stats.codec == codec and stats.keyframes >= 1
    assert stats.time_to_first_frame is not None and stats.time_to_first_frame < 0.1


@pytest.mark.parametrize("codec", CODECS)
def test_720p_frames_match_the_source(
    codec: VideoCodec, dave: tuple[DaveSessionCore, DaveSessionCore]
) -> None:
    sender, watcher = dave
    # VP8 realtime needs more bits than H264 for the same quality on the first frames.
    bitrate = 2_500_000 if codec == "h264" else 5_000_000
    streamer = Streamer(codec, width=1280, height=720, dave=sender, bitrate=bitrate, mtu=1100)
    receiver = _receiver(watcher)
    run = run_watch(streamer, receiver, frames=4, forward=Link(2, reorder=0.2), tail=0.5)
    assert len(run.frames) == 4
    scores = _decode_and_compare(streamer, run.frames)
    assert min(scores) >= PSNR_GOAL_DB


@pytest.mark.parametrize("codec", CODECS)
def test_five_percent_loss_is_repaired_by_nack_and_rtx(
    codec: VideoCodec, dave: tuple[DaveSessionCore, DaveSessionCore]
) -> None:
    sender, watcher = dave
    streamer = Streamer(codec, dave=sender)
    receiver = _receiver(watcher)
    frames = 120
    forward = Link(3, loss=0.05)
    run = run_watch(streamer, receiver, frames=frames, forward=forward, backward=Link(4, loss=0.05))
    assert forward.lost > 10  # the link really lost packets
    assert len(run.frames) >= 0.99 * frames
    stats = receiver.stream_statistics(MEDIA_SSRC)
    assert stats is not None
    assert stats.packets_recovered > 0 and stats.rtx_received > 0 and stats.nack_packets > 0
    scores = _decode_and_compare(streamer, run.frames)
    assert min(scores) >= PSNR_GOAL_DB


@pytest.mark.parametrize("codec", CODECS)
def test_reordering_and_duplicates_lose_nothing(
    codec: VideoCodec, dave: tuple[DaveSessionCore, DaveSessionCore]
) -> None:
    sender, watcher = dave
    streamer = Streamer(codec, dave=sender)
    receiver = _receiver(watcher)
    run = run_watch(streamer, receiver, frames=60, forward=Link(5, reorder=0.3, duplicate=0.05))
    assert len(run.frames) == 60
    stats = receiver.stream_statistics(MEDIA_SSRC)
    assert stats is not None and stats.packets_reordered > 0 and stats.duplicates > 0
    assert stats.packets_lost == 0
    assert min(_decode_and_compare(streamer, run.frames)) >= PSNR_GOAL_DB


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("kind", list(KeyframeRequestKind))
def test_mid_stream_join_gets_a_forced_keyframe_within_a_second(
    codec: VideoCodec, kind: KeyframeRequestKind, dave: tuple[DaveSessionCore, DaveSessionCore]
) -> None:
    sender, watcher = dave
    # Keyframes only every 10 s: without a PLI/FIR the join would wait that long.
    streamer = Streamer(codec, dave=sender, keyframe_interval=10.0)
    receiver = _receiver(watcher, keyframe_policy=KeyframePolicy(kind=kind))
    run = run_watch(streamer, receiver, frames=75, forward=Link(6), join_at_frame=20)
    assert streamer.keyframes_forced >= 1
    assert run.frames and run.frames[0].keyframe
    first = run.frames[0].assembled_at
    assert first - run.first_bound_at <= 1.0
    stats = receiver.stream_statistics(MEDIA_SSRC)
    assert stats is not None and stats.frames_dropped.get(DROP_AWAITING_KEYFRAME, 0) >= 0
    assert min(_decode_and_compare(streamer, run.frames)) >= PSNR_GOAL_DB


def test_frames_before_dave_is_ready_fail_counted_then_dave_ready_asks_for_a_keyframe() -> None:
    sender, _ = dave_pair()
    # A watcher of another group: every frame fails, with a rate-limited diagnostic.
    _, stranger = dave_pair(group_id=77)
    streamer = Streamer("h264", dave=sender, keyframe_interval=10.0)
    receiver = _receiver(None)
    failing = VideoReceiver(
        VideoReceiveConfig(local_ssrc=LOCAL_SSRC), lambda user, frame: stranger.decrypt(user, "video", frame)
    )
    run = run_watch(streamer, failing, frames=30, forward=Link(7))
    assert run.frames == []
    stats = failing.stream_statistics(MEDIA_SSRC)
    assert stats is not None
    assert stats.dave_failed == 30 and stats.frames_dropped[DROP_DAVE] == 30
    # Before our DAVE session is ready, failures are expected: counted, never diagnosed (no warning).
    assert stats.dave_failed_before_ready == 30
    assert not [e for e in run.events if isinstance(e, DecryptDiagnostic)]
    # dave_ready: a PLI goes out at once even though one was sent moments ago.
    failing.dave_ready(run.end_time)
    rtcp = [p for d in failing.poll(run.end_time) for p in parse_compound(d)]
    assert any(isinstance(p, PictureLossIndication) and p.media_ssrc == MEDIA_SSRC for p in rtcp)
    # Once ready, a failure is diagnosed (rate-limited: the first, then one per interval).
    ready = VideoReceiver(
        VideoReceiveConfig(local_ssrc=LOCAL_SSRC), lambda user, frame: stranger.decrypt(user, "video", frame)
    )
    again = Streamer("h264", dave=sender, keyframe_interval=10.0)

    def bind_ready(r: VideoReceiver, now: float) -> None:
        r.bind(MEDIA_SSRC, str(STREAMER_ID), now, rtx_ssrc=RTX_SSRC)
        r.dave_ready(now)

    later = run_watch(again, ready, frames=10, forward=Link(8), on_bind=bind_ready)
    diagnostics = [e for e in later.events if isinstance(e, DecryptDiagnostic)]
    assert len(diagnostics) == 1
    assert diagnostics[0].frame["valid"] is True and diagnostics[0].reason
    del receiver


def test_decrypt_failure_does_not_raise_and_passthrough_is_counted() -> None:
    streamer = Streamer("vp8")  # no DAVE on the sender: clear frames
    calls: list[int] = []

    def passthrough(user: int, frame: bytes) -> bytes:
        calls.append(user)
        if len(calls) == 3:
            raise DecryptionFailed("dave", "no_valid_cryptor")
        return frame

    receiver = VideoReceiver(VideoReceiveConfig(local_ssrc=LOCAL_SSRC), passthrough)
    run = run_watch(streamer, receiver, frames=10, forward=Link(8))
    stats = receiver.stream_statistics(MEDIA_SSRC)
    assert stats is not None
    assert set(calls) == {STREAMER_ID}
    assert stats.dave_passthrough == 9 and stats.dave_failed == 1
    assert stats.dave_failures == {"no_valid_cryptor": 1}
    assert len(run.frames) == 9


def test_unknown_ssrc_and_payload_type_are_counted() -> None:
    receiver = _receiver(None)
    receiver.bind(MEDIA_SSRC, "444", 0.0)
    assert receiver.receive(RtpHeader(PT["h264"], 1, 0, 99, True), b"\x65\x88", 0.0) == []
    assert receiver.receive(RtpHeader(77, 1, 0, MEDIA_SSRC, True), b"\x65\x88", 0.0) == []
    stats = receiver.statistics()
    assert stats.dropped[DROP_UNKNOWN_SSRC] == 1
    assert stats.streams[MEDIA_SSRC].dropped[DROP_UNKNOWN_PT] == 1


def test_a_payload_type_switch_is_a_codec_change() -> None:
    receiver = _receiver(None)
    receiver.bind(MEDIA_SSRC, "444", 0.0)
    h264 = Streamer("h264")
    vp8 = Streamer("vp8")
    events = []
    for packet in h264.next_frame():
        events += receiver.receive(packet.header, packet.payload, 0.0)
    vp8.seq = h264.seq
    for packet in vp8.next_frame():
        header = packet.header._replace(timestamp=99000)
        events += receiver.receive(header, packet.payload, 0.1)
    changes = [e for e in events if isinstance(e, CodecChanged)]
    assert [(c.previous, c.codec) for c in changes] == [(None, "h264"), ("h264", "vp8")]
    frames = [e for e in events if isinstance(e, EncodedVideoFrame)]
    assert [f.codec for f in frames] == ["h264", "vp8"]


def test_receiver_report_describes_loss_and_echoes_the_sender_report() -> None:
    receiver = _receiver(None, nack=False)
    receiver.bind(MEDIA_SSRC, "444", 0.0)
    streamer = Streamer("h264")
    receiver.poll(0.0)  # schedules the first report
    receiver.on_rtcp([SenderReport(MEDIA_SSRC, 0x1234_5678_9ABC_DEF0, 0, 10, 1000)], 0.1)
    packets = streamer.next_frame() + streamer.next_frame()
    for i, packet in enumerate(packets):
        if i != 1:
            receiver.receive(packet.header, packet.payload, 0.2)
    rtcp = [p for d in receiver.poll(1.5) for p in parse_compound(d)]
    reports = [p for p in rtcp if isinstance(p, ReceiverReport)]
    assert len(reports) == 1 and reports[0].ssrc == LOCAL_SSRC
    (block,) = reports[0].reports
    assert block.ssrc == MEDIA_SSRC
    assert block.cumulative_lost == 1 and block.fraction_lost > 0
    assert block.highest_sequence % 65536 == packets[-1].header.sequence
    assert block.last_sr == 0x5678_9ABC
    assert block.delay_since_last_sr == int(1.4 * 65536)


def test_nack_names_the_missing_sequence_numbers_of_the_primary_ssrc() -> None:
    receiver = _receiver(None)
    receiver.bind(MEDIA_SSRC, "444", 0.0, rtx_ssrc=RTX_SSRC)
    streamer = Streamer("h264", mtu=200)
    packets = streamer.next_frame()
    assert len(packets) > 5
    for i, packet in enumerate(packets):
        if i not in (2, 3):
            receiver.receive(packet.header, packet.payload, 0.0)
    assert not [p for d in receiver.poll(0.0) for p in parse_compound(d) if isinstance(p, GenericNack)]
    rtcp = [p for d in receiver.poll(0.05) for p in parse_compound(d)]
    nacks = [p for p in rtcp if isinstance(p, GenericNack)]
    assert len(nacks) == 1 and nacks[0].media_ssrc == MEDIA_SSRC and nacks[0].sender_ssrc == LOCAL_SSRC
    assert nacks[0].lost_sequences() == [packets[2].header.sequence, packets[3].header.sequence]
    # The RTX answers complete the frame.
    answers = [a for d in receiver.poll(0.05) for a in streamer.on_rtcp(d, 0.05)]
    assert answers == []  # nothing due again yet
    events = []
    for answer in streamer.on_rtcp(GenericNack.for_sequences(1, MEDIA_SSRC, [1002, 1003]).serialize(), 0.06):
        assert answer.header.ssrc == RTX_SSRC and answer.header.payload_type == RTX_PT["h264"]
        events += receiver.receive(answer.header, answer.payload, 0.06)
    assert [e for e in events if isinstance(e, EncodedVideoFrame)]
    stats = receiver.stream_statistics(MEDIA_SSRC)
    assert stats is not None and stats.packets_recovered == 2


def test_suppressed_screen_frames_are_dropped_and_resume_with_a_keyframe_request() -> None:
    receiver = _receiver(None, default_stream_type="camera")
    state = VideoState("444", 10, 11, 12, (vg.VideoStream(ssrc=11, rtx_ssrc=12, type="screen"),))
    events = receiver.on_video_state(state, 0.0)
    assert events == [StreamBound(11, "444", 12, "screen", True)]
    receiver.suppress("444", "screen")
    streamer = Streamer("h264")
    for packet in streamer.next_frame():
        events = receiver.receive(packet.header, packet.payload, 0.0)
        assert not [e for e in events if isinstance(e, EncodedVideoFrame)]
    assert all(
        not isinstance(p, PictureLossIndication) for d in receiver.poll(0.0) for p in parse_compound(d)
    )
    stats = receiver.stream_statistics(11)
    assert stats is not None and stats.frames_dropped == {DROP_SUPPRESSED: 1}
    receiver.unsuppress("444", "screen", 1.0)
    assert any(isinstance(p, PictureLossIndication) for d in receiver.poll(1.0) for p in parse_compound(d))


def test_video_state_clear_unbinds_and_partial_states_rebind() -> None:
    receiver = _receiver(None)
    state = VideoState("444", 10, 11, 12, (vg.VideoStream(ssrc=11, rtx_ssrc=12),))
    receiver.on_video_state(state, 0.0)
    assert receiver.user_for_ssrc(12) == "444" and receiver.is_video_ssrc(11)
    assert receiver.on_video_state(VideoState("444", 10, None, None, ()), 1.0) == [StreamUnbound(11, "444")]
    assert receiver.streams() == ()
    receiver.on_video_state(VideoState("444", 10, 13, None, ()), 2.0)
    assert receiver.streams() == (13,)
    assert receiver.on_client_disconnected("444") == [StreamUnbound(13, "444")]


def test_decoder_reset_requests_a_keyframe_rate_limited() -> None:
    receiver = _receiver(None, keyframe_policy=KeyframePolicy(min_interval=1.0, repeat_interval=2.0))
    receiver.bind(MEDIA_SSRC, "444", 0.0)
    first = [p for d in receiver.poll(0.0) for p in parse_compound(d)]
    assert any(isinstance(p, PictureLossIndication) for p in first)  # join
    streamer = Streamer("h264")
    for packet in streamer.next_frame():
        receiver.receive(packet.header, packet.payload, 0.1)  # the keyframe arrives
    receiver.request_keyframe(MEDIA_SSRC, KeyframeReason.DECODER_RESET, 0.2)
    assert not any(
        isinstance(p, PictureLossIndication) for d in receiver.poll(0.2) for p in parse_compound(d)
    )
    assert any(isinstance(p, PictureLossIndication) for d in receiver.poll(1.0) for p in parse_compound(d))


def test_fir_carries_the_media_ssrc() -> None:
    receiver = _receiver(None, keyframe_policy=KeyframePolicy(kind=KeyframeRequestKind.FIR))
    receiver.bind(MEDIA_SSRC, "444", 0.0)
    (fir,) = [p for d in receiver.poll(0.0) for p in parse_compound(d)]
    assert isinstance(fir, FullIntraRequest) and fir.entries[0][0] == MEDIA_SSRC


def test_sink_wants_partition_screen_and_camera() -> None:
    states = [
        VideoState("444", 10, 11, 12, (vg.VideoStream(ssrc=11, rtx_ssrc=12, type="screen"),)),
        VideoState("555", 20, 21, 22, (vg.VideoStream(ssrc=21, rtx_ssrc=22, type="video"),)),
        VideoState("666", 30, 31, 32, (vg.VideoStream(ssrc=31, active=False),)),
    ]
    voice = build_sink_wants(
        states,
        want=lambda user, kind: kind == "camera",
        quality=100,
        pixel_count=640 * 360,
        default_stream_type="camera",
        any_quality=0,
    )
    assert dict(voice.streams) == {11: 0, 21: 100, 31: 0}
    assert dict(voice.pixel_counts) == {21: 640 * 360}
    assert voice.any == 0
    watch = build_sink_wants(
        states[:1],
        want=lambda user, kind: user == "444",
        quality=80,
        pixel_count=None,
        default_stream_type="screen",
    )
    assert dict(watch.streams) == {11: 80} and not watch.pixel_counts


@pytest.mark.parametrize("fails", ["keyframe", "delta"])
def test_an_answering_keyframe_that_fails_dave_re_asks_after_min_interval(fails: str) -> None:
    # The strict sandbox's first frame to a watcher is undecryptable; when it is the IDR that
    # answered our join PLI, waiting repeat_interval (2 s) for another answer costs pictures.
    policy = KeyframePolicy(min_interval=1.0, repeat_interval=2.0)
    calls: list[int] = []

    def decrypt(user: int, frame: bytes) -> bytes:
        calls.append(user)
        if (fails == "keyframe" and len(calls) == 1) or (fails == "delta" and len(calls) == 2):
            raise DecryptionFailed("dave", "no_valid_cryptor")
        return frame

    receiver = VideoReceiver(VideoReceiveConfig(local_ssrc=LOCAL_SSRC, keyframe_policy=policy), decrypt)
    receiver.bind(MEDIA_SSRC, "444", 0.0)
    assert any(isinstance(p, PictureLossIndication) for d in receiver.poll(0.0) for p in parse_compound(d))
    streamer = Streamer("h264")
    for frame_index in range(2):
        for packet in streamer.next_frame():
            receiver.receive(packet.header, packet.payload, 0.1 + frame_index / 30)
    pli_at_1s = any(
        isinstance(p, PictureLossIndication) for d in receiver.poll(1.0) for p in parse_compound(d)
    )
    # A lost IDR: asked again at min_interval. A lost delta frame after a good IDR: also a new
    # need, and the previous request was answered, so min_interval applies there too.
    assert pli_at_1s
    stats = receiver.stream_statistics(MEDIA_SSRC)
    assert stats is not None and stats.dave_failed == 1
