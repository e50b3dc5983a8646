"""Watch a screen share and describe it: clank's agent surface, from Python.

Without a Discord token it runs against the built-in sandbox (a simulated user streams a
synthetic desktop); with CLANK_DISCORD_TOKEN, CLANK_GUILD_ID and CLANK_CHANNEL_ID it joins that
voice channel and watches whoever shares there.

    .venv/bin/python examples/watch_and_describe.py [--out frame.jpg] [--seconds 30]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import trio

import clank


async def main(out: Path | None, seconds: float) -> int:
    settings = clank.load_settings()  # conf/clank.toml + CLANK_* environment variables
    async with clank.open_session(settings, scenario="streamer") as service:
        with trio.move_on_after(seconds):
            # Bind a watch the way an agent would: no target = the only sharer.
            while not (watch := await service.start_screen_watch()).ok:
                print(f"waiting for a sharer ({watch.reason})")
                await trio.sleep(0.25)
            names = {s["userId"]: s["label"] for s in service.list_sharers()}
            print(f"watching {names.get(watch.target_user_id or '', watch.target_user_id)} ({watch.detail})")
            # look_at_screen is a cheap read of the latest frame: polling it is fine.
            while not (look := service.look_at_screen()).ok:  # noqa: ASYNC110 (ok: a decoded frame)
                await trio.sleep(0.2)
            with trio.move_on_after(20.0):  # the first note follows the first frame (OCR: seconds)
                while not (look := service.look_at_screen()).notes:  # noqa: ASYNC110
                    await trio.sleep(0.2)
            assert look.frame is not None
            frame = look.frame
            print(f"frame #{frame.sequence}: {frame.width}x{frame.height} JPEG, {len(frame.jpeg)} bytes")
            for note in look.notes:  # the watch's rolling screen notes (offline provider: measured)
                print(f"note ({note['trigger']}): {note['text']}")
            if out is not None:
                out.write_bytes(frame.jpeg)
                print(f"saved {out}")
            await service.stop_screen_watch()
            return 0
    print(f"nothing to see within {seconds:g} s")
    return 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the frame's JPEG here")
    parser.add_argument("--seconds", type=float, default=30.0, help="give up after this long")
    args = parser.parse_args()
    raise SystemExit(trio.run(main, args.out, args.seconds))
