"""Media-plane rows of the strict sandbox: ~50% padded video, unsolicited RTX, a stale first frame.

Fake network + autojump clock (tests/fidelity/fakenet_kit.py): our voice session watches alice's
Go Live through the sandbox SFU, which (STRICT, clank.sandbox.fidelity) pads about half of the
relayed video packets, follows some with RTX nobody asked for (copies and padding-only probes),
and makes the first frame on each SSRC undecryptable. A client that left padding in the payload,
took an RTX copy as new data, or stalled on a failed frame would fail these.
"""

from __future__ import annotations

import logging

import attrs
import pytest
import trio
import trio.testing
from fakenet_kit import PSNR_GOAL_DB, WATCH, fake_session, frame_psnr, media

from clank.sandbox.app import Sandbox
from clank.sandbox.fidelity import STRICT
from clank.sandbox.rtc.sfu import SfuStatistics
from clank.session.roles import RoleState
from clank.session.stream_watch import start_stream_watch
from clank.session.voice_session import VoiceSession
from clank.session.watch_handle import WatchHandle

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")

FRAMES = 15
"""Published frames each test looks at (3 s of 5 fps video)."""


async def _watch(sb: Sandbox, session: VoiceSession) -> tuple[str, WatchHandle]:
    alice = sb.world.user_by_name("alice").id
    await sb.world.join_voice(alice, sb.voice_channel_id)
    await sb.world.go_live(alice)
    handle = await start_stream_watch(session, alice, settings=WATCH)
    return alice, handle


async def _frames_match(sb: Sandbox, alice: str, handle: WatchHandle, count: int = FRAMES) -> None:
    frame = await handle.frames.wait_frame()
    for _ in range(count):
        frame = await handle.frames.wait_frame(after_sequence=frame.sequence)
        assert frame_psnr(sb, alice, frame) >= PSNR_GOAL_DB


def _sfu(sb: Sandbox, handle: WatchHandle) -> SfuStatistics:
    assert handle.stream_key is not None
    return media(sb).stream_server(str(handle.stream_key)).statistics().sfu


async def test_half_the_video_packets_carry_padding_and_frames_still_match(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):  # virtual; decode threads run in real time meanwhile
        async with fake_session() as (_net, sb, session):
            alice, handle = await _watch(sb, session)
            await _frames_match(sb, alice, handle)
            sfu = _sfu(sb, handle)
            relayed = sfu.rtp_relayed - sfu.rtx_unsolicited - sfu.rtx_probes
            # STRICT pads half; the streamer pads a tenth of its own (kept), so ~55% (seeded sample).
            assert relayed >= 50 and 0.4 <= sfu.video_padded / relayed <= 0.75, (sfu.video_padded, relayed)
            (stream,) = handle.statistics().streams.values()
            receive = stream.receive
            # Unstripped padding would break DAVE on ~every frame; only the one stale frame fails.
            assert receive.dave_failed - receive.dave_failed_before_ready <= sfu.stale_frames
            assert receive.dave_ok >= FRAMES


async def test_unsolicited_rtx_is_dropped_or_deduplicated_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lots_of_rtx = attrs.evolve(STRICT, unsolicited_rtx_share=0.3)
    with trio.fail_after(3600):
        async with fake_session(lots_of_rtx) as (_net, sb, session):
            alice, handle = await _watch(sb, session)
            await _frames_match(sb, alice, handle)
            sfu = _sfu(sb, handle)
            assert sfu.rtx_unsolicited >= 5 and sfu.rtx_probes >= 5
            (stream,) = handle.statistics().streams.values()
            receive = stream.receive
            connection = handle.statistics().connection
            assert connection is not None
            # A few may still be in flight when the statistics are read.
            assert receive.rtx_received >= sfu.rtx_unsolicited - 3
            assert receive.duplicates >= sfu.rtx_unsolicited - 3  # copies of packets that had arrived
            assert connection.drops["empty"] >= sfu.rtx_probes - 3  # padding-only: dropped after strip
            assert receive.packets_lost == 0
            assert receive.dave_failed - receive.dave_failed_before_ready <= sfu.stale_frames


async def test_a_first_frame_we_cannot_decrypt_is_counted_and_the_watch_recovers(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with trio.fail_after(3600):
        async with fake_session() as (_net, sb, session):
            alice, handle = await _watch(sb, session)
            await _frames_match(sb, alice, handle, count=5)
            assert _sfu(sb, handle).stale_frames == 1
            (stream,) = handle.statistics().streams.values()
            receive = stream.receive
            assert receive.dave_failed >= 1 and receive.frames_dropped.get("dave", 0) >= 1
            assert receive.keyframes >= 1 and receive.frames_emitted >= 5  # from the next keyframe on
            assert handle.state is RoleState.READY
            warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(warnings) <= 1, [r.getMessage()[:120] for r in warnings]  # one diagnostic at most
            stats = handle.statistics()
            assert stats.connection is not None and stats.connection.reconnects == 0
