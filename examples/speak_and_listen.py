"""Speak into the voice channel and listen to who talks: clank's voice API, from Python.

Pushes one second of a 440 Hz tone as 24 kHz mono PCM (what a text-to-speech engine would
produce) and, meanwhile, listens for a few seconds and reports who spoke and how much audio
arrived. In the sandbox demo a simulated user talks. Sandbox without a token, real Discord with
one (see watch_and_describe.py).

    .venv/bin/python examples/speak_and_listen.py [--seconds 4]
"""

from __future__ import annotations

import argparse
import math
import struct

import trio

import clank

RATE = 24_000


def tone(seconds: float, hz: float = 440.0) -> bytes:
    """s16le mono PCM."""
    count = int(RATE * seconds)
    return struct.pack(
        f"<{count}h", *(int(8000 * math.sin(2 * math.pi * hz * i / RATE)) for i in range(count))
    )


async def main(seconds: float) -> int:
    async with clank.open_session(clank.load_settings(), scenario="demo") as service:
        voice = service.voice
        if voice is None:
            print("this session has no voice API")
            return 1
        speech = voice.open_speech(sample_rate=RATE, channels=1)
        speech.push(tone(1.0))
        speech.end()
        heard_ms: dict[str, int] = {}
        async with voice.listen() as listener:
            with trio.move_on_after(seconds):
                async for item in listener:  # 20 ms audio chunks, and speaking start/end events
                    if hasattr(item, "pcm"):
                        heard_ms[item.user_id] = heard_ms.get(item.user_id, 0) + 20
        print(f"spoke: {voice.playback()['utterances']} utterance(s)")
        names = {m.user_id: m.label for m in service.session.members()}
        for user, ms in sorted(heard_ms.items()):
            print(f"heard {names.get(user, user)}: {ms} ms of audio")
        if not heard_ms:
            print("heard nobody")
        return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="how long to listen")
    raise SystemExit(trio.run(main, parser.parse_args().seconds))
