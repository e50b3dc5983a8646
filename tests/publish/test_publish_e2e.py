"""End to end over loopback: clank publishes a Go Live in the sandbox and a simulated viewer watches it.

Real sockets on 127.0.0.1, websockets, AEAD, DAVE (davey) on both sides, libx264 on our encode
thread, PyAV decoding in the viewer. Video is small (320x240) to keep the tests quick.
"""

from __future__ import annotations

import pytest
import trio

from clank.media.publish_source import PushedFrames
from clank.session.roles import RoleState
from clank.session.stream_publish import start_stream_publish

from publish_kit import add_viewer, in_voice, make_image, wait_until

PSNR_GOAL_DB = 30.0
pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def test_a_viewer_decodes_pushed_frames_with_psnr_over_30_db() -> None:
    with trio.fail_after(40):
        async with in_voice() as (sb, _gateway, session):
            source = PushedFrames()
            handle = await start_stream_publish(session, source=source)
            assert handle.state is RoleState.READY and handle.stream_key is not None
            assert handle.stream_key.owner_id == sb.our_user_id
            viewer = await add_viewer(sb, handle)
            for index in range(12):
                await handle.push_image(make_image(index), "image/png")
                await trio.sleep(0.1)
            await wait_until(lambda: viewer.statistics().psnr_compared >= 20)
            stats = viewer.statistics()
            print(stats, handle.statistics())
            assert stats.psnr_min_db is not None and stats.psnr_min_db >= PSNR_GOAL_DB, stats
            assert stats.keyframes_received >= 1 and stats.decode_errors == 0
            assert (stats.width, stats.height) == (320, 240)
            published = handle.statistics()
            assert published.viewers == 1 and published.frames_sent > 20
            assert session.voice.state is RoleState.READY
