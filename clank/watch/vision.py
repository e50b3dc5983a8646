"""Vision providers: turn one screen frame (JPEG) into a short text note.

* :class:`VisionProvider` is the protocol screen notes call: ``await describe(jpeg, context=...)``.
  A provider raises only :class:`clank.errors.VisionError` for a failed description; screen
  notes count it and go on.
* :class:`OfflineVisionProvider` (the default) needs no model service and no network: with the
  OCR package installed it reads the text on the screen (:mod:`clank.watch.ocr`); otherwise it
  measures what can be measured from pixels (resolution, brightness and contrast, dominant colours, edge
  density as a text-vs-imagery hint, the busiest area) and says what changed from the change
  metrics in the context. Same frame and context, same text. The pixel work runs on a worker
  thread (notes are rare, so ``to_thread`` per note is cheap enough).
* ``anthropic`` (:mod:`clank.watch.anthropic_vision`): the Messages API with a base64 image
  block, retries on 429/5xx honouring ``retry-after``.
* :class:`OpenAICompatibleVisionProvider` posts the frame as a base64 data URL to a
  chat-completions endpoint (OpenAI and the many servers that imitate it). httpx errors,
  timeouts and bad answers are translated once, here, into ``VisionError``. The API key is
  registered with the log redaction and never appears in reprs.

:func:`open_vision_provider` picks one from settings-like arguments.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Literal, Protocol

import attrs
import httpx
import numpy as np
import numpy.typing as npt
import trio
from PIL import Image, UnidentifiedImageError

from clank.errors import UsageError, VisionError
from clank.io.offload import run_cpu
from clank.logging import register_secret

Trigger = Literal["first_frame", "scene_cut", "periodic", "on_demand"]
ProviderKind = Literal["offline", "openai", "anthropic"]


@attrs.frozen
class NoteContext:
    """What a provider knows besides the picture: who shares, why this note, what came before."""

    trigger: Trigger
    user_id: str = ""
    user_name: str = ""  # display name when known; falls back to the id in descriptions
    stream_type: str = "screen"
    change_score: float = 0.0  # share of the screen that changed since the previous frame (0..1)
    change_ema: float = 0.0  # smoothed change: how busy the screen has been lately
    scene_cut: bool = False
    previous_notes: tuple[str, ...] = ()  # oldest first
    seconds_since_last_note: float | None = None

    @property
    def who(self) -> str:
        if self.user_name:
            return self.user_name
        return f"User {self.user_id}" if self.user_id else "Someone"


class VisionProvider(Protocol):
    """Describes one frame. Raises ``VisionError`` (only) when it cannot."""

    @property
    def name(self) -> str: ...

    async def describe(self, frame_jpeg: bytes, *, context: NoteContext) -> str: ...


# ---------------------------------------------------------------------------------------------
# Offline: measurements instead of a model.

_ANALYSIS_WIDTH: Final = 320  # pixels; enough for edges and colours, cheap to compute
_EDGE_STEP: Final = 24  # grey levels between neighbours that count as an edge
_COLOUR_GRID: Final = 48  # colours are counted on a 48-wide thumbnail
_NAMED_COLOURS: Final[tuple[tuple[str, tuple[int, int, int]], ...]] = (
    ("black", (0, 0, 0)),
    ("charcoal", (45, 45, 50)),
    ("grey", (128, 128, 128)),
    ("light grey", (200, 200, 200)),
    ("white", (255, 255, 255)),
    ("red", (200, 40, 40)),
    ("orange", (230, 130, 30)),
    ("yellow", (230, 210, 50)),
    ("green", (60, 170, 70)),
    ("teal", (30, 140, 140)),
    ("blue", (50, 100, 210)),
    ("navy", (25, 35, 90)),
    ("purple", (130, 60, 170)),
    ("pink", (230, 130, 180)),
    ("brown", (120, 80, 40)),
)
_REGIONS: Final = (
    ("top left", "top", "top right"),
    ("left", "centre", "right"),
    ("bottom left", "bottom", "bottom right"),
)


@attrs.frozen
class ImageMeasures:
    """What :func:`measure_jpeg` found in a picture."""

    width: int
    height: int
    mean_luma: float  # 0..255
    contrast: float  # standard deviation of luma, 0..~128
    colours: tuple[tuple[str, float], ...]  # (name, share) for the top three, largest first
    edge_density: float  # share of neighbouring pixel pairs that differ by more than _EDGE_STEP
    busiest_region: str

    @property
    def brightness_word(self) -> str:
        return "dark" if self.mean_luma < 85 else "bright" if self.mean_luma > 170 else "medium-bright"

    @property
    def contrast_word(self) -> str:
        return "low" if self.contrast < 25 else "high" if self.contrast > 60 else "moderate"

    @property
    def layout_word(self) -> str:
        if self.edge_density < 0.01:
            return "mostly flat (blank or a few solid areas)"
        if self.edge_density > 0.05:
            return "text-heavy or dense UI (many fine edges)"
        return "large shapes or imagery (few fine edges)"


def _luma(rgb: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return rgb @ weights


def measure_jpeg(data: bytes) -> ImageMeasures:
    """Measure a JPEG (CPU work; call it off the trio thread). Raises ``VisionError('bad_image')``."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.draft("RGB", (_ANALYSIS_WIDTH, max(1, _ANALYSIS_WIDTH * height // max(1, width))))
            rgb_image = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise VisionError("bad_image", f"not a readable JPEG: {exc}") from exc
    if width < 1 or height < 1:
        raise VisionError("bad_image", "empty picture")
    small_height = max(1, round(_ANALYSIS_WIDTH * height / width))
    analysis = np.asarray(rgb_image.resize((_ANALYSIS_WIDTH, small_height)), dtype=np.float32)
    luma = _luma(analysis)
    return ImageMeasures(
        width=width,
        height=height,
        mean_luma=float(luma.mean()),
        contrast=float(luma.std()),
        colours=_dominant_colours(rgb_image),
        edge_density=_edge_density(luma),
        busiest_region=_busiest_region(luma),
    )


def _dominant_colours(image: Image.Image) -> tuple[tuple[str, float], ...]:
    thumb_height = max(1, round(_COLOUR_GRID * image.height / image.width))
    pixels = np.asarray(image.resize((_COLOUR_GRID, thumb_height)), dtype=np.float32).reshape(-1, 3)
    palette = np.array([rgb for _, rgb in _NAMED_COLOURS], dtype=np.float32)
    distances = ((pixels[:, None, :] - palette[None, :, :]) ** 2).sum(axis=2)
    counts = np.bincount(distances.argmin(axis=1), minlength=len(_NAMED_COLOURS))
    order = sorted(range(len(counts)), key=lambda i: (-int(counts[i]), i))[:3]
    total = int(counts.sum())
    return tuple((_NAMED_COLOURS[i][0], int(counts[i]) / total) for i in order if counts[i] > 0)


def _edge_map(luma: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    edges = np.zeros(luma.shape, dtype=np.bool_)
    edges[:, 1:] |= np.abs(np.diff(luma, axis=1)) > _EDGE_STEP
    edges[1:, :] |= np.abs(np.diff(luma, axis=0)) > _EDGE_STEP
    return edges


def _edge_density(luma: npt.NDArray[np.float32]) -> float:
    return float(_edge_map(luma).mean())


def _busiest_region(luma: npt.NDArray[np.float32]) -> str:
    edges = _edge_map(luma)
    rows = np.array_split(np.arange(edges.shape[0]), 3)
    columns = np.array_split(np.arange(edges.shape[1]), 3)
    best, best_density = "centre", -1.0
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            if row.size == 0 or column.size == 0:
                continue
            density = float(edges[np.ix_(row, column)].mean())
            if density > best_density:
                best, best_density = _REGIONS[r][c], density
    return best


def _cut_words(score: float, stream_type: str) -> str:
    """A scene cut worded by how much changed and by what kind of source it is."""
    if score >= 0.5:
        size = "The picture changed almost completely"
    elif score >= 0.25:
        size = "A large part of the picture changed"
    else:
        size = "Part of the picture changed"
    if stream_type == "camera":
        return f"{size}: the camera moved or the scene in front of it changed"
    if score >= 0.5:
        return f"{size}, likely a new window or application"
    return f"{size}, likely a window opened, closed or moved"


def _change_sentence(context: NoteContext) -> str:
    scores = f"change {context.change_score:.2f}, recent activity {context.change_ema:.2f}"
    if context.trigger == "first_frame" and not context.previous_notes:
        return f"First look at this {context.stream_type} ({scores})."
    if context.scene_cut or context.trigger == "scene_cut":
        return f"{_cut_words(context.change_score, context.stream_type)} ({scores})."
    if context.change_ema >= 0.15:
        activity = "busy: large parts keep changing"
    elif context.change_ema >= 0.02:
        activity = "changing steadily (scrolling, typing or a moving window)"
    else:
        activity = "mostly still"
    since = (
        f" {context.seconds_since_last_note:.0f} s after the previous note"
        if context.seconds_since_last_note is not None
        else ""
    )
    asked = "Asked for a look" if context.trigger == "on_demand" else "Periodic look"
    return f"{asked}{since}: the screen is {activity} ({scores})."


def describe_measures(measures: ImageMeasures, context: NoteContext) -> str:
    """The offline note text for measured pixels in a context (pure)."""
    colours = ", ".join(f"{name} {share:.0%}" for name, share in measures.colours)
    return " ".join(
        (
            f"{context.who} is sharing a {measures.width}x{measures.height} {context.stream_type}.",
            _change_sentence(context),
            f"The picture is {measures.brightness_word} (mean luma {measures.mean_luma:.0f}/255)"
            f" with {measures.contrast_word} contrast; main colours: {colours}.",
            f"Layout: {measures.layout_word}, edge density {measures.edge_density:.3f};"
            f" the busiest area is the {measures.busiest_region}.",
        )
    )


class OfflineVisionProvider:
    """Describes frames without a model service: OCR of the visible text, layout and a region
    diff (:mod:`clank.watch.offline_notes`) when the OCR package is installed, else (or with
    ``ocr=False``) pixel measurements, deterministic. The work runs on a worker thread."""

    name = "offline"

    def __init__(self, *, ocr: bool = True, ocr_module: str | None = None) -> None:
        from clank.watch.ocr import OCR_MODULE
        from clank.watch.offline_notes import OfflineReader

        self._limiter = trio.CapacityLimiter(1)  # one analysis at a time is plenty for rare notes
        self._reader = OfflineReader(ocr_module=(ocr_module or OCR_MODULE) if ocr else None) if ocr else None

    async def describe(self, frame_jpeg: bytes, *, context: NoteContext) -> str:
        if self._reader is None:
            measures = await run_cpu(measure_jpeg, frame_jpeg, limiter=self._limiter)
            return describe_measures(measures, context)
        return await run_cpu(self._reader.describe, frame_jpeg, context, limiter=self._limiter)


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible chat completions.

SYSTEM_PROMPT: Final = (
    "You keep short running notes about a Discord screen share for an assistant who cannot see it. "
    "In two to four sentences say which application or page is shown, what the person appears to be "
    "doing, and any headline or clearly readable important text. If earlier notes are given, say what "
    "changed since them instead of repeating them. Plain text, no lists."
)
DEFAULT_MAX_TOKENS: Final = 300
_MAX_ERROR_DETAIL: Final = 200  # characters of an error body kept for the log


def user_prompt(context: NoteContext) -> str:
    """The text part of a provider request: who, why this note, the earlier notes (pure)."""
    lines = [
        f"{context.who} is sharing their {context.stream_type}.",
        f"Why this note: {context.trigger.replace('_', ' ')}"
        f" (share of screen changed {context.change_score:.2f}, recent activity {context.change_ema:.2f}).",
    ]
    if context.previous_notes:
        lines.append("Earlier notes, oldest first:")
        lines += [f"- {note}" for note in context.previous_notes]
    return "\n".join(lines)


def chat_request(model: str, frame_jpeg: bytes, context: NoteContext, *, max_tokens: int) -> dict[str, Any]:
    """The chat-completions request body for one frame (pure; the wire shape is tested)."""
    data_url = "data:image/jpeg;base64," + base64.b64encode(frame_jpeg).decode("ascii")
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": user_prompt(context)},
                    {"type": "image_url", "image_url": {"url": data_url, "detail": "low"}},
                ],
            },
        ],
    }


def parse_chat_response(body: object) -> str:
    """The text of the first choice; ``VisionError('bad_response')`` for anything else."""
    try:
        content = body["choices"][0]["message"]["content"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError) as exc:
        raise VisionError("bad_response", "no choices[0].message.content") from exc
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    if not isinstance(content, str) or not content.strip():
        raise VisionError("bad_response", "empty content")
    return content.strip()


def chat_completions_url(url: str) -> str:
    """Accept either the API base (``.../v1``) or the full ``.../chat/completions`` URL."""
    base = url.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


@attrs.define
class OpenAICompatibleVisionProvider:
    """Calls a chat-completions endpoint with the frame as an image. Use
    :func:`open_openai_vision_provider` so the HTTP client is closed with it."""

    client: httpx.AsyncClient = attrs.field(repr=False)
    url: str
    model: str
    api_key: str = attrs.field(default="", repr=False)
    timeout_s: float = 30.0
    max_tokens: int = DEFAULT_MAX_TOKENS
    name: str = "openai"

    def __attrs_post_init__(self) -> None:
        if not self.model:
            raise UsageError("the vision provider needs a model name")
        if self.timeout_s <= 0:
            raise UsageError(f"vision timeout must be positive, got {self.timeout_s}")
        register_secret(self.api_key)

    async def describe(self, frame_jpeg: bytes, *, context: NoteContext) -> str:
        body = chat_request(self.model, frame_jpeg, context, max_tokens=self.max_tokens)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            with trio.fail_after(self.timeout_s):
                response = await self.client.post(chat_completions_url(self.url), json=body, headers=headers)
        except trio.TooSlowError as exc:
            raise VisionError("timeout", f"no answer within {self.timeout_s} s") from exc
        except httpx.TimeoutException as exc:
            raise VisionError("timeout", type(exc).__name__) from exc
        except httpx.HTTPError as exc:  # connect refused, reset, protocol errors
            raise VisionError("connect", f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise VisionError(
                "http_status",
                f"HTTP {response.status_code}: {response.text[:_MAX_ERROR_DETAIL]}",
                status=response.status_code,
            )
        try:
            answer = response.json()
        except ValueError as exc:
            raise VisionError("bad_response", "body is not JSON") from exc
        return parse_chat_response(answer)


_CLIENT_CLOSE_S: Final = 2.0


@asynccontextmanager
async def open_openai_vision_provider(
    *,
    url: str,
    model: str,
    api_key: str = "",
    timeout_s: float = 30.0,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> AsyncIterator[OpenAICompatibleVisionProvider]:
    """An OpenAI-compatible provider with its own HTTP client, closed on exit."""
    register_secret(api_key)
    # httpx's own timeout is a backstop; the provider's fail_after is the deadline that counts.
    client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s + 1.0))
    try:
        yield OpenAICompatibleVisionProvider(
            client=client, url=url, model=model, api_key=api_key, timeout_s=timeout_s, max_tokens=max_tokens
        )
    finally:
        with trio.move_on_after(_CLIENT_CLOSE_S, shield=True):
            await client.aclose()


@asynccontextmanager
async def open_vision_provider(
    kind: ProviderKind = "offline",
    *,
    url: str = "",
    model: str = "",
    api_key: str = "",
    timeout_s: float = 30.0,
    environ: Mapping[str, str] | None = None,
) -> AsyncIterator[VisionProvider]:
    """The provider named by ``kind`` (``notes.provider`` in settings). ``anthropic`` takes its key
    from ``api_key`` or else ``ANTHROPIC_API_KEY`` in ``environ`` (default ``os.environ``)."""
    if kind == "anthropic":
        from clank.watch.anthropic_vision import open_anthropic_vision_provider

        env = os.environ if environ is None else environ
        async with open_anthropic_vision_provider(
            api_key=api_key or env.get("ANTHROPIC_API_KEY", ""), url=url, model=model, timeout_s=timeout_s
        ) as anthropic:
            yield anthropic
    elif kind == "offline":
        yield OfflineVisionProvider()
    elif kind == "openai":
        if not url or not model:
            raise UsageError("the openai vision provider needs notes.url and notes.model")
        async with open_openai_vision_provider(
            url=url, model=model, api_key=api_key, timeout_s=timeout_s
        ) as provider:
            yield provider
    else:
        raise UsageError(f"unknown vision provider {kind!r}")
