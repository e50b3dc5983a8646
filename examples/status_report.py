"""Who is here, who shares, and how the connection is: a status report from Python.

Prints the voice channel's sharers (with names), each transport role's state and its headline
figures, and the DAVE end-to-end encryption state with the voice privacy code — the same data the
dashboard shows. Sandbox without a token, real Discord with one (see watch_and_describe.py).

    .venv/bin/python examples/status_report.py [--settle 10]
"""

from __future__ import annotations

import argparse
from typing import Any

import trio

import clank


def group(code: str) -> str:
    """Privacy codes read in groups of five digits, as in Discord's client."""
    return " ".join(code[i : i + 5] for i in range(0, len(code), 5))


def settled(service: Any) -> bool:
    """Somebody shares, and voice is up with its DAVE privacy code (when DAVE is on)."""
    voice = next((r for r in service.status()["roles"] if r["name"] == "voice"), None)
    if not service.list_sharers() or voice is None or voice["state"] != "ready":
        return False
    dave = voice.get("dave")
    return not dave or not dave["protocolVersion"] or bool(dave.get("privacyCode"))


async def main(settle: float) -> int:
    async with clank.open_session(clank.load_settings(), scenario="demo") as service:
        # Let sharers be discovered and DAVE agree on a group: at most `settle` seconds.
        with trio.move_on_after(settle):
            while not settled(service):  # noqa: ASYNC110 (status is a cheap read; polling is fine)
                await trio.sleep(0.2)
        print("members:", ", ".join(sorted(m.label for m in service.session.members())))
        sharers = service.list_sharers()
        for sharer in sharers:
            what = [w for w, on in (("Go Live", sharer["live"]), ("webcam", sharer["webcam"])) if on]
            print(f"sharer {sharer['label']} ({sharer['userId']}): {', '.join(what) or 'nothing'}")
        if not sharers:
            print("nobody shares")
        status = service.status()
        print(f"in voice: {status['inVoice']} ({status['mode']} mode)")
        for role in status["roles"]:
            print(f"role {role['name']}: {role['state']}")
            dave = role.get("dave")
            if dave:
                code = dave.get("privacyCode")
                print(f"  DAVE {dave['state']} v{dave['protocolVersion']} epoch {dave['epoch']}")
                if code:
                    print(f"  privacy code {group(code)}")
        return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--settle", type=float, default=10.0, help="report after a sharer and DAVE are seen, or this long"
    )
    raise SystemExit(trio.run(main, parser.parse_args().settle))
