"""Clank publishes a Go Live in the sandbox and a simulated viewer watches it.

Websockets, AEAD, DAVE (davey) on both sides, libx264 in our encode worker, PyAV decoding in the
viewer. Video is small (320x240) to keep the tests quick. The first test runs over real sockets on
127.0.0.1 (marked ``e2e``, with the sandbox's REST API); the others on the fake network under
``autojump_clock``, where "within 200 ms" is virtual time, decided by the code, not by the load.
"""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing
from publish_kit import add_viewer, in_voice, in_voice_over_sockets, make_image, wait_until

from clank.io.gateway import open_gateway_client
from clank.media.publish_source import PushedFrames
from clank.session.roles import RoleState
from clank.session.stream_publish import PUBLISH_ROLE, start_stream_publish

PSNR_GOAL_DB = 30.0
pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


@pytest.mark.e2e
async def test_a_viewer_decodes_pushed_frames_with_psnr_over_30_db() -> None:
    with trio.fail_after(40):
        async with in_voice_over_sockets() as (sb, _gateway, session):
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
            assert stats.psnr_min_db is not None and stats.psnr_min_db >= PSNR_GOAL_DB, stats
            assert stats.keyframes_received >= 1 and stats.decode_errors == 0
            assert (stats.width, stats.height) == (320, 240)
            published = handle.statistics()
            assert published.viewers == 1 and published.frames_sent > 20
            # The same figures over the sandbox's REST endpoint.
            async with httpx.AsyncClient(timeout=5) as http:
                answer = await http.get(sb.api_url.rsplit("/api", 1)[0] + "/sandbox/viewers")
            (listed,) = answer.json()["viewers"]
            assert listed["user_id"] == viewer.user_id and listed["frames_decoded"] >= 20
            assert listed["psnr_min_db"] >= PSNR_GOAL_DB
            assert session.voice.state is RoleState.READY


async def test_pause_sends_no_video_resume_starts_with_a_keyframe_stop_deletes_the_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(50):
        async with in_voice() as (sb, net, session):
            handle = await start_stream_publish(session, source=PushedFrames())
            await handle.push_image(make_image(1), "image/png")
            viewer = await add_viewer(sb, handle)
            bob = viewer.user_id
            await wait_until(lambda: viewer.statistics().frames_decoded >= 10)
            key = str(handle.stream_key)
            bob_token = sb.world.user(bob).token
            async with open_gateway_client(
                url=sb.gateway_url, token=bob_token, connect=net.open_websocket
            ) as bob_gateway:
                with bob_gateway.subscribe(16, events=frozenset({"STREAM_DELETE"})) as deletes:
                    await handle.pause()
                    assert handle.paused and handle.statistics().paused
                    stream = sb.world.stream(key)
                    assert stream is not None and stream.paused
                    await trio.sleep(0.3)  # packets in flight land
                    raw_before = len(viewer.member.receiver.raw)
                    frames_before = viewer.statistics().frames_received
                    await handle.push_image(make_image(2), "image/png")
                    await trio.sleep(1.0)
                    assert len(viewer.member.receiver.raw) == raw_before  # no video RTP while paused
                    assert viewer.statistics().frames_received == frames_before
                    keyframes_before = len(viewer.keyframe_timestamps)
                    decoded_before = len(viewer.decoded_timestamps)
                    await handle.resume()
                    await wait_until(lambda: len(viewer.decoded_timestamps) > decoded_before + 3)
                    first_after = viewer.decoded_timestamps[decoded_before]
                    assert len(viewer.keyframe_timestamps) > keyframes_before
                    assert viewer.keyframe_timestamps[keyframes_before][0] == first_after
                    await handle.stop()
                    assert handle.reason == "stopped" and handle.state is RoleState.DISCONNECTED
                    delete = await deletes.receive()
                    assert delete.data["stream_key"] == key
            assert sb.world.stream(key) is None
            assert session.voice.state is RoleState.READY
            assert PUBLISH_ROLE not in {n for n, h in session.roles().items() if not h.stopped}


async def test_five_percent_downlink_loss_is_repaired_by_our_rtx_and_pli_gets_an_idr_fast(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with in_voice(seed=7) as (sb, _gateway, session):
            assert sb.media is not None
            source = PushedFrames()
            handle = await start_stream_publish(session, source=source)
            viewer = await add_viewer(sb, handle)
            pushing = True

            async def pusher() -> None:
                index = 0
                while pushing:  # a new picture every frame: every frame carries real data
                    await handle.push_image(make_image(index), "image/png")
                    index += 1
                    await trio.sleep(1 / 30)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pusher)
                await wait_until(lambda: viewer.statistics().frames_decoded >= 10)
                await sb.media.faults.link(
                    viewer.user_id, "downlink", loss=0.05, seed=7, stream_key=str(handle.stream_key)
                )
                sent_before = len(handle.sent_timestamps())
                await trio.sleep(4.0)
                window = handle.sent_timestamps()[sent_before:]
                await trio.sleep(0.4)  # the last frames' repairs land
                received = set(viewer.received_timestamps)
                complete = sum(1 for ts in window if ts in received)
                stats = handle.statistics()
                assert stats.nacks_answered > 5 and stats.send is not None and stats.send.rtx_sent > 5
                assert len(window) >= 90 and complete >= 0.99 * len(window), (complete, len(window))
                print("LOSS", complete, len(window), stats.nacks_answered, viewer.statistics())
                # A viewer's PLI gets an IDR within 200 ms.
                await sb.media.faults.link(viewer.user_id, "downlink", stream_key=str(handle.stream_key))
                await trio.sleep(1.0)
                keyframes = len(viewer.keyframe_timestamps)
                asked = trio.current_time()
                viewer.request_keyframe()
                await wait_until(lambda: len(viewer.keyframe_timestamps) > keyframes)
                arrived = viewer.keyframe_timestamps[keyframes][1]
                assert arrived - asked <= 0.2, arrived - asked
                print("PLI", arrived - asked)
                response = handle.statistics().keyframe_response_ms
                assert response is not None and response <= 200
                pushing = False
            assert viewer.statistics().psnr_min_db is not None
            assert viewer.statistics().psnr_min_db >= PSNR_GOAL_DB
