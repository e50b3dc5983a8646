"""Change metrics on synthetic screen content, and the synthetic sources themselves."""

from __future__ import annotations

import hashlib

import av
import pytest

from clank.errors import UsageError
from clank.media.metrics import ChangeTracker, luma_grid
from clank.media.quality import plane_array
from clank.media.synth import ScreenSynth, WebcamSynth


def _digest(frame: av.VideoFrame) -> str:
    h = hashlib.sha256()
    for index in range(3):
        h.update(plane_array(frame, index).tobytes())
    return h.hexdigest()


def _flat(value: int, size: tuple[int, int] = (640, 360)) -> av.VideoFrame:
    frame = av.VideoFrame(size[0], size[1], "yuv420p")
    plane_array(frame, 0)[:] = value
    plane_array(frame, 1)[:] = 128
    plane_array(frame, 2)[:] = 128
    return frame


def test_identical_frames_score_zero() -> None:
    tracker = ChangeTracker()
    frame = ScreenSynth(1280, 720).frame(3)
    first = tracker.update(frame)
    assert (first.score, first.scene_cut) == (0.0, False)
    again = tracker.update(frame)
    assert again.score == 0.0 and again.mean_abs_diff == 0.0 and again.smoothed == 0.0
    assert not again.scene_cut


def test_scene_cut_detected_only_at_the_cut() -> None:
    synth = ScreenSynth(1280, 720, fps=30, scene_seconds=1.0)
    tracker = ChangeTracker()
    cuts = []
    # Sample at 2 fps as the decode worker does: every 15th frame, over three scenes.
    for index in range(0, 90, 15):
        sample = tracker.update(synth.frame(index))
        if sample.scene_cut:
            cuts.append(index)
    assert cuts == [30, 60]


def test_ema_math() -> None:
    tracker = ChangeTracker(grid=(8, 8), ema_alpha=0.5, scene_cut=0.9)
    tracker.update(_flat(50))
    full = tracker.update(_flat(200))
    assert full.score == 1.0 and full.smoothed == pytest.approx(0.5) and full.scene_cut
    # The grid is full-range luma (swscale's gray), so 150 video levels are 150 * 255 / 219.
    assert full.mean_abs_diff == pytest.approx(150 / 219, abs=0.01)
    still = tracker.update(_flat(200))
    assert still.score == 0.0 and still.smoothed == pytest.approx(0.25)
    noise = tracker.update(_flat(205))  # below the cell threshold
    assert noise.score == 0.0 and noise.smoothed == pytest.approx(0.125)
    tracker.reset()
    assert tracker.update(_flat(10)).smoothed == 0.0


def test_partial_change_scores_the_changed_share() -> None:
    tracker = ChangeTracker(grid=(4, 4))
    before = _flat(60)
    after = _flat(60)
    plane_array(after, 0)[:, :320] = 220  # left half
    tracker.update(before)
    sample = tracker.update(after)
    assert sample.score == pytest.approx(0.5)
    assert sample.scene_cut  # half the screen is above the 0.40 default


def test_luma_grid_shape() -> None:
    assert luma_grid(_flat(99), (64, 36)).shape == (36, 64)


def test_bad_tracker_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        ChangeTracker(ema_alpha=0.0)
    with pytest.raises(UsageError):
        ChangeTracker(grid=(0, 4))


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (1920, 1080)])
def test_screen_synth_is_deterministic_per_index(width: int, height: int) -> None:
    a = ScreenSynth(width, height)
    b = ScreenSynth(width, height)
    forward = [_digest(a.frame(i)) for i in (0, 1, 200)]
    backward = [_digest(b.frame(i)) for i in (200, 1, 0)][::-1]
    assert forward == backward
    assert len(set(forward)) == 3  # it moves
    frame = a.frame(5)
    assert (frame.width, frame.height, frame.format.name, frame.pts) == (width, height, "yuv420p", 5)


def test_screen_synth_switches_scenes() -> None:
    synth = ScreenSynth(1280, 720, fps=30, scene_seconds=2.0)
    assert [synth.scene_index(i) for i in (0, 59, 60, 120, 180)] == [0, 0, 1, 2, 0]


def test_webcam_synth_is_deterministic_and_smooth() -> None:
    cam = WebcamSynth(640, 360)
    assert _digest(cam.frame(17)) == _digest(WebcamSynth(640, 360).frame(17))
    tracker = ChangeTracker()
    tracker.update(cam.frame(0))
    assert not tracker.update(cam.frame(1)).scene_cut


def test_bad_synth_size_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        ScreenSynth(641, 360)
