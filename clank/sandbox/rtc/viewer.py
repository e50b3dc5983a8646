"""A simulated viewer of a Go Live stream: what Discord's clients do when they watch *our* publish.

A :class:`StreamViewer` rides on a :class:`~.users.SimulatedMember` that joined the stream
server (through the world's op20 like any viewer: ``RtcMediaBackend.start_viewer``). The member
already does transport AEAD, RTX unwrap, reordering, depacketizing and DAVE decrypt (its own
DAVE member in the stream's MLS group); the viewer adds the rest of a real receiver:

* decodes every frame with a persistent PyAV H264 decoder on a worker thread (one at a time);
* NACKs missing packets (each sequence at most every ``NACK_REPEAT`` s while it is missing),
  sends a receiver report every second and a PLI while it has no decodable picture (start,
  decode errors), at most every ``PLI_INTERVAL`` s;
* reports frames received/decoded, keyframes, freezes (a gap of more than ``FREEZE_GAP`` s
  between decoded pictures while the stream is live), a CRC of the last picture's luma, and
  the luma PSNR against the source picture when the test or scenario gave it a ``reference``
  (RTP timestamp -> source frame, e.g. ``PublishHandle.source_frame``).

Downlink loss is the media faults' business (``sb.media.faults.link(viewer, "downlink", ...,
stream_key=...)``): the viewer just has to repair it, as a Discord client would.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, Final

import attrs
import av
import numpy as np
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clank.io.offload import run_cpu
from clank.media.decoder import DecodedFrame, VideoDecoder
from clank.media.quality import plane_array, plane_psnr
from clank.sandbox.rtc.receiver import ReceivedFrame
from clank.sandbox.rtc.users import SimulatedMember
from clank.wire import rtcp

__all__ = ["FREEZE_GAP", "StreamViewer", "ViewerStatistics", "viewer_routes"]

TICK: Final = 0.02
NACK_REPEAT: Final = 0.04
PLI_INTERVAL: Final = 0.5
RR_INTERVAL: Final = 1.0
FREEZE_GAP: Final = 0.5
DECODE_QUEUE: Final = 16

Reference = Callable[[int], av.VideoFrame | None]


@attrs.frozen
class ViewerStatistics:
    user_id: str
    frames_received: int
    keyframes_received: int
    frames_decoded: int
    decode_errors: int
    frames_skipped: int
    freezes: int
    longest_gap_s: float
    nacks_sent: int
    nacked_packets: int
    plis_sent: int
    receiver_reports: int
    psnr_compared: int
    psnr_min_db: float | None
    psnr_mean_db: float | None
    last_checksum: int | None
    width: int
    height: int
    first_frame_at: float | None
    first_keyframe_timestamp: int | None

    def as_json(self) -> dict[str, object]:
        return attrs.asdict(self)


class StreamViewer:
    """See the module docstring. Run :meth:`run` in a nursery (it ends when the member leaves)."""

    def __init__(self, member: SimulatedMember, *, reference: Reference | None = None) -> None:
        self.member = member
        self.reference = reference
        self._decoder = VideoDecoder("h264")
        self._limiter = trio.CapacityLimiter(1)
        self._send, self._receive = trio.open_memory_channel[ReceivedFrame](DECODE_QUEUE)
        self._nacked: dict[tuple[int, int], float] = {}
        self._last_pli = -1e9
        self._last_rr = -1e9
        self._last_decoded_at: float | None = None
        self._psnr: list[float] = []
        self._c: dict[str, int] = dict.fromkeys(
            (
                "frames_received",
                "keyframes_received",
                "frames_decoded",
                "frames_skipped",
                "freezes",
                "nacks_sent",
                "nacked_packets",
                "plis_sent",
                "receiver_reports",
            ),
            0,
        )
        self._longest_gap = 0.0
        self._checksum: int | None = None
        self._size = (0, 0)
        self._first_frame_at: float | None = None
        self._first_keyframe_ts: int | None = None
        self.decoded_timestamps: list[int] = []
        """RTP timestamps of decoded pictures, in order (tests: pause gaps, keyframe after resume)."""
        self.received_timestamps: list[int] = []
        """RTP timestamps of complete (decrypted) frames received, in order."""
        self.keyframe_timestamps: list[tuple[int, float]] = []
        """(RTP timestamp, arrival time) of every keyframe received."""
        member.frame_handler = self._on_frame

    @property
    def user_id(self) -> str:
        return str(self.member.user_id)

    def statistics(self) -> ViewerStatistics:
        psnr = self._psnr
        c = self._c
        return ViewerStatistics(
            user_id=self.user_id,
            frames_received=c["frames_received"],
            keyframes_received=c["keyframes_received"],
            frames_decoded=c["frames_decoded"],
            decode_errors=self._decoder.statistics().errors,
            frames_skipped=c["frames_skipped"],
            freezes=c["freezes"],
            longest_gap_s=round(self._longest_gap, 3),
            nacks_sent=c["nacks_sent"],
            nacked_packets=c["nacked_packets"],
            plis_sent=c["plis_sent"],
            receiver_reports=c["receiver_reports"],
            psnr_compared=len(psnr),
            psnr_min_db=round(min(psnr), 2) if psnr else None,
            psnr_mean_db=round(sum(psnr) / len(psnr), 2) if psnr else None,
            last_checksum=self._checksum,
            width=self._size[0],
            height=self._size[1],
            first_frame_at=self._first_frame_at,
            first_keyframe_timestamp=self._first_keyframe_ts,
        )

    # ------------------------------------------------------------------ receive (trio, sync)

    def _on_frame(self, frame: ReceivedFrame) -> None:
        self._c["frames_received"] += 1
        self.received_timestamps.append(frame.timestamp)
        if frame.keyframe:
            self._c["keyframes_received"] += 1
            self.keyframe_timestamps.append((frame.timestamp, trio.current_time()))
            if self._first_keyframe_ts is None:
                self._first_keyframe_ts = frame.timestamp
        try:
            self._send.send_nowait(frame)
        except trio.WouldBlock:
            self._c["frames_skipped"] += 1  # the decoder fell behind: the chain breaks, ask again

    # ------------------------------------------------------------------ tasks

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._decode_loop)
            while self.member.joined:
                self._feedback(trio.current_time())
                await trio.sleep(TICK)
            nursery.cancel_scope.cancel()

    def _feedback(self, now: float) -> None:
        member = self.member
        member.poll()
        for ssrc in member.receiver.video_ssrcs():
            due = [
                seq
                for seq in member.receiver.missing(ssrc, now)
                if now - self._nacked.get((ssrc, seq), -1e9) >= NACK_REPEAT
            ]
            if due:
                for seq in due:
                    self._nacked[(ssrc, seq)] = now
                member.send_rtcp(rtcp.GenericNack.for_sequences(member.audio_ssrc, ssrc, due))
                self._c["nacks_sent"] += 1
                self._c["nacked_packets"] += len(due)
            if self._decoder.needs_keyframe and now - self._last_pli >= PLI_INTERVAL:
                self.request_keyframe(ssrc, now)
            if now - self._last_rr >= RR_INTERVAL:
                self._last_rr = now
                member.send_rtcp(rtcp.ReceiverReport(member.audio_ssrc, (rtcp.ReportBlock(ssrc),)))
                self._c["receiver_reports"] += 1
        if len(self._nacked) > 4096:
            self._nacked = {k: t for k, t in self._nacked.items() if now - t < 1.0}
        last = self._last_decoded_at
        if last is not None and now - last > self._longest_gap:
            self._longest_gap = now - last

    def request_keyframe(self, ssrc: int | None = None, now: float | None = None) -> None:
        """Send a PLI for ``ssrc`` (default: every video SSRC we know) now."""
        member = self.member
        self._last_pli = trio.current_time() if now is None else now
        for target in [ssrc] if ssrc is not None else member.receiver.video_ssrcs():
            member.send_rtcp(rtcp.PictureLossIndication(member.audio_ssrc, target))
            self._c["plis_sent"] += 1

    async def _decode_loop(self) -> None:
        async for frame in self._receive:
            decoded = await run_cpu(self._decode, frame, limiter=self._limiter)
            now = trio.current_time()
            for picture in decoded:
                self._c["frames_decoded"] += 1
                self.decoded_timestamps.append(picture.timestamp)
                if self._first_frame_at is None:
                    self._first_frame_at = now
                last = self._last_decoded_at
                if last is not None and now - last > FREEZE_GAP:
                    self._c["freezes"] += 1
                self._last_decoded_at = now
                self._compare(picture)

    def _decode(self, frame: ReceivedFrame) -> list[DecodedFrame]:
        return self._decoder.decode(frame.data, frame.timestamp)

    def _compare(self, picture: DecodedFrame) -> None:
        image = picture.image
        self._size = (picture.width, picture.height)
        luma = np.ascontiguousarray(plane_array(image, 0))
        self._checksum = zlib.crc32(luma.tobytes())
        reference = self.reference
        source = None if reference is None else reference(picture.timestamp)
        if source is None:
            return
        if (source.width, source.height) != (image.width, image.height) or source.format.name != "yuv420p":
            source = source.reformat(width=image.width, height=image.height, format="yuv420p")
        self._psnr.append(plane_psnr(luma, np.ascontiguousarray(plane_array(source, 0))))


def viewer_routes(backend: Any) -> list[Route]:
    """``GET /sandbox/viewers``: every simulated viewer's statistics (read-only, no token)."""

    async def viewers(request: Request) -> Response:
        items = [viewer.statistics().as_json() for viewer in backend.viewers.values()]
        return JSONResponse({"viewers": items})

    return [Route("/sandbox/viewers", viewers, methods=["GET"])]
