"""The dashboard in a real headless Chromium, driven over the DevTools protocol (trio-websocket).

Chromium is Debian's ``chromium``; when it is missing and we may install packages (root with
apt-get), the fixture installs it once; otherwise the test is skipped with the reason shown.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from control_fakes import ALICE, BOB, RegistrySession, real_frame
from trio_websocket import WebSocketConnection, open_websocket_url

from clank.config import ApiSettings
from clank.control.dashboard import dashboard_html
from clank.control.http import open_http_api
from clank.control.service import ClankService

CHROMIUM = "/usr/bin/chromium"
APT_TIMEOUT = 900
LIMIT = 60
TOKEN = "dashboard-test-token-0123456789"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]


def _find_chromium() -> str | None:
    return shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)


@pytest.fixture(scope="session")
def chromium() -> str:
    found = _find_chromium()
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "chromium"],
            capture_output=True,
            timeout=APT_TIMEOUT,
            check=False,
        )
        found = _find_chromium()
    if found is None:
        pytest.skip(
            "headless Chromium is not installed and could not be installed (apt-get install chromium)"
        )
    return found


class DevTools:
    """Just enough of the Chrome DevTools protocol: send a command, await its answer."""

    def __init__(self, ws: WebSocketConnection, port: int = 0) -> None:
        self.ws = ws
        self.port = port  # the browser's DevTools HTTP port (``/json/new`` opens more pages)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []  # notifications seen while waiting for answers

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        await self.ws.send_message(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.get_message())
            if "method" in message:
                self.events.append(message)
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, what: str) -> Any:
        """Poll ``expression`` until it is truthy (the caller's fail_after bounds it)."""
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            await trio.sleep(0.05)


@asynccontextmanager
async def open_browser(
    chromium: str, profile: Path, flags: list[str] = CHROMIUM_FLAGS
) -> AsyncIterator[DevTools]:
    """Headless Chromium with ``flags`` (they must open DevTools on port 0), driven over its first page."""
    profile.mkdir()
    process = await trio.lowlevel.open_process(
        [chromium, *flags, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        # Chromium writes the file when DevTools listens; there is nothing to wait on but the file.
        while not port_file.exists() or not port_file.read_text().strip():  # noqa: ASYNC110
            await trio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with httpx.AsyncClient() as client:
            targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
        page = next(t for t in targets if t["type"] == "page")
        async with open_websocket_url(page["webSocketDebuggerUrl"], max_message_size=64 * 1024 * 1024) as ws:
            yield DevTools(ws, port)
    finally:
        process.kill()
        with trio.move_on_after(5, shield=True):
            await process.wait()


STATE_JS = """JSON.stringify({
  img: (() => { const i = document.querySelector('#watch-%s-go_live img');
                return i && i.complete && i.naturalWidth > 0
                  ? {w: i.naturalWidth, seq: i.dataset.sequence} : null; })(),
  roles: [...document.querySelectorAll('#roles tr[data-role]')].map(r => [r.dataset.role, r.dataset.state]),
  privacy: document.getElementById('privacy-code').textContent,
  privacyGroups: document.querySelectorAll('#privacy-code .g').length,
  voiceQos: (() => { const r = document.querySelector('#roles tr[data-role=voice] td:last-child');
                     return r ? r.innerText : null; })(),
  sharers: document.querySelectorAll('#sharers tr[data-user]').length,
  conn: document.getElementById('conn').textContent,
  hash: location.hash,
})"""


@pytest.mark.browser
async def test_dashboard_shows_frames_and_live_role_states(chromium: str, tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        session = RegistrySession()
        session.join(ALICE, stream=True)
        session.join(BOB, video=True)
        service = ClankService(session)
        await service.start_screen_watch()
        async with (
            open_http_api(service, ApiSettings(port=0), token=TOKEN) as api,
            open_browser(chromium, tmp_path / "profile") as browser,
        ):
            await browser.call("Page.enable")
            await browser.call("Network.enable")
            await browser.call("Runtime.enable")
            await browser.call("Page.navigate", url=api.dashboard_url)
            expression = STATE_JS % ALICE

            async def state_when(condition: str, what: str) -> dict[str, Any]:
                raw = await browser.wait_for(
                    f"(() => {{ const s = {expression}; const v = JSON.parse(s); "
                    f"return ({condition}) ? s : null; }})()",
                    what,
                )
                value: dict[str, Any] = json.loads(raw)
                return value

            # before any frame: the watch role is still connecting
            state = await state_when("v.roles.length >= 2 && v.sharers === 2", "roles and sharers")
            assert state["img"] is None
            assert ["voice", "ready"] in state["roles"]
            assert ["stream_watch", "connecting"] in state["roles"]
            assert state["privacy"] == session.privacy_code.replace(" ", "")
            assert state["privacyGroups"] == 6  # 30 digits in groups of five
            # headline figures on the row, the others behind "more"
            assert "lost 2 · recovered 0" in state["voiceQos"] and "more (2)" in state["voiceQos"]
            assert "jitter_ms" not in state["voiceQos"]
            assert state["conn"] == "live"
            assert state["hash"] == ""  # the token left the address bar

            # live updates without reloading: the first frame arrives and the role turns ready
            session.deliver_frame(ALICE, "go_live", real_frame(1, trio.current_time()))
            state = await state_when(
                "v.img && v.roles.some(r => r[0] === 'stream_watch' && r[1] === 'ready')", "first frame"
            )
            assert state["img"] == {"w": 320, "seq": "1"}
            session.deliver_frame(ALICE, "go_live", real_frame(2, trio.current_time()))
            await state_when("v.img && v.img.seq === '2'", "second frame")
            shot = await browser.call("Page.captureScreenshot", format="png")
            failed = [
                (e["params"]["response"]["status"], e["params"]["response"]["url"])
                for e in browser.events
                if e["method"] == "Network.responseReceived" and e["params"]["response"]["status"] >= 400
            ]
            assert failed == []  # no 404s in the console (the favicon is inline)
            assert not [e for e in browser.events if e["method"] == "Runtime.exceptionThrown"]
            path = tmp_path / "dashboard.png"
            path.write_bytes(base64.b64decode(shot["data"]))
            assert path.stat().st_size > 10_000
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.browser
async def test_dashboard_asks_for_a_token_without_one(chromium: str, tmp_path: Path) -> None:
    with trio.fail_after(LIMIT):
        session = RegistrySession()
        async with (
            open_http_api(ClankService(session), ApiSettings(port=0), token=TOKEN) as api,
            open_browser(chromium, tmp_path / "profile") as browser,
        ):
            await browser.call("Page.navigate", url=api.url + "/")
            visible = await browser.wait_for(
                "document.readyState === 'complete' && !document.getElementById('auth').hidden", "auth panel"
            )
            assert visible is True


def test_dashboard_is_self_contained() -> None:
    html = dashboard_html()
    assert "http://" not in html and "https://" not in html  # no CDN: the machine may be offline
    assert "<script src" not in html
    # The only <link> is the inline favicon: without it the browser asks for /favicon.ico (a 404).
    links = re.findall(r"<link [^>]*>", html)
    assert len(links) == 1 and 'rel="icon" href="data:image/svg+xml,' in links[0]
