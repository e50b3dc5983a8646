"""Discord moving a Go Live stream under its viewers (sandbox fidelity scripts).

Discord may reallocate a stream's server while it is watched (a region move, a health check
after op21): viewers get a fresh ``STREAM_SERVER_UPDATE`` and must reconnect the stream leg with
the new credentials. A stream can also become unavailable for a while (``STREAM_DELETE`` with
``unavailable: true``) and come back with ``STREAM_CREATE``. These functions script both against
a running :class:`~clank.sandbox.world.World` for tests and scenarios.
"""

from __future__ import annotations

import trio

from clank.errors import SandboxError
from clank.logging import get_logger, register_secret
from clank.sandbox import payloads
from clank.sandbox.rtc.backend import RtcMediaBackend
from clank.sandbox.rtc.server import CLOSE_CALL_TERMINATED
from clank.sandbox.world import World

__all__ = ["MOVE_GRACE", "health_check", "move_stream_server", "move_voice_server", "stream_unavailable"]

log = get_logger("clank.sandbox.stream_moves")

MOVE_GRACE = 1.0
"""Seconds a viewer keeps its old stream connection after the new STREAM_SERVER_UPDATE."""


async def move_stream_server(
    world: World, stream_key: str, *, close_code: int = CLOSE_CALL_TERMINATED, grace: float = MOVE_GRACE
) -> int:
    """Fresh credentials (STREAM_SERVER_UPDATE) to every viewer; after ``grace`` seconds, close
    connections still on an old token with ``close_code``. Returns how many were closed."""
    stream = world.stream(stream_key)
    if stream is None:
        raise SandboxError(f"no stream {stream_key}")
    for viewer in list(stream.viewer_ids):
        state = world.voice_state(viewer)
        if state is None:
            continue
        endpoint, token = await world.media.allocate_stream(
            stream.key, viewer, state.session_id, stream.rtc_server_id
        )
        register_secret(token)
        world.hub.dispatch(
            "STREAM_SERVER_UPDATE",
            {"stream_key": stream.key, "guild_id": None, "endpoint": endpoint, "token": token},
            users=[viewer],
        )
    log.info("stream server moved", stream_key=stream.key, viewers=len(stream.viewer_ids))
    await trio.sleep(grace)
    media = world.media
    if not isinstance(media, RtcMediaBackend):
        return 0
    return media.stream_server(stream.key).close_stale(close_code)


async def move_voice_server(world: World, user_id: str, *, close_code: int = 4014, race: float = 0.2) -> None:
    """Discord moving a voice server: the user's voice connection is closed with ``close_code``
    (4014 or 4022) and ``race`` seconds later a VOICE_SERVER_UPDATE with fresh credentials follows
    (the client must wait briefly for it instead of ending the session)."""
    state = world.voice_state(user_id)
    if state is None or state.channel_id is None:
        raise SandboxError(f"user {user_id} is not in voice")
    media = world.media
    if not isinstance(media, RtcMediaBackend):
        raise SandboxError("moving a voice server needs the sandbox's media servers")
    server = media.voice_server(state.channel_id)
    server.close_connection(int(user_id), close_code, "voice server moved")
    await trio.sleep(race)
    endpoint, token = await media.allocate_voice(state.guild_id, state.channel_id, user_id, state.session_id)
    register_secret(token)
    world.hub.dispatch(
        "VOICE_SERVER_UPDATE",
        {"token": token, "guild_id": state.guild_id, "endpoint": endpoint},
        users=[user_id],
    )
    log.info("voice server moved", user_id=user_id, close_code=close_code)


async def health_check(world: World, user_id: str, stream_key: object, *, via_session: str | None) -> bool:
    """op21 from a viewer: Discord checks the stream server and may reallocate it; the sandbox
    always does, for that viewer: a fresh STREAM_SERVER_UPDATE (the old token stops working).
    Anything else (not a viewer, no such stream) is ignored."""
    stream = world.stream(stream_key) if isinstance(stream_key, str) else None
    state = world.voice_state(user_id)
    if stream is None or state is None or user_id not in stream.viewer_ids:
        return False
    media = world.media
    if isinstance(media, RtcMediaBackend):
        try:
            media.stream_server(stream.key)
        except SandboxError:
            return False  # the stream is ending: its server is gone, nothing to reallocate
    endpoint, token = await world.media.allocate_stream(
        stream.key, user_id, state.session_id, stream.rtc_server_id
    )
    register_secret(token)
    targets = {"session_ids": [via_session]} if via_session is not None else {"users": [user_id]}
    world.hub.dispatch(
        "STREAM_SERVER_UPDATE",
        {"stream_key": stream.key, "guild_id": None, "endpoint": endpoint, "token": token},
        **targets,
    )
    log.info("stream health check: server reallocated", stream_key=stream.key, user_id=user_id)
    return True


async def stream_unavailable(world: World, stream_key: str, seconds: float) -> None:
    """STREAM_DELETE ``unavailable: true`` to the viewers, then after ``seconds`` STREAM_CREATE and
    a fresh STREAM_SERVER_UPDATE (the stream is back; viewers that held on reconnect)."""
    stream = world.stream(stream_key)
    if stream is None:
        raise SandboxError(f"no stream {stream_key}")
    viewers = list(stream.viewer_ids)
    world.hub.dispatch(
        "STREAM_DELETE",
        {"stream_key": stream.key, "reason": "unavailable", "unavailable": True},
        users=viewers,
    )
    await trio.sleep(seconds)
    world.hub.dispatch("STREAM_CREATE", payloads.stream_json(stream), users=viewers)
    await move_stream_server(world, stream_key)
