"""The publish HTTP API over loopback: go live, push frames, pause/resume/stop, status QoS, bad input."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from publish_kit import PUBLISH, add_viewer, in_voice, make_image, wait_until, write_music

from clank.config import ApiSettings
from clank.control.http import open_http_api
from clank.control.service import ClankService
from clank.control.session_port import LiveSessionPort, MemberDirectory
from clank.protocol.streams import StreamRegistry
from clank.session.stream_publish import current_publish

TOKEN = "publish-test-token-0123456789"
pytestmark = [
    pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning"),
    # The oversize body is refused from its Content-Length before it is read: httpx then leaves
    # its request-body generator to the GC (a client-side warning only).
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


async def test_publish_over_http_with_status_qos_and_field_errors(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    music = write_music(str(tmp_path / "m.wav"), seconds=1.0)
    with trio.fail_after(60):
        async with in_voice() as (sb, _gateway, session):
            port = LiveSessionPort(session, StreamRegistry(session.user_id), MemberDirectory())
            service = ClankService(port)
            async with (
                open_http_api(service, ApiSettings(port=0), token=TOKEN) as api,
                httpx.AsyncClient(
                    base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
                ) as http,
            ):
                # Nothing live yet: frames and pause are refused with a reason, nothing changes.
                assert (await http.get("/api/publish")).json()["state"] == "idle"
                assert (await http.get("/api/publish/latest.jpg")).status_code == 404
                refused = await http.post("/api/publish/pause")
                assert refused.status_code == 409 and refused.json()["error"] == "not_publishing"
                bad = await http.post("/api/publish", json={"source": "holograms"})
                assert bad.status_code == 400 and bad.json()["field"] == "source"
                bad = await http.post(
                    "/api/publish", json={"source": "visualizer", "url": str(tmp_path / "no.mp3")}
                )
                assert bad.status_code == 400 and bad.json()["field"] == "url"
                bad = await http.post(
                    "/api/publish", json={"source": "visualizer", "url": music, "visualizer": "x"}
                )
                assert bad.status_code == 400 and bad.json()["field"] == "visualizer"
                live = await http.post("/api/publish", json={"source": "frames"})
                assert live.status_code == 200, live.text
                assert live.json()["publishing"] and live.json()["source"] == "frames"
                pushed = await http.post(
                    "/api/publish/frame",
                    content=make_image(1, kind="JPEG"),
                    headers={"Content-Type": "image/jpeg"},
                )
                assert pushed.status_code == 202 and pushed.json()["accepted"]
                junk = await http.post(
                    "/api/publish/frame", content=b"garbage", headers={"Content-Type": "image/png"}
                )
                assert junk.status_code == 400 and junk.json()["field"] == "image"
                wrong = await http.post(
                    "/api/publish/frame", content=b"x", headers={"Content-Type": "text/plain"}
                )
                assert wrong.status_code == 400 and wrong.json()["field"] == "content_type"
                big = b"\xff" * (PUBLISH.max_image_bytes + 1)
                huge = await http.post(
                    "/api/publish/frame", content=big, headers={"Content-Type": "image/png"}
                )
                assert huge.status_code == 400 and huge.json()["field"] == "image"
                assert str(PUBLISH.max_image_bytes) in huge.json()["message"]
                raw = await http.post(
                    "/api/publish/frame?width=4&height=2",
                    content=bytes(range(24)),
                    headers={"Content-Type": "image/x-raw-rgb"},
                )
                assert raw.status_code == 202
                publish = current_publish(session)
                assert publish is not None
                viewer = await add_viewer(sb, publish)
                await wait_until(lambda: viewer.statistics().frames_decoded >= 5)
                status = (await http.get("/api/status")).json()
                (role,) = [r for r in status["roles"] if r["name"] == "stream_publish"]
                assert role["qos"]["framesSent"] > 0 and role["qos"]["viewers"] == 1
                assert {"encodeP99Ms", "nacksAnswered", "plisAnswered", "kbps", "keyframes"} <= set(
                    role["qos"]
                )
                preview = await http.get("/api/publish/latest.jpg")
                assert preview.status_code == 200 and preview.content[:2] == b"\xff\xd8"
                paused = await http.post("/api/publish/pause")
                assert paused.status_code == 200 and paused.json()["paused"]
                resumed = await http.post("/api/publish/resume")
                assert not resumed.json()["paused"]
                # Music with a visualizer switches the running stream's source.
                music_on = await http.post("/api/music", json={"url": music, "visualizer": "showwaves"})
                assert music_on.status_code == 200, music_on.text
                assert (
                    music_on.json()["source"] == "visualizer"
                    and music_on.json()["streamKey"] == live.json()["streamKey"]
                )
                stopped = await http.delete("/api/publish")
                assert stopped.status_code == 200 and not stopped.json()["publishing"]
                # The same through the agent tools (HTTP /api/tools, in-process agents, MCP).
                refused_tool = (
                    await http.post("/api/tools/set_go_live_paused", json={"paused": True})
                ).json()
                assert refused_tool["ok"] is False and refused_tool["reason"] == "not_publishing"
                tool = (await http.post("/api/tools/go_live", json={"source": "frames"})).json()
                assert tool["ok"] and tool["publishing"] and tool["source"] == "frames"
                paused_tool = (await http.post("/api/tools/set_go_live_paused", json={"paused": True})).json()
                assert paused_tool["ok"] and paused_tool["paused"]
                bad_tool = await http.post("/api/tools/go_live", json={"source": "holograms"})
                assert bad_tool.status_code == 400 and bad_tool.json()["field"] == "source"
                assert not (await http.post("/api/tools/stop_go_live", json={})).json()["publishing"]
                audio_only = await http.post("/api/music", json={"url": music, "visualizer": "off"})
                assert audio_only.status_code == 200 and audio_only.json()["music"]["ok"]
                assert not audio_only.json()["publishing"]
                missing = await http.post(
                    "/api/music", json={"url": str(tmp_path / "gone.wav"), "visualizer": "off"}
                )
                assert missing.status_code == 400 and missing.json()["field"] == "url"
                session.voice.api.music.stop(fade_s=0)
                await trio.sleep(0.5)  # its feeder winds down before we leave voice
                assert session.voice.state.value == "ready"
