"""The Go Live publish tools an LLM calls: go live (frames, music visualizer, media), pause, stop.

Like :mod:`clank.control.voice_tools`: the table is data that :mod:`clank.control.tools` turns
into its ``Tool``/``Param`` values (shared by the HTTP API, in-process agents and MCP), and
:func:`call_publish_tool` runs a validated call. Pushed images are not a tool argument (binary):
they go to ``POST /api/publish/frame``. A refused call answers ``{"ok": false, "reason": ...}``
(the ``PublishError`` reasons) with the publish state, a bad argument raises ``InvalidArgument``
naming it; success answers the publish state (``reason`` = why an ended publish ended) and ``ok``.
"""

from __future__ import annotations

from typing import Any, Final

from clank.control.publish import SOURCES, publish_control_for
from clank.errors import PublishError
from clank.media.visualizer import VISUALIZERS

__all__ = ["PUBLISH_TOOLS", "PUBLISH_TOOL_NAMES", "call_publish_tool"]

PUBLISH_TOOLS: Final[tuple[tuple[str, str, tuple[dict[str, Any], ...]], ...]] = (
    (
        "go_live",
        "Start our own Go Live screen share in the voice channel (or switch what it shows, keeping the "
        "stream): source 'frames' shows images pushed to POST /api/publish/frame (e.g. screenshots of a "
        "browser you drive); 'visualizer' plays the music at url in voice and shows a visualizer of it; "
        "'media' relays a video file or URL (its audio into voice).",
        (
            {
                "name": "source",
                "description": "frames, visualizer or media.",
                "enum": SOURCES,
                "max_length": None,
            },
            {"name": "url", "description": "For visualizer/media: a file path or URL.", "max_length": 2048},
            {
                "name": "visualizer",
                "description": "Optional: showcqt (default), showwaves or showspectrum.",
                "enum": VISUALIZERS,
                "max_length": None,
            },
            {"name": "loop", "description": "Optional: loop the music or media.", "kind": "boolean"},
        ),
    ),
    (
        "set_go_live_paused",
        "Pause (paused=true: viewers keep the stream, no video is sent; music pauses too) or resume "
        "our Go Live.",
        ({"name": "paused", "description": "true to pause, false to resume.", "kind": "boolean"},),
    ),
    ("stop_go_live", "End our own Go Live (viewers see it end).", ()),
)
PUBLISH_TOOL_NAMES: Final = frozenset(name for name, _, _ in PUBLISH_TOOLS)


async def call_publish_tool(service: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
    control = publish_control_for(service)
    try:
        if name == "go_live":
            state = await control.start(
                args["source"] or "", url=args["url"], visualizer=args["visualizer"], loop=bool(args["loop"])
            )
        elif name == "set_go_live_paused":
            state = await (control.pause() if args["paused"] else control.resume())
        elif name == "stop_go_live":
            state = await control.stop()
        else:
            raise AssertionError(f"publish tool {name!r} has no handler")
    except PublishError as exc:
        return {**control.state(), "ok": False, "reason": exc.reason, "detail": exc.detail}
    return {**state, "ok": True}
