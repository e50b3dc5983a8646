"""HTTP and WebSocket routes of the voice API (speak, listen, music, channels) over :class:`VoiceApi`.

Registered by :func:`clank.control.http.build_app` under ``/api/voice``; every route needs the
API's bearer token (``Authorization: Bearer ...``; WebSockets may pass ``?token=`` instead,
since browsers cannot set headers on them). Errors answer ``{"error", "message", "field"}``:
400 ``invalid_request`` naming the field, 409 ``not_in_voice``, 413 ``body_too_large``.

Routes (docs/api.md has the full reference)::

    POST /api/voice/speak?sampleRate=24000&channels=1   raw s16le body, chunked upload welcome
    WS   /api/voice/speak/ws?sampleRate=&channels=      binary PCM in, JSON playback events out
    POST /api/voice/speak/file     {source}             a whole file/URL
    POST /api/voice/stop           {what}               speech (default) | music | all
    GET  /api/voice/playback                            speech state + buffer depth
    WS   /api/voice/listen?users=&sampleRate=&channels=&silenceMs=&buffer=&sources=
    GET  /api/voice/music          POST /api/voice/music/{play,pause,resume,stop,gain}
    GET  /api/voice/channels       POST /api/voice/{join,move,leave}
"""

from __future__ import annotations

import json
from typing import Any, Final

import trio
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from clank.control.http_common import Handler, authorized, error_response, protected, read_json_object
from clank.control.voice_api import VoiceApi, VoiceUnavailable
from clank.errors import InvalidArgument
from clank.logging import get_logger
from clank.session.voice_listen import SpeakingEvent, UserAudio
from clank.session.voice_playback import SpeechStream, check_pcm_format
from clank.wire.listen_audio import ListenAudioFrame

__all__ = ["MAX_JSON_BYTES", "MAX_SPEAK_BYTES", "MAX_WS_MESSAGE_BYTES", "voice_routes"]

log = get_logger("clank.control.voice_http")

#: One speak upload (or one WebSocket utterance) carries at most this much PCM: 32 MiB, about
#: 5.8 min of 48 kHz stereo or 11.6 min of 24 kHz mono.
MAX_SPEAK_BYTES: Final = 32 * 1024 * 1024
MAX_WS_MESSAGE_BYTES: Final = 1024 * 1024
MAX_JSON_BYTES: Final = 64 * 1024
WS_POLICY_VIOLATION: Final = 1008


def _int_param(conn: HTTPConnection, name: str, default: int) -> int:
    raw = conn.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(name, f"must be an integer, got {raw[:20]!r}") from None


def _list_param(conn: HTTPConnection, name: str) -> list[str] | None:
    raw = conn.query_params.get(name)
    if not raw:
        return None
    items = [x.strip() for x in raw.split(",") if x.strip()]
    if len(items) > 100:
        raise InvalidArgument(name, "at most 100 entries")
    return items


async def _json_object(request: Request) -> dict[str, Any]:
    return await read_json_object(request, MAX_JSON_BYTES)


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise InvalidArgument(name, f"must be {_kind_name(kind)}")
    if not isinstance(value, kind):
        raise InvalidArgument(name, f"must be {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _only(body: dict[str, Any], *names: str) -> None:
    for key in body:
        if key not in names:
            raise InvalidArgument(str(key), "unknown field")


class _VoiceRoutes:
    def __init__(self, voice: VoiceApi, token: str) -> None:
        self.voice = voice
        self.token = token

    def protect(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except VoiceUnavailable as exc:
                return _refusal(exc)

        return protected(self.token, endpoint)

    async def _admit(self, ws: WebSocket) -> bool:
        """The WebSocket's bearer check (header or ``?token=``); False: refused with a 401."""
        if authorized(ws, self.token, query=True):
            return True
        await ws.send_denial_response(error_response(401, "unauthorized", "missing or wrong bearer token"))
        return False

    # ------------------------------------------------------------------ speak

    async def speak(self, request: Request) -> Response:
        rate = _int_param(request, "sampleRate", 24_000)
        channels = _int_param(request, "channels", 1)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_SPEAK_BYTES:
            return _speak_too_large()
        stream = self.voice.open_speech(sample_rate=rate, channels=channels)
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > MAX_SPEAK_BYTES:
                    self.voice.cancel_speech(stream)
                    return _speak_too_large()
                if chunk:
                    stream.push(chunk)
                    await stream.wait_writable()
        finally:
            stream.end()
        if stream.pending_bytes:
            return error_response(
                400,
                "invalid_request",
                f"PCM length {received} is not a multiple of {stream.frame_bytes} bytes "
                f"(s16le x {channels} channel(s)); the whole samples were queued",
                "body",
            )
        if received == 0:
            return error_response(400, "invalid_request", "no PCM in the body", "body")
        return JSONResponse(
            {
                "ok": True,
                "reason": "queued",
                "utterance": stream.number,
                "bytes": received,
                "durationMs": round(received / stream.frame_bytes / rate * 1000),
                "playback": self.voice.playback(),
            }
        )

    async def speak_ws(self, ws: WebSocket) -> None:
        if not await self._admit(ws):
            return
        try:
            rate = _int_param(ws, "sampleRate", 24_000)
            channels = _int_param(ws, "channels", 1)
            check_pcm_format(rate, channels)
            self.voice.role()
        except (InvalidArgument, VoiceUnavailable) as exc:
            await ws.send_denial_response(_refusal(exc))
            return
        await ws.accept()
        with self.voice.playback_events() as events:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward_events, ws, events)
                try:
                    await self._speak_reader(ws, rate, channels)
                finally:
                    nursery.cancel_scope.cancel()

    async def _forward_events(self, ws: WebSocket, events: Any) -> None:
        async for event in events:
            await ws.send_json(event.to_json())

    async def _speak_reader(self, ws: WebSocket, rate: int, channels: int) -> None:
        stream: SpeechStream | None = None
        received = 0
        try:
            while True:
                try:
                    message = await ws.receive()
                except WebSocketDisconnect:
                    return
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes")
                text = message.get("text")
                if data is not None:
                    if len(data) % (2 * channels):
                        await ws.send_json(
                            _wserror_response(
                                InvalidArgument(
                                    "pcm", f"a message must hold whole samples ({2 * channels} bytes each)"
                                )
                            )
                        )
                        continue
                    if stream is None or stream.source.ended:
                        stream, received = self.voice.open_speech(sample_rate=rate, channels=channels), 0
                    received += len(data)
                    if received > MAX_SPEAK_BYTES:
                        await ws.send_json(
                            _wserror_response(
                                InvalidArgument("pcm", f"an utterance is at most {MAX_SPEAK_BYTES} bytes")
                            )
                        )
                        self.voice.cancel_speech(stream)
                        stream = None
                        continue
                    stream.push(data)
                    await stream.wait_writable()
                elif text is not None:
                    command = _ws_command(text)
                    if command == "end" and stream is not None:
                        stream.end()
                        stream = None
                    elif command == "stop":
                        self.voice.stop("speech")
                        stream = None
                    elif command is None:
                        await ws.send_json(_wserror_response(InvalidArgument("type", "must be end or stop")))
        finally:
            if stream is not None:
                stream.end()

    async def speak_file(self, request: Request) -> Response:
        body = await _json_object(request)
        _only(body, "source")
        return JSONResponse(await self.voice.speak_file(_field(body, "source", str, "")))

    async def stop(self, request: Request) -> Response:
        body = await _json_object(request)
        _only(body, "what")
        return JSONResponse(self.voice.stop(_field(body, "what", str, "speech")))

    async def playback(self, request: Request) -> Response:
        return JSONResponse(self.voice.playback())

    # ------------------------------------------------------------------ listen

    async def listen_ws(self, ws: WebSocket) -> None:
        if not await self._admit(ws):
            return
        try:
            rate = _int_param(ws, "sampleRate", 48_000)
            channels = _int_param(ws, "channels", 2)
            silence = _int_param(ws, "silenceMs", 700)
            buffer = _int_param(ws, "buffer", 50)
            users = _list_param(ws, "users")
            sources = _list_param(ws, "sources")
            listening = self.voice.listen(
                users, sample_rate=rate, channels=channels, silence_ms=silence, buffer=buffer, sources=sources
            )
            listener = await listening.__aenter__()
        except (InvalidArgument, VoiceUnavailable) as exc:
            await ws.send_denial_response(_refusal(exc))
            return
        await ws.accept()
        try:
            await ws.send_json(
                {
                    "type": "listening",
                    "users": None if listener.users is None else sorted(listener.users),
                    "sources": None if listener.sources is None else sorted(listener.sources),
                    "sampleRate": rate,
                    "channels": channels,
                    "silenceMs": silence,
                    "buffer": buffer,
                }
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_wait_disconnect, ws, nursery.cancel_scope)
                async for item in listener:
                    if isinstance(item, UserAudio):
                        frame = ListenAudioFrame(
                            int(item.user_id),
                            item.rate,
                            item.channels,
                            item.pcm.tobytes(),
                            concealed=item.concealed,
                            stream=item.source != "voice",
                        )
                        await ws.send_bytes(frame.serialize())
                    elif isinstance(item, SpeakingEvent):
                        await ws.send_json(
                            {
                                "type": item.type,
                                "userId": item.user_id,
                                "source": item.source,
                                "reason": item.reason,
                            }
                        )
                await ws.send_json(
                    {"type": "ended", "reason": "voice role ended", "dropped": listener.dropped}
                )
                nursery.cancel_scope.cancel()
        except (WebSocketDisconnect, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await listening.__aexit__(None, None, None)
        with trio.move_on_after(1.0):
            try:
                await ws.close()
            except (RuntimeError, WebSocketDisconnect):
                pass

    # ------------------------------------------------------------------ music

    async def music(self, request: Request) -> Response:
        return JSONResponse(self.voice.music_status())

    async def music_play(self, request: Request) -> Response:
        body = await _json_object(request)
        _only(body, "source", "name", "queue", "gain", "fadeInMs")
        return JSONResponse(
            await self.voice.music_play(
                _field(body, "source", str, ""),
                name=_field(body, "name", str),
                queue=_field(body, "queue", bool, False),
                gain=None if body.get("gain") is None else float(_field(body, "gain", (int, float))),
                fade_in_ms=_field(body, "fadeInMs", int, 0),
            )
        )

    async def music_pause(self, request: Request) -> Response:
        return JSONResponse(self.voice.music_pause(fade_ms=await self._fade(request)))

    async def music_resume(self, request: Request) -> Response:
        return JSONResponse(self.voice.music_resume(fade_ms=await self._fade(request)))

    async def music_stop(self, request: Request) -> Response:
        return JSONResponse(self.voice.music_stop(fade_ms=await self._fade(request)))

    async def _fade(self, request: Request) -> int:
        body = await _json_object(request)
        _only(body, "fadeMs")
        fade: int = _field(body, "fadeMs", int, 250)
        return fade

    async def music_gain(self, request: Request) -> Response:
        body = await _json_object(request)
        _only(body, "target", "fadeMs")
        if "target" not in body:
            raise InvalidArgument("target", "is required")
        target = float(_field(body, "target", (int, float)))
        return JSONResponse(self.voice.music_set_gain(target, fade_ms=_field(body, "fadeMs", int, 0)))

    # ------------------------------------------------------------------ channels

    def _channels(self) -> Any:
        if self.voice.channels is None:
            raise InvalidArgument("channels", "channel control is not available in this process")
        return self.voice.channels

    async def channels(self, request: Request) -> Response:
        control = self._channels()
        return JSONResponse({"channels": control.voice_channels(), "connection": control.connection_status()})

    async def join(self, request: Request) -> Response:
        body = await _json_object(request)
        _only(body, "guildId", "channelId", "selfMute", "selfDeaf")
        channel = _field(body, "channelId", str)
        if not channel:
            raise InvalidArgument("channelId", "is required")
        result = await self._channels().join(
            channel,
            guild_id=_field(body, "guildId", str),
            self_mute=_field(body, "selfMute", bool, False),
            self_deaf=_field(body, "selfDeaf", bool, False),
        )
        return JSONResponse(result, status_code=200 if result.get("ok") else _status_for(result))

    async def leave(self, request: Request) -> Response:
        await _json_object(request)
        return JSONResponse(await self._channels().leave())


def _speak_too_large() -> Response:
    return error_response(413, "body_too_large", f"a speak body is at most {MAX_SPEAK_BYTES} bytes", "body")


def _refusal(exc: InvalidArgument | VoiceUnavailable) -> Response:
    """400 naming the field, or 409 with the voice reason (``not_in_voice``)."""
    if isinstance(exc, InvalidArgument):
        return error_response(400, "invalid_request", exc.message, exc.field)
    return error_response(409, exc.reason, "not connected to a voice channel")


def _status_for(result: dict[str, Any]) -> int:
    return 404 if result.get("reason") in ("unknown_channel", "unknown_guild") else 409


async def _wait_disconnect(ws: WebSocket, scope: trio.CancelScope) -> None:
    """Read (and ignore) client messages until it goes away, then end the stream."""
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
    except (WebSocketDisconnect, RuntimeError):
        pass
    scope.cancel()


def _ws_command(text: str) -> str | None:
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        return None
    kind = message.get("type") if isinstance(message, dict) else None
    return kind if kind in ("end", "stop") else None


def _wserror_response(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, InvalidArgument):
        return {"type": "error", "error": "invalid_request", "field": exc.field, "message": exc.message}
    if isinstance(exc, VoiceUnavailable):
        return {"type": "error", "error": exc.reason, "message": "not connected to a voice channel"}
    return {"type": "error", "error": "error", "message": str(exc)}


def voice_routes(voice: VoiceApi, token: str) -> list[BaseRoute]:
    """The ``/api/voice/*`` routes (registered by ``build_app``)."""
    r = _VoiceRoutes(voice, token)

    def api(path: str, handler: Handler, methods: list[str]) -> Route:
        return Route(path, r.protect(handler), methods=methods)

    return [
        api("/api/voice/speak", r.speak, ["POST"]),
        WebSocketRoute("/api/voice/speak/ws", r.speak_ws),
        api("/api/voice/speak/file", r.speak_file, ["POST"]),
        api("/api/voice/stop", r.stop, ["POST"]),
        api("/api/voice/playback", r.playback, ["GET"]),
        WebSocketRoute("/api/voice/listen", r.listen_ws),
        api("/api/voice/music", r.music, ["GET"]),
        api("/api/voice/music/play", r.music_play, ["POST"]),
        api("/api/voice/music/pause", r.music_pause, ["POST"]),
        api("/api/voice/music/resume", r.music_resume, ["POST"]),
        api("/api/voice/music/stop", r.music_stop, ["POST"]),
        api("/api/voice/music/gain", r.music_gain, ["POST"]),
        api("/api/voice/channels", r.channels, ["GET"]),
        api("/api/voice/join", r.join, ["POST"]),
        api("/api/voice/move", r.join, ["POST"]),
        api("/api/voice/leave", r.leave, ["POST"]),
    ]
