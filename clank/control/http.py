"""The local HTTP JSON API and the dashboard: starlette served by hypercorn on trio.

    async with open_http_api(service, settings.api, token=token) as api:
        print(api.dashboard_url)        # http://127.0.0.1:8787/#token=...

Every ``/api/*`` route needs ``Authorization: Bearer <token>`` (401 with a JSON error
otherwise). The dashboard page (``GET /``) is served without it; it reads the token from the
URL fragment (``#token=...``, never sent to the server, so it stays out of request logs) and
keeps it in ``sessionStorage``. Request bodies are validated by the tool table
(:mod:`clank.control.tools`); a wrong body answers 400 ``{"error": "invalid_request", "field":
..., "message": ...}``.

Every request first passes the Host-header check (:mod:`clank.control.host_check`): loopback
names, IP literals, ``api.host`` and ``api.allowed_hosts``; any other Host gets 421.

``/mcp`` is the Model Context Protocol's streamable HTTP transport (same bearer token; see
:mod:`clank.control.mcp_server`).

``GET /api/events`` is a server-sent-event stream: ``commentary_due`` events (when given a
:class:`~clank.watch.commentary.CommentaryHub`), a ``status`` event every
:data:`SSE_INTERVAL`, a ``sharers`` event when the sharers change (and first of all), a
``frame`` event whenever a watch has a new picture, and ``log`` events
for new entries of :data:`clank.logging.RECENT`. Streams end when the client goes away or the
API closes.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final, cast

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from clank.config import ApiSettings
from clank.control.dashboard import dashboard_html
from clank.control.host_check import AllowedHosts, HostCheckMiddleware
from clank.control.http_common import Handler, error_response, protected, read_json
from clank.control.mcp_server import open_mcp_http_app
from clank.control.publish import publish_routes
from clank.control.service import ClankService
from clank.control.tools import TOOLS_BY_NAME, call_tool, tool_schemas
from clank.control.voice_http import voice_routes
from clank.errors import InvalidArgument
from clank.io.listen import listen_failed
from clank.logging import RECENT, get_logger, register_secret
from clank.watch.commentary import CommentaryHub

log = get_logger("clank.control.http")

SSE_INTERVAL: Final = 0.5  # seconds between status events; frames are checked as often
SSE_STATUS_REUSE: Final = 0.25  # event streams share a status computed this recently (seconds)
SSE_LOG_BACKLOG: Final = 50  # recent log events sent when a stream opens
MAX_BODY_BYTES: Final = 64 * 1024
GRACEFUL_TIMEOUT: Final = 1.0  # seconds hypercorn waits for open requests on shutdown
SHUTDOWN_TIMEOUT: Final = 3.0
REQUESTER_HEADER: Final = "x-clank-requester"
#: What to change when the API's address is taken (named in the one-line error).
LISTEN_CHANGE: Final = "api.port / CLANK_API_PORT, or clank run --port"


def generate_api_token() -> str:
    """A fresh bearer token for the API (when none is configured)."""
    return secrets.token_urlsafe(24)


@attrs.frozen
class HttpApi:
    """The running API. ``dashboard_url`` carries the token in its fragment: print it once."""

    url: str
    port: int
    token: str = attrs.field(repr=False)

    @property
    def dashboard_url(self) -> str:
        return f"{self.url}/#token={self.token}"


async def _json_body(request: Request) -> object:
    return await read_json(request, MAX_BODY_BYTES)


def _query_target(request: Request) -> str | None:
    target = request.query_params.get("target")
    if target is not None and len(target) > 100:
        raise InvalidArgument("target", "must be at most 100 characters")
    return target or None


class _Routes:
    """The API endpoints over one service; ``closing`` ends open event streams."""

    def __init__(
        self, service: ClankService, closing: trio.Event, commentary: CommentaryHub | None = None
    ) -> None:
        self.service = service
        self.closing = closing
        self.commentary = commentary
        self._event_status: tuple[float, dict[str, Any]] | None = None

    def _shared_status(self) -> dict[str, Any]:
        """The status for event streams: one per ``SSE_STATUS_REUSE`` shared by every open stream,
        so N dashboards cost the trio thread one status() (~0.6 ms) per tick, not N."""
        now = trio.current_time()
        cached = self._event_status
        if cached is None or now - cached[0] >= SSE_STATUS_REUSE:
            cached = self._event_status = (now, self.service.status())
        return cached[1]

    async def index(self, request: Request) -> Response:
        return HTMLResponse(dashboard_html(), headers={"Cache-Control": "no-store"})

    async def tools(self, request: Request) -> Response:
        return JSONResponse({"tools": tool_schemas()})

    async def call(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in TOOLS_BY_NAME:
            return error_response(404, "unknown_tool", f"no tool named {name!r}", "name")
        body = await _json_body(request)
        requester = request.headers.get(REQUESTER_HEADER) or None
        return JSONResponse(await call_tool(self.service, name, body, requester_id=requester))

    async def status(self, request: Request) -> Response:
        return JSONResponse(self.service.status())

    async def dave_verification(self, request: Request) -> Response:
        """A DAVE verification code, computed on request (see :mod:`clank.control.dave_codes`)."""
        compute = getattr(self.service.session, "verification_code", None)
        if compute is None:
            return error_response(404, "unsupported", "this session has no DAVE verification codes")
        user = request.query_params.get("user", "")
        if not user or len(user) > 32:
            raise InvalidArgument("user", "a user id is required (?user=<id>)")
        return JSONResponse(await compute(user))

    async def sharers(self, request: Request) -> Response:
        return JSONResponse({"sharers": self.service.list_sharers()})

    async def screen(self, request: Request) -> Response:
        result = self.service.look_at_screen(_query_target(request))
        body = result.to_json(include_image=False)
        if result.frame is not None and result.target_user_id is not None:
            body["imageUrl"] = f"/api/screen/latest.jpg?target={result.target_user_id}"
        return JSONResponse(body)

    async def latest_jpeg(self, request: Request) -> Response:
        result = self.service.look_at_screen(_query_target(request))
        if result.frame is None:
            return error_response(404, result.reason, "no frame to show")
        return Response(
            result.frame.jpeg,
            media_type="image/jpeg",
            headers={
                "Cache-Control": "no-store",
                "X-Frame-Sequence": str(result.frame.sequence),
                "X-Target-User-Id": result.target_user_id or "",
            },
        )

    async def events(self, request: Request) -> Response:
        return _ClosingStreamingResponse(
            self._event_stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _event_stream(self) -> AsyncIterator[bytes]:
        backlog = RECENT.since(0)[-SSE_LOG_BACKLOG:]
        last_log = backlog[0]["n"] - 1 if backlog else 0
        frames: dict[tuple[str, str], int] = {}
        sharers: object = None
        last_cue = 0 if self.commentary is None else self.commentary.latest_number
        yield b"retry: 2000\n\n"
        while not self.closing.is_set():
            current = self.service.list_sharers()
            if current != sharers:
                sharers = current
                yield _sse("sharers", current)
            status = self._shared_status()
            yield _sse("status", status)
            for watch in status["watches"]:
                sequence = watch["frameSequence"]
                key = (watch["targetUserId"], watch["kind"])
                if sequence is not None and frames.get(key) != sequence:
                    frames[key] = sequence
                    yield _sse(
                        "frame",
                        {"targetUserId": key[0], "kind": key[1], "sequence": sequence},
                    )
            for entry in RECENT.since(last_log):
                last_log = entry["n"]
                yield _sse("log", entry)
            for cue in [] if self.commentary is None else self.commentary.since(last_cue):
                last_cue = cue.number
                yield _sse("commentary_due", cue.to_json())  # no image: imageUrl fetches the frame
            with trio.move_on_after(SSE_INTERVAL):
                await self.closing.wait()


class _ClosingStreamingResponse(StreamingResponse):
    """A streaming response that closes its generator when the response ends, however it ends.

    Starlette stops iterating when the client goes away or the server cancels the request, and a
    generator left suspended at a ``yield`` is then closed by the garbage collector, outside trio
    (trio warns: "Async generator ... was garbage collected before it had been exhausted")."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):  # closing runs no await of ours: quick
                    await aclose()


def _sse(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def build_app(
    service: ClankService,
    token: str,
    closing: trio.Event,
    mcp_app: Any = None,
    commentary: CommentaryHub | None = None,
) -> Starlette:
    routes = _Routes(service, closing, commentary)
    extra = [] if mcp_app is None else [Route("/mcp", mcp_app)]  # MCP streamable HTTP (mcp_server.py)

    def api(path: str, handler: Handler, methods: list[str]) -> Route:
        return Route(path, protected(token, handler), methods=methods)

    return Starlette(
        routes=[
            Route("/", routes.index, methods=["GET"]),
            api("/api/tools", routes.tools, ["GET"]),
            api("/api/tools/{name}", routes.call, ["POST"]),
            api("/api/status", routes.status, ["GET"]),
            api("/api/sharers", routes.sharers, ["GET"]),
            api("/api/dave/verification", routes.dave_verification, ["GET"]),
            api("/api/screen", routes.screen, ["GET"]),
            api("/api/screen/latest.jpg", routes.latest_jpeg, ["GET"]),
            api("/api/events", routes.events, ["GET"]),
            *publish_routes(service, partial(protected, token)),  # our Go Live (control/publish.py)
            *extra,
            *([] if service.voice is None else voice_routes(service.voice, token)),
        ]
    )


def _bound_port(binds: list[str]) -> int:
    return int(binds[0].rsplit(":", 1)[1])


@asynccontextmanager
async def open_http_api(
    service: ClankService, settings: ApiSettings, *, token: str, commentary: CommentaryHub | None = None
) -> AsyncIterator[HttpApi]:
    """Serve the API and dashboard on ``settings.host:settings.port`` (port 0: any free port)."""
    if not token:
        raise InvalidArgument("token", "the HTTP API needs a bearer token")
    register_secret(token)
    closing = trio.Event()
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # through clank's logging setup
    stop = trio.Event()
    async with (
        open_mcp_http_app(service, token=token, host=settings.host, commentary=commentary) as mcp_app,
        trio.open_nursery() as nursery,
    ):
        allowed = AllowedHosts.from_setting(settings.host, settings.allowed_hosts)
        app = HostCheckMiddleware(build_app(service, token, closing, mcp_app, commentary), allowed)
        try:
            # cast: hypercorn's ASGI typing and Starlette's are structurally equal, nominally distinct.
            binds = await nursery.start(partial(serve, cast(Any, app), config, shutdown_trigger=stop.wait))
        except (OSError, BaseExceptionGroup) as exc:
            error = listen_failed(exc, settings.host, settings.port, LISTEN_CHANGE)
            if error is None:
                raise
            raise error from None
        port = _bound_port(binds)
        host = settings.host if ":" not in settings.host else f"[{settings.host}]"
        api = HttpApi(url=f"http://{host}:{port}", port=port, token=token)
        log.info("http api listening", url=api.url)
        try:
            yield api
        finally:
            closing.set()
            stop.set()
            nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_TIMEOUT
