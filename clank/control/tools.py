"""The agent tools as JSON schemas ready to hand to an LLM, and the one dispatcher that calls them.

``tool_schemas()`` returns ``[{name, description, input_schema}]`` (Anthropic's shape; OpenAI's
function tools take the same object with ``parameters`` for ``input_schema`` — see
:func:`openai_tools`). :func:`call_tool` validates arguments against the same :data:`TOOLS`
table and raises :class:`~clank.errors.InvalidArgument` naming the field, so the HTTP API and
any in-process agent get identical checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from clank.control.publish_tools import PUBLISH_TOOL_NAMES, PUBLISH_TOOLS, call_publish_tool
from clank.control.service import TRANSPORTS, ClankService
from clank.control.voice_tools import VOICE_TOOL_NAMES, VOICE_TOOLS, call_voice_tool
from clank.errors import InvalidArgument

TARGET_MAX_LENGTH: Final = 100


@attrs.frozen
class Param:
    name: str
    description: str
    enum: tuple[str, ...] | None = None
    max_length: int | None = TARGET_MAX_LENGTH
    kind: str = "string"
    """JSON type: ``string`` (default), ``number``, ``integer`` or ``boolean``."""
    minimum: float | None = None
    maximum: float | None = None

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind, "description": self.description}
        if self.enum is not None:
            out["enum"] = list(self.enum)
        if self.max_length is not None and self.kind == "string":
            out["maxLength"] = self.max_length
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


@attrs.frozen
class Tool:
    name: str
    description: str
    params: tuple[Param, ...] = ()

    def schema(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": {
                "type": "object",
                "properties": {p.name: p.schema() for p in self.params},
                "required": [],
                "additionalProperties": False,
            },
        }


_TARGET_WATCH = Param(
    "target",
    "Optional: who to watch — their display name, username, <@id> mention or user id. Leave it out "
    "to watch the requester's own share or the only person sharing; when several people share, "
    "name one (the call refuses with reason ambiguous_sharers and lists the candidates).",
)
_TARGET_WATCHED = Param(
    "target",
    "Optional: which watched user (display name, username, mention or id). Leave it out for the "
    "freshest Go Live frame (a webcam's when no Go Live watch has one).",
)
_TARGET_STOP = Param(
    "target",
    "Optional: whose watch to stop (display name, username, mention or id). Leave it out to stop "
    "every watch.",
)
_INCLUDE_IMAGE = Param(
    "includeImage",
    "Optional, default true: false leaves the base64 JPEG out of the answer (frame metadata and "
    "notes only); over HTTP the answer then carries imageUrl, a GET that returns the JPEG.",
    kind="boolean",
    max_length=None,
)

TOOLS: tuple[Tool, ...] = (
    Tool(
        "start_screen_watch",
        "Start watching a Discord Go Live screen share (or, when the named user is not live but has "
        "their camera on, their webcam) in the current voice channel. An explicit target is never "
        "swapped for someone else. The answer says whether a frame is ready yet (frameReady, reason "
        "frame_context_ready or waiting_for_frame_context); call look_at_screen to see it. A repeat "
        "call for the same target reuses the running watch.",
        (
            _TARGET_WATCH,
            Param(
                "preferredTransport",
                "Optional: 'native' (watch the Discord stream directly, the default) or 'link' (post a "
                "link in the text chat to a page that shares the user's screen from their browser; the "
                "answer's spokenHint says what to tell them). Without it, a link is sent only when "
                "native watching is impossible (the user is in voice but not sharing, or the stream "
                "cannot be watched).",
                enum=TRANSPORTS,
                max_length=None,
            ),
        ),
    ),
    Tool(
        "stop_screen_watch",
        "Stop watching. With a target, stop only that user's watch; without, stop every watch.",
        (_TARGET_STOP,),
    ),
    Tool(
        "look_at_screen",
        "Get the latest decoded frame of a watched screen share as a JPEG image, with its size, age "
        "and change scores (how much the picture changed since the previous frame; sceneCut marks a "
        "new scene).",
        (_TARGET_WATCHED, _INCLUDE_IMAGE),
    ),
    Tool(
        "list_sharers",
        "List users in the voice channel who share video: Go Live screen shares (live, discovered) and "
        "webcams, with names and whether they are being watched.",
    ),
    Tool(
        "status",
        "Report the voice session: connection roles and their transport states, per-stream quality "
        "figures, end-to-end encryption (DAVE) state with the voice privacy code, and the watches.",
    ),
)

TOOLS += tuple(  # speak/music/channels (clank/control/voice_tools.py)
    Tool(name, description, tuple(Param(**param) for param in params))
    for name, description, params in VOICE_TOOLS
)

TOOLS += tuple(  # our own Go Live (clank/control/publish_tools.py)
    Tool(name, description, tuple(Param(**param) for param in params))
    for name, description, params in PUBLISH_TOOLS
)

TOOLS_BY_NAME: Final[Mapping[str, Tool]] = {t.name: t for t in TOOLS}


def tool_schemas() -> list[dict[str, Any]]:
    """The tools as ``{name, description, input_schema}`` objects."""
    return [tool.schema() for tool in TOOLS]


def openai_tools() -> list[dict[str, Any]]:
    """The same tools in OpenAI's function-calling shape."""
    return [
        {
            "type": "function",
            "function": {"name": s["name"], "description": s["description"], "parameters": s["input_schema"]},
        }
        for s in tool_schemas()
    ]


def validate_arguments(tool: Tool, arguments: object) -> dict[str, Any]:
    """Check ``arguments`` against ``tool``: an object of known string fields. Raises
    :class:`InvalidArgument` naming the first offending field."""
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise InvalidArgument("arguments", "must be a JSON object")
    known = {p.name: p for p in tool.params}
    for key in arguments:
        if key not in known:
            raise InvalidArgument(str(key), f"unknown argument for {tool.name}")
    out: dict[str, Any] = {}
    for name, param in known.items():
        value = arguments.get(name)
        if value is None:
            out[name] = None
            continue
        if param.kind != "string":
            out[name] = _typed(param, value)
            continue
        if not isinstance(value, str):
            raise InvalidArgument(name, f"must be a string, got {type(value).__name__}")
        if param.max_length is not None and len(value) > param.max_length:
            raise InvalidArgument(name, f"must be at most {param.max_length} characters")
        if param.enum is not None and value not in param.enum:
            raise InvalidArgument(name, f"must be one of {', '.join(param.enum)}")
        out[name] = value
    return out


def _typed(param: Param, value: object) -> object:
    if param.kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidArgument(param.name, f"must be a boolean, got {type(value).__name__}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(param.name, f"must be a number, got {type(value).__name__}")
    if param.kind == "integer" and not (isinstance(value, int) or float(value).is_integer()):
        raise InvalidArgument(param.name, "must be an integer")
    if (param.minimum is not None and value < param.minimum) or (
        param.maximum is not None and value > param.maximum
    ):
        raise InvalidArgument(param.name, f"must be between {param.minimum} and {param.maximum}")
    return int(value) if param.kind == "integer" else float(value)


async def call_tool(
    service: ClankService, name: str, arguments: object, *, requester_id: str | None = None
) -> dict[str, Any]:
    """Run tool ``name`` with JSON ``arguments``; the JSON answer (``look_at_screen`` includes the
    image as base64)."""
    tool = TOOLS_BY_NAME.get(name)
    if tool is None:
        raise InvalidArgument("name", f"unknown tool {name!r}; known: {', '.join(TOOLS_BY_NAME)}")
    args = validate_arguments(tool, arguments)
    if name in VOICE_TOOL_NAMES:
        return await call_voice_tool(service.voice, name, args)
    if name in PUBLISH_TOOL_NAMES:
        return await call_publish_tool(service, name, args)
    if name == "start_screen_watch":
        result = await service.start_screen_watch(
            target=args["target"], preferred_transport=args["preferredTransport"], requester_id=requester_id
        )
        return result.to_json()
    if name == "stop_screen_watch":
        return (await service.stop_screen_watch(target=args["target"])).to_json()
    if name == "look_at_screen":
        look = service.look_at_screen(target=args["target"])
        if args["includeImage"] is not False:
            return look.to_json()
        body = look.to_json(include_image=False)
        if look.frame is not None and look.target_user_id is not None:
            body["imageUrl"] = f"/api/screen/latest.jpg?target={look.target_user_id}"
        return body
    if name == "list_sharers":
        return {"sharers": service.list_sharers()}
    if name == "status":
        return service.status()
    raise AssertionError(f"tool {name!r} has no handler")  # TOOLS drift
