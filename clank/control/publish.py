"""The publish surface: our own Go Live from Python and over HTTP (``/api/publish*``, ``/api/music``).

:class:`PublishControl` is the Python API, over one voice session::

    control = PublishControl(session)
    await control.start("frames")                           # go live with pushed images
    await control.push_frame(jpeg_bytes, "image/jpeg")       # -> {"accepted": true, ...}
    await control.start("visualizer", url="song.mp3")        # switch source, same stream
    await control.pause(); await control.resume(); await control.stop()
    await control.play_music("song.mp3", visualizer="showcqt")   # music that publishes by itself

Every call checks its input first and raises ``InvalidArgument(field, ...)`` (HTTP 400 naming
the field) or ``PublishError(reason)`` (HTTP 409 with the reason: ``not_in_voice``,
``not_publishing``, ``wrong_source``, ...); a refused call changes nothing. The HTTP routes
(:func:`publish_routes`) answer the same JSON the Python API returns: :meth:`PublishControl.state`.
:func:`publish_role_status` is the ``stream_publish`` entry of ``GET /api/status``.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clank.control.http_common import Handler, error_response, read_capped, read_json_object
from clank.control.model import RoleStatus
from clank.errors import ClankError, InvalidArgument, PublishError
from clank.io.offload import run_cpu
from clank.logging import get_logger
from clank.media.jpeg import encode_jpeg
from clank.media.publish_source import IMAGE_CONTENT_TYPES, PublishSource, PushedFrames
from clank.media.visualizer import VISUALIZERS, AvPipeline, VideoMode
from clank.session.publish_media import AvSource
from clank.session.stream_publish import PublishHandle, current_publish, start_stream_publish

__all__ = ["SOURCES", "PublishControl", "publish_control_for", "publish_role_status", "publish_routes"]

log = get_logger("clank.control.publish")

SOURCES: Final = ("frames", "visualizer", "media")
MAX_URL: Final = 2048
MAX_JSON_BYTES: Final = 16 * 1024
PREVIEW_PIXELS: Final = 640 * 360
"""The dashboard's preview of the latest frame we sent is scaled to about this many pixels."""


def _text(body: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise InvalidArgument(key, "is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(key, "must be a non-empty string")
    if len(value) > MAX_URL:
        raise InvalidArgument(key, f"must be at most {MAX_URL} characters")
    return value.strip()


def _visualizer(value: str | None, default: str) -> VideoMode:
    kind = value or default
    if kind not in (*VISUALIZERS, "off"):
        raise InvalidArgument(
            "visualizer", f"expected one of {', '.join((*VISUALIZERS, 'off'))}, got {kind!r}"
        )
    return kind  # type: ignore[return-value]


class PublishControl:
    """See the module docstring. ``session`` is a running ``VoiceSession`` (or None: not in voice)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._lock = trio.Lock()

    @property
    def handle(self) -> PublishHandle | None:
        return None if self._session is None else current_publish(self._session)

    def _settings(self) -> Any:
        if self._session is None:
            raise PublishError("not_in_voice", "no voice session")
        return self._session.settings.publish

    def _voice_api(self) -> Any:
        try:
            return self._session.voice.api
        except ClankError as exc:
            raise PublishError("not_in_voice", str(exc)) from exc

    def _live(self) -> PublishHandle:
        handle = self.handle
        if handle is None or not handle.active:
            raise PublishError("not_publishing", "no Go Live of ours is running (POST /api/publish)")
        return handle

    # ------------------------------------------------------------------ actions

    async def start(
        self, source: str, *, url: str | None = None, visualizer: str | None = None, loop: bool = False
    ) -> dict[str, Any]:
        """Go live (or switch the running stream's source) and return :meth:`state`."""
        if source not in SOURCES:
            raise InvalidArgument("source", f"expected one of {', '.join(SOURCES)}, got {source!r}")
        settings = self._settings()
        async with self._lock:
            built: PublishSource
            if source == "frames":
                if url is not None:
                    raise InvalidArgument("url", "not used with source 'frames' (POST /api/publish/frame)")
                built = PushedFrames(settings.frame_queue)
            else:
                if url is None:
                    raise InvalidArgument("url", f"source {source!r} needs a url (file path or URL)")
                mode: VideoMode = (
                    "file" if source == "media" else _visualizer(visualizer, settings.visualizer)
                )
                if mode == "off":
                    raise InvalidArgument("visualizer", "'off' publishes nothing: use POST /api/music")
                voice = self._voice_api()
                pipeline = await run_cpu(
                    lambda: AvPipeline(
                        url,
                        video=mode,
                        width=settings.width,
                        height=settings.height,
                        fps=settings.fps,
                        loop=loop,
                    )
                )
                built = AvSource(pipeline, voice, name="media" if source == "media" else "visualizer")
                player = getattr(voice, "music", None)
                if player is not None:
                    player.stop(fade_s=0.25)  # one music at a time: ours replaces the player's track
            await start_stream_publish(self._session, source=built)
            log.info("publish started", source=source)
        return self.state()

    async def play_music(
        self, url: str, *, visualizer: str | None = None, loop: bool = False, gain: float = 1.0
    ) -> dict[str, Any]:
        """Play music on the voice mixer; with a visualizer it also publishes (end of track ends it)."""
        settings = self._settings()
        mode = _visualizer(visualizer, settings.visualizer)
        if not 0.0 <= gain <= 2.0:
            raise InvalidArgument("gain", "must be between 0 and 2")
        if mode != "off":
            return await self.start("visualizer", url=url, visualizer=mode, loop=loop)
        voice = self._voice_api()
        result = await voice.music.play(url, gain=gain)  # audio only: the voice role's music player
        if not result.get("ok"):
            raise InvalidArgument("url", str(result.get("detail") or result.get("reason")))
        return {"music": result, **self.state()}

    async def push_frame(
        self, data: bytes, content_type: str, *, raw_size: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        handle = self._live()
        await handle.push_image(data, content_type, raw_size=raw_size)
        source = handle.source
        queued = source.statistics().queued if isinstance(source, PushedFrames) else 0
        return {"accepted": True, "queued": queued}

    async def pause(self) -> dict[str, Any]:
        await self._live().pause()
        return self.state()

    async def resume(self) -> dict[str, Any]:
        await self._live().resume()
        return self.state()

    async def stop(self) -> dict[str, Any]:
        handle = self.handle
        if handle is not None and handle.active:
            await handle.stop()
        return self.state()

    # ------------------------------------------------------------------ queries

    def state(self) -> dict[str, Any]:
        handle = self.handle
        if handle is None:
            return {"publishing": False, "state": "idle", "streamKey": None, "reason": None}
        stats = handle.statistics()
        source = handle.source
        detail = getattr(source, "statistics", None)
        extra = detail() if detail is not None and not isinstance(source, PushedFrames) else None
        return {
            "publishing": handle.active,
            "state": handle.state.value,
            "streamKey": stats.stream_key,
            "reason": handle.reason,
            "paused": stats.paused,
            "source": stats.source,
            "viewers": stats.viewers,
            "qos": _qos(handle),
            "sourceDetail": None
            if extra is None
            else {
                "url": extra.url,
                "video": extra.video,
                "skewP99Ms": extra.skew_p99_ms,
                "passes": extra.passes,
            },
        }


def _qos(handle: PublishHandle) -> dict[str, str | int | float | bool | None]:
    stats = handle.statistics()
    return {
        "framesEncoded": stats.frames_encoded,
        "framesSent": stats.frames_sent,
        "keyframes": stats.keyframes,
        "kbps": round(stats.bitrate / 1000, 1),
        "encodeP99Ms": None if stats.encode_p99_ms is None else round(stats.encode_p99_ms, 2),
        "nacksAnswered": stats.nacks_answered,
        "plisAnswered": stats.plis_answered,
        "viewers": stats.viewers,
        "paused": stats.paused,
        "framesDropped": stats.frames_dropped,
        "keyframeResponseMs": None
        if stats.keyframe_response_ms is None
        else round(stats.keyframe_response_ms, 1),
    }


def publish_role_status(session: Any) -> RoleStatus | None:
    """The ``stream_publish`` role for ``GET /api/status`` (None when we never published, or
    when we are in no voice channel: the runner's current session then has no publish)."""
    try:
        handle = None if session is None else current_publish(session)
    except ClankError:  # not in a voice channel (control/voice_channels.CurrentSession)
        return None
    if handle is None:
        return None
    stats = handle.statistics()
    return RoleStatus(
        name="stream_publish",
        kind="stream_publish",
        state=handle.state.value if handle.active else "disconnected",
        target_user_id=None,
        transport={"streamKey": stats.stream_key, "source": stats.source, "live": stats.send is not None},
        qos=_qos(handle),
        ended_reason=handle.reason,
    )


# ---------------------------------------------------------------------- HTTP


_CONTROLS: weakref.WeakKeyDictionary[Any, PublishControl] = weakref.WeakKeyDictionary()


def publish_control_for(service: Any) -> PublishControl:
    """The service's publish control (its port's voice session; None = not in voice)."""
    control = _CONTROLS.get(service)
    if control is None:
        session = getattr(service.session, "voice_session", None)
        control = _CONTROLS[service] = PublishControl(session)
    return control


def _guarded(handler: Handler) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except PublishError as exc:
            return error_response(409, exc.reason, exc.detail or exc.reason)

    return endpoint


async def _json(request: Request) -> Mapping[str, Any]:
    return await read_json_object(request, MAX_JSON_BYTES)


async def _bounded_body(request: Request, limit: int) -> bytes:
    body = await read_capped(request, limit)
    if body is None:
        raise InvalidArgument("image", f"body is over the limit of {limit} bytes (publish.max_image_bytes)")
    return body


def _dimension(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 8192:
        raise InvalidArgument(name, "must be an integer between 1 and 8192")
    return int(raw)


def publish_routes(service: Any, protect: Callable[[Handler], Handler]) -> list[Route]:
    """``/api/publish*`` and ``/api/music`` behind ``protect`` (the API's bearer check)."""

    def control() -> PublishControl:
        return publish_control_for(service)

    async def publish(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(control().state())
        if request.method == "DELETE":
            return JSONResponse(await control().stop())
        body = await _json(request)
        source = _text(body, "source", required=True)
        loop = body.get("loop", False)
        if not isinstance(loop, bool):
            raise InvalidArgument("loop", "must be true or false")
        assert source is not None
        state = await control().start(
            source, url=_text(body, "url"), visualizer=_text(body, "visualizer"), loop=loop
        )
        return JSONResponse(state)

    async def frame(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in IMAGE_CONTENT_TYPES:
            raise InvalidArgument("content_type", f"expected one of {', '.join(IMAGE_CONTENT_TYPES)}")
        c = control()
        c._live()  # refuse before reading a body nobody wants
        limit = c._settings().max_image_bytes
        data = await _bounded_body(request, limit)
        if not data:
            raise InvalidArgument("image", "the body is empty")
        width, height = _dimension(request, "width"), _dimension(request, "height")
        raw_size = None if width is None or height is None else (width, height)
        return JSONResponse(await c.push_frame(data, content_type, raw_size=raw_size), status_code=202)

    async def latest(request: Request) -> Response:
        handle = control().handle
        frame = None if handle is None else handle.last_sent_frame
        if frame is None:
            return error_response(404, "not_publishing", "no frame sent yet")
        jpeg = await run_cpu(lambda: encode_jpeg(frame, max_pixels=PREVIEW_PIXELS))
        return Response(jpeg.data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def pause(request: Request) -> Response:
        return JSONResponse(await control().pause())

    async def resume(request: Request) -> Response:
        return JSONResponse(await control().resume())

    async def music(request: Request) -> Response:
        body = await _json(request)
        url = _text(body, "url", required=True)
        gain = body.get("gain", 1.0)
        if not isinstance(gain, int | float) or isinstance(gain, bool):
            raise InvalidArgument("gain", "must be a number")
        loop = body.get("loop", False)
        if not isinstance(loop, bool):
            raise InvalidArgument("loop", "must be true or false")
        assert url is not None
        state = await control().play_music(
            url, visualizer=_text(body, "visualizer"), loop=loop, gain=float(gain)
        )
        return JSONResponse(state)

    def route(path: str, handler: Handler, methods: list[str]) -> Route:
        return Route(path, protect(_guarded(handler)), methods=methods)

    return [
        route("/api/publish", publish, ["GET", "POST", "DELETE"]),
        route("/api/publish/frame", frame, ["POST"]),
        route("/api/publish/latest.jpg", latest, ["GET"]),
        route("/api/publish/pause", pause, ["POST"]),
        route("/api/publish/resume", resume, ["POST"]),
        route("/api/music", music, ["POST"]),
    ]


async def demo_publish(
    service: Any,
    music_path: str,
    start_viewer: Callable[[str], Awaitable[object]],
    *,
    patience: float = 60.0,
) -> None:
    """Sandbox demo: once a watch runs, play ``music_path`` (looped) with the visualizer and add a viewer.

    ``start_viewer(stream_key)`` is the sandbox's (the composition root passes it in). Failures
    are logged: the demo goes on without its publish.
    """
    port = service.session
    with trio.move_on_after(patience):
        while not any(w.active for w in port.watches()):  # noqa: ASYNC110 - no event to wait on
            await trio.sleep(0.5)
        control = publish_control_for(service)
        try:
            state = await control.play_music(music_path, visualizer="showcqt", loop=True)
            log.info("demo: publishing music with a visualizer", stream_key=state.get("streamKey"))
            if state.get("streamKey"):
                await start_viewer(state["streamKey"])
                log.info("demo: a viewer watches our Go Live")
        except ClankError as exc:
            log.warning("demo: publish failed", error=str(exc))
