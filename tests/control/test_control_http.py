"""The HTTP API over real loopback sockets: auth, validation, tool round trips, SSE."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager

import httpx
import pytest
import trio
from control_fakes import ALICE, BOB, RegistrySession, real_frame
from starlette.requests import ClientDisconnect

from clank.config import ApiSettings
from clank.control.http import HttpApi, _ClosingStreamingResponse, open_http_api
from clank.control.service import ClankService
from clank.control.tools import tool_schemas
from clank.logging import RECENT

LIMIT = 15
TOKEN = "test-token-0123456789abcdef"


@asynccontextmanager
async def running_api() -> AsyncIterator[tuple[HttpApi, RegistrySession, httpx.AsyncClient]]:
    session = RegistrySession()
    session.join(ALICE, stream=True)
    session.join(BOB, video=True)
    async with open_http_api(ClankService(session), ApiSettings(port=0), token=TOKEN) as api:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=api.url, headers=headers, timeout=5) as client:
            yield api, session, client


async def test_binds_loopback_and_hides_the_token() -> None:
    with trio.fail_after(LIMIT):
        async with running_api() as (api, _session, _client):
            assert api.url.startswith("http://127.0.0.1:")
            assert TOKEN not in repr(api)
            assert api.dashboard_url == f"{api.url}/#token={TOKEN}"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}],
    ids=["missing", "wrong", "wrong-scheme", "no-scheme"],
)
async def test_api_needs_the_bearer_token(headers: dict[str, str]) -> None:
    with trio.fail_after(LIMIT):
        async with running_api() as (api, session, _client), httpx.AsyncClient(base_url=api.url) as anon:
            for method, path in [
                ("GET", "/api/status"),
                ("GET", "/api/tools"),
                ("POST", "/api/tools/start_screen_watch"),
                ("GET", "/api/events"),
                ("GET", "/api/screen/latest.jpg"),
            ]:
                response = await anon.request(method, path, headers=headers)
                assert response.status_code == 401, path
                assert response.json()["error"] == "unauthorized"
                assert response.headers["www-authenticate"] == "Bearer"
            assert session.start_calls == []
            page = await anon.get("/")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "arguments"),
        (b'{"target": 42}', "target"),
        (b'{"target": "x", "colour": "red"}', "colour"),
        (b'{"preferredTransport": "carrier-pigeon"}', "preferredTransport"),
        (json.dumps({"target": "x" * 101}).encode(), "target"),
    ],
    ids=["malformed", "not-an-object", "wrong-type", "unknown-field", "bad-enum", "too-long"],
)
async def test_bad_bodies_are_400_naming_the_field(body: bytes, field: str) -> None:
    with trio.fail_after(LIMIT):
        async with running_api() as (_api, session, client):
            response = await client.post("/api/tools/start_screen_watch", content=body)
            assert response.status_code == 400
            error = response.json()
            assert (error["error"], error["field"]) == ("invalid_request", field)
            assert error["message"]
            assert session.start_calls == []


async def test_unknown_tool_is_404() -> None:
    with trio.fail_after(LIMIT):
        async with running_api() as (_api, _session, client):
            response = await client.post("/api/tools/launch_rockets", json={})
            assert response.status_code == 404
            assert response.json()["field"] == "name"


async def test_tool_calls_round_trip() -> None:
    with trio.fail_after(LIMIT):
        async with running_api() as (_api, session, client):
            assert (await client.get("/api/tools")).json() == {"tools": tool_schemas()}
            started = (await client.post("/api/tools/start_screen_watch", json={})).json()
            assert (started["ok"], started["targetUserId"], started["frameReady"]) == (True, ALICE, False)
            empty_body = await client.post("/api/tools/start_screen_watch")
            assert empty_body.json()["reused"] is True
            frame = real_frame(7, trio.current_time())
            session.deliver_frame(ALICE, "go_live", frame)
            look = (await client.post("/api/tools/look_at_screen", json={"target": "Alice"})).json()
            assert look["ok"] and look["frame"]["sequence"] == 7
            assert base64.b64decode(look["image"]["dataBase64"]) == frame.jpeg
            screen = (await client.get("/api/screen", params={"target": ALICE})).json()
            assert "image" not in screen and screen["imageUrl"].startswith("/api/screen/latest.jpg")
            jpeg = await client.get("/api/screen/latest.jpg", params={"target": ALICE})
            assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content == frame.jpeg
            assert jpeg.headers["x-frame-sequence"] == "7"
            sharers = (await client.get("/api/sharers")).json()["sharers"]
            assert {s["userId"] for s in sharers} == {ALICE, BOB}
            via_tool = (await client.post("/api/tools/list_sharers", json={})).json()
            assert via_tool == {"sharers": sharers}
            status = (await client.get("/api/status")).json()
            assert status["watches"][0]["frameSequence"] == 7
            webcam = (
                await client.post(
                    "/api/tools/start_screen_watch",
                    json={"target": "bob"},
                    headers={"X-Clank-Requester": ALICE},
                )
            ).json()
            assert webcam["kind"] == "webcam"
            stopped = (await client.post("/api/tools/stop_screen_watch", json={})).json()
            assert stopped["ok"] and len(stopped["stopped"]) == 2
            none = await client.get("/api/screen/latest.jpg")
            assert none.status_code == 404 and none.json()["error"] == "not_watching"


class SseReader:
    """A minimal HTTP/1.1 + chunked + SSE reader over a raw trio stream (httpx's nested streaming
    generators cannot all be closed deterministically, which pytest reports as warnings)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def open(cls, api: HttpApi, path: str = "/api/events") -> tuple[SseReader, bytes]:
        reader = cls(await trio.open_tcp_stream("127.0.0.1", api.port))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{api.port}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        )
        await reader.stream.send_all(request.encode())
        head = await reader._until(b"\r\n\r\n")
        return reader, head

    async def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.buffer += data
        out, _, self.buffer = self.buffer.partition(marker)
        return out

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.buffer += data
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    async def events(self) -> AsyncIterator[tuple[str, object]]:
        text = ""
        while True:
            size = int(await self._until(b"\r\n"), 16)
            if size == 0:
                return
            text += (await self._exactly(size + 2))[:-2].decode()
            while "\n\n" in text:
                block, _, text = text.partition("\n\n")
                lines = block.split("\n")
                event = next((ln[6:].strip() for ln in lines if ln.startswith("event:")), "message")
                data = [ln[5:].strip() for ln in lines if ln.startswith("data:")]
                if data:
                    yield event, json.loads("\n".join(data))


async def test_event_stream_delivers_status_frames_and_logs() -> None:
    with trio.fail_after(LIMIT):
        async with running_api() as (api, session, client):
            await client.post("/api/tools/start_screen_watch", json={})
            # RECENT is the processor configure_logging installs; feed it as structlog would
            RECENT(None, "info", {"event": "marker for the event stream", "level": "info", "marker": 1})
            seen: dict[str, list[object]] = {}
            reader, head = await SseReader.open(api)
            async with reader.stream:
                assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
                async with aclosing(reader.events()) as events:
                    async for event, data in events:
                        seen.setdefault(event, []).append(data)
                        if event == "status" and "frame" not in seen:
                            session.deliver_frame(ALICE, "go_live", real_frame(3, trio.current_time()))
                        if "frame" in seen and "sharers" in seen and "log" in seen:
                            break
            status = seen["status"][0]
            assert isinstance(status, dict) and status["roles"][0]["name"] == "voice"
            assert seen["frame"][0] == {"targetUserId": ALICE, "kind": "go_live", "sequence": 3}
            assert any(isinstance(e, dict) and e.get("marker") == 1 for e in seen["log"])
            sharers = seen["sharers"][0]
            assert isinstance(sharers, list) and {s["userId"] for s in sharers} == {ALICE, BOB}


async def test_event_stream_ends_when_the_api_closes() -> None:
    with trio.fail_after(LIMIT):
        async with running_api() as (api, _session, _client):
            reader, _head = await SseReader.open(api)
            events = reader.events()
            assert (await events.__anext__())[0] == "sharers"
        # the API closed while the stream was open: the stream ends (no hang, fail_after guards it)
        async with reader.stream, aclosing(events):
            rest = [event async for event, _data in events]
        assert rest.count("status") <= 2


async def test_dashboards_share_one_status_per_tick() -> None:
    """Three open event streams: the service computes about one status per 0.25 s, not one per
    stream and tick (each costs the trio thread ~0.6 ms in the demo)."""
    session = RegistrySession()
    session.join(ALICE, stream=True)
    service = ClankService(session)
    original = service.status
    calls = 0

    def counting_status() -> dict[str, object]:
        nonlocal calls
        calls += 1
        return original()

    service.status = counting_status  # type: ignore[method-assign]
    received = 0
    with trio.fail_after(LIMIT):
        async with open_http_api(service, ApiSettings(port=0), token=TOKEN) as api:

            async def dashboard() -> None:
                nonlocal received
                reader, _head = await SseReader.open(api)
                async with reader.stream, aclosing(reader.events()) as events:
                    async for event, _data in events:
                        received += event == "status"

            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(dashboard)
                await trio.sleep(1.6)
                nursery.cancel_scope.cancel()
    assert received >= 3 * 3  # each stream got its status events (one per 0.5 s)
    assert calls <= received / 2 + 1
    assert calls <= 1.6 / 0.25 + 2


@pytest.mark.parametrize("spec_version", ["2.0", "2.4"])
async def test_an_event_stream_left_by_its_client_closes_its_generator(spec_version: str) -> None:
    """A dashboard closing its tab mid-stream leaves the generator suspended at a ``yield``:
    the response closes it then, not the garbage collector later (trio's ResourceWarning)."""
    closed = trio.Event()
    second_chunk = trio.Event()

    async def stream() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: x\n\n"
        finally:
            closed.set()

    async def receive() -> dict[str, object]:  # 2.0: starlette listens for the disconnect
        await second_chunk.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        if message.get("body"):
            if second_chunk.is_set():
                if spec_version == "2.4":
                    raise OSError("client gone")  # 2.4: the send itself fails
                await trio.sleep_forever()  # cancelled by the disconnect, mid-send
            second_chunk.set()

    scope = {"type": "http", "asgi": {"spec_version": spec_version}}
    with trio.fail_after(LIMIT):
        try:
            await _ClosingStreamingResponse(stream(), media_type="text/event-stream")(scope, receive, send)
        except ClientDisconnect:
            assert spec_version == "2.4"
        assert closed.is_set()
