"""The share listener: a separate HTTP server that serves only ``/share/*`` (never ``/api/*``).

    async with open_share_listener(transport, settings.link, sandbox_mode=True) as listener:
        print(listener.url)             # the base of the links we send

Routes (everything else answers 404):

| method | path | answer |
|---|---|---|
| ``GET`` | ``/share/{token}`` | the share page (:file:`static/share.html`) |
| ``POST`` | ``/share/{token}/frames`` | one JPEG (``image/jpeg``) → ``{"ok": true, "sequence": n}`` |
| ``POST`` | ``/share/{token}/stop`` | the sharer ended the share → ``{"ok": true}`` |

An unknown, expired or stopped token gets the same 404 (``{"error": "not_found"}``, or a plain
page for ``GET``): nothing tells them apart. Refused frames answer the status of
:data:`clank.control.link.REJECT_REASONS` with ``{"error": reason, "message": ...}``. The page is
sent with ``Referrer-Policy: no-referrer`` (the token is in its URL), ``Cache-Control: no-store`` and
a strict Content-Security-Policy with a per-response script nonce. No access log is written: the
token is in every path (it is registered as a secret as well).
"""

from __future__ import annotations

import functools
import html
import json
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from importlib import resources
from typing import Any, Final, cast

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from clank.config import LinkSettings
from clank.control.http_common import read_capped
from clank.control.link import FrameRejected, LinkSession, LinkTransport
from clank.io.groups import raise_single
from clank.io.listen import listen_failed
from clank.logging import get_logger

log = get_logger("clank.control.share_http")

GRACEFUL_TIMEOUT: Final = 1.0
SHUTDOWN_TIMEOUT: Final = 3.0
PAGE_CONFIG_MARK: Final = "__CLANK_SHARE_CONFIG__"
NONCE_MARK: Final = "__CLANK_NONCE__"
JPEG_QUALITY: Final = 0.75
NOT_FOUND_PAGE: Final = (
    "<!doctype html><meta charset=utf-8><title>Link not valid</title>"
    "<body style='font:16px system-ui;margin:3em'><h1>This share link is not valid</h1>"
    "<p>It may have expired or been closed. Ask for a new link.</p></body>"
)
NOT_FOUND_BODY: Final = {"error": "not_found", "message": "this share link is not valid"}


@functools.cache
def share_page_template() -> str:
    return (resources.files("clank.control") / "static" / "share.html").read_text(encoding="utf-8")


def share_page(settings: LinkSettings, nonce: str) -> str:
    config = {
        "maxFps": settings.max_fps,
        "maxPixels": settings.max_pixels,
        "maxFrameBytes": settings.max_frame_bytes,
        "jpegQuality": JPEG_QUALITY,
    }
    page = share_page_template().replace(PAGE_CONFIG_MARK, html.escape(json.dumps(config), quote=True))
    return page.replace(NONCE_MARK, nonce)


def _csp(nonce: str) -> str:
    return (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src 'self' data: blob:; media-src 'self' blob: mediastream:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )


_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _not_found_json() -> JSONResponse:
    return JSONResponse(NOT_FOUND_BODY, status_code=404, headers=_HEADERS)


class _ShareRoutes:
    def __init__(self, transport: LinkTransport) -> None:
        self.transport = transport

    def _session(self, request: Request) -> LinkSession | None:
        token = request.path_params.get("token", "")
        if not isinstance(token, str) or not 16 <= len(token) <= 128:
            return None
        return self.transport.lookup(token, trio.current_time())

    async def page(self, request: Request) -> Response:
        if self._session(request) is None:
            return HTMLResponse(NOT_FOUND_PAGE, status_code=404, headers=_HEADERS)
        nonce = secrets.token_urlsafe(16)
        return HTMLResponse(
            share_page(self.transport.settings, nonce),
            headers={**_HEADERS, "Content-Security-Policy": _csp(nonce)},
        )

    async def frames(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return _not_found_json()
        try:
            length_header = request.headers.get("content-length")
            length = int(length_header) if length_header and length_header.isdigit() else None
            self.transport.precheck(session, request.headers.get("content-type"), length)
            body = await read_capped(request, self.transport.settings.max_frame_bytes)
            if body is None:
                raise self.transport.reject(session, "too_large")
            frame = await self.transport.ingest(session, body)
        except FrameRejected as exc:
            return JSONResponse(
                {"error": exc.reason, "message": exc.message}, status_code=exc.status, headers=_HEADERS
            )
        return JSONResponse(
            {
                "ok": True,
                "sequence": frame.sequence,
                "expiresInS": round(session.time_left(trio.current_time())),
            },
            headers=_HEADERS,
        )

    async def stop(self, request: Request) -> Response:
        session = self._session(request)
        if session is None:
            return _not_found_json()
        self.transport.end(session, "stopped_by_sharer", trio.current_time())
        return JSONResponse({"ok": True}, headers=_HEADERS)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = 404 if exc.status_code in (404, 405) else exc.status_code
    return JSONResponse(
        NOT_FOUND_BODY if status == 404 else {"error": "bad_request"}, status_code=status, headers=_HEADERS
    )


def build_share_app(transport: LinkTransport) -> Starlette:
    routes = _ShareRoutes(transport)
    return Starlette(
        routes=[
            Route("/share/{token}", routes.page, methods=["GET"]),
            Route("/share/{token}/frames", routes.frames, methods=["POST"]),
            Route("/share/{token}/stop", routes.stop, methods=["POST"]),
        ],
        exception_handlers={HTTPException: _http_error},
    )


@attrs.frozen
class ShareListener:
    """The running listener: ``url`` is the base of the links (``link.public_url`` when set)."""

    url: str
    bound_url: str
    port: int


def _host(host: str) -> str:
    return host if ":" not in host else f"[{host}]"


@asynccontextmanager
async def open_share_listener(
    transport: LinkTransport, settings: LinkSettings, *, any_port_fallback: bool = False
) -> AsyncIterator[ShareListener]:
    """Serve ``/share/*`` on ``settings.host:settings.port``; with ``any_port_fallback`` (sandbox
    mode) a busy port falls back to any free one. Sets the transport's base URL while it runs."""
    config = Config()
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    app = cast(Any, build_share_app(transport))
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            ports = [settings.port, 0] if any_port_fallback and settings.port != 0 else [settings.port]
            binds: list[str] | None = None
            for port in ports:
                config.bind = [f"{settings.host}:{port}"]
                try:
                    binds = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
                    break
                except (OSError, BaseExceptionGroup) as exc:  # hypercorn raises the bind error in a group
                    error = listen_failed(exc, settings.host, port, "link.port / CLANK_LINK_PORT")
                    if error is None:
                        raise
                    if port == ports[-1]:
                        raise error from None
                    log.warning("share listener port busy, using any free port", port=port)
            assert binds is not None
            bound = int(binds[0].rsplit(":", 1)[1])
            bound_url = f"http://{_host(settings.host)}:{bound}"
            url = settings.public_url.rstrip("/") or bound_url
            transport.set_base_url(url)
            log.info("share listener", bound=bound_url, public=bool(settings.public_url))
            try:
                yield ShareListener(url=url, bound_url=bound_url, port=bound)
            finally:
                transport.set_base_url(None)
                transport.close(trio.current_time())
                stop.set()
                nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_TIMEOUT
    except BaseExceptionGroup as group:  # one error from our nursery: unwrapped (rule 4)
        raise_single(group)
