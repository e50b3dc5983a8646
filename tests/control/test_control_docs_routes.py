"""The HTTP route tables in the docs are the app's route tables, both ways.

The app's routes come from the real builders (``build_app`` with the voice routes and ``/mcp``, and
``build_share_app``); the documented ones from docs/api.md, docs/voice-io.md, docs/publish.md,
docs/link.md and the other docs (docs/sandbox.md describes the sandbox's own REST API and is left
out). A documented path must match a route (``{param}`` segments match any segment, ``/x*`` is a
prefix); a ``| `METHOD` | `path` |`` table row must name a method the route serves; every route must
be named, exactly, in the docs of its family. The event stream's event names are docs/api.md's list.
"""

from __future__ import annotations

import re
from pathlib import Path

import trio
from control_fakes import RegistrySession
from starlette.routing import BaseRoute, Route, WebSocketRoute

from clank.config import LinkSettings
from clank.control.http import build_app
from clank.control.link import LinkTransport
from clank.control.mcp_server import open_mcp_http_app
from clank.control.service import ClankService
from clank.control.share_http import build_share_app
from clank.control.voice_api import VoiceApi

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "docs-routes-token-0123456789"
LIMIT = 15
ROUTE_DOCS = [*sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "sandbox.md"), ROOT / "README.md"]
# Where each family of routes must be documented.
FAMILY_DOCS = {
    "/api/voice/": ["voice-io.md"],
    "/share/": ["link.md"],
    "/": ["api.md", "publish.md"],
}

# Discord's own REST prefix (/api/v9, /api/v10: the sandbox serves it, clank does not) is not ours.
_PATH = re.compile(r"(?<![\w/.:])(/(?:api(?!/v\d)|mcp|share)(?:/[\w{}.*-]+)*\*?)")
_ROW = re.compile(r"^\| `(GET|POST|DELETE|PUT|WS)` \| `(/[^`?]*)")


async def app_routes() -> dict[str, set[str]]:
    """path -> methods ("WS" for websocket routes) of the API app and the share app."""
    service = ClankService(RegistrySession(), voice=VoiceApi(lambda: None))
    async with open_mcp_http_app(service, token=TOKEN) as mcp_app:
        routes: list[BaseRoute] = list(build_app(service, TOKEN, trio.Event(), mcp_app).routes)
    routes += build_share_app(LinkTransport(LinkSettings())).routes
    table: dict[str, set[str]] = {}
    for route in routes:
        if isinstance(route, WebSocketRoute):
            table.setdefault(route.path, set()).add("WS")
        else:
            assert isinstance(route, Route), route
            table.setdefault(route.path, set()).update(route.methods or {"GET", "POST", "DELETE"})
    return table


def _matches(doc_path: str, route: str) -> bool:
    if doc_path.endswith("*"):
        return route.startswith(doc_path[:-1])
    if route.startswith(doc_path + "/"):  # a family named by its prefix: `/share/`, `/api`
        return True
    pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(route))
    return re.fullmatch(pattern, doc_path) is not None or doc_path == route


def documented_paths() -> list[tuple[str, str]]:
    found = []
    for doc in ROUTE_DOCS:
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            found += [(f"{doc.name}:{number}", m.group(1).rstrip(".")) for m in _PATH.finditer(line)]
    return found


async def test_every_documented_route_exists() -> None:
    with trio.fail_after(LIMIT):
        table = await app_routes()
    bad = [
        f"{where}: {path}" for where, path in documented_paths() if not any(_matches(path, r) for r in table)
    ]
    assert not bad, "docs name HTTP routes the app does not have:\n" + "\n".join(bad)


async def test_documented_methods_are_served() -> None:
    with trio.fail_after(LIMIT):
        table = await app_routes()
    bad = []
    for doc in ROUTE_DOCS:
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            row = _ROW.match(line)
            if row is None:
                continue
            method, path = row.groups()
            methods = set().union(*(m for r, m in table.items() if _matches(path, r)))
            if method not in methods:
                bad.append(f"{doc.name}:{number}: {method} {path} (served: {sorted(methods)})")
    assert not bad, "docs name methods the routes do not serve:\n" + "\n".join(bad)


async def test_every_route_is_documented() -> None:
    with trio.fail_after(LIMIT):
        table = await app_routes()
    missing = []
    for route in table:
        family = next(prefix for prefix in FAMILY_DOCS if route.startswith(prefix))
        docs = [ROOT / "docs" / name for name in FAMILY_DOCS[family]]
        named = {m.group(1) for doc in docs for m in _PATH.finditer(doc.read_text(encoding="utf-8"))}
        named |= (
            {"/"} if "| `GET` | `/` |" in (ROOT / "docs" / "api.md").read_text(encoding="utf-8") else set()
        )
        if route not in named:
            missing.append(f"{route} (expected in {', '.join(FAMILY_DOCS[family])})")
    assert not missing, "routes the docs do not name:\n" + "\n".join(missing)


def test_a_route_pattern_matches_its_concrete_paths() -> None:
    assert _matches("/api/tools/look_at_screen", "/api/tools/{name}")
    assert _matches("/api/voice/*", "/api/voice/speak")
    assert not _matches("/api/tool", "/api/tools")
    assert not _matches("/api/tools/a/b", "/api/tools/{name}")
    assert not _PATH.search("REST `/api/v9` and `/api/v10`")


def test_every_event_of_the_event_stream_is_documented() -> None:
    source = (ROOT / "clank" / "control" / "http.py").read_text(encoding="utf-8")
    sent = set(re.findall(r'_sse\(\s*"(\w+)"', source))
    assert {"sharers", "status", "frame", "log"} <= sent, sent
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    section = text.split("### Event stream", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\* `(\w+)` —", section, re.MULTILINE))
    assert listed == sent, f"docs/api.md's event list {sorted(listed)} != the events sent {sorted(sent)}"
