"""The sandbox demo's agent: what ``clank run`` does on its own when there is no token.

It uses only the agent surface (:class:`~clank.control.service.ClankService`), as a model would:

    run_demo
     ├─ demo_agent     start_screen_watch() until the streamer is bound, then the webcam user
     ├─ demo_listener  listen() to everyone: what we hear, per speaker (the dashboard's Voice panel)
     └─ demo_publish   once a watch runs: a generated song (looped) with the visualizer; a viewer

The composition root (``clank/runner.py``) passes in how the sandbox adds a viewer to our Go Live.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import trio

from clank.control.publish import demo_publish
from clank.control.service import ClankService
from clank.errors import ClankError
from clank.logging import get_logger
from clank.media.visualizer import write_demo_music
from clank.protocol.streams import StreamRegistry
from clank.session.voice_listen import UserAudio

log = get_logger("clank.run")

#: How long the sandbox demo agent keeps trying to bind the streamer before giving up.
DEMO_WATCH_PATIENCE: Final = 60.0
DEMO_RETRY_INTERVAL: Final = 1.0
#: Audio frames per second of the voice channel (20 ms each).
FRAMES_PER_SECOND: Final = 50


async def demo_agent(service: ClankService, own_user_id: str, registry: StreamRegistry) -> None:
    """Watch whoever shares, then the webcam user (retrying once a second, bounded)."""
    with trio.move_on_after(DEMO_WATCH_PATIENCE):
        while True:
            result = await service.start_screen_watch()
            # Waiting for the demo streamer repeats once a second: that is debug, not news.
            (log.info if result.ok else log.debug)("demo agent: start_screen_watch", **result.to_json())
            if result.ok:
                break
            await trio.sleep(DEMO_RETRY_INTERVAL)
    with trio.move_on_after(DEMO_WATCH_PATIENCE):
        while True:
            webcams = [s for s in registry.sharers() if s.webcam and s.user_id != own_user_id]
            if webcams:
                result = await service.start_screen_watch(target=webcams[0].user_id)
                log.info("demo agent: start_screen_watch (webcam)", **result.to_json())
                if result.ok:
                    return
            await trio.sleep(DEMO_RETRY_INTERVAL)


async def demo_listener(service: ClankService) -> None:
    """Listen to everyone, as an agent would: the first utterance heard is logged at info (the
    demo shows it listens), later ones at debug (repeated lines would scroll the banner away)."""
    voice = service.voice
    if voice is None:
        return
    told = False
    while True:
        try:
            async with voice.listen() as listener:
                frames: dict[str, int] = {}
                async for item in listener:
                    if isinstance(item, UserAudio):
                        frames[item.user_id] = frames.get(item.user_id, 0) + 1
                    elif item.type == "speaking_stopped":
                        seconds = frames.pop(item.user_id, 0) / FRAMES_PER_SECOND
                        (log.debug if told else log.info)(
                            "demo: heard", user=_label(service, item.user_id), seconds=seconds
                        )
                        told = True
        except ClankError:  # not in voice (yet, or any more): listen again once it is
            await trio.sleep(DEMO_RETRY_INTERVAL)


def _label(service: ClankService, user_id: str) -> str:
    for member in service.session.members():
        if member.user_id == user_id:
            return member.label
    return user_id


async def run_demo(
    service: ClankService,
    own_user_id: str,
    registry: StreamRegistry,
    start_viewer: Callable[[str], Awaitable[object]],
    folder: str,
) -> None:
    """The whole demo: the agent's watches and, beside them, our own Go Live with a viewer."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(demo_agent, service, own_user_id, registry)
        nursery.start_soon(demo_listener, service)
        music = await trio.to_thread.run_sync(write_demo_music, f"{folder}/demo-song.wav")
        await demo_publish(service, music, start_viewer)
