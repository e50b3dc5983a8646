"""A streamer with one keyframe at start that ignores PLI: we join mid-stream and still see it.

Strict sandbox on the fake network under ``autojump_clock`` (the seconds are virtual, encode and
decode inline), DAVE on, real x264 in the simulated streamer and FFmpeg in our decoder. Bob watches
first (so alice's stream is running and its only IDR is long gone); the streamer repeats SPS/PPS in
band every second (STAP-A) but never sends another IDR unless the test forces one. Our watch asks
for a keyframe (ignored), waits ``conceal_after_s`` (3 s), then decodes P frames anyway: pictures
flagged ``concealed`` within 5 s of joining, then clean pictures once the next keyframe arrives.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from fake_session import fake_session, media

from clank.config import WatchSettings
from clank.sandbox.rtc.streamer import KEYFRAMES_AT_START_ONLY, VideoSettings
from clank.session.stream_watch import start_stream_watch
from clank.watch.frames import ScreenFrame

WATCH = WatchSettings(max_fps=10.0, preferred_pixel_count=160 * 120, credentials_timeout_s=5.0)
SPARSE = VideoSettings(
    codec="h264",
    width=160,
    height=120,
    bitrate=150_000,
    keyframe_interval=KEYFRAMES_AT_START_ONLY,
    keyframe_requests=False,
    parameter_set_interval=1.0,
)
pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def test_concealed_pictures_within_5_s_then_clean_at_the_next_keyframe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(600):  # virtual
        async with fake_session(screen=SPARSE) as (_net, sb, session):
            users = {u.name: u.id for u in sb.world.users.values()}
            alice, bob = users["alice"], users["bob"]
            await sb.world.join_voice(alice, sb.voice_channel_id)
            await sb.world.join_voice(bob, sb.voice_channel_id)
            stream = await sb.world.go_live(alice)
            assert await sb.world.watch_stream(bob, stream.key)
            streamer = media(sb).streamer(alice)
            await trio.sleep(2.0)  # 2 s into the stream: its only IDR is long gone
            assert streamer.statistics().frames_sent > 30
            assert streamer.statistics().keyframes_sent == 1

            joined_at = trio.current_time()
            handle = await start_stream_watch(session, alice, settings=WATCH)
            first = await handle.frames.wait_frame()
            first_after = trio.current_time() - joined_at
            assert first.concealed and not first.keyframe
            assert first_after < 5.0, first_after
            assert streamer.statistics().keyframes_sent == 1  # no IDR came: it was concealment
            assert streamer.statistics().keyframe_requests_ignored >= 1

            streamer.force_keyframe()  # the sender's next scheduled IDR
            frames: list[ScreenFrame] = []
            after = first.sequence
            while not frames or frames[-1].concealed:
                frame = await handle.frames.wait_frame(after_sequence=after)
                frames.append(frame)
                after = frame.sequence
            assert streamer.statistics().keyframes_sent == 2
            clean = await handle.frames.wait_frame(after_sequence=after)
            assert not clean.concealed
            (receive,) = (s.receive for s in handle.statistics().streams.values())
            assert receive.frames_concealed > 0 and receive.keyframes == 1
            # The status tells the truth about PLIs: the keyframe came seconds after our first PLI.
            assert receive.pli_to_keyframe is not None and receive.pli_to_keyframe > 3.0
            print(f"first concealed picture {first_after:.2f} s after joining (goal < 5 s)")
