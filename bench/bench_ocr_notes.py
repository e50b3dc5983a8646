"""CPU cost of one offline OCR note at 720p, beside same-run baselines.

Run: ``.venv/bin/python bench/bench_ocr_notes.py`` (bounded: ~30 s on a 2-core machine; exits 0).

Frames: the synthetic screen (``clank.media.synth``, 1280x720, each of its three scenes, a few
scroll positions), JPEG-encoded as a watch emits them. Per frame, one after the other on the
same JPEG, CPU time of the calling thread (ONNX Runtime runs there with one intra-op thread):

* note: ``OfflineReader.describe`` — what a note costs (decode, measures, OCR within its budget,
  layout, region diff). Goal: <= 600 ms per note on one core.
* measures: the measured note without OCR (today's fallback), the floor.
* full OCR: rapidocr's own pipeline at its defaults on the same picture (what the budgeted
  reader saves).

Also: the share of the scene's large-font headline words recognised (goal >= 80%).
When the OCR package is missing the bench says so and exits 0.
"""

from __future__ import annotations

import importlib.util
import io
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

from clank.media.jpeg import encode_jpeg
from clank.media.synth import HEADLINES, ScreenSynth
from clank.watch.offline_notes import OfflineReader
from clank.watch.vision import NoteContext, describe_measures, measure_jpeg

GOAL_MS = 600.0
GOAL_RECALL = 0.8


def recall(text: str, headline: str) -> float:
    squashed = re.sub(r"\s+", "", text.lower())
    words = headline.lower().split()
    return sum(w in squashed for w in words) / len(words)


def cpu_ms(fn: object, *args: object) -> tuple[float, object]:
    start = time.thread_time()
    out = fn(*args)  # type: ignore[operator]
    return (time.thread_time() - start) * 1000, out


def main() -> None:
    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        print("OCR package (rapidocr-onnxruntime) not installed: nothing to measure")
        return
    from rapidocr_onnxruntime import RapidOCR

    synth = ScreenSynth(1280, 720, fps=30, scene_seconds=4.0, headlines=True)
    frames = [scene * synth.frames_per_scene + offset for scene in range(3) for offset in (15, 45)]
    reader = OfflineReader()
    context = NoteContext(trigger="periodic", user_id="1", user_name="Alice")
    reader.describe(encode_jpeg(synth.frame(0), max_pixels=None).data, context)  # load + warm up
    full = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
    notes, measures, fulls, recalls = [], [], [], []
    for index in frames:
        jpeg = encode_jpeg(synth.frame(index), max_pixels=None).data
        note_ms, text = cpu_ms(reader.describe, jpeg, context)
        base_ms, _ = cpu_ms(lambda data: describe_measures(measure_jpeg(data), context), jpeg)
        rgb = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))[:, :, ::-1].copy()
        full_ms, _ = cpu_ms(full, rgb)
        notes.append(note_ms)
        measures.append(base_ms)
        fulls.append(full_ms)
        recalls.append(recall(str(text), HEADLINES[synth.scene_index(index)]))
    note = statistics.median(notes)
    print(f"frames: {len(frames)} synthetic 1280x720 screens (3 scenes), CPU of one thread")
    print(
        f"OCR note        median {note:7.0f} ms  (min {min(notes):.0f}, max {max(notes):.0f})"
        f"   goal <= {GOAL_MS:.0f} ms   {'OK' if note <= GOAL_MS else 'OVER'}"
    )
    print(f"measures note   median {statistics.median(measures):7.1f} ms  (the no-OCR fallback)")
    print(f"rapidocr full   median {statistics.median(fulls):7.0f} ms  (defaults, every line)")
    ratios = [n / f for n, f in zip(notes, fulls, strict=True)]
    print(f"note / full OCR ratio  median {statistics.median(ratios):.2f} (same frames, same run)")
    mean_recall = statistics.mean(recalls)
    print(
        f"headline words recognised  {mean_recall:.0%} (min {min(recalls):.0%})   goal >= {GOAL_RECALL:.0%}"
        f"   {'OK' if min(recalls) >= GOAL_RECALL else 'UNDER'}"
    )


if __name__ == "__main__":
    main()
