"""Stream server + simulated streamer: H264/VP8 relayed, reassembled and DAVE-decrypted byte for byte;
NACK answered with RTX; PLI answered with a keyframe."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from rtc_helpers import wait_until

from clank.media.decoder import VideoCodec
from clank.sandbox.rtc import streamer as streamer_module
from clank.sandbox.rtc.server import MediaServer, open_media_server
from clank.sandbox.rtc.streamer import VideoSender, VideoSettings
from clank.sandbox.rtc.users import SimulatedMember, open_simulated_member
from clank.wire import rtcp

RTC_SERVER_ID = "900000000000000123"
GROUP = 900000000000000122
STREAMER = 444
VIEWER = 333


@asynccontextmanager
async def _streamer_and_viewer() -> AsyncIterator[
    tuple[MediaServer, SimulatedMember, SimulatedMember, trio.Nursery]
]:
    """A stream server with a simulated streamer and viewer, and a nursery for the sender."""
    async with (
        open_media_server("stream", RTC_SERVER_ID, GROUP) as server,
        open_simulated_member(server, STREAMER) as (streamer, _),
        open_simulated_member(server, VIEWER) as (viewer, _),
        trio.open_nursery() as nursery,
    ):
        yield server, streamer, viewer, nursery


def _settings(codec: VideoCodec) -> VideoSettings:
    return VideoSettings(
        codec=codec,
        width=320,
        height=240,
        fps=30,
        bitrate=400_000,
        padding_probability=0.3,
        keyframe_interval=30.0,
    )


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_streamed_frames_decrypt_byte_for_byte(
    codec: VideoCodec, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        async with _streamer_and_viewer() as (_, streamer, viewer, nursery):
            sender = VideoSender(streamer, _settings(codec))
            nursery.start_soon(sender.run)
            await wait_until(lambda: len(viewer.frames) >= 20)
            nursery.cancel_scope.cancel()
        sent = {f.timestamp: f for f in sender.sent}
        frames = list(viewer.frames)
        assert all(f.codec == codec for f in frames)
        assert any(f.keyframe for f in frames)
        for frame in frames:
            original = sent[frame.timestamp]
            assert frame.encrypted == original.encrypted
            assert frame.data == original.plain
        assert viewer.receiver.frames_undecryptable == 0
        assert sender.statistics().padded_packets > 0
        # The relayed packets carried padding and a header extension.
        raw = list(viewer.receiver.raw)
        assert any(p.header.padding for p in raw)
        assert all(p.header.extension_profile == 0xBEDE for p in raw)


async def test_nack_is_answered_with_rtx_and_pli_with_a_keyframe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with _streamer_and_viewer() as (server, streamer, viewer, nursery):
            sender = VideoSender(streamer, _settings("h264"))
            nursery.start_soon(sender.run)
            await wait_until(lambda: len(viewer.frames) >= 5)
            ssrc = sender.stream.ssrc
            originals = [p for p in viewer.receiver.raw if p.header.ssrc == ssrc][-3:]
            wanted = [p.header.sequence for p in originals]
            viewer.send_rtcp(rtcp.GenericNack.for_sequences(viewer.audio_ssrc, ssrc, wanted))

            def rtx_packets() -> list[bytes]:
                return [p.payload for p in viewer.receiver.raw if p.header.ssrc == sender.stream.rtx_ssrc]

            await wait_until(lambda: len(rtx_packets()) >= 3)
            expected = {p.header.sequence.to_bytes(2, "big") + p.payload for p in originals}
            assert expected <= set(rtx_packets())
            assert sender.statistics().rtx_sent >= 3

            keyframes_before = sender.statistics().keyframes_sent
            viewer.send_rtcp(rtcp.PictureLossIndication(viewer.audio_ssrc, ssrc))
            await wait_until(lambda: sender.statistics().keyframes_sent > keyframes_before)
            assert sender.statistics().keyframe_requests == 1
            assert server.statistics().sfu.nacks_forwarded == 1
            assert server.statistics().sfu.keyframe_requests_forwarded == 1
            nursery.cancel_scope.cancel()


async def test_a_frames_packets_yield_to_the_scheduler_on_the_send_budget(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no budget left after each packet, a keyframe's packets go out over several trio steps
    (an in-process demo shares the thread with clank's audio pacer), still in order."""
    monkeypatch.setattr(streamer_module, "SEND_BUDGET", 0.0)
    steps = 0

    class Steps(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            nonlocal steps
            steps += 1

    with trio.fail_after(30):
        async with _streamer_and_viewer() as (_, streamer, viewer, nursery):
            sent: list[tuple[int, int, int]] = []
            send_rtp = streamer.send_rtp

            def recording(header: Any, plaintext: bytes) -> None:
                sent.append((header.timestamp, header.sequence, steps))
                send_rtp(header, plaintext)

            streamer.send_rtp = recording  # type: ignore[method-assign]
            trio.lowlevel.add_instrument(Steps())
            sender = VideoSender(streamer, _settings("h264"))
            nursery.start_soon(sender.run)
            await wait_until(lambda: len(viewer.frames) >= 5)
            nursery.cancel_scope.cancel()
    first = sent[0][0]
    keyframe = [entry for entry in sent if entry[0] == first]
    assert len(keyframe) > 2
    assert len({entry[2] for entry in keyframe}) == len(keyframe)  # one packet per step
    assert [entry[1] for entry in sent] == sorted(entry[1] for entry in sent)
