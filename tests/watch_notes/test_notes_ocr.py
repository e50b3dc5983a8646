"""Offline OCR notes: the real OCR model (rapidocr-onnxruntime, weights in the wheel) on real JPEGs
of the synthetic screen, whose large-font headlines the test knows; the region diff; the fallback."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import numpy as np
import pytest
import structlog.testing
import trio

from clank.media.jpeg import encode_jpeg
from clank.media.synth import HEADLINES, ScreenSynth
from clank.watch.ocr import (
    OcrEngine,
    OcrResult,
    TextLine,
    change_phrase,
    guess_application,
    layout_phrase,
    load_ocr_engine,
    visible_text,
)
from clank.watch.vision import NoteContext, OfflineVisionProvider

pytest.importorskip("rapidocr_onnxruntime")

SYNTH = ScreenSynth(1280, 720, fps=30, scene_seconds=4.0, headlines=True)
SCENE_FRAMES = [scene * SYNTH.frames_per_scene + 15 for scene in range(3)]
CONTEXT = NoteContext(trigger="first_frame", user_id="1001", user_name="Alice")


def headline_recall(text: str, headline: str) -> float:
    """Share of the headline's words found in ``text`` (spaces may be lost by the recogniser)."""
    squashed = re.sub(r"\s+", "", text.lower())
    words = headline.lower().split()
    return sum(word in squashed for word in words) / len(words)


def best_recall(text: str) -> float:
    return max(headline_recall(text, headline) for headline in HEADLINES)


@functools.cache
def jpeg(index: int) -> bytes:
    return encode_jpeg(SYNTH.frame(index), max_pixels=None).data


@functools.cache
def engine() -> OcrEngine:
    loaded = load_ocr_engine()
    assert loaded is not None
    return loaded


def rgb(index: int) -> np.ndarray:
    from io import BytesIO

    from PIL import Image

    return np.asarray(Image.open(BytesIO(jpeg(index))).convert("RGB"))


@pytest.mark.parametrize("scene", [0, 1, 2])
def test_reads_the_large_font_headline_of_every_scene(scene: int) -> None:
    result = engine().read(rgb(SCENE_FRAMES[scene]))
    assert result.lines, "nothing read"
    text = " ".join(line.text for line in result.lines)
    assert headline_recall(text, HEADLINES[scene]) >= 0.8, text
    assert headline_recall(result.lines[0].text, HEADLINES[scene]) >= 0.8  # largest text ranks first
    assert result.boxes_found > 20 and result.boxes_read <= engine().max_lines


async def test_ocr_notes_name_the_screen_the_text_and_the_change() -> None:
    provider = OfflineVisionProvider()
    with trio.fail_after(60):
        first = await provider.describe(jpeg(SCENE_FRAMES[0]), context=CONTEXT)
        later = NoteContext(trigger="periodic", user_id="1001", user_name="Alice", previous_notes=(first,))
        scrolled = await provider.describe(jpeg(SCENE_FRAMES[0] + 6), context=later)
        new_scene = await provider.describe(jpeg(SCENE_FRAMES[2]), context=later)
    assert first.startswith("Alice's screen: a code editor; visible text: `")
    assert "first look" in first and best_recall(first) >= 0.8
    assert "changed since last note: the left side scrolled down" in scrolled, scrolled
    assert new_scene.startswith("Alice's screen: a terminal;") and "new window" in new_scene
    assert headline_recall(new_scene, HEADLINES[2]) >= 0.8


def _thumb(seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).integers(0, 255, size=(90, 1)).astype(np.float32)
    return np.repeat(rows, 160, axis=1)  # horizontal stripes: like lines of text


@pytest.mark.parametrize(
    ("make", "phrase"),
    [
        (lambda t: t.copy(), "nothing visible changed"),
        (lambda t: np.vstack([t[5:], t[:5]]), "the whole screen scrolled down"),
        (lambda t: np.vstack([t[-5:], t[:-5]]), "the whole screen scrolled up"),
        (lambda t: 255 - t, "almost everything changed (a new window or application)"),
    ],
)
def test_change_phrase_table(make: Callable[[np.ndarray], np.ndarray], phrase: str) -> None:
    before = _thumb(1)
    assert change_phrase(before, make(before).astype(np.float32)) == phrase
    assert change_phrase(None, before) == "first look"


def test_change_in_one_corner_is_named() -> None:
    before = _thumb(2)
    after = before.copy()
    after[60:, 107:] = 255 - after[60:, 107:]
    assert change_phrase(before, after) == "the bottom right changed"
    after[60:, :] = 255 - before[60:, :]
    assert change_phrase(before, after) == "the bottom third changed"


def test_words_about_the_text_are_pure() -> None:
    def line(text: str, box: tuple[int, int, int, int]) -> TextLine:
        return TextLine(text, 0.9, box)

    title = line("Terminal pytest passed green", (10, 0, 390, 40))
    code = tuple(line(f"def f{i}(self): return None", (10, 60 + 20 * i, 300, 76 + 20 * i)) for i in range(8))
    result = OcrResult((title, *code), 9, 9, 1280, 720, False, 0.1, 0.2)
    assert guess_application(code) == "a code editor"
    assert guess_application((title, *code)) == "a terminal"
    assert guess_application(()) == "a screen without readable text"
    assert layout_phrase(result) == "9 text lines mostly on the left, a large title at the top left"
    long = line("x" * 100, (0, 0, 10, 10))
    assert visible_text((long,)) == "`" + "x" * 59 + "…`"
    assert len(visible_text(code, max_chars=60)) < 80


async def test_without_the_ocr_package_notes_fall_back_and_say_so_once() -> None:
    provider = OfflineVisionProvider(ocr_module="clank_tests_no_such_ocr_package")
    with trio.fail_after(30), structlog.testing.capture_logs() as logs:
        texts = [await provider.describe(jpeg(SCENE_FRAMES[1]), context=CONTEXT) for _ in range(3)]
    assert all(t.startswith("Alice is sharing a 1280x720 screen.") for t in texts)  # today's measures
    warnings = [e for e in logs if "without OCR" in str(e.get("event"))]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"


async def test_a_webcam_gets_measured_notes_not_ocr() -> None:
    camera = NoteContext(trigger="first_frame", user_id="1002", user_name="Bob", stream_type="camera")
    with trio.fail_after(30):
        text = await OfflineVisionProvider().describe(jpeg(SCENE_FRAMES[0]), context=camera)
    assert text.startswith("Bob is sharing a 1280x720 camera.") and "visible text" not in text
