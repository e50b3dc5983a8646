"""The offline provider's worker-thread side: OCR notes, or pixel measures on a slim install.

:class:`OfflineReader` turns one JPEG and its :class:`NoteContext` into a note like::

    Alice's screen: a code editor; visible text: `Editor packetize video frames` · `def decode ...`;
    changed since last note: the lower two thirds scrolled down. Layout: 53 text lines mostly on the
    left, a large title at the top left; dark with high contrast, main colours: charcoal 61%, ...

It is called on a worker thread (one at a time: the provider's capacity limiter) and keeps, per
sharer, a small thumbnail of the last described frame for the region diff. The OCR engine is
loaded on first use; when the OCR package is missing it logs that once and writes today's
measured notes (:func:`clank.watch.vision.describe_measures`) instead.
"""

from __future__ import annotations

import collections
import io
from typing import Final

import numpy as np
from PIL import Image, UnidentifiedImageError

from clank.errors import VisionError
from clank.logging import get_logger
from clank.watch.ocr import (
    OCR_MODULE,
    Luma,
    OcrEngine,
    change_phrase,
    guess_application,
    layout_phrase,
    load_ocr_engine,
    thumbnail,
    visible_text,
)
from clank.watch.vision import NoteContext, describe_measures, measure_jpeg

log = get_logger("clank.watch.offline")

KEPT_THUMBNAILS: Final = 32  # sharers remembered for "changed since last note"


def _possessive(who: str) -> str:
    return f"{who}'" if who.endswith("s") else f"{who}'s"


class OfflineReader:
    """OCR + layout + region diff for notes. Use from one thread at a time."""

    def __init__(self, *, ocr_module: str | None = OCR_MODULE) -> None:
        self._ocr_module = ocr_module
        self._engine: OcrEngine | None = None
        self._loaded = False
        self._previous: collections.OrderedDict[str, Luma] = collections.OrderedDict()

    @property
    def ocr_available(self) -> bool | None:
        """True/False once the engine was tried, None before the first note."""
        return (self._engine is not None) if self._loaded else None

    def _load(self) -> OcrEngine | None:
        if not self._loaded:
            self._loaded = True
            if self._ocr_module is not None:
                self._engine = load_ocr_engine(self._ocr_module)
            if self._engine is None:
                log.warning(
                    "offline notes without OCR (package not installed): notes describe measures only",
                    package="rapidocr-onnxruntime",
                )
        return self._engine

    def describe(self, frame_jpeg: bytes, context: NoteContext) -> str:
        """The note text (CPU work: call on a worker thread). Raises ``VisionError('bad_image')``."""
        measures = measure_jpeg(frame_jpeg)
        if context.stream_type == "camera":  # a webcam: no screen text to read
            return describe_measures(measures, context)
        engine = self._load()
        if engine is None:
            return describe_measures(measures, context)
        try:
            with Image.open(io.BytesIO(frame_jpeg)) as image:
                rgb = np.asarray(image.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise VisionError("bad_image", f"not a readable JPEG: {exc}") from exc
        result = engine.read(rgb)
        key = context.user_id or context.who
        current = thumbnail(rgb)
        change = change_phrase(self._previous.get(key), current)
        self._previous[key] = current
        self._previous.move_to_end(key)
        while len(self._previous) > KEPT_THUMBNAILS:
            self._previous.popitem(last=False)
        if change == "first look" or (context.trigger == "first_frame" and not context.previous_notes):
            since = "first look at this share"
        else:
            since = f"changed since last note: {change}"
        text = visible_text(result.lines)
        colours = ", ".join(f"{name} {share:.0%}" for name, share in measures.colours)
        return (
            f"{_possessive(context.who)} {context.stream_type}: {guess_application(result.lines)}; "
            f"visible text: {text or 'none readable'}; {since}. "
            f"Layout: {layout_phrase(result)}; {measures.brightness_word} with {measures.contrast_word} "
            f"contrast, main colours: {colours}."
        )
