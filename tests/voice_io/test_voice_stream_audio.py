"""Go Live stream audio: a sandbox streamer shares audio; it arrives on the stream leg and decodes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trio
import trio.testing
from trio_websocket import open_websocket_url
from voice_io_kit import running

from clank.media.audio import dominant_frequency
from clank.wire.listen_audio import ListenAudioFrame

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")
LIMIT = 60


async def test_stream_audio_is_received_on_the_stream_leg_and_decodes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(LIMIT):
        async with running() as r:
            alice = await r.go_live("alice")
            watch = (await r.client.post("/api/tools/start_screen_watch", json={})).json()
            assert watch["ok"] and watch["targetUserId"] == alice
            stream_key = r.sandbox.world.stream_of(alice).key
            url = (
                f"{r.ws_url}/api/voice/listen?users={alice}&sources=stream:{alice}"
                "&sampleRate=24000&channels=1&silenceMs=400"
            )
            async with open_websocket_url(url, extra_headers=[("Authorization", f"Bearer {r.token}")]) as ws:
                hello = json.loads(await ws.get_message())
                assert hello["sources"] == [f"stream:{alice}"]
                r.sandbox.media.share_stream_audio(stream_key, frequency=880.0, signal="tone")
                frames: list[ListenAudioFrame] = []
                events = []
                while len(frames) < 60:
                    message = await ws.get_message()
                    if isinstance(message, bytes):
                        frames.append(ListenAudioFrame.parse(message))
                    else:
                        events.append(json.loads(message))
                assert events[0] == {
                    "type": "speaking_started",
                    "userId": alice,
                    "source": f"stream:{alice}",
                    "reason": None,
                }
                assert all(f.stream and f.user_id == int(alice) and f.sample_rate == 24000 for f in frames)
                pcm = np.frombuffer(b"".join(f.pcm for f in frames[10:]), dtype=np.int16)
                assert np.abs(pcm).max() > 3000
                assert abs(dominant_frequency(pcm, 24000) - 880.0) < 10.0
                # alice's voice (not talking) stays apart from her stream audio
                voice = r.voice.role()
                assert alice not in voice.speaking_users()
                r.sandbox.media.share_stream_audio(stream_key, on=False)
                while True:
                    message = await ws.get_message()
                    if isinstance(message, str) and json.loads(message)["type"] == "speaking_stopped":
                        break
            status = (await r.client.get("/api/status")).json()
            [shown] = [w for w in status["watches"] if w["targetUserId"] == alice]
            audio = shown["streamAudio"]
            assert audio["source"] == f"stream:{alice}" and audio["active"]
            assert audio["audioPackets"] >= 60 and audio["audioDecoded"] >= 60
            assert audio["audioDecryptFailures"] == 0
