"""Listen over the WebSocket API: sandbox speakers' audio arrives with user id, rate and speaking events."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trio
import trio.testing
from trio_websocket import WebSocketConnection, open_websocket_url
from voice_io_kit import Running, running, wait_until

from clank.media.audio import dominant_frequency
from clank.session.voice_listen import UserAudio
from clank.wire.listen_audio import ListenAudioFrame

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")
LIMIT = 60


def _url(r: Running, query: str) -> str:
    return f"{r.ws_url}/api/voice/listen?{query}"


def _headers(r: Running) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {r.token}")]


async def _hello(ws: WebSocketConnection) -> dict[str, object]:
    hello = json.loads(await ws.get_message())
    assert hello["type"] == "listening"
    return hello  # type: ignore[no-any-return]


async def test_a_speakers_tone_arrives_with_user_id_rate_and_speaking_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(LIMIT):
        async with running() as r:
            alice = await r.join("alice")
            bob = await r.join("bob")
            async with open_websocket_url(
                _url(r, f"users={alice}&sampleRate=16000&channels=1&silenceMs=300"), extra_headers=_headers(r)
            ) as ws:
                hello = await _hello(ws)
                assert (
                    hello["users"] == [alice] and hello["sampleRate"] == 16000 and hello["silenceMs"] == 300
                )
                await r.sandbox.world.set_speaking(bob, True)  # not asked for: must not arrive
                await r.sandbox.world.set_speaking(alice, True)
                frames: list[ListenAudioFrame] = []
                events: list[tuple[float, dict[str, object]]] = []
                arrivals: list[float] = []
                while len(frames) < 75:
                    message = await ws.get_message()
                    if isinstance(message, bytes):
                        frames.append(ListenAudioFrame.parse(message))
                        arrivals.append(trio.current_time())
                    else:
                        events.append((trio.current_time(), json.loads(message)))
                assert [e["type"] for _, e in events] == ["speaking_started"]
                assert events[0][1]["userId"] == alice
                assert {f.user_id for f in frames} == {int(alice)}
                assert {(f.sample_rate, f.channels) for f in frames} == {(16000, 1)}
                sizes = [len(f.pcm) for f in frames[2:]]  # the resampler's filter delay: first frames shorter
                assert sizes.count(640) >= len(sizes) - 2
                pcm = np.frombuffer(b"".join(f.pcm for f in frames[25:]), dtype=np.int16)
                expected = r.sandbox.media.speaker(alice).frequency
                assert abs(dominant_frequency(pcm, 16000) - expected) < 10.0
                await r.sandbox.world.set_speaking(alice, False)
                while True:
                    message = await ws.get_message()
                    if isinstance(message, bytes):
                        arrivals.append(trio.current_time())
                        continue
                    event = json.loads(message)
                    if event["type"] == "speaking_stopped":
                        stopped_at = trio.current_time()
                        break
                assert event["userId"] == alice and event["reason"] == "silence"
                gap = stopped_at - arrivals[-1]
                print(f"FIGURE speaking_stopped {gap * 1000:.0f} ms after the last audio (silenceMs 300)")
                assert 0.27 <= gap <= 0.38, f"speaking_stopped {gap * 1000:.0f} ms after the last audio"


async def test_a_stalled_client_does_not_disturb_another(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(LIMIT):
        async with running() as r:
            alice = await r.join("alice")
            await r.sandbox.world.set_speaking(alice, True)
            async with (
                open_websocket_url(
                    _url(r, "sampleRate=48000&channels=2&buffer=10"),
                    extra_headers=_headers(r),
                    message_queue_size=1,
                ) as stalled,
                open_websocket_url(
                    _url(r, "sampleRate=24000&channels=1"), extra_headers=_headers(r)
                ) as healthy,
            ):
                await _hello(stalled)  # ... and never read again
                await _hello(healthy)
                arrivals: list[float] = []
                while len(arrivals) < 150:  # 3 s
                    message = await healthy.get_message()
                    if isinstance(message, bytes):
                        frame = ListenAudioFrame.parse(message)
                        assert frame.user_id == int(alice) and frame.sample_rate == 24000
                        arrivals.append(trio.current_time())
                span = arrivals[-1] - arrivals[0]
                print(
                    f"FIGURE healthy client: 150 frames in {span:.2f} s, "
                    f"max gap {max(np.diff(arrivals[10:])) * 1000:.0f} ms"
                )
                assert 2.8 < span < 3.3  # real time: nothing held back
                assert max(np.diff(arrivals[10:])) < 0.15
                status = (await r.client.get("/api/status")).json()["voiceIo"]
                listeners = sorted(status["listeners"], key=lambda x: x["rate"])
                assert listeners[0]["rate"] == 24000 and listeners[0]["dropped"] == 0
                assert listeners[1]["rate"] == 48000 and listeners[1]["dropped"] > 50
                assert listeners[1]["queued"] <= 10 + 2
                print(f"FIGURE stalled client dropped {listeners[1]['dropped']} frames, healthy dropped 0")
            await wait_until(lambda: not r.voice.role().listeners())


async def test_python_listener_iterates_user_audio_and_ends_on_leave_of_block(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(LIMIT):
        async with running() as r:
            alice = await r.join("alice")
            await r.sandbox.world.set_speaking(alice, True)
            async with r.voice.listen([alice], sample_rate=8000, channels=2, silence_ms=200) as listener:
                kinds = []
                async for item in listener:
                    kinds.append(type(item).__name__)
                    if kinds.count("UserAudio") >= 10:
                        break
                assert kinds[0] == "SpeakingEvent"
                assert listener.statistics()["rate"] == 8000
            assert not r.voice.role().listeners()
            bob = await r.join("bob")
            carol = await r.join("carol")
            await r.sandbox.world.set_speaking(bob, True)
            await r.sandbox.world.set_speaking(carol, True)
            heard: set[str] = set()
            async with r.voice.listen([alice, bob], sample_rate=16000, channels=1) as several:
                async for item in several:
                    if isinstance(item, UserAudio):
                        heard.add(item.user_id)
                    if heard == {alice, bob} and several.delivered > 100:
                        break
            assert heard == {alice, bob}  # carol talks too, but was not asked for
            with pytest.raises(Exception, match="users"):
                async with r.voice.listen(["42"]):
                    pass
