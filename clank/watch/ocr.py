"""Reading the text on a screen offline, and saying what changed between two looks.

* :class:`OcrEngine` wraps ``rapidocr-onnxruntime`` (PP-OCRv4 detection + recognition ONNX models
  shipped inside the wheel: nothing is downloaded at run time). One engine belongs to one worker
  thread (ONNX Runtime with one intra-op thread: one core). :meth:`OcrEngine.read` detects text
  boxes on a downscaled copy (``det_width`` pixels wide), ranks them by size (font height) then
  position, and recognises them from the full-resolution picture in rank order, batch by batch,
  until ``budget_s`` is spent — so a screen full of small text costs the same as a sparse one and
  the largest text is read first.
* :func:`guess_application` and :func:`layout_phrase` turn what was read into words (pure).
* :func:`change_phrase` compares two small luma thumbnails region by region (3x3 grid) and tells
  a scroll (a vertical shift explains the difference) from a change in place or a new screen (pure).

:func:`load_ocr_engine` returns ``None`` when the OCR package is not installed (a slim install);
the offline provider then falls back to pixel measures.
"""

from __future__ import annotations

import importlib
import re
import time
from typing import Any, Final

import attrs
import numpy as np
import numpy.typing as npt

Luma = npt.NDArray[np.float32]
RGB = npt.NDArray[np.uint8]

OCR_MODULE: Final = "rapidocr_onnxruntime"
THUMB_SIZE: Final = (160, 90)  # width, height of the change thumbnails
_CELL_CHANGED: Final = 6.0  # mean absolute luma difference (0..255) that counts as a change
_ROW_NAMES: Final = ("top", "middle", "bottom")
_CELL_NAMES: Final = (
    ("top left", "top", "top right"),
    ("left", "centre", "right"),
    ("bottom left", "bottom", "bottom right"),
)
_CODE_WORDS: Final = frozenset(
    [
        "def",
        "class",
        "import",
        "return",
        "async",
        "await",
        "self",
        "none",
        "true",
        "false",
        "elif",
        "lambda",
        "yield",
        "const",
        "let",
        "var",
        "function",
        "public",
        "static",
        "void",
        "int",
    ]
)
_CODE_MARKERS: Final = ("import", "return", "async", "await", "self", "none", "lambda", "yield", "function")
_SHELL_WORDS: Final = frozenset(
    ["terminal", "pytest", "git", "npm", "pip", "cargo", "make", "sudo", "bash", "zsh", "ls", "cd"]
)
_WEB_WORDS: Final = frozenset(["browser", "http", "https", "www", "com", "html", "login", "search"])


@attrs.frozen
class TextLine:
    text: str
    score: float  # recogniser confidence, 0..1
    box: tuple[int, int, int, int]  # left, top, right, bottom in source pixels

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


@attrs.frozen
class OcrResult:
    lines: tuple[TextLine, ...]  # in rank order: largest text first, then top-to-bottom
    boxes_found: int
    boxes_read: int
    width: int
    height: int
    budget_hit: bool
    det_s: float
    rec_s: float


class OcrEngine:
    """Text detection + recognition within a time budget. Not thread-safe: one per worker thread."""

    def __init__(
        self,
        module: Any,
        *,
        det_width: int = 800,
        max_lines: int = 12,
        batch: int = 4,
        budget_s: float = 0.45,
        min_score: float = 0.6,
        max_aspect: float = 16.0,
    ) -> None:
        self._ocr = module.RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
        self._ocr.text_det.limit_type = "min"  # with the downscaled input: no further resize
        self.det_width = det_width
        self.max_lines = max_lines
        self.batch = batch
        self.budget_s = budget_s
        self.min_score = min_score
        self.max_aspect = max_aspect
        self.read(np.zeros((64, 256, 3), dtype=np.uint8))  # warm up: the first run allocates

    def read(self, rgb: RGB) -> OcrResult:
        """Read the text of an RGB picture (H x W x 3, uint8)."""
        import cv2  # shipped with the OCR package

        started = time.thread_time()  # CPU time of this thread: ONNX Runtime runs on it
        height, width = rgb.shape[:2]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        scale = min(1.0, self.det_width / width)
        small = (
            bgr
            if scale == 1.0
            else cv2.resize(bgr, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        )
        self._ocr.text_det.limit_side_len = min(small.shape[:2])
        boxes, _ = self._ocr.text_det(small)
        det_s = time.thread_time() - started
        if boxes is None or len(boxes) == 0:
            return OcrResult((), 0, 0, width, height, False, det_s, 0.0)
        full = [np.asarray(b, dtype=np.float32) / scale for b in boxes]
        ranked = sorted(full, key=_rank_key)[: self.max_lines]
        lines: list[TextLine] = []
        read = 0
        budget_hit = False
        rec_started = time.thread_time()  # CPU time of this thread: ONNX Runtime runs on it
        for start in range(0, len(ranked), self.batch):
            if start and time.thread_time() - started >= self.budget_s:  # the largest text is always read
                budget_hit = True
                break
            chunk = ranked[start : start + self.batch]
            crops = [_trim(crop, self.max_aspect) for crop in self._ocr.get_crop_img_list(bgr, chunk)]
            results, _ = self._ocr.text_rec(crops)
            read += len(chunk)
            for points, (text, score) in zip(chunk, results, strict=True):
                cleaned = " ".join(str(text).split())
                if cleaned and float(score) >= self.min_score:
                    lines.append(TextLine(cleaned, float(score), _bounds(points)))
        return OcrResult(
            tuple(lines),
            len(full),
            read,
            width,
            height,
            budget_hit,
            det_s,
            time.thread_time() - rec_started,
        )


def _trim(crop: RGB, max_aspect: float) -> RGB:
    """Keep the start of a very long line: recognition cost grows with the width."""
    height, width = crop.shape[:2]
    limit = int(max(1, height) * max_aspect)
    return crop if width <= limit else np.ascontiguousarray(crop[:, :limit])


def load_ocr_engine(module_name: str = OCR_MODULE, **options: Any) -> OcrEngine | None:
    """An engine, or ``None`` when the OCR package cannot be imported."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return OcrEngine(module, **options)


def _rank_key(points: npt.NDArray[np.float32]) -> tuple[int, float, float]:
    height = float(max(np.linalg.norm(points[0] - points[3]), np.linalg.norm(points[1] - points[2])))
    # Font size first (in 4-pixel steps so one size class keeps reading order), then position.
    return (-int(height // 4), float(points[:, 1].min()), float(points[:, 0].min()))


def _bounds(points: npt.NDArray[np.float32]) -> tuple[int, int, int, int]:
    return (
        int(points[:, 0].min()),
        int(points[:, 1].min()),
        int(points[:, 0].max()),
        int(points[:, 1].max()),
    )


# ---------------------------------------------------------------------------------------------
# Words about what was read (pure).


def _tokens(lines: tuple[TextLine, ...]) -> list[str]:
    return [t for line in lines for t in re.findall(r"[a-z_]+", line.text.lower())]


def guess_application(lines: tuple[TextLine, ...]) -> str:
    """A guess at what kind of screen shows this text."""
    tokens = _tokens(lines)
    if not tokens:
        return "a screen without readable text"
    words = set(tokens)
    if words & _SHELL_WORDS:
        return "a terminal"
    if words & _WEB_WORDS:
        return "a web page"
    squashed = "".join(tokens)  # the recogniser may drop spaces: count keywords inside words too
    if sum(t in _CODE_WORDS for t in tokens) >= 3 or sum(squashed.count(k) for k in _CODE_MARKERS) >= 3:
        return "a code editor"
    return "a text document or page" if len(lines) >= 6 else "an application window"


def layout_phrase(result: OcrResult) -> str:
    """Where the text sits: how many lines, which side, any title-like large text."""
    if not result.lines:
        return "no readable text"
    centres = [((line.box[0] + line.box[2]) / 2) / result.width for line in result.lines]
    mean = sum(centres) / len(centres)
    side = "on the left" if mean < 0.4 else "on the right" if mean > 0.6 else "across the screen"
    found = f"{result.boxes_found} text lines" if result.boxes_found != 1 else "one text line"
    tallest = max(result.lines, key=lambda line: line.height)
    smallest = min(line.height for line in result.lines)
    title = (
        f", a large title at the {_where(tallest, result)}"
        if tallest.height >= 1.3 * max(1, smallest) or len(result.lines) == 1
        else ""
    )
    return f"{found} mostly {side}{title}"


def _where(line: TextLine, result: OcrResult) -> str:
    cx = (line.box[0] + line.box[2]) / 2 / result.width
    cy = (line.box[1] + line.box[3]) / 2 / result.height
    return _CELL_NAMES[min(2, int(cy * 3))][min(2, int(cx * 3))]


def visible_text(lines: tuple[TextLine, ...], *, max_chars: int = 320, max_line: int = 60) -> str:
    """The read lines in rank order, each trimmed, joined with `` · `` up to ``max_chars``."""
    parts: list[str] = []
    used = 0
    for line in lines:
        text = line.text if len(line.text) <= max_line else line.text[: max_line - 1].rstrip() + "…"
        if used + len(text) > max_chars:
            break
        parts.append(f"`{text}`")
        used += len(text) + 3
    return " · ".join(parts)


# ---------------------------------------------------------------------------------------------
# What changed between two looks (pure).


def thumbnail(rgb: RGB) -> Luma:
    """A small luma picture for :func:`change_phrase`."""
    from PIL import Image

    image = Image.fromarray(rgb).convert("L").resize(THUMB_SIZE, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def _cells(diff: Luma) -> npt.NDArray[np.bool_]:
    rows = np.array_split(np.arange(diff.shape[0]), 3)
    cols = np.array_split(np.arange(diff.shape[1]), 3)
    return np.array([[float(diff[np.ix_(r, c)].mean()) > _CELL_CHANGED for c in cols] for r in rows])


def _area(changed: npt.NDArray[np.bool_]) -> str:
    rows = [r for r in range(3) if changed[r].any()]
    if changed[rows].all():
        if rows == [0, 1, 2]:
            return "whole screen"
        if rows == [1, 2]:
            return "lower two thirds"
        if rows == [0, 1]:
            return "upper two thirds"
        if len(rows) == 1:
            return f"{_ROW_NAMES[rows[0]]} third" if rows[0] != 1 else "middle band"
    cols = [c for c in range(3) if changed[:, c].any()]
    if changed[:, cols].all() and len(cols) < 3:
        sides = {(0,): "left side", (2,): "right side", (1,): "centre column", (0, 1): "left two thirds"}
        return sides.get(tuple(cols), "right two thirds")
    names = [_CELL_NAMES[r][c] for r in range(3) for c in range(3) if changed[r][c]]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _best_shift(previous: Luma, current: Luma, max_shift: int) -> tuple[int, float]:
    best, best_err = 0, float(np.abs(current - previous).mean())
    for shift in range(1, max_shift + 1):
        for sign in (1, -1):
            if sign > 0:  # content moved up: scrolled down
                err = float(np.abs(current[:-shift] - previous[shift:]).mean())
            else:
                err = float(np.abs(current[shift:] - previous[:-shift]).mean())
            if err < best_err:
                best, best_err = sign * shift, err
    return best, best_err


def _scrolled(
    previous: Luma, current: Luma, changed: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.bool_], int]:
    """Which changed cells a vertical shift explains (per column third), and its direction."""
    scrolled = np.zeros_like(changed)
    direction = 0
    height = current.shape[0]
    for c, cols in enumerate(np.array_split(np.arange(current.shape[1]), 3)):
        rows = [r for r in range(3) if changed[r][c]]
        if not rows:
            continue
        band = slice(rows[0] * height // 3, (rows[-1] + 1) * height // 3)
        prev, cur = previous[band][:, cols], current[band][:, cols]
        shift, err = _best_shift(prev, cur, max(1, (band.stop - band.start) // 4))
        still = float(np.abs(cur - prev).mean())
        if shift != 0 and err < 0.75 * still and err < 2 * _CELL_CHANGED:
            for r in rows:
                scrolled[r][c] = True
            direction = direction or shift
    return scrolled, direction


def change_phrase(previous: Luma | None, current: Luma) -> str:
    """What changed from ``previous`` to ``current`` (thumbnails of the same size)."""
    if previous is None or previous.shape != current.shape:
        return "first look"
    diff = np.abs(current - previous)
    changed = _cells(diff)
    if not changed.any():
        return "nothing visible changed"
    scrolled, direction = _scrolled(previous, current, changed)
    moved = changed & ~scrolled
    if not scrolled.any() and changed.sum() >= 8 and float(diff.mean()) > 4 * _CELL_CHANGED:
        return "almost everything changed (a new window or application)"
    parts = []
    if scrolled.any():
        parts.append(f"the {_area(scrolled)} scrolled {'down' if direction > 0 else 'up'}")
    if moved.any():
        parts.append(f"the {_area(moved)} changed")
    return "; ".join(parts)
