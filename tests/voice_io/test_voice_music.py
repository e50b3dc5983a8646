"""Music: fades and gain ramps measured as an envelope at a sandbox listener; URL failures are results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import trio
import trio.testing
from test_voice_speak import _wav
from voice_io_kit import Running, frame_rms, running, wait_until

from clank.media.audio import FRAME_SAMPLES, PcmSource
from clank.media.mixer import Mixer

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")
LIMIT = 60


def test_mixer_gain_ramp_is_linear_and_the_tap_sees_positions() -> None:
    mixer = Mixer()
    source = PcmSource()
    source.push(np.full((FRAME_SAMPLES * 60, 2), 10_000, dtype=np.int16))
    seen: list[tuple[int, int]] = []
    mixer.play("music", source, on_frame=lambda pcm, pos: seen.append((pos, int(pcm[-1, 0]))))
    mixer.mix()
    mixer.set_gain("music", 0.5, fade_s=0.2)  # 10 frames
    levels = [int(frame[-1, 0]) for frame in (mixer.mix() for _ in range(12)) if frame is not None]
    assert levels[-1] == levels[-2] == 5000
    steps = np.diff(levels[:10])
    assert np.all(steps < 0) and np.ptp(steps) <= 2  # one straight line
    assert [p for p, _ in seen] == [n * FRAME_SAMPLES for n in range(13)]
    assert mixer.statistics().tracks[0].gain == 0.5


def _envelope(r: Running, uid: str, seconds: float, level: float) -> npt.NDArray[np.float64]:
    pcm = r.listener(uid).received_pcm(r.ours)[-int(seconds * 48_000) :]
    return frame_rms(pcm) / level


def _ramp_ms(env: npt.NDArray[np.float64], high: float, low: float) -> float:
    """Duration of a ramp between ``high`` and ``low`` (relative levels), in ms (20 ms frames)."""
    if env[0] > env[-1]:  # falling
        start = int(np.argmax(env < high * 0.97))
        end = int(np.argmax(env < low * 1.15 + 0.02))
    else:
        start = int(np.argmax(env > low * 1.15 + 0.02))
        end = int(np.argmax(env > high * 0.97))
    return (end - start) * 20.0


async def test_gain_pause_resume_stop_follow_their_fades(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(LIMIT):
        async with running() as r:
            alice = await r.join("alice")
            await r.dave_ready()
            song = _wav(tmp_path / "song.wav", 330.0, 20.0)
            assert (await r.client.post("/api/voice/music/play", json={"source": song})).json()["ok"]
            await trio.sleep(1.0)
            level = float(np.median(frame_rms(r.listener(alice).received_pcm(r.ours)[-24_000:])))
            assert level > 3000

            answer = (
                await r.client.post("/api/voice/music/gain", json={"target": 0.25, "fadeMs": 500})
            ).json()
            assert answer["ok"]
            await trio.sleep(1.0)
            env = _envelope(r, alice, 1.3, level)
            assert env[:5].min() > 0.93 and abs(float(np.median(env[-10:])) - 0.25) < 0.04
            print(f"FIGURE gain 1 -> 0.25 over 500 ms: ramp {_ramp_ms(env, 1.0, 0.25):.0f} ms")
            assert 420 <= _ramp_ms(env, 1.0, 0.25) <= 580
            status = (await r.client.get("/api/voice/music")).json()
            assert status["track"]["gain"] == 0.25 and status["state"] == "playing"

            await r.client.post("/api/voice/music/pause", json={"fadeMs": 300})
            await trio.sleep(0.6)
            paused_at = (await r.client.get("/api/voice/music")).json()
            env = _envelope(r, alice, 0.7, level)
            assert paused_at["state"] == "paused" and env[-1] < 0.02
            print(f"FIGURE pause fade 300 ms: ramp {_ramp_ms(env, 0.25, 0.0):.0f} ms")
            assert 240 <= _ramp_ms(env, 0.25, 0.0) <= 360
            await trio.sleep(0.5)
            assert (await r.client.get("/api/voice/music")).json()["track"]["positionS"] == pytest.approx(
                paused_at["track"]["positionS"], abs=0.001
            )  # paused: the position holds

            r.listener(alice).forget_audio()
            await r.client.post("/api/voice/music/resume", json={"fadeMs": 300})
            await trio.sleep(0.8)
            env = _envelope(r, alice, 0.8, level)
            assert abs(float(np.median(env[-8:])) - 0.25) < 0.04
            print(f"FIGURE resume fade 300 ms: ramp {_ramp_ms(env, 0.25, 0.0):.0f} ms")
            assert 240 <= _ramp_ms(env, 0.25, 0.0) <= 360

            await r.client.post("/api/voice/music/stop", json={"fadeMs": 200})
            await trio.sleep(0.5)
            env = _envelope(r, alice, 0.6, level)
            print(f"FIGURE stop fade 200 ms: ramp {_ramp_ms(env, 0.25, 0.0):.0f} ms")
            assert 140 <= _ramp_ms(env, 0.25, 0.0) <= 260
            assert (await r.client.get("/api/voice/music")).json()["state"] == "idle"


async def test_a_bad_url_is_an_error_result_and_the_queue_plays_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(LIMIT):
        async with running() as r:
            alice = await r.join("alice")
            await r.dave_ready()
            for source in ("http://127.0.0.1:9/missing.mp3?sig=secret", str(tmp_path / "none.ogg")):
                response = await r.client.post("/api/voice/music/play", json={"source": source})
                assert response.status_code == 200
                answer = response.json()
                assert answer["ok"] is False and answer["reason"] == "source_failed"
            blocks: list[tuple[tuple[int, ...], str, int]] = []
            remove = r.voice.music_add_tap(lambda pcm, pos: blocks.append((pcm.shape, str(pcm.dtype), pos)))
            first = _wav(tmp_path / "a.wav", 300.0, 0.6)
            second = _wav(tmp_path / "b.wav", 600.0, 3.0)
            one = (await r.client.post("/api/voice/music/play", json={"source": first, "name": "a"})).json()
            two = (
                await r.client.post(
                    "/api/voice/music/play", json={"source": second, "name": "b", "queue": True}
                )
            ).json()
            assert one["reason"] == "playing" and two["reason"] == "queued"
            status = (await r.client.get("/api/voice/music")).json()
            assert [q["name"] for q in status["queue"]] == ["b"]
            await wait_until(
                lambda: r.voice.music_status()["track"] not in (None,)
                and r.voice.music_status()["track"]["name"] == "b"
            )
            await trio.sleep(1.0)
            assert abs(r.listener(alice).heard_frequency(r.ours, 0.5) - 600.0) < 10.0
            assert r.voice.music_status()["errors"] == 2
            remove()
            count = len(blocks)
            await trio.sleep(0.1)
            assert len(blocks) == count and count > 60  # the tap saw both tracks, then was removed
            assert {(shape, dtype) for shape, dtype, _ in blocks} == {((960, 2), "int16")}
            positions = [pos for _, _, pos in blocks]
            assert positions[:3] == [0, 960, 1920] and 0 in positions[5:]  # restarts for track b


async def test_leaving_voice_while_music_plays_ends_cleanly(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The feeder's abandoned read must not be closed from another thread (generator already executing)."""
    with trio.fail_after(LIMIT):
        async with running() as r:
            await r.join("alice")
            await r.dave_ready()
            song = _wav(tmp_path / "long.wav", 330.0, 30.0)
            assert (await r.client.post("/api/voice/music/play", json={"source": song})).json()["ok"]
            await wait_until(lambda: r.voice.music_status()["state"] == "playing")
            await trio.sleep(0.5)
        # Leaving the block tears the session down with the track still playing: no exception.


def test_music_status_names_other_audio_in_the_mix_but_not_speech() -> None:
    from clank.session.voice_music import MusicPlayer
    from clank.session.voice_playback import SPEECH_TRACK, PlaybackEvents

    mixer = Mixer()
    player = MusicPlayer(mixer, PlaybackEvents(), lambda: None)
    assert player.status()["otherAudio"] == []
    song, speech = PcmSource(), PcmSource()
    for source in (song, speech):
        source.push(np.full((FRAME_SAMPLES * 10, 2), 1000, dtype=np.int16))
    mixer.play("golive-music", song, gain=0.5)  # what our Go Live's visualizer plays
    mixer.play(SPEECH_TRACK, speech)
    for _ in range(3):
        mixer.mix()
    status = player.status()
    assert status["state"] == "idle"  # the player itself plays nothing
    assert status["otherAudio"] == [
        {"name": "golive-music", "state": "playing", "positionS": 0.06, "gain": 0.5}
    ]
    mixer.pause("golive-music", fade_s=0)
    assert [a["state"] for a in player.status()["otherAudio"]] == ["paused"]
