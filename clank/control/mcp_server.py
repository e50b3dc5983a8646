"""The agent tools over the Model Context Protocol, with the official ``mcp`` SDK (anyio, so trio).

One source of truth: the tool list is :func:`clank.control.tools.tool_schemas` and every call goes
through :func:`clank.control.tools.call_tool`, so a tool added to the table appears here, in
``clank tools`` and in ``/api/tools`` alike.

* :func:`build_mcp_server` — the SDK's low-level ``Server`` over one :class:`ClankService`.
* :func:`open_mcp_stdio` + :func:`serve_mcp` — ``clank mcp``: the protocol on stdin/stdout (logs go
  to stderr).
* :func:`open_mcp_http_app` — the streamable HTTP transport as an ASGI app for the API listener
  (``/mcp``, same bearer token), with the SDK's session manager running in our nursery.

Results: a tool's JSON answer is the call's ``structuredContent`` and, pretty-printed, its text
content. An ``image`` object in the answer (``look_at_screen``: ``{mimeType, dataBase64}``)
becomes an MCP image content block and is left out of the JSON, which then carries
``"image": {"mimeType": ..., "inContent": true}``. An answer with ``ok: false`` is a tool error
(``isError``) carrying the same ``reason`` as the HTTP API; a bad argument is a tool error
``{"error": "invalid_request", "field", "message"}`` like the HTTP API's 400.

Commentary cues (:mod:`clank.watch.commentary`) are the resource ``clank://commentary/latest``: a
client that subscribes (``resources/subscribe``) gets ``notifications/resources/updated`` for each
``commentary_due`` and reads the cue (JSON, no image; ``look_at_screen`` fetches the frame).

trio: the SDK runs on anyio and works under trio's backend as it is (stdio transport, server
runner, streamable HTTP session manager, the SDK's own client); nothing here needs asyncio.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import mcp_types as types
import trio
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from starlette.requests import HTTPConnection

from clank import __version__
from clank.control.http_common import authorized, error_response
from clank.control.service import ClankService
from clank.control.tools import call_tool, tool_schemas
from clank.errors import ClankError, InvalidArgument
from clank.logging import get_logger
from clank.watch.commentary import CommentaryHub, iterate_cues

log = get_logger("clank.control.mcp")

SERVER_NAME: Final = "clank"
INSTRUCTIONS: Final = (
    "clank is in a Discord voice channel and can watch Go Live screen shares. Call list_sharers to "
    "see who shares, start_screen_watch to watch someone, then look_at_screen to get the latest "
    "frame (a JPEG) with its change scores and screen notes."
)
COMMENTARY_URI: Final = "clank://commentary/latest"
LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "::1")

StdioStreams = tuple[Any, Any]  # the SDK's (read stream, write stream) pair
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def mcp_tools() -> list[types.Tool]:
    """``clank tools`` as MCP tool definitions."""
    return [
        types.Tool(name=s["name"], description=s["description"], input_schema=s["input_schema"])
        for s in tool_schemas()
    ]


def tool_result(answer: dict[str, Any]) -> types.CallToolResult:
    """An MCP tool result for a tool's JSON answer (see the module docstring)."""
    content: list[types.ContentBlock] = []
    image = answer.get("image")
    if isinstance(image, dict) and isinstance(image.get("dataBase64"), str):
        answer = {**answer, "image": {"mimeType": image.get("mimeType", "image/jpeg"), "inContent": True}}
        content.append(
            types.ImageContent(
                type="image", data=image["dataBase64"], mime_type=str(image.get("mimeType", "image/jpeg"))
            )
        )
    text = json.dumps(answer, indent=1, default=str)
    content.insert(0, types.TextContent(type="text", text=text))
    notes = answer.get("notes")
    if isinstance(notes, list) and notes:
        lines = [str(n.get("text", "")) for n in notes if isinstance(n, dict) and n.get("text")]
        if lines:
            content.append(
                types.TextContent(type="text", text="Screen notes (oldest first):\n" + "\n".join(lines))
            )
    return types.CallToolResult(
        content=content,
        structured_content=json.loads(json.dumps(answer, default=str)),
        is_error=answer.get("ok") is False,
    )


def error_result(error: str, message: str, field: str | None = None) -> types.CallToolResult:
    body: dict[str, Any] = {"ok": False, "error": error, "reason": error, "message": message}
    if field is not None:
        body["field"] = field
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(body))],
        structured_content=body,
        is_error=True,
    )


class CueForwarder:
    """``commentary_due`` over MCP: the resource :data:`COMMENTARY_URI` (the latest cue as JSON,
    no image) and ``notifications/resources/updated`` to the sessions that subscribed to it."""

    def __init__(self, hub: CommentaryHub) -> None:
        self.hub = hub
        self._sessions: list[Any] = []

    def resources(self) -> list[types.Resource]:
        return [
            types.Resource(
                uri=COMMENTARY_URI,
                name="commentary_due",
                description="The latest commentary cue: a good moment to comment on a watched screen "
                "(subscribe for notifications/resources/updated).",
                mime_type="application/json",
            )
        ]

    def read(self) -> str:
        latest = self.hub.since(self.hub.latest_number - 1)
        return json.dumps(latest[-1].to_json() if latest else {"type": "commentary_due", "number": 0})

    def subscribe(self, session: Any) -> None:
        if session not in self._sessions:
            self._sessions.append(session)

    def unsubscribe(self, session: Any) -> None:
        if session in self._sessions:
            self._sessions.remove(session)

    async def run(self) -> None:
        async for _cue in iterate_cues(self.hub, self.hub.latest_number):
            for session in list(self._sessions):
                try:
                    await session.send_resource_updated(COMMENTARY_URI)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    self.unsubscribe(session)


def build_mcp_server(service: ClankService, forwarder: CueForwarder | None = None) -> Server[Any]:
    """The SDK server over ``service``: ``tools/list`` and ``tools/call``; with a ``forwarder``,
    the commentary resource and its subscription too."""

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=mcp_tools())

    async def call(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        try:
            answer = await call_tool(service, params.name, params.arguments or {})
        except InvalidArgument as exc:
            return error_result("invalid_request", exc.message, exc.field)
        except ClankError as exc:  # an expected failure of the call, not of the server
            log.info("mcp tool failed", tool=params.name, error=type(exc).__name__)
            return error_result(getattr(exc, "reason", type(exc).__name__), str(exc))
        return tool_result(answer)

    if forwarder is None:
        return Server(
            SERVER_NAME,
            version=__version__,
            instructions=INSTRUCTIONS,
            on_list_tools=list_tools,
            on_call_tool=call,
        )
    cues = forwarder

    async def list_resources(
        ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=cues.resources())

    async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        if str(params.uri) != COMMENTARY_URI:
            raise MCPError(code=types.INVALID_PARAMS, message=f"unknown resource {params.uri}")
        text = types.TextResourceContents(uri=COMMENTARY_URI, mime_type="application/json", text=cues.read())
        return types.ReadResourceResult(contents=[text])

    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        cues.subscribe(ctx.session)
        return types.EmptyResult()

    async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        cues.unsubscribe(ctx.session)
        return types.EmptyResult()

    return Server(
        SERVER_NAME,
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
        on_subscribe_resource=subscribe,
        on_unsubscribe_resource=unsubscribe,
    )


@asynccontextmanager
async def open_mcp_stdio() -> AsyncIterator[StdioStreams]:
    """Claim stdin/stdout for the protocol (the SDK points fd 1 at stderr meanwhile, so a stray
    print cannot corrupt the wire). Open it *before* starting anything that might print."""
    async with stdio_server() as streams:
        yield streams


async def serve_mcp(
    service: ClankService, streams: StdioStreams, *, commentary: CommentaryHub | None = None
) -> None:
    """Serve MCP over ``streams`` (from :func:`open_mcp_stdio`) until the client closes them."""
    forwarder = None if commentary is None else CueForwarder(commentary)
    server = build_mcp_server(service, forwarder)
    read_stream, write_stream = streams
    log.info("mcp serving on stdio", tools=len(tool_schemas()))
    async with trio.open_nursery() as nursery:
        if forwarder is not None:
            nursery.start_soon(forwarder.run)
        await server.run(read_stream, write_stream, server.create_initialization_options())
        nursery.cancel_scope.cancel()
    log.info("mcp stdio closed")


class _BearerGuard:
    """ASGI wrapper: the HTTP API's bearer check and its 401 (``http_common``) before the MCP app."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], token: str) -> None:
        self._app = app
        self._token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not authorized(HTTPConnection(scope), self._token):
            refused = error_response(
                401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer ...)"
            )
            await refused(scope, receive, send)
            return
        await self._app(scope, receive, send)


def _security(host: str) -> TransportSecuritySettings | None:
    if host not in LOOPBACK_HOSTS:
        return None  # the bearer token guards it; the listener's own Host check applies
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )


@asynccontextmanager
async def open_mcp_http_app(
    service: ClankService, *, token: str, host: str = "127.0.0.1", commentary: CommentaryHub | None = None
) -> AsyncIterator[Callable[[Scope, Receive, Send], Awaitable[None]]]:
    """The streamable HTTP MCP endpoint as a bearer-guarded ASGI app; its session manager (a
    task group of the SDK) and the cue forwarder live for the block."""
    forwarder = None if commentary is None else CueForwarder(commentary)
    manager = StreamableHTTPSessionManager(
        app=build_mcp_server(service, forwarder),
        security_settings=_security(host),
        session_idle_timeout=600.0,
    )
    async with manager.run(), trio.open_nursery() as nursery:
        if forwarder is not None:
            nursery.start_soon(forwarder.run)
        yield _BearerGuard(manager.handle_request, token)
        nursery.cancel_scope.cancel()
