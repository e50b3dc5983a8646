"""What the API's HTTP route modules share: the JSON error shape, the bearer check, bounded JSON bodies.

Used by :mod:`clank.control.http`, :mod:`clank.control.voice_http`, :mod:`clank.control.publish`,
:mod:`clank.control.share_http` (capped bodies) and :mod:`clank.control.mcp_server` (the bearer check),
so a 400 names its field, a 401 asks for ``Bearer`` and an oversized body is refused the same way
on every route. Each caller keeps its own body limit.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response

from clank.errors import InvalidArgument

__all__ = [
    "Handler",
    "authorized",
    "error_response",
    "protected",
    "read_capped",
    "read_json",
    "read_json_object",
]

Handler = Callable[[Request], Awaitable[Response]]


def error_response(status: int, error: str, message: str, field: str | None = None) -> JSONResponse:
    """``{"error", "message", "field"?}`` with ``status`` (a 401 also says ``WWW-Authenticate: Bearer``)."""
    body: dict[str, Any] = {"error": error, "message": message}
    if field is not None:
        body["field"] = field
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def authorized(conn: HTTPConnection, token: str, *, query: bool = False) -> bool:
    """``Authorization: Bearer <token>``; with ``query``, ``?token=`` also counts (browser WebSockets)."""
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return secrets.compare_digest(value.strip().encode(), token.encode())
    given = conn.query_params.get("token") if query else None
    return given is not None and secrets.compare_digest(given.encode(), token.encode())


def protected(token: str, handler: Handler) -> Handler:
    """``handler`` behind the bearer check (401), its ``InvalidArgument`` answered as 400 naming the field."""

    async def endpoint(request: Request) -> Response:
        if not authorized(request, token):
            return error_response(
                401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer ...)"
            )
        try:
            return await handler(request)
        except InvalidArgument as exc:
            return error_response(400, "invalid_request", exc.message, exc.field)

    return endpoint


async def read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as more than ``limit`` bytes arrived (a declared
    ``Content-Length`` over the limit is refused before reading anything)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> object:
    """The body as JSON (an empty body is ``{}``).

    More than ``limit`` bytes (refused as soon as it is read past) or bad JSON: ``InvalidArgument("body")``.
    """
    raw = await read_capped(request, limit)
    if raw is None:
        raise InvalidArgument("body", f"must be at most {limit} bytes")
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument("body", f"malformed JSON: {exc}") from None


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """:func:`read_json` that must be a JSON object."""
    body = await read_json(request, limit)
    if not isinstance(body, dict):
        raise InvalidArgument("body", "must be a JSON object")
    return body
