"""The ``anthropic`` vision provider: Anthropic's Messages API with the frame as a base64 image block.

    POST {url}/v1/messages          x-api-key, anthropic-version: 2023-06-01
    {"model", "max_tokens", "system", "stream": false,
     "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64",
                   "media_type": "image/jpeg", "data": ...}}, {"type": "text", "text": ...}]}]}
    200 -> {"type": "message", "content": [{"type": "text", "text": ...}, ...], "stop_reason", ...}
    4xx/5xx -> {"type": "error", "error": {"type": "rate_limit_error", "message": ...}}

httpx on trio (the official SDK would pull in its own client stack for one POST). Every failure
becomes one :class:`~clank.errors.VisionError`, translated here:

==================  =========================================================================
reason              when
==================  =========================================================================
``auth``            401/403 (``authentication_error``, ``permission_error``); never retried
``bad_request``     400/404/413 (``invalid_request_error``, ``not_found_error``, ...)
``rate_limited``    429 after the retries
``overloaded``      529 after the retries
``http_status``     another status (500/502/503/504 after the retries)
``timeout``         no answer within ``timeout_s`` (per attempt)
``connect``         refused, reset, TLS or protocol errors
``bad_response``    200 without a text block, or a body that is not JSON
==================  =========================================================================

Retries (:class:`RetryPolicy`, :func:`retry_delay` is pure): 429 and 5xx are retried up to
``attempts`` in all, waiting ``retry-after`` when the answer carries it (seconds or an HTTP date,
capped at ``max_retry_after_s``; a longer wait gives up at once) and otherwise ``base_delay_s``
doubled per attempt up to ``max_delay_s``. The key is registered with the log redaction.
"""

from __future__ import annotations

import base64
import email.utils
import math
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import httpx
import trio

from clank.errors import UsageError, VisionError
from clank.logging import get_logger, register_secret
from clank.watch.vision import DEFAULT_MAX_TOKENS, SYSTEM_PROMPT, NoteContext, user_prompt

log = get_logger("clank.watch.anthropic")

ANTHROPIC_URL: Final = "https://api.anthropic.com"
ANTHROPIC_VERSION: Final = "2023-06-01"
DEFAULT_ANTHROPIC_MODEL: Final = "claude-haiku-4-5"  # the seed's stream-watch note model
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504, 529})
_MAX_ERROR_DETAIL: Final = 200
_CLIENT_CLOSE_S: Final = 2.0


@attrs.frozen
class RetryPolicy:
    attempts: int = 3  # in all, the first included
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_retry_after_s: float = 30.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``retry-after`` header (delta-seconds or HTTP date); None if absent
    or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def retry_delay(policy: RetryPolicy, attempt: int, retry_after: float | None) -> float | None:
    """How long to wait before attempt ``attempt + 1`` (``attempt`` counts from 1), or None to
    give up. Pure."""
    if attempt >= policy.attempts:
        return None
    if retry_after is not None:
        return None if retry_after > policy.max_retry_after_s else retry_after
    return float(min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1)))


def messages_url(url: str) -> str:
    """Accept the API root, ``.../v1`` or the full ``.../v1/messages`` URL."""
    base = (url or ANTHROPIC_URL).rstrip("/")
    if base.endswith("/messages"):
        return base
    return base + "/messages" if base.endswith("/v1") else base + "/v1/messages"


def messages_request(
    model: str, frame_jpeg: bytes, context: NoteContext, *, max_tokens: int
) -> dict[str, Any]:
    """The Messages API request body for one frame (pure; the wire shape is tested)."""
    return {
        "model": model,
        "max_tokens": max_tokens,
        "system": SYSTEM_PROMPT,
        "stream": False,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": "image/jpeg",
                            "data": base64.b64encode(frame_jpeg).decode("ascii"),
                        },
                    },
                    {"type": "text", "text": user_prompt(context)},
                ],
            }
        ],
    }


def parse_messages_response(body: object) -> str:
    """The text blocks of a message, joined; ``VisionError('bad_response')`` otherwise."""
    content = body.get("content") if isinstance(body, Mapping) else None
    if not isinstance(content, list):
        raise VisionError("bad_response", "no content list in the message")
    text = "".join(
        str(block.get("text", ""))
        for block in content
        if isinstance(block, Mapping) and block.get("type") == "text"
    ).strip()
    if not text:
        raise VisionError("bad_response", "no text block in the message")
    return text


def error_reason(status: int) -> str:
    """The VisionError reason for a non-200 status."""
    if status in (401, 403):
        return "auth"
    if status in (400, 404, 413, 422):
        return "bad_request"
    if status == 429:
        return "rate_limited"
    if status == 529:
        return "overloaded"
    return "http_status"


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body["error"]
        detail = f"{error.get('type', '?')}: {error.get('message', '')}"
    except (ValueError, KeyError, TypeError, AttributeError):
        detail = response.text
    return f"HTTP {response.status_code}: {detail[:_MAX_ERROR_DETAIL]}"


@attrs.define
class AnthropicVisionProvider:
    """Describes a frame with a Claude model. Use :func:`open_anthropic_vision_provider` so the
    HTTP client is closed with it."""

    client: httpx.AsyncClient = attrs.field(repr=False)
    api_key: str = attrs.field(repr=False)
    url: str = ANTHROPIC_URL
    model: str = DEFAULT_ANTHROPIC_MODEL
    timeout_s: float = 30.0
    max_tokens: int = DEFAULT_MAX_TOKENS
    retry: RetryPolicy = RetryPolicy()
    name: str = "anthropic"

    def __attrs_post_init__(self) -> None:
        if not self.api_key:
            raise UsageError(
                "the anthropic vision provider needs an API key (CLANK_NOTES_API_KEY or ANTHROPIC_API_KEY)"
            )
        if not self.model:
            raise UsageError("the anthropic vision provider needs a model name")
        if self.timeout_s <= 0:
            raise UsageError(f"vision timeout must be positive, got {self.timeout_s}")
        register_secret(self.api_key)

    async def describe(self, frame_jpeg: bytes, *, context: NoteContext) -> str:
        body = messages_request(self.model, frame_jpeg, context, max_tokens=self.max_tokens)
        headers = {
            "x-api-key": self.api_key,
            "anthropic-version": ANTHROPIC_VERSION,
            "content-type": "application/json",
        }
        url = messages_url(self.url)
        attempt = 0
        while True:
            attempt += 1
            response = await self._post(url, body, headers)
            if response.status_code == 200:
                try:
                    answer = response.json()
                except ValueError as exc:
                    raise VisionError("bad_response", "body is not JSON") from exc
                return parse_messages_response(answer)
            status = response.status_code
            detail = _error_detail(response)
            delay = None
            if status in RETRY_STATUSES:
                delay = retry_delay(
                    self.retry, attempt, parse_retry_after(response.headers.get("retry-after"))
                )
            if delay is None:
                raise VisionError(error_reason(status), detail, status=status)
            log.info(
                "vision retry", provider=self.name, status=status, attempt=attempt, delay_s=round(delay, 3)
            )
            await trio.sleep(delay)

    async def _post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        try:
            with trio.fail_after(self.timeout_s):
                return await self.client.post(url, json=body, headers=headers)
        except trio.TooSlowError as exc:
            raise VisionError("timeout", f"no answer within {self.timeout_s} s") from exc
        except httpx.TimeoutException as exc:
            raise VisionError("timeout", type(exc).__name__) from exc
        except httpx.HTTPError as exc:
            raise VisionError("connect", f"{type(exc).__name__}: {exc}") from exc


@asynccontextmanager
async def open_anthropic_vision_provider(
    *,
    api_key: str,
    url: str = "",
    model: str = "",
    timeout_s: float = 30.0,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    retry: RetryPolicy | None = None,
) -> AsyncIterator[AnthropicVisionProvider]:
    """An Anthropic provider with its own HTTP client, closed on exit."""
    register_secret(api_key)
    client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s + 1.0))  # backstop; fail_after rules
    try:
        yield AnthropicVisionProvider(
            client=client,
            api_key=api_key,
            url=url or ANTHROPIC_URL,
            model=model or DEFAULT_ANTHROPIC_MODEL,
            timeout_s=timeout_s,
            max_tokens=max_tokens,
            retry=retry or RetryPolicy(),
        )
    finally:
        with trio.move_on_after(_CLIENT_CLOSE_S, shield=True):
            await client.aclose()
