"""Issue 14, "Terminal": the sandbox demo's happy path says nothing alarming. Until the banner
(voice connected, the demo watch's first frame, our Go Live and its viewer) and a few seconds more,
no warning or error is logged — the DAVE frames before the welcome are counted, not warned about;
``nobody_sharing`` polling stays at debug — and no log line carries a hex dump."""

from __future__ import annotations

import re

import attrs
import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

import clank
from clank.codecs.h264 import packetize_h264
from clank.config import WatchSettings
from clank.errors import DecryptionFailed
from clank.protocol.video_receive import VideoReceiveConfig, VideoReceiver
from clank.runner import demo_settled, open_clank, wait_until_settled
from clank.session.video_pipeline import DAVE_JOIN_GRACE, open_video_pipeline
from clank.wire import voice_gateway as vg
from clank.wire.rtp import RtpHeader

HEX_DUMP = re.compile(r"\b[0-9a-f]{64,}\b")


@pytest.mark.serial  # the real demo on a real clock: another test's load could make it late, and loud
async def test_the_demo_happy_path_logs_no_warning_and_no_hex_dump() -> None:
    settings = clank.load_settings(environ={})
    settings = attrs.evolve(settings, link=attrs.evolve(settings.link, port=0))
    with trio.fail_after(90), capture_logs() as logs:
        async with open_clank(settings, api_port=0) as info:
            assert await wait_until_settled(info, demo_watch=True) is None  # voice connected
            # The banner comes last: both demo watches show frames and a viewer watches our Go Live.
            assert info.service is not None and demo_settled(info.service.status())
            service = info.service
            with trio.fail_after(20):  # the demo listens, as an agent would: a speaker is heard
                while not any(x["delivered"] for x in service.status()["voiceIo"]["listeners"]):  # noqa: ASYNC110 - status is polled
                    await trio.sleep(0.1)
            await trio.sleep(1.0)  # and a little after it
    loud = [e for e in logs if e.get("log_level") in ("warning", "error", "critical")]
    assert not loud, [{k: v for k, v in e.items()} for e in loud]
    polls = [e for e in logs if e.get("reason") == "nobody_sharing" and e.get("log_level") != "debug"]
    assert not polls, polls
    dumps = [e for e in logs if any(HEX_DUMP.search(str(v)) for v in e.values())]
    assert not dumps, dumps


def test_demo_settled_needs_both_watches_framed_and_a_viewer_of_our_go_live() -> None:
    screen, webcam = {"frameSequence": 4}, {"frameSequence": 1}
    publish = {"name": "stream_publish", "qos": {"viewers": 1}}
    assert demo_settled({"watches": [screen, webcam], "roles": [publish]})
    assert not demo_settled({"watches": [screen, {"frameSequence": None}], "roles": [publish]})
    assert not demo_settled({"watches": [screen, webcam], "roles": [{**publish, "qos": {"viewers": 0}}]})
    assert not demo_settled({"watches": [screen, webcam], "roles": []})


def _never_decrypts(user_id: int, frame: bytes) -> bytes:
    raise DecryptionFailed("dave", "no_valid_cryptor")


@pytest.mark.parametrize(("after_ready", "loud"), [(0.5, False), (DAVE_JOIN_GRACE + 1.0, True)])
async def test_a_sender_that_has_not_switched_keys_is_expected_only_while_we_join(
    after_ready: float, loud: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """Frames that fail with ``no_valid_cryptor`` right after our DAVE session became ready (the
    sender switches at the transition) are logged at info, without a hex dump; the same failure
    past ``DAVE_JOIN_GRACE`` is a warning with the frame's tail, for diagnosis."""
    receiver = VideoReceiver(VideoReceiveConfig(local_ssrc=20), _never_decrypts)
    frame = b"\x00\x00\x00\x01\x65" + bytes(range(256)) * 4  # one IDR access unit
    with trio.fail_after(60), capture_logs() as logs:
        async with open_video_pipeline(
            receiver, WatchSettings(), lambda _d: True, synchronous_decode=True
        ) as pipe:
            receiver.bind(11, "444", trio.current_time())
            pipe.dave_ready(trio.current_time())
            await trio.sleep(after_ready)
            payloads = packetize_h264(frame, 400)
            for seq, payload in enumerate(payloads):
                header = RtpHeader(vg.H264_PT, 100 + seq, 3000, 11, seq == len(payloads) - 1)
                pipe.on_packet(header, payload, trio.current_time())
            await trio.sleep(0.5)
    (failed,) = [e for e in logs if e["event"].startswith("video frame failed DAVE decrypt")]
    assert failed["log_level"] == ("warning" if loud else "info"), failed
    assert ("tail_hex" in failed["frame"]) is loud
