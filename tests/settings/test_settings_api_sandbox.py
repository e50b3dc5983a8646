"""Settings audit, ``[api]`` and ``[sandbox]``: what ``clank run`` (``open_clank``) serves and runs.

One in-process run: the API listens where ``api.host`` / ``api.port`` say and takes only
``api.token``; the sandbox listens on ``sandbox.host`` / ``sandbox.port``, plays
``sandbox.scenario`` and mints the ids of ``sandbox.seed``; a share link is posted where
``link.text_channel_id`` says.
"""

from __future__ import annotations

import socket

import attrs
import httpx
import trio

import clank
from clank.runner import open_clank
from clank.sandbox.app import open_sandbox

TOKEN = "a-fixed-api-token-0123456789"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def test_api_and_sandbox_settings_are_where_and_what_clank_runs() -> None:
    settings = clank.load_settings(environ={})
    api_port, sandbox_port = free_port("127.0.0.2"), free_port("127.0.0.1")
    settings = attrs.evolve(
        settings,
        api=attrs.evolve(settings.api, host="127.0.0.2", port=api_port, token=TOKEN),
        sandbox=attrs.evolve(settings.sandbox, port=sandbox_port, scenario="streamer", seed=7),
        notes=attrs.evolve(settings.notes, enabled=False),
    )
    with trio.fail_after(60):
        async with open_sandbox(scenario="empty", seed=7) as twin:
            expected_guild = twin.guild_id  # the same seed mints the same ids
            voice_chat = twin.voice_channel_id
        # link.text_channel_id: links go to the voice channel's own chat instead of the text channel.
        settings = attrs.evolve(
            settings, link=attrs.evolve(settings.link, port=0, text_channel_id=voice_chat)
        )
        async with open_clank(settings, demo_watch=False) as info:
            assert info.api.url == f"http://127.0.0.2:{api_port}"  # api.host, api.port
            assert info.sandbox_api_url is not None and f"127.0.0.1:{sandbox_port}" in info.sandbox_api_url
            assert info.guild_id == expected_guild  # sandbox.seed
            assert info.scenario == "streamer"
            async with httpx.AsyncClient(base_url=info.api.url, timeout=10) as http:
                refused = await http.get("/api/status", headers={"Authorization": "Bearer another-token"})
                assert refused.status_code == 401
                ok = await http.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
                assert ok.status_code == 200  # api.token is the one accepted
            assert info.service is not None
            service = info.service
            with trio.move_on_after(10):  # sandbox.scenario: the streamer scenario's alice shares
                while not any(s["live"] for s in service.list_sharers()):  # noqa: ASYNC110 - no event
                    await trio.sleep(0.2)
            assert any(s["live"] for s in service.list_sharers())
            offer = await service.start_screen_watch(target="alice", preferred_transport="link")
            assert offer.ok and offer.transport == "link", offer
            world = info.sandbox.world
            posted = world.messages(voice_chat, 10)
            assert posted and offer.link_url is not None and offer.link_url in posted[0].content
            assert not world.messages(info.sandbox.text_channel_id, 10)
