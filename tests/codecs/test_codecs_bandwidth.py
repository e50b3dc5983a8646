"""The receiver's REMB estimate (clank.codecs.bandwidth): growth, loss, decoder capacity, bounds."""

from __future__ import annotations

import pytest

from clank.codecs.bandwidth import RembConfig, RembController, RembInputs
from clank.errors import UsageError
from clank.wire.rtcp_feedback import Remb

OURS = 0x1234
STREAM = 0x5000


def _step(ctl: RembController, now: float, *, rate_bps: int, lost: int = 0, dropped: int = 0) -> Remb:
    inputs = RembInputs(
        bytes_received=rate_bps // 8, packets_expected=100, packets_lost=lost, decoder_dropped=dropped
    )
    remb = ctl.next(inputs, now, OURS, [STREAM])
    assert remb is not None
    return remb


def test_the_first_call_only_starts_the_interval_then_one_remb_a_second() -> None:
    ctl = RembController(RembConfig())
    assert ctl.due(0.0)
    assert ctl.next(RembInputs(0, 0, 0, 0), 0.0, OURS, [STREAM]) is None
    assert not ctl.due(0.5) and ctl.due(1.0) and ctl.next_deadline() == 1.0
    remb = _step(ctl, 1.0, rate_bps=1_000_000)
    assert remb.sender_ssrc == OURS and remb.ssrcs == (STREAM,) and remb.media_ssrc == 0
    assert ctl.statistics().sent == 1 and ctl.statistics().received_bps == 1_000_000


def test_a_clean_link_climbs_to_the_decode_ceiling_and_stays() -> None:
    ctl = RembController(RembConfig(max_bps=4_000_000, start_bps=1_000_000))
    ctl.next(RembInputs(0, 0, 0, 0), 0.0, OURS, [STREAM])
    estimates = [_step(ctl, float(t), rate_bps=900_000).bitrate for t in range(1, 40)]
    assert estimates == sorted(estimates)  # never down without loss
    assert estimates[0] >= 1_080_000 and estimates[-1] == 4_000_000


def test_heavy_loss_backs_off_moderate_loss_holds() -> None:
    ctl = RembController(RembConfig(start_bps=3_000_000))
    ctl.next(RembInputs(0, 0, 0, 0), 0.0, OURS, [STREAM])
    held = _step(ctl, 1.0, rate_bps=2_000_000, lost=5).bitrate  # 5 %: hold
    assert held == 3_000_000
    cut = _step(ctl, 2.0, rate_bps=2_000_000, lost=30).bitrate  # 30 %: x(1 - 0.15)
    assert cut == int(3_000_000 * 0.85)


def test_a_decoder_that_drops_caps_the_estimate_below_what_arrives() -> None:
    ctl = RembController(RembConfig(start_bps=6_000_000))
    ctl.next(RembInputs(0, 0, 0, 0), 0.0, OURS, [STREAM])
    capped = _step(ctl, 1.0, rate_bps=5_000_000, dropped=3).bitrate
    assert capped == int(5_000_000 * 0.85)
    assert ctl.statistics().decoder_limited == 1


def test_bounds_hold_and_bad_config_is_refused() -> None:
    ctl = RembController(RembConfig(min_bps=200_000, start_bps=250_000))
    ctl.next(RembInputs(0, 0, 0, 0), 0.0, OURS, [STREAM])
    for t in range(1, 20):
        remb = _step(ctl, float(t), rate_bps=100_000, lost=90)
        assert remb.bitrate >= 200_000
    with pytest.raises(UsageError):
        RembConfig(min_bps=0)
    with pytest.raises(UsageError):
        RembConfig(interval=0)


def test_no_watched_ssrc_sends_nothing() -> None:
    ctl = RembController(RembConfig())
    ctl.next(RembInputs(0, 0, 0, 0), 0.0, OURS, [])
    assert ctl.next(RembInputs(1000, 10, 0, 0), 1.0, OURS, []) is None
    assert ctl.statistics().sent == 0
