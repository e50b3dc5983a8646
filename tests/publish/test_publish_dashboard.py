"""The dashboard's publish panel in a real headless Chromium: the latest frame we sent, state, viewers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "control"))

from publish_kit import add_viewer, in_voice, make_image, wait_until
from test_control_dashboard import chromium, open_browser  # type: ignore[import-not-found]  # noqa: F401

from clank.config import ApiSettings
from clank.control.http import open_http_api
from clank.control.service import ClankService
from clank.control.session_port import LiveSessionPort, MemberDirectory
from clank.media.publish_source import PushedFrames
from clank.protocol.streams import StreamRegistry
from clank.session.stream_publish import start_stream_publish

TOKEN = "publish-dashboard-token-0123456789"
PANEL_JS = """(() => { const p = document.getElementById('publish-panel');
  const i = document.querySelector('#publish-frame img');
  const info = document.getElementById('publish-info').innerText;
  return !p.hidden && i && i.complete && i.naturalWidth > 0
    ? JSON.stringify({w: i.naturalWidth, info: info}) : null; })()"""
pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


@pytest.mark.browser
async def test_dashboard_shows_the_frame_we_publish(chromium: str, tmp_path: Path) -> None:  # noqa: F811
    with trio.fail_after(60):
        async with in_voice() as (sb, _gateway, session):
            handle = await start_stream_publish(session, source=PushedFrames())
            await handle.push_image(make_image(2), "image/png")
            viewer = await add_viewer(sb, handle)
            await wait_until(lambda: viewer.statistics().frames_decoded >= 3)
            service = ClankService(
                LiveSessionPort(session, StreamRegistry(session.user_id), MemberDirectory())
            )
            async with (
                open_http_api(service, ApiSettings(port=0), token=TOKEN) as api,
                open_browser(chromium, tmp_path / "profile") as browser,
            ):
                await browser.call("Runtime.enable")
                await browser.call("Page.navigate", url=api.dashboard_url)
                shown = await browser.wait_for(PANEL_JS, "publish panel with a frame")
                assert '"w":320' in shown and "viewers 1" in shown and "ready" in shown
