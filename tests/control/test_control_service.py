"""ClankService over a session built from real parts (real StreamRegistry, real JPEGs)."""

from __future__ import annotations

import io

import av
import numpy as np
import trio
from control_fakes import ALICE, BOB, CAROL, ME, RegistrySession, real_frame, source_frame
from PIL import Image

from clank.control.model import FrameView
from clank.control.service import ClankService
from clank.media.quality import plane_psnr
from clank.watch.frames import LatestFrameStore, ScreenFrame

LIMIT = 10


def streamer_session() -> RegistrySession:
    session = RegistrySession()
    session.join(ALICE, stream=True)
    session.join(BOB, video=True)
    session.join(CAROL)
    return session


async def test_no_target_binds_the_only_streamer_and_reports_frame_readiness() -> None:
    with trio.fail_after(LIMIT):
        session = streamer_session()
        service = ClankService(session)
        first = await service.start_screen_watch()
        assert first.to_json() == {
            "ok": True,
            "started": True,
            "reused": False,
            "reason": "waiting_for_frame_context",
            "frameReady": False,
            "transport": "native",
            "targetUserId": ALICE,
            "kind": "go_live",
            "linkUrl": None,
            "expiresInMinutes": None,
            "candidates": [],
            "detail": "single_sharer",
            "spokenHint": None,
        }
        # the real registry produced the op20 STREAM_WATCH for Alice's stream
        assert [f.op for f in session.sent] == [20]
        session.deliver_frame(ALICE, "go_live", real_frame(1, trio.current_time()))
        again = await service.start_screen_watch(target="Alice")
        assert (again.ok, again.reused, again.frame_ready, again.reason) == (
            True,
            True,
            True,
            "frame_context_ready",
        )
        assert session.start_calls == [(ALICE, "go_live")]  # reused, not restarted


async def test_refusals_do_not_start_anything() -> None:
    with trio.fail_after(LIMIT):
        session = streamer_session()
        session.join(CAROL, stream=True)
        service = ClankService(session)
        ambiguous = await service.start_screen_watch(requester_id=BOB)
        assert (ambiguous.ok, ambiguous.reason, ambiguous.candidates) == (
            False,
            "ambiguous_sharers",
            (ALICE, CAROL),
        )
        # the names come with the ids: the model can ask "Alice or Carol?" without another call
        names = [c["name"] for c in ambiguous.to_json()["candidateNames"]]
        assert names[0] == "Alice" and names[1] != CAROL
        missing = await service.start_screen_watch(target="nobody here")
        assert (missing.ok, missing.reason) == (False, "target_not_found")
        link = await service.start_screen_watch(preferred_transport="link")
        assert (link.ok, link.reason, link.transport) == (False, "link_transport_unavailable", "link")
        assert session.start_calls == []


async def test_explicit_target_is_never_retargeted() -> None:
    with trio.fail_after(LIMIT):
        session = RegistrySession()
        session.join(ALICE, stream=True)
        session.join(CAROL)
        result = await ClankService(session).start_screen_watch(target="carol")
        assert (result.ok, result.reason, result.target_user_id) == (False, "target_not_sharing", CAROL)
        assert session.start_calls == []


async def test_webcam_fallback_starts_a_webcam_watch() -> None:
    with trio.fail_after(LIMIT):
        session = streamer_session()
        result = await ClankService(session).start_screen_watch(target=f"<@{BOB}>")
        assert (result.ok, result.kind, result.detail) == (True, "webcam", "explicit_target_webcam")
        assert session.start_calls == [(BOB, "webcam")]
        assert session.sent == []  # webcams ride the voice connection: no op20


async def test_not_in_voice_and_session_refusals() -> None:
    with trio.fail_after(LIMIT):
        away = RegistrySession(in_voice=False)
        result = await ClankService(away).start_screen_watch()
        assert (result.ok, result.reason) == (False, "not_in_voice")

        session = streamer_session()
        session.refuse_with = "stream_full"
        refused = await ClankService(session).start_screen_watch()
        assert refused.to_json()["ok"] is False
        assert (refused.reason, refused.target_user_id) == ("stream_full", ALICE)


async def test_concurrent_calls_start_one_watch() -> None:
    with trio.fail_after(LIMIT):
        session = streamer_session()
        service = ClankService(session)
        results = []

        async def call() -> None:
            results.append(await service.start_screen_watch())

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
        assert sorted(r.reused for r in results) == [False, True, True]
        assert session.start_calls == [(ALICE, "go_live")]


async def test_look_at_screen_returns_the_latest_jpeg_matching_its_source() -> None:
    with trio.fail_after(LIMIT):
        session = streamer_session()
        service = ClankService(session)
        assert service.look_at_screen().reason == "not_watching"
        await service.start_screen_watch()
        waiting = service.look_at_screen()
        assert (waiting.ok, waiting.reason, waiting.target_user_id) == (
            False,
            "waiting_for_frame_context",
            ALICE,
        )
        session.deliver_frame(ALICE, "go_live", real_frame(1, trio.current_time()))
        session.deliver_frame(ALICE, "go_live", real_frame(2, trio.current_time()))
        look = service.look_at_screen("alice")
        assert look.ok and look.frame is not None and look.frame.sequence == 2
        body = look.to_json()
        assert body["frame"]["change"] == {
            "score": 0.25,
            "meanAbsDiff": 3.5,
            "smoothed": 0.2,
            "sceneCut": False,
        }
        assert body["image"]["mimeType"] == "image/jpeg"
        decoded = np.asarray(Image.open(io.BytesIO(look.frame.jpeg)).convert("L"))
        source = source_frame(2).reformat(format="gray").to_ndarray()
        assert plane_psnr(decoded, source) > 30
        other = source_frame(1).reformat(format="gray").to_ndarray()
        assert plane_psnr(decoded, other) < plane_psnr(decoded, source)
        assert service.look_at_screen("bob").reason == "target_not_watched"


async def test_look_prefers_go_live_over_webcam() -> None:
    with trio.fail_after(LIMIT):
        session = streamer_session()
        service = ClankService(session)
        await service.start_screen_watch(target="bob")
        await service.start_screen_watch(target="alice")
        session.deliver_frame(ALICE, "go_live", real_frame(1, trio.current_time()))
        await trio.sleep(0.01)
        session.deliver_frame(BOB, "webcam", real_frame(5, trio.current_time()))
        look = service.look_at_screen()
        assert (look.target_user_id, look.kind) == (ALICE, "go_live")


async def test_stop_screen_watch() -> None:
    with trio.fail_after(LIMIT):
        session = streamer_session()
        service = ClankService(session)
        assert (await service.stop_screen_watch()).reason == "not_watching"
        await service.start_screen_watch()
        await service.start_screen_watch(target="bob")
        assert (await service.stop_screen_watch("carol")).reason == "target_not_watched"
        stopped = await service.stop_screen_watch("Alice")
        assert stopped.to_json() == {
            "ok": True,
            "reason": "stopped",
            "stopped": [{"targetUserId": ALICE, "kind": "go_live"}],
        }
        assert [f.op for f in session.sent] == [20, 19]  # STREAM_WATCH then STREAM_DELETE
        rest = await service.stop_screen_watch()
        assert rest.stopped == ((BOB, "webcam"),)
        assert session.watches() == []


async def test_list_sharers_and_status() -> None:
    with trio.fail_after(LIMIT):
        session = streamer_session()
        service = ClankService(session)
        await service.start_screen_watch()
        sharers = {s["userId"]: s for s in service.list_sharers()}
        assert set(sharers) == {ALICE, BOB}
        assert sharers[ALICE]["label"] == "Alice" and sharers[ALICE]["watching"] == ["go_live"]
        assert (sharers[BOB]["live"], sharers[BOB]["webcam"]) == (False, True)
        status = service.status()
        assert status["inVoice"] is True and status["ourUserId"] == ME
        assert status["privacyCode"] == session.privacy_code
        assert [r["kind"] for r in status["roles"]] == ["voice", "stream_watch"]
        assert status["watches"][0]["frameReady"] is False


def test_source_frames_differ() -> None:
    # guards the PSNR comparison above: two synthetic sources must not be near-identical
    a = source_frame(1).reformat(format="gray").to_ndarray()
    b = source_frame(2).reformat(format="gray").to_ndarray()
    assert isinstance(source_frame(1), av.VideoFrame)
    assert plane_psnr(a, b) < 30


async def test_frames_from_a_real_latest_frame_store() -> None:
    with trio.fail_after(LIMIT):
        view = real_frame(4, trio.current_time())
        store = LatestFrameStore()
        store.publish(
            ScreenFrame(
                jpeg=view.jpeg,
                width=view.width,
                height=view.height,
                rtp_timestamp=9000,
                user_id=ALICE,
                ssrc=1234,
                codec="H264",
                stream_type="screen",
                change_score=0.5,
                change_ema=0.3,
                scene_cut=True,
                wall_time=trio.current_time(),
                sequence=4,
            )
        )
        latest = await store.wait_frame()
        converted = FrameView.from_screen_frame(latest)
        assert (converted.jpeg, converted.sequence, converted.scene_cut) == (view.jpeg, 4, True)
        assert converted.metadata(trio.current_time())["change"]["smoothed"] == 0.3
