"""Bringing up the share-link fallback (docs/link.md) for one ``clank run``.

open_link_flow (nursery, lifetime = the context)
 ├─ share listener   only when links are available (a port clash is a warning, not fatal)
 └─ LinkFlow.run     supervision of link sessions, while links are available
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import trio

from clank.config import Settings
from clank.control.link import LinkTransport, link_availability
from clank.control.link_flow import DiscordMessagePoster, LinkFlow
from clank.control.link_port import LinkAwarePort
from clank.control.session_port import LiveSessionPort, MemberDirectory
from clank.control.share_http import open_share_listener
from clank.errors import TransportError
from clank.logging import get_logger
from clank.protocol.streams import StreamRegistry
from clank.session.voice_session import VoiceSession
from clank.watch.notes import ScreenNotes

log = get_logger("clank.run")


@contextlib.asynccontextmanager
async def open_link_flow(
    settings: Settings,
    port: LiveSessionPort,
    session: VoiceSession,
    registry: StreamRegistry,
    directory: MemberDirectory,
    *,
    sandbox_text_channel_id: str | None,
    notes_factory: Callable[..., ScreenNotes] | None,
) -> AsyncIterator[tuple[LinkFlow, str | None]]:
    """Yield the :class:`LinkFlow` and the share listener's URL (None when links are off).

    ``sandbox_text_channel_id`` is the sandbox's text channel in sandbox mode, else None.
    """
    sandbox_mode = sandbox_text_channel_id is not None
    availability = link_availability(settings.link, sandbox_mode=sandbox_mode)
    transport = LinkTransport(settings.link, availability=availability)
    discord = settings.discord

    def in_voice(user_id: str) -> bool:
        member = registry.member(user_id)
        return (
            member is not None and member.channel_id is not None and member.channel_id == session.channel_id
        )

    def text_channel() -> str | None:
        """``link.text_channel_id``; else the sandbox's text channel, or the voice channel's own chat."""
        if settings.link.text_channel_id:
            return settings.link.text_channel_id
        return sandbox_text_channel_id if sandbox_mode else session.channel_id

    link_port = LinkAwarePort(port, transport, notes_factory=notes_factory, name_of=directory.name_of)
    links = LinkFlow(
        transport,
        link_port,
        poster=DiscordMessagePoster(discord.api_url, discord.token, discord.properties),
        text_channel_id=text_channel,
        in_voice=in_voice,
    )
    async with trio.open_nursery() as nursery:
        async with contextlib.AsyncExitStack() as stack:
            share_url = None
            if availability.available:
                try:
                    listener = await stack.enter_async_context(
                        open_share_listener(transport, settings.link, any_port_fallback=sandbox_mode)
                    )
                    share_url = listener.url
                except TransportError as exc:
                    log.warning("share link listener not started", error=str(exc))
                nursery.start_soon(links.run)
            yield links, share_url
        nursery.cancel_scope.cancel()  # after the listener closed, as the stack unwinds
