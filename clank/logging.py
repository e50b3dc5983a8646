"""structlog setup: JSON lines or console, contextvars binding, secret redaction, recent events.

Secrets reach this module in two ways, and both are redacted before any renderer runs:

* by *value*: every token clank learns (user token, voice and stream tokens, share and API
  tokens) is registered with :func:`register_secret`; any occurrence inside any string of a
  log event is replaced with ``[redacted]``;
* by *key*: event keys that name secrets (``token``, ``secret_key``, ``authorization`` ...)
  are always replaced, whatever their value.

Stdlib logging (hypercorn, trio-websocket) is routed through the same processors, so a
library that logs a URL with a token in it is redacted too.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal, TextIO

import structlog

REDACTED = "[redacted]"
SECRET_KEYS = frozenset(
    {"token", "secret", "secret_key", "password", "authorization", "bot_token", "api_token", "share_token"}
)
_MIN_SECRET_LEN = 6


class SecretRegistry:
    """Values that must never be logged. Thread-safe: decode workers log too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()

    def add(self, value: str | bytes | None) -> None:
        if not value:
            return
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if len(text) < _MIN_SECRET_LEN:  # too short to redact without mangling ordinary text
            return
        with self._lock:
            self._values = self._values | {text}
            if text.startswith("Bot "):
                self._values = self._values | {text.removeprefix("Bot ")}

    def scrub(self, text: str) -> str:
        for secret in self._values:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def __len__(self) -> int:
        return len(self._values)


SECRETS = SecretRegistry()


def register_secret(value: str | bytes | None) -> None:
    """Make sure ``value`` never appears in a log line from now on."""
    SECRETS.add(value)


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return SECRETS.scrub(value)
    if isinstance(value, Mapping):
        return {k: (REDACTED if str(k).lower() in SECRET_KEYS else _scrub_value(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub_value(v) for v in value)
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, BaseException):
        return SECRETS.scrub(repr(value))
    return value


def redact(logger: object, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop secrets by key and by value."""
    for key in list(event):
        if key.lower() in SECRET_KEYS:
            event[key] = REDACTED
        else:
            event[key] = _scrub_value(event[key])
    return event


def _scrub_rendered(logger: object, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # exc_info is rendered into text by format_exc_info; scrub the text it produced.
    if "exception" in event and isinstance(event["exception"], str):
        event["exception"] = SECRETS.scrub(event["exception"])
    return event


class RecentEvents:
    """The last N log events (already redacted), for the dashboard. Bounded, thread-safe."""

    def __init__(self, size: int = 200) -> None:
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self._lock = threading.Lock()
        self._counter = 0

    def __call__(
        self, logger: object, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        snapshot = {
            k: v if isinstance(v, str | int | float | bool | None) else repr(v)
            for k, v in event.items()
            if not k.startswith("_")  # structlog's internals (_record, _from_structlog): not for people
        }
        with self._lock:
            self._counter += 1
            snapshot["n"] = self._counter
            self._events.append(snapshot)
        return event

    def since(self, n: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self._events if e["n"] > n]


RECENT = RecentEvents()

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
        structlog.processors.format_exc_info,
        _scrub_rendered,
        RECENT,
    ]


#: Console lines show at most this many characters of one value (statistics summaries run to
#: kilobytes); JSON logs keep every figure.
CONSOLE_VALUE_CHARS = 160
_KEEP_WHOLE = frozenset({"event", "exception", "stack", "exc_info"})


def _shorten_values(logger: object, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if key in _KEEP_WHOLE or key.startswith("_") or isinstance(value, bool | int | float | None):
            continue
        text = value if isinstance(value, str) else repr(value)
        if len(text) > CONSOLE_VALUE_CHARS:
            event[key] = text[: CONSOLE_VALUE_CHARS - 1] + "…"
    return event


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and stdlib logging (to ``stream``, default stderr).

    ``auto`` picks JSON lines when clank is not attached to a terminal — stdout is not a TTY
    (piped, redirected, run by a supervisor) — and the readable console renderer otherwise.
    """
    out = stream if stream is not None else sys.stderr
    interactive = out.isatty() if stream is not None else sys.stdout.isatty()
    use_json = fmt == "json" or (fmt == "auto" and not interactive)
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    shared = _shared_processors()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *(() if use_json else (_shorten_values,)),
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # Chatty libraries: keep their warnings, not their per-frame debug lines (nor hypercorn's
    # "Running on … (CTRL + C to quit)": our banner says where the API is).
    for name in ("trio-websocket", "hypercorn.access", "hypercorn.error", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def _library_default() -> None:
    """Embedded use (``clank.open_session`` without :func:`configure_logging`): structlog's own
    default prints every event on *stdout* — the host's. Unless the host configured structlog
    itself, hand clank's events to stdlib ``logging`` instead (one JSON string per record, under
    the ``clank.*`` loggers), so the host's logging setup decides where they go; with none, Python
    shows warnings and errors on stderr and nothing on stdout."""
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[*_shared_processors(), structlog.processors.JSONRenderer(sort_keys=False)],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


_library_default()


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


@contextmanager
def bound(**context: Any) -> Iterator[None]:
    """Bind context (guild, channel, role, user, stream key ...) for this task and its children.

    trio copies contextvars into child tasks at spawn time, so bind *before* starting them.
    """
    tokens = structlog.contextvars.bind_contextvars(**context)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
