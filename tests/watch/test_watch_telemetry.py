"""Watch QoS in the status tells the truth: every figure moves when it should and stops when it should.

The sandbox on the fake network under ``autojump_clock`` (320x240 H264 at 30 fps, encoded and
decoded inline, so the figures are exact in virtual time), real ``LiveSessionPort`` status. The stream is
frozen by losing every packet on our downlink (a sender that stops looks the same from here):
``fpsIn``/``fpsOut`` must fall to 0 within the 2 s rate window and ``lastFrameAgeMs`` must grow;
they recover when the link does, and the gap shows up as loss or NACK/RTX recovery.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from fake_session import fake_session, go_live
from test_stream_watch_e2e import collect

from clank.config import WatchSettings
from clank.control.session_port import LiveSessionPort, MemberDirectory
from clank.io.decode_worker import RATE_WINDOW
from clank.protocol.streams import StreamRegistry
from clank.session.stream_watch import start_stream_watch

WATCH = WatchSettings(max_fps=4.0, preferred_pixel_count=320 * 240, credentials_timeout_s=5.0)
pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


def qos(port: LiveSessionPort) -> dict[str, Any]:
    (role,) = [r for r in port.status().roles if r.kind == "stream_watch"]
    return dict(role.qos)


async def test_status_figures_move_freeze_and_recover(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):  # virtual
        async with fake_session(width=320, height=240, fps=30, bitrate=500_000) as (_net, sb, session):
            assert sb.media is not None
            alice = await go_live(sb, "alice")
            handle = await start_stream_watch(session, alice, settings=WATCH)
            assert handle.stream_key is not None
            port = LiveSessionPort(session, StreamRegistry(session.user_id), MemberDirectory())
            await port.start_watch(alice, "go_live")  # reuses the running handle
            frames = await collect(handle, 4)
            streamer = sb.media.streamer(alice)
            sent_before = streamer.statistics().frames_sent
            await trio.sleep(RATE_WINDOW)  # a full window of steady stream

            # What the streamer sent in the window (30/s: virtual time, inline encoding).
            sent_rate = (streamer.statistics().frames_sent - sent_before) / RATE_WINDOW

            a = qos(port)
            assert a["codec"] == "h264" and a["resolution"] == "320x240"
            assert sent_rate >= 29 and abs(a["fpsIn"] - sent_rate) <= 2.0, (sent_rate, a)
            assert 2.0 <= a["fpsOut"] <= WATCH.max_fps + 0.5, a
            assert 0 <= a["lastFrameAgeMs"] < 1000, a
            assert a["timeToFirstFrameMs"] > 0 and a["decodeP99Ms"] > 0
            assert a["decodeErrors"] == 0 and a["keyframeRequests"] >= 1  # the join asks for one
            assert a["daveOk"] > 0 and a["daveFailed"] <= 5  # a few before our DAVE group was ready
            # look_at_screen's change figures: scrolling text changes the luma grid between pictures.
            assert any(f.change_mean_abs_diff > 0 for f in frames[1:]), frames
            view = port.latest_frame(alice, "go_live")
            assert view is not None
            assert view.metadata(trio.current_time())["change"]["meanAbsDiff"] == view.mean_abs_diff
            assert view.mean_abs_diff == handle.frames.latest.change_mean_abs_diff  # type: ignore[union-attr]

            await trio.sleep(1.0)
            b = qos(port)
            for key in ("packets", "framesAssembled", "daveOk", "decoded", "framesPublished"):
                assert b[key] > a[key], (key, a[key], b[key])

            # Freeze: every packet to us is lost.
            link = str(handle.stream_key)
            await sb.media.faults.link(sb.our_user_id, "downlink", loss=1.0, seed=1, stream_key=link)
            await trio.sleep(RATE_WINDOW + 0.5)
            c = qos(port)
            assert c["fpsIn"] == 0 and c["fpsOut"] == 0, c
            assert c["lastFrameAgeMs"] >= RATE_WINDOW * 1000, c
            await trio.sleep(0.5)
            d = qos(port)
            assert d["lastFrameAgeMs"] >= c["lastFrameAgeMs"] + 400, (c, d)
            assert d["packets"] == c["packets"] and d["decoded"] == c["decoded"]

            # Recover: the gap is repaired (NACK/RTX) or counted lost; the rates come back.
            await sb.media.faults.link(sb.our_user_id, "downlink", stream_key=link)
            await collect(handle, 2)
            await trio.sleep(RATE_WINDOW)
            e = qos(port)
            assert e["lost"] + e["recovered"] > d["lost"] + d["recovered"], (d, e)
            assert e["fpsIn"] >= 5 and e["fpsOut"] > 0 and e["lastFrameAgeMs"] < 1000, e

            # Light loss is repaired: NACKs go out, RTX comes back, packets are recovered.
            await sb.media.faults.link(sb.our_user_id, "downlink", loss=0.05, seed=3, stream_key=link)
            await trio.sleep(2.5)
            f = qos(port)
            assert f["nacks"] > e["nacks"] and f["rtx"] > e["rtx"] and f["recovered"] > e["recovered"], (e, f)
