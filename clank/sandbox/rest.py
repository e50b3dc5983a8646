"""The sandbox REST API (``/api/v9`` and ``/api/v10``): just enough Discord for clients to log in.

Covers what clank and a standard library (discord.py: ``GET /users/@me`` then
``GET /oauth2/applications/@me`` for bots; ``/gateway`` or ``/gateway/bot``) request on login,
plus guilds, channels and messages. Authorization is the raw token for user accounts and
``Bot <token>`` for the bot. Errors have Discord's body shape: ``{"message": ..., "code": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from clank.sandbox import payloads
from clank.sandbox.model import Channel, Guild, User
from clank.sandbox.world import World

SUPPORTED_API_VERSIONS = frozenset({9, 10})
MAX_MESSAGES_PER_PAGE = 100
MAX_MESSAGE_LENGTH = 2000


@attrs.frozen
class ApiErrorBody:
    """One entry of Discord's error catalogue: HTTP status, ``message`` and JSON ``code``."""

    status: int
    message: str
    code: int = 0


class ApiError(Exception):
    """Raised by a handler; answered with the body's JSON."""

    def __init__(self, body: ApiErrorBody) -> None:
        self.body = body
        super().__init__(body.message)


# Discord's error catalogue, as far as the sandbox needs it (status, message, JSON code).
UNAUTHORIZED = ApiErrorBody(401, "401: Unauthorized", 0)
NOT_FOUND = ApiErrorBody(404, "404: Not Found", 0)
METHOD_NOT_ALLOWED = ApiErrorBody(405, "405: Method Not Allowed", 0)
UNKNOWN_GUILD = ApiErrorBody(404, "Unknown Guild", 10004)
UNKNOWN_CHANNEL = ApiErrorBody(404, "Unknown Channel", 10003)
UNKNOWN_USER = ApiErrorBody(404, "Unknown User", 10013)
RATE_LIMITED_MESSAGE = "You are being rate limited."
MISSING_ACCESS = ApiErrorBody(403, "Missing Access", 50001)
INVALID_API_VERSION = ApiErrorBody(400, "Invalid API version", 50041)
INVALID_JSON = ApiErrorBody(400, "The request body contains invalid JSON.", 50109)
EMPTY_MESSAGE = ApiErrorBody(400, "Cannot send an empty message", 50006)
INVALID_FORM = ApiErrorBody(400, "Invalid Form Body", 50035)


def error_response(error: ApiErrorBody) -> JSONResponse:
    return JSONResponse({"message": error.message, "code": error.code}, status_code=error.status)


Handler = Callable[[Request], Awaitable[Response]]


class RestApi:
    """Route handlers over one world. ``gateway_url`` is set once the port is known."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.gateway_url = "ws://127.0.0.1/"
        self.user_lookups = 0
        """``GET /users/{id}`` requests answered (429s included)."""
        self._rate_limited = 0
        self._retry_after = 0.0

    def rate_limit_user_lookups(self, count: int, retry_after: float) -> None:
        """The next ``count`` ``GET /users/{id}`` get Discord's 429 (``retry_after`` seconds)."""
        self._rate_limited = count
        self._retry_after = retry_after

    # --- helpers --------------------------------------------------------------------------
    def _authenticate(self, request: Request) -> User:
        header = request.headers.get("authorization", "")
        if header.startswith("Bot "):
            user = self.world.user_by_token(header.removeprefix("Bot "))
            if user is None or not user.is_bot:
                raise ApiError(UNAUTHORIZED)
            return user
        user = self.world.user_by_token(header)
        if user is None or user.is_bot:
            raise ApiError(UNAUTHORIZED)
        return user

    def _check_version(self, request: Request) -> None:
        if request.path_params.get("version") not in SUPPORTED_API_VERSIONS:
            raise ApiError(INVALID_API_VERSION)

    def _guild(self, request: Request, user: User) -> Guild:
        guild = self.world.guilds.get(request.path_params["guild_id"])
        if guild is None:
            raise ApiError(UNKNOWN_GUILD)
        if user.id not in guild.member_ids:
            raise ApiError(MISSING_ACCESS)
        return guild

    def _channel(self, request: Request, user: User) -> Channel:
        channel = self.world.channel(request.path_params["channel_id"])
        if channel is None:
            raise ApiError(UNKNOWN_CHANNEL)
        if user.id not in self.world.guilds[channel.guild_id].member_ids:
            raise ApiError(MISSING_ACCESS)
        return channel

    def _authed(self, handler: Callable[[Request, User], Awaitable[Any]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            self._check_version(request)
            user = self._authenticate(request)
            return JSONResponse(await handler(request, user))

        return endpoint

    # --- endpoints ------------------------------------------------------------------------
    async def gateway(self, request: Request) -> Response:
        self._check_version(request)
        return JSONResponse({"url": self.gateway_url})

    async def gateway_bot(self, request: Request, user: User) -> dict[str, Any]:
        if not user.is_bot:
            raise ApiError(UNAUTHORIZED)
        return {
            "url": self.gateway_url,
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
        }

    async def me(self, request: Request, user: User) -> dict[str, Any]:
        return payloads.me_json(user)

    async def user_by_id(self, request: Request) -> Response:
        """``GET /users/{id}``: the public user object, 404 Unknown User, or a scripted 429."""
        self._check_version(request)
        self._authenticate(request)
        self.user_lookups += 1
        if self._rate_limited > 0:
            self._rate_limited -= 1
            body = {"message": RATE_LIMITED_MESSAGE, "retry_after": self._retry_after, "global": False}
            headers = {"Retry-After": str(max(1, round(self._retry_after))), "X-RateLimit-Scope": "user"}
            return JSONResponse(body, status_code=429, headers=headers)
        user = self.world.users.get(request.path_params["user_id"])
        if user is None:
            raise ApiError(UNKNOWN_USER)
        return JSONResponse(payloads.user_json(user))

    async def my_guilds(self, request: Request, user: User) -> list[dict[str, Any]]:
        return [
            {"id": g.id, "name": g.name, "icon": None, "owner": g.owner_id == user.id, "permissions": "0"}
            for g in self.world.guilds_of(user.id)
        ]

    async def application(self, request: Request, user: User) -> dict[str, Any]:
        if not user.is_bot:
            raise ApiError(UNAUTHORIZED)
        owner = self.world.our_user
        return {
            "id": user.id,
            "name": user.name,
            "description": "clank sandbox bot",
            "icon": None,
            "bot_public": False,
            "bot_require_code_grant": False,
            "owner": payloads.user_json(owner),
            "verify_key": "0" * 64,
            "flags": 0,
            "team": None,
            "bot": payloads.user_json(user),
        }

    async def guild(self, request: Request, user: User) -> dict[str, Any]:
        guild = self._guild(request, user)
        return payloads.guild_json(guild, self.world.channels_of(guild.id))

    async def guild_channels(self, request: Request, user: User) -> list[dict[str, Any]]:
        guild = self._guild(request, user)
        return [payloads.channel_json(c) for c in self.world.channels_of(guild.id)]

    async def channel(self, request: Request, user: User) -> dict[str, Any]:
        return payloads.channel_json(self._channel(request, user))

    async def get_messages(self, request: Request, user: User) -> list[dict[str, Any]]:
        channel = self._channel(request, user)
        try:
            limit = int(request.query_params.get("limit", "50"))
        except ValueError:
            raise ApiError(INVALID_FORM) from None
        limit = max(1, min(limit, MAX_MESSAGES_PER_PAGE))
        users = self.world.users
        return [payloads.message_json(m, users[m.author_id]) for m in self.world.messages(channel.id, limit)]

    async def post_message(self, request: Request, user: User) -> dict[str, Any]:
        channel = self._channel(request, user)
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise ApiError(INVALID_JSON) from None
        content = body.get("content") if isinstance(body, dict) else None
        if content is None or content == "":
            raise ApiError(EMPTY_MESSAGE)
        if not isinstance(content, str) or len(content) > MAX_MESSAGE_LENGTH:
            raise ApiError(INVALID_FORM)
        message = await self.world.post_message(channel.id, user.id, content)
        return payloads.message_json(message, user)

    def routes(self) -> list[BaseRoute]:
        base = "/api/v{version:int}"
        authed = self._authed
        return [
            Route(f"{base}/gateway", self.gateway, methods=["GET"]),
            Route(f"{base}/gateway/bot", authed(self.gateway_bot), methods=["GET"]),
            Route(f"{base}/users/@me", authed(self.me), methods=["GET"]),
            Route(f"{base}/users/@me/guilds", authed(self.my_guilds), methods=["GET"]),
            Route(f"{base}/users/{{user_id}}", self.user_by_id, methods=["GET"]),
            Route(f"{base}/oauth2/applications/@me", authed(self.application), methods=["GET"]),
            Route(f"{base}/guilds/{{guild_id}}", authed(self.guild), methods=["GET"]),
            Route(f"{base}/guilds/{{guild_id}}/channels", authed(self.guild_channels), methods=["GET"]),
            Route(f"{base}/channels/{{channel_id}}", authed(self.channel), methods=["GET"]),
            Route(f"{base}/channels/{{channel_id}}/messages", authed(self.get_messages), methods=["GET"]),
            Route(f"{base}/channels/{{channel_id}}/messages", authed(self.post_message), methods=["POST"]),
        ]


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.body)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(METHOD_NOT_ALLOWED)
    if exc.status_code == 404:
        return error_response(NOT_FOUND)
    return error_response(ApiErrorBody(exc.status_code, f"{exc.status_code}: {exc.detail}", 0))


def build_app(api: RestApi, extra_routes: list[BaseRoute]) -> Starlette:
    """One ASGI app for REST and the gateway websocket (so the sandbox needs a single port)."""
    return Starlette(
        routes=[*api.routes(), *extra_routes],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
