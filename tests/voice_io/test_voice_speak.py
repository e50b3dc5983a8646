"""Speak over the HTTP API against the sandbox: a simulated listener hears what we stream.

Real parts end to end: clank run (open_clank) on the sandbox, hypercorn on 127.0.0.1, httpx with a
chunked upload, trio-websocket, the voice role (libopus, DAVE, AEAD, UDP) and the sandbox's
simulated member decoding what it receives.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionRejected, open_websocket_url
from voice_io_kit import Running, amplitude_at, frame_rms, running, wait_until

from clank.control.voice_http import MAX_SPEAK_BYTES
from clank.media.audio import dominant_frequency, tone

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")
LIMIT = 60


def _wav(path: Path, frequency: float, seconds: float, rate: int = 44_100) -> str:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="mono")
        pcm = tone(frequency, seconds, rate=rate, channels=1)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return str(path)


async def test_streamed_pcm_upload_plays_while_uploading_without_gaps(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(LIMIT):
        async with running() as r:
            alice = await r.join("alice")
            listener = r.listener(alice)
            await r.dave_ready()
            pcm = tone(440.0, 2.0, rate=24_000, channels=1).tobytes()
            chunk = 1920  # 40 ms of 24 kHz mono
            states: list[str] = []

            async def body() -> AsyncIterator[bytes]:
                for n, offset in enumerate(range(0, len(pcm), chunk)):
                    yield pcm[offset : offset + chunk]
                    await trio.sleep(0.02)  # TTS at twice real time
                    if n == 25:  # half way through the upload
                        states.append((await r.client.get("/api/voice/playback")).json()["state"])

            response = await r.client.post("/api/voice/speak?sampleRate=24000&channels=1", content=body())
            assert response.status_code == 200, response.text
            assert response.json()["durationMs"] == 2000
            assert states == ["playing"]  # playback started before the upload ended
            await wait_until(lambda: r.voice.playback()["state"] == "idle")
            await trio.sleep(0.2)
            heard = listener.received_pcm(r.ours)
            assert abs(dominant_frequency(heard) - 440.0) < 5.0
            rms = frame_rms(heard)
            loud = np.flatnonzero(rms > 1000)
            assert 95 <= len(loud) <= 102  # 2 s = 100 frames
            middle = rms[loud[0] + 1 : loud[-1]]
            print(
                f"FIGURE streamed speech: {len(loud)} loud 20 ms frames of 100, "
                f"quietest middle frame rms {middle.min():.0f}"
            )
            assert middle.min() > 3000, "a gap in the middle of the speech"


async def test_websocket_speech_events_and_stop_silences_within_40ms(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(LIMIT):
        async with running() as r:
            alice = await r.join("alice")
            listener = r.listener(alice)
            await r.dave_ready()
            url = f"{r.ws_url}/api/voice/speak/ws?sampleRate=48000&channels=2"
            headers = [("Authorization", f"Bearer {r.token}")]
            events: list[dict[str, object]] = []
            async with open_websocket_url(url, extra_headers=headers) as ws:
                pcm = tone(660.0, 4.0, rate=48_000, channels=2).tobytes()
                for offset in range(0, len(pcm), 19_200):  # 100 ms messages
                    await ws.send_message(pcm[offset : offset + 19_200])

                async def read_events() -> None:
                    while True:
                        events.append(json.loads(await ws.get_message()))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_events)
                    await wait_until(lambda: len(listener.received_pcm(r.ours)) >= 48_000)
                    grew_at: list[float] = []
                    last_len = len(listener.received_pcm(r.ours))

                    async def watch_growth() -> None:
                        nonlocal last_len
                        while True:
                            length = len(listener.received_pcm(r.ours))
                            if length != last_len:
                                last_len = length
                                grew_at.append(trio.current_time())
                            await trio.sleep(0.001)

                    nursery.start_soon(watch_growth)
                    stopped_at = trio.current_time()
                    response = await r.client.post("/api/voice/stop", json={"what": "speech"})
                    assert response.json()["ok"]
                    await trio.sleep(0.3)
                    nursery.cancel_scope.cancel()
            last_audio = max(grew_at, default=stopped_at)
            print(
                f"FIGURE stop -> last audio at the listener: "
                f"{1000 * (last_audio - stopped_at):.1f} ms (goal <= 40)"
            )
            assert last_audio - stopped_at <= 0.040, (
                f"audio went on {1000 * (last_audio - stopped_at):.1f} ms"
            )
            statuses = [e["status"] for e in events if e["type"] == "playback_state"]
            assert statuses[:3] == ["buffered", "playing", "idle"]
            assert any(e["type"] == "buffer_depth" for e in events)
            assert abs(listener.heard_frequency(r.ours, 0.5) - 660.0) < 5.0


async def test_music_ducks_while_speaking(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(LIMIT):
        async with running() as r:
            alice = await r.join("alice")
            listener = r.listener(alice)
            await r.dave_ready()
            song = _wav(tmp_path / "song.wav", 330.0, 8.0)
            result = (
                await r.client.post("/api/voice/music/play", json={"source": song, "name": "song"})
            ).json()
            assert result["ok"] and result["name"] == "song" and abs(result["durationS"] - 8.0) < 0.05
            await trio.sleep(1.0)
            before = amplitude_at(listener.received_pcm(r.ours)[-24_000:], 330.0)
            speech = tone(880.0, 1.5, rate=16_000, channels=1).tobytes()
            response = await r.client.post("/api/voice/speak?sampleRate=16000&channels=1", content=speech)
            assert response.status_code == 200
            await trio.sleep(0.8)
            during_pcm = listener.received_pcm(r.ours)[-19_200:]
            during = amplitude_at(during_pcm, 330.0)
            assert amplitude_at(during_pcm, 880.0) > 3000
            await trio.sleep(1.4)
            after = amplitude_at(listener.received_pcm(r.ours)[-19_200:], 330.0)
            assert before > 3000
            print(
                f"FIGURE music under speech: {during / before:.3f} of its level (duck gain 0.3), "
                f"after {after / before:.3f}"
            )
            assert 0.2 < during / before < 0.42, (before, during)  # duck gain 0.3
            assert after / before > 0.85
            status = (await r.client.get("/api/voice/music")).json()
            assert status["state"] == "playing" and status["track"]["name"] == "song"
            assert 3.0 < status["track"]["positionS"] < 5.0


async def _raw_post(r: Running, path: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    """A request with headers only (a declared body we never send): the server must answer first."""
    port = r.info.api.port
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Authorization: Bearer {r.token}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
        data.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0] if b"content-length: " in data else 1
    ):
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


async def test_bad_input_answers_4xx_naming_the_field_and_keeps_playing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(LIMIT):
        async with running() as r:
            alice = await r.join("alice")
            listener = r.listener(alice)
            await r.dave_ready()
            ok = await r.client.post(
                "/api/voice/speak?sampleRate=48000&channels=1", content=tone(500.0, 3.0, channels=1).tobytes()
            )
            assert ok.status_code == 200
            await wait_until(lambda: len(listener.received_pcm(r.ours)) >= 24_000)
            cases = [
                ("/api/voice/speak?sampleRate=7000", b"\0\0", 400, "sampleRate"),
                ("/api/voice/speak?sampleRate=96000", b"\0\0", 400, "sampleRate"),
                ("/api/voice/speak?sampleRate=abc", b"\0\0", 400, "sampleRate"),
                ("/api/voice/speak?channels=3", b"\0\0", 400, "channels"),
                ("/api/voice/speak?sampleRate=24000&channels=1", b"\0\0\0", 400, "body"),
                ("/api/voice/speak?sampleRate=24000&channels=2", b"\0\0\0\0\0\0", 400, "body"),
            ]
            for path, content, status, field in cases:
                response = await r.client.post(path, content=content)
                assert response.status_code == status, (path, response.text)
                assert response.json()["field"] == field, path
            bad_json = [
                ("/api/voice/music/gain", {"target": "loud"}, "target"),
                ("/api/voice/music/gain", {"fadeMs": 10}, "target"),
                ("/api/voice/music/gain", {"target": 0.5, "fadeMs": -1}, "fadeMs"),
                ("/api/voice/music/play", {"source": ""}, "source"),
                ("/api/voice/music/play", {"source": "x", "bogus": 1}, "bogus"),
                ("/api/voice/stop", {"what": "everything"}, "what"),
            ]
            for path, body, field in bad_json:
                response = await r.client.post(path, json=body)
                assert response.status_code == 400, (path, response.text)
                assert response.json()["field"] == field, path
            status, answer = await _raw_post(
                r,
                "/api/voice/speak?sampleRate=24000&channels=1",
                {"Content-Length": str(MAX_SPEAK_BYTES + 2), "Content-Type": "application/octet-stream"},
            )
            assert status == 413 and answer["field"] == "body"
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(
                    f"{r.ws_url}/api/voice/listen?users=1234",
                    extra_headers=[("Authorization", f"Bearer {r.token}")],
                ):
                    pass
            assert rejected.value.status_code == 400
            assert json.loads(rejected.value.body or b"{}")["field"] == "users"
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_websocket_url(
                    f"{r.ws_url}/api/voice/speak/ws?sampleRate=4000",
                    extra_headers=[("Authorization", f"Bearer {r.token}")],
                ):
                    pass
            assert rejected.value.status_code == 400
            assert json.loads(rejected.value.body or b"{}")["field"] == "sampleRate"
            async with open_websocket_url(
                f"{r.ws_url}/api/voice/speak/ws?sampleRate=24000&channels=2&token={r.token}"
            ) as ws:
                await ws.send_message(b"\0" * 6)  # 1.5 stereo samples
                while True:
                    event = json.loads(await ws.get_message())
                    if event["type"] == "error":
                        break
                assert event["field"] == "pcm"
                await ws.send_message('{"type": "dance"}')
                while True:
                    event = json.loads(await ws.get_message())
                    if event["type"] == "error":
                        break
                assert event["field"] == "type"
            # nothing already playing was lost
            assert r.voice.playback()["state"] == "playing"
            before = len(listener.received_pcm(r.ours))
            await trio.sleep(0.2)
            assert len(listener.received_pcm(r.ours)) > before
            assert abs(listener.heard_frequency(r.ours, 0.2) - 500.0) < 10.0
