"""Sandbox REST API over real loopback HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from clank.sandbox.app import Sandbox, open_sandbox


async def _get(sb: Sandbox, path: str, auth: str | None, version: int = 10) -> httpx.Response:
    headers = {"Authorization": auth} if auth is not None else {}
    async with httpx.AsyncClient(verify=False) as client:
        return await client.get(f"{sb.api_url}/v{version}{path}", headers=headers)


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"message", "code"}
    return body  # type: ignore[no-any-return]


async def test_login_endpoints_for_user_and_bot() -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb:
            me = await _get(sb, "/users/@me", sb.token)
            assert me.status_code == 200
            assert me.json()["id"] == sb.our_user_id
            assert me.json()["bot"] is False
            bot = await _get(sb, "/users/@me", f"Bot {sb.bot_token}", version=9)
            assert bot.status_code == 200
            assert bot.json()["bot"] is True
            gateway = await _get(sb, "/gateway", sb.token)
            assert gateway.json() == {"url": sb.gateway_url}
            gateway_bot = await _get(sb, "/gateway/bot", f"Bot {sb.bot_token}")
            assert gateway_bot.json()["url"] == sb.gateway_url
            assert gateway_bot.json()["shards"] == 1
            app = await _get(sb, "/oauth2/applications/@me", f"Bot {sb.bot_token}")
            assert app.status_code == 200
            assert {"id", "name", "owner", "verify_key", "bot_public"} <= set(app.json())


@pytest.mark.parametrize(
    "auth",
    ["nope", "Bot nope", None, "bot-token-as-user", "user-token-as-bot", "Bearer x"],
)
async def test_bad_tokens_are_401_with_discord_error_body(auth: str | None) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb:
            if auth == "bot-token-as-user":
                auth = sb.bot_token  # bots must use the "Bot " prefix
            elif auth == "user-token-as-bot":
                auth = f"Bot {sb.token}"
            response = await _get(sb, "/users/@me", auth)
            assert response.status_code == 401
            assert _error(response) == {"message": "401: Unauthorized", "code": 0}


async def test_gateway_bot_refuses_user_tokens() -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb:
            assert (await _get(sb, "/gateway/bot", sb.token)).status_code == 401


async def test_guild_and_channels() -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb:
            guild = await _get(sb, f"/guilds/{sb.guild_id}", sb.token)
            assert guild.status_code == 200
            assert guild.json()["id"] == sb.guild_id
            channels = (await _get(sb, f"/guilds/{sb.guild_id}/channels", sb.token)).json()
            by_id = {c["id"]: c for c in channels}
            assert by_id[sb.voice_channel_id]["type"] == 2
            assert by_id[sb.text_channel_id]["type"] == 0
            channel = await _get(sb, f"/channels/{sb.text_channel_id}", f"Bot {sb.bot_token}")
            assert channel.json()["name"] == "general"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/guilds/123", {"message": "Unknown Guild", "code": 10004}),
        ("/guilds/123/channels", {"message": "Unknown Guild", "code": 10004}),
        ("/channels/123", {"message": "Unknown Channel", "code": 10003}),
        ("/channels/123/messages", {"message": "Unknown Channel", "code": 10003}),
        ("/no/such/route", {"message": "404: Not Found", "code": 0}),
    ],
)
async def test_unknown_ids_are_404(path: str, expected: dict[str, Any]) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb:
            response = await _get(sb, path, sb.token)
            assert response.status_code == 404
            assert _error(response) == expected


async def test_unsupported_api_version() -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb:
            response = await _get(sb, "/users/@me", sb.token, version=6)
            assert response.status_code == 400
            assert _error(response)["code"] == 50041


async def test_post_and_get_messages() -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, httpx.AsyncClient(verify=False) as client:
            url = f"{sb.api_url}/v10/channels/{sb.text_channel_id}/messages"
            for text in ("first", "second"):
                posted = await client.post(url, json={"content": text}, headers={"Authorization": sb.token})
                assert posted.status_code == 200
                assert posted.json()["content"] == text
                assert posted.json()["author"]["id"] == sb.our_user_id
            listed = await client.get(
                url, params={"limit": 5}, headers={"Authorization": f"Bot {sb.bot_token}"}
            )
            assert [m["content"] for m in listed.json()] == ["second", "first"]
            one = await client.get(url, params={"limit": 1}, headers={"Authorization": sb.token})
            assert [m["content"] for m in one.json()] == ["second"]
            assert [m.content for m in sb.world.messages(sb.text_channel_id)] == ["second", "first"]


@pytest.mark.parametrize(
    ("body", "code"),
    [(b'{"content": ""}', 50006), (b"{not json", 50109), (b'{"content": 5}', 50035), (b"[]", 50006)],
)
async def test_bad_message_bodies_are_400(body: bytes, code: int) -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, httpx.AsyncClient(verify=False) as client:
            response = await client.post(
                f"{sb.api_url}/v10/channels/{sb.text_channel_id}/messages",
                content=body,
                headers={"Authorization": sb.token, "Content-Type": "application/json"},
            )
            assert response.status_code == 400
            assert _error(response)["code"] == code
