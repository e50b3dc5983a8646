"""Settings audit, ``[publish]``: each key changes what the sandbox's viewer (or the caller) gets.

One sandbox and our voice session on the fake network under ``autojump_clock`` (DAVE, libx264
and the viewer's PyAV decoder run inline, so the figures are deterministic); our Go Live runs twice
with two sets of ``[publish]`` settings, and each key's effect is measured on the receiving side:
picture size (``width``/``height``), frame rate (``fps``), bitrate (``max_bitrate``), keyframe
spacing (``keyframe_interval_s``), packet size (``mtu``) and how long a keyframe waits in the pacer
(``pacing_factor``). ``frame_queue``, ``max_image_bytes``, ``visualizer`` and
``credentials_timeout_s`` change what the publish API accepts or answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import numpy as np
import pytest
import simplejpeg
import trio
import trio.testing
from fake_session import fake_session

from clank.config import DiscordSettings, PublishSettings, Settings
from clank.control.publish import PublishControl
from clank.errors import InvalidArgument, PublishError
from clank.media.publish_source import PushedFrames
from clank.media.visualizer import write_demo_music
from clank.sandbox.app import Sandbox
from clank.session.stream_publish import PublishHandle, start_stream_publish
from clank.session.voice_session import VoiceSession

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")

BASE = PublishSettings(credentials_timeout_s=5.0)
#: Two sets that differ in every measured key.
LARGE = attrs.evolve(
    BASE,
    width=320,
    height=240,
    fps=30,
    max_bitrate=800_000,
    keyframe_interval_s=0.5,
    mtu=1100,
    pacing_factor=10.0,
)
SMALL = attrs.evolve(
    BASE,
    width=160,
    height=96,
    fps=10,
    max_bitrate=150_000,
    keyframe_interval_s=30.0,
    mtu=400,
    pacing_factor=1.0,
)
WINDOW = 2.0
#: A DAVE frame trailer and RTP header extensions ride beside the payload ``mtu`` bounds.
PAYLOAD_OVERHEAD = 64


@asynccontextmanager
async def in_voice(publish: PublishSettings = BASE) -> AsyncIterator[tuple[Sandbox, VoiceSession]]:
    """Our voice session in the sandbox on the fake network (run under ``autojump_clock``)."""
    settings = Settings(discord=DiscordSettings(voice_url_scheme="ws"), publish=publish)
    async with fake_session(settings=settings) as (_net, sb, session):
        yield sb, session


async def wait_until(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110 - callers bound it; no event to wait on
        await trio.sleep(0.02)


def noise_images(count: int, width: int, height: int) -> list[bytes]:
    """Pictures an encoder cannot squeeze: the bitrate cap, not the content, sets the rate."""
    rng = np.random.default_rng(7)
    return [
        simplejpeg.encode_jpeg(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), quality=90)
        for _ in range(count)
    ]


@attrs.frozen
class Observed:
    size: tuple[int, int]
    fps: float
    bitrate: float
    keyframes: int
    max_payload: int
    max_queue_delay: float
    announced_bitrate: int | None


async def publish_and_measure(sb: Sandbox, session: VoiceSession, publish: PublishSettings) -> Observed:
    assert sb.media is not None
    images = noise_images(6, publish.width, publish.height)
    handle: PublishHandle = await start_stream_publish(session, source=PushedFrames(), settings=publish)
    assert handle.stream_key is not None
    bob = sb.world.user_by_name("bob").id
    if sb.world.voice_state(bob) is None:
        await sb.world.join_voice(bob, sb.voice_channel_id)
    viewer = await sb.media.start_viewer(bob, str(handle.stream_key))
    index = 0

    async def push_for(seconds: float) -> None:
        nonlocal index
        with trio.move_on_after(seconds):
            while True:
                await handle.push_image(images[index % len(images)], "image/jpeg")
                index += 1
                await trio.sleep(1 / publish.fps)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(push_for, 60.0)
        await wait_until(lambda: viewer.statistics().frames_decoded >= 3)  # the viewer's first keyframe
        before = handle.statistics()
        viewer.member.receiver.raw.clear()
        start = trio.current_time()
        await trio.sleep(WINDOW)
        after, elapsed = handle.statistics(), trio.current_time() - start
        payloads = [len(p.payload) for p in viewer.member.receiver.raw]
        nursery.cancel_scope.cancel()
    assert payloads
    assert before.send is not None and after.send is not None
    ours = sb.media.stream_server(str(handle.stream_key)).participant(int(sb.our_user_id))
    assert ours is not None and ours.video is not None and ours.video.streams
    stats = viewer.statistics()
    observed = Observed(
        size=(stats.width, stats.height),
        fps=(after.send.frames_sent - before.send.frames_sent) / elapsed,
        bitrate=(after.send.bytes_sent - before.send.bytes_sent) * 8 / elapsed,
        keyframes=after.send.keyframes_sent - before.send.keyframes_sent,
        max_payload=max(payloads),
        max_queue_delay=after.send.max_queue_delay,
        announced_bitrate=ours.video.streams[0].max_bitrate,
    )
    key = str(handle.stream_key)
    await handle.stop()
    await wait_until(lambda: sb.world.stream(key) is None)
    await trio.sleep(0.5)  # our gateway hears STREAM_DELETE before the next go-live
    return observed


async def test_size_rate_bitrate_keyframes_mtu_and_pacing_reach_the_viewer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with in_voice() as (sb, session):
            large = await publish_and_measure(sb, session, LARGE)
            small = await publish_and_measure(sb, session, SMALL)
    for got, asked in ((large, LARGE), (small, SMALL)):
        assert got.size == (asked.width, asked.height), got  # publish.width / publish.height
        assert got.announced_bitrate == asked.max_bitrate, got  # op12 carries publish.max_bitrate
        assert 0.6 * asked.fps <= got.fps <= 1.2 * asked.fps, got  # publish.fps
        assert got.bitrate <= 1.5 * asked.max_bitrate, got  # publish.max_bitrate caps what is sent
        assert got.max_payload <= asked.mtu + PAYLOAD_OVERHEAD, got  # publish.mtu
    assert large.bitrate > 2.5 * small.bitrate, (large, small)
    assert large.max_payload > SMALL.mtu + PAYLOAD_OVERHEAD, large  # the larger mtu is used
    # publish.keyframe_interval_s: every 0.5 s, or none inside the window with 30 s.
    assert large.keyframes >= 3 and small.keyframes <= 1, (large, small)
    # publish.pacing_factor: 1x the cap drains a keyframe far slower than 10x.
    assert small.max_queue_delay > 2 * large.max_queue_delay, (large, small)


@pytest.mark.parametrize("queue", [1, 8])
async def test_frame_queue_bounds_the_pushed_images_waiting(
    queue: int, autojump_clock: trio.testing.MockClock
) -> None:
    publish = attrs.evolve(BASE, width=160, height=96, fps=1, frame_queue=queue)
    image = noise_images(1, 160, 96)[0]
    with trio.fail_after(30):
        async with in_voice(publish) as (_sb, session):
            control = PublishControl(session)
            await control.start("frames")
            handle = control.handle
            assert handle is not None and isinstance(handle.source, PushedFrames)
            queued = [(await control.push_frame(image, "image/jpeg"))["queued"] for _ in range(8)]
            stats = handle.source.statistics()
            await control.stop()
    # One frame a second leaves for the encoder: the 8 quick pushes wait in (or fall off) the queue.
    if queue == 1:
        assert max(queued) == 1 and stats.dropped >= 6, (queued, stats)
    else:
        assert max(queued) >= 6 and stats.dropped == 0, (queued, stats)


async def test_max_image_bytes_and_visualizer_change_what_the_publish_api_does(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    publish = attrs.evolve(BASE, width=160, height=96, fps=10, max_image_bytes=4096, visualizer="showwaves")
    big = noise_images(1, 160, 96)[0]
    assert len(big) > publish.max_image_bytes
    music = await trio.to_thread.run_sync(write_demo_music, str(tmp_path / "song.wav"), 2.0)
    with trio.fail_after(40):
        async with in_voice(publish) as (_sb, session):
            control = PublishControl(session)
            await control.start("frames")
            with pytest.raises(InvalidArgument, match="max_image_bytes") as refused:
                await control.push_frame(big, "image/jpeg")  # a default-sized limit would take it
            assert refused.value.field == "image"
            small = noise_images(1, 32, 32)[0]
            assert (await control.push_frame(small, "image/jpeg"))["accepted"]
            state = await control.play_music(music)  # no visualizer named: publish.visualizer
            assert state["source"] == "visualizer" and state["sourceDetail"]["video"] == "showwaves", state
            await control.stop()


@pytest.mark.parametrize(("wait", "ok"), [(1.0, False), (4.0, True)])
async def test_credentials_timeout_bounds_the_wait_for_our_stream_server(
    wait: float, ok: bool, autojump_clock: trio.testing.MockClock
) -> None:
    publish = attrs.evolve(BASE, width=160, height=96, fps=10, credentials_timeout_s=wait)
    with trio.fail_after(30):
        async with in_voice(publish) as (sb, session):
            sb.faults.delay_dispatch("STREAM_SERVER_UPDATE", 2.0)
            started = trio.current_time()
            if ok:
                handle = await start_stream_publish(session, source=PushedFrames())
                assert handle.stream_key is not None
                await handle.stop()
            else:
                with pytest.raises(PublishError, match="no_credentials"):
                    await start_stream_publish(session, source=PushedFrames())
                assert trio.current_time() - started < 2.0
