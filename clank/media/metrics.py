"""How much the picture changed: a coarse luma grid compared frame to frame.

The luma plane is area-averaged down to a small grid (64x36 by default) with one single-threaded
swscale pass (``format="gray", interpolation="AREA"``). The tracker keeps its ``VideoReformatter``
so the swscale context is reused from frame to frame: 0.11 ms at 720p against 0.6 ms for a
fresh ``frame.reformat`` with PyAV's default threads (which builds a thread pool per call); a
numpy reshape/mean of the plane costs 3-10x more. swscale's gray is full range, so grid values
are 0-255 even for limited-range video. Two grids are compared as follows:

* ``mean_abs_diff``: mean absolute cell difference / 255, in [0, 1].
* ``score`` (what we act on): the fraction of cells whose mean luma moved by more than
  ``cell_threshold`` grey levels, in [0, 1]. For screen content this is the robust choice:
  compression noise and cursor blinks stay below the threshold, and a window switch between
  two similarly dark windows still changes most cells even though their mean difference is
  small. Read it as "the share of the screen that changed".
* ``smoothed``: EMA of ``score``: ``smoothed = alpha * score + (1 - alpha) * smoothed``,
  starting at 0.
* ``scene_cut``: ``score >= scene_cut``.

The first frame (and the first after ``reset``) has nothing to compare with: score 0, no cut.
Everything is deterministic for the same input frames.
"""

from __future__ import annotations

import attrs
import av
import numpy as np
import numpy.typing as npt
from av.video.reformatter import VideoReformatter

from clank.errors import UsageError

DEFAULT_GRID = (64, 36)
DEFAULT_EMA_ALPHA = 0.35
DEFAULT_SCENE_CUT = 0.40
# Grey levels a cell's mean must move to count as changed; well above H264/VP8 noise at
# normal bitrates once averaged over a cell of ~400 pixels.
DEFAULT_CELL_THRESHOLD = 10


@attrs.frozen
class ChangeSample:
    score: float
    mean_abs_diff: float
    smoothed: float
    scene_cut: bool


def luma_grid(
    frame: av.VideoFrame,
    grid: tuple[int, int] = DEFAULT_GRID,
    reformatter: VideoReformatter | None = None,
) -> npt.NDArray[np.uint8]:
    """The area-averaged luma of ``frame`` as a (rows, columns) uint8 array.

    Pass a long-lived ``reformatter`` (one per thread) when called per frame.
    """
    columns, rows = grid
    tiny = (reformatter or VideoReformatter()).reformat(
        frame, width=columns, height=rows, format="gray", interpolation="AREA", threads=1
    )
    return np.asarray(tiny.to_ndarray(), dtype=np.uint8)


class ChangeTracker:
    """Feed frames in order; each ``update`` returns how much changed since the previous one."""

    def __init__(
        self,
        grid: tuple[int, int] = DEFAULT_GRID,
        ema_alpha: float = DEFAULT_EMA_ALPHA,
        scene_cut: float = DEFAULT_SCENE_CUT,
        cell_threshold: int = DEFAULT_CELL_THRESHOLD,
    ) -> None:
        if grid[0] < 1 or grid[1] < 1:
            raise UsageError(f"grid must be at least 1x1, got {grid}")
        if not 0.0 < ema_alpha <= 1.0:
            raise UsageError(f"ema_alpha must be in (0, 1], got {ema_alpha}")
        if not 0.0 < scene_cut <= 1.0:
            raise UsageError(f"scene_cut must be in (0, 1], got {scene_cut}")
        self.grid = grid
        self.ema_alpha = ema_alpha
        self.scene_cut = scene_cut
        self.cell_threshold = cell_threshold
        self._previous: npt.NDArray[np.int16] | None = None
        self._smoothed = 0.0
        self._reformatter = VideoReformatter()

    def update(self, frame: av.VideoFrame) -> ChangeSample:
        return self.update_grid(luma_grid(frame, self.grid, self._reformatter))

    def update_grid(self, grid: npt.NDArray[np.uint8]) -> ChangeSample:
        """Like ``update`` for a grid already computed with ``luma_grid``."""
        current = grid.astype(np.int16)
        previous, self._previous = self._previous, current
        if previous is None or previous.shape != current.shape:
            return ChangeSample(score=0.0, mean_abs_diff=0.0, smoothed=self._smoothed, scene_cut=False)
        diff = np.abs(current - previous)
        score = float(np.count_nonzero(diff > self.cell_threshold)) / diff.size
        mean_abs_diff = float(diff.mean()) / 255.0
        self._smoothed = self.ema_alpha * score + (1.0 - self.ema_alpha) * self._smoothed
        return ChangeSample(
            score=score,
            mean_abs_diff=mean_abs_diff,
            smoothed=self._smoothed,
            scene_cut=score >= self.scene_cut,
        )

    def reset(self) -> None:
        """Forget the previous frame and the EMA (e.g. after a decoder reset or resolution change)."""
        self._previous = None
        self._smoothed = 0.0
