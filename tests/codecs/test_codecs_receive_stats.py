"""RTCP reception statistics (RFC 3550 A.3 / A.8) against a textbook model of the same rules."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from clank.codecs.receive_stats import VIDEO_CLOCK, ReceptionStatistics


class Model:
    """RFC 3550 A.1/A.8 as written there: extended highest seq, holes, interarrival jitter."""

    def __init__(self) -> None:
        self.highest: int | None = None
        self.transit: float | None = None
        self.jitter = 0.0

    def packet(self, seq: int, timestamp: int, now: float) -> bool:
        hole = False
        if self.highest is None:
            self.highest = seq
        else:
            delta = (seq - self.highest) % 65536
            if delta < 32768:
                self.highest += delta
                hole = delta > 1
        transit = now * VIDEO_CLOCK - timestamp
        if self.transit is not None:
            d = abs(transit - self.transit)
            if d < VIDEO_CLOCK * 10:
                self.jitter += (d - self.jitter) / 16
        self.transit = transit
        return hole


steps = st.lists(
    st.tuples(st.integers(-3, 40), st.integers(0, 2**32 - 1), st.floats(0, 0.5)), min_size=1, max_size=60
)


@given(st.integers(0, 65535), steps)
def test_holes_highest_and_jitter_follow_rfc3550(first: int, sequence: list[tuple[int, int, float]]) -> None:
    stats, model = ReceptionStatistics(), Model()
    seq, now = first, 0.0
    for delta, timestamp, step in sequence:
        seq = (seq + delta) % 65536
        now += step
        assert stats.packet(seq, timestamp, now) == model.packet(seq, timestamp, now)
        assert stats.highest == model.highest
        assert math.isclose(stats.jitter, model.jitter, rel_tol=1e-12, abs_tol=1e-9)
    assert stats.received == len(sequence)
    block = stats.block(1, now)
    assert block is not None
    assert block.highest_sequence == model.highest
    assert block.jitter == int(model.jitter) & 0xFFFF_FFFF


def test_steady_30fps_stream_has_no_jitter_and_a_hole_is_reported() -> None:
    stats = ReceptionStatistics()
    for frame in range(30):
        assert not stats.packet(frame, frame * 3000, frame / 30)
    assert stats.jitter < 1e-6
    assert stats.packet(31, 31 * 3000, 31 / 30)  # 30 skipped
    block = stats.block(5, 1.1)
    assert block is not None and block.cumulative_lost == 1
