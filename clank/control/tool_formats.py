"""The agent tools in each LLM API's shape, strict-mode compatible: ``clank tools --format``.

* ``anthropic`` — Messages API tools: ``{name, description, input_schema}`` (what
  :func:`clank.control.tools.tool_schemas` returns).
* ``openai`` — Chat Completions: ``{"type": "function", "function": {name, description,
  parameters, strict}}``.
* ``openai-responses`` — the Responses API's flat shape: ``{"type": "function", name,
  description, parameters, strict}``.

The OpenAI shapes use ``strict: true`` (Structured Outputs), whose schema rules differ from plain
JSON Schema: every property must be listed in ``required`` (optional ones are nullable instead:
``"type": ["string", "null"]``, ``null`` in an ``enum``), ``additionalProperties`` must be false,
and length/range keywords are moved into the description. ``call_tool`` treats ``null`` as "left
out", so a strict model's answer is valid input as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Final

from clank.control.tools import tool_schemas

FORMATS: Final = ("anthropic", "openai", "openai-responses")
_MOVED: Final = {"maxLength": "at most {} characters", "minimum": "at least {}", "maximum": "at most {}"}


def strict_parameters(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (an object schema) rewritten to OpenAI strict-mode rules (see the module doc)."""
    out = copy.deepcopy(schema)
    required = set(schema.get("required") or ())
    for name, prop in out.get("properties", {}).items():
        limits = [text.format(prop.pop(key)) for key, text in _MOVED.items() if key in prop]
        if limits:
            prop["description"] = f"{prop.get('description', '').rstrip('.')} ({', '.join(limits)})."
        if name not in required:
            kind = prop.get("type")
            prop["type"] = [kind, "null"] if isinstance(kind, str) else kind
            if "enum" in prop and None not in prop["enum"]:
                prop["enum"] = [*prop["enum"], None]
    out["required"] = list(out.get("properties", {}))
    out["additionalProperties"] = False
    return out


def _openai(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": schema["name"],
            "description": schema["description"],
            "parameters": strict_parameters(schema["input_schema"]),
            "strict": True,
        },
    }


def _openai_responses(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "name": schema["name"],
        "description": schema["description"],
        "parameters": strict_parameters(schema["input_schema"]),
        "strict": True,
    }


_SHAPES: Final[dict[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "anthropic": lambda schema: schema,
    "openai": _openai,
    "openai-responses": _openai_responses,
}


def tools_in_format(fmt: str) -> list[dict[str, Any]]:
    """The tool list for ``fmt`` (one of :data:`FORMATS`)."""
    shape = _SHAPES[fmt]
    return [shape(schema) for schema in tool_schemas()]
