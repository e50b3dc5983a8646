"""Names for user ids the gateway never named: ``GET /users/{id}`` (cached, bounded, rate-limit aware).

A user session's READY carries only some members; voice states, speaking users and stream keys
name people by id alone. :class:`UserNames` looks such ids up through Discord's REST API so the
tool results and the status show names, not bare ids::

    async with open_user_names(api_url, token) as names:   # one lookup task in its own nursery
        names.request(user_id)        # never blocks; queued once (bounded, overflow counted)
        names.cached(user_id)         # the label once known (LRU of CACHE_SIZE), else None
        await names.wait_resolved(ids)  # callers that must not show ids; bound it with move_on_after

Discord's answers: 200 a user object (``global_name`` or ``username`` becomes the label), 404
Unknown User (remembered as unknown for ``NEGATIVE_TTL`` seconds), 429 with ``retry_after``
seconds in the body (or ``Retry-After``): every lookup waits that long, then the same id is tried
again (at most ``MAX_ATTEMPTS`` times). Network errors skip the id; a later request retries it.
"""

from __future__ import annotations

import collections
import math
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import httpx
import trio

from clank.logging import get_logger

__all__ = [
    "CACHE_SIZE",
    "UserNames",
    "UserNamesStatistics",
    "label_of",
    "open_user_names",
]

log = get_logger("clank.io.user_names")

CACHE_SIZE: Final = 2048
"""Resolved labels kept (least recently used go first)."""
QUEUE_SIZE: Final = 256
"""Ids waiting for a lookup; beyond it new requests are dropped (counted) until there is room."""
NEGATIVE_TTL: Final = 600.0
"""Seconds an Unknown User (404) is not asked again."""
MAX_ATTEMPTS: Final = 3
"""Lookups of one id that may end in 429 before it is given up for now."""
MAX_RETRY_AFTER: Final = 60.0
"""A longer ``retry_after`` is capped (a bad header must not stall naming for hours)."""
REQUEST_TIMEOUT: Final = 10.0


def label_of(user: object) -> str | None:
    """The name Discord clients show for a user object (``global_name``, else ``username``)."""
    if not isinstance(user, dict):
        return None
    for key in ("global_name", "username"):
        value = user.get(key)
        if isinstance(value, str) and value:
            return value
    return None


@attrs.frozen
class UserNamesStatistics:
    requested: int
    resolved: int
    unknown: int
    rate_limited: int
    failed: int
    dropped: int
    cached: int


class UserNames:
    """See the module docstring. Create with :func:`open_user_names`."""

    def __init__(self, api_url: str, token: str, client: httpx.AsyncClient) -> None:
        self._base = api_url.rstrip("/")
        self._token = token
        self._client = client
        self._cache: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._unknown_until: dict[str, float] = {}
        self._pending: set[str] = set()
        self._send, self._receive = trio.open_memory_channel[str](QUEUE_SIZE)
        self._blocked_until = -math.inf
        self._changed = trio.Event()
        self._requested = self._resolved = self._unknown = 0
        self._rate_limited = self._failed = self._dropped = 0

    # ------------------------------------------------------------------ queries

    def cached(self, user_id: str) -> str | None:
        label = self._cache.get(user_id)
        if label is not None:
            self._cache.move_to_end(user_id)
        return label

    def statistics(self) -> UserNamesStatistics:
        return UserNamesStatistics(
            requested=self._requested,
            resolved=self._resolved,
            unknown=self._unknown,
            rate_limited=self._rate_limited,
            failed=self._failed,
            dropped=self._dropped,
            cached=len(self._cache),
        )

    # ------------------------------------------------------------------ requests

    def learn(self, user_id: str, label: str) -> None:
        """A name the gateway gave us: no lookup needed."""
        self._remember(user_id, label)

    def request(self, user_id: str) -> None:
        """Look ``user_id`` up unless it is known, unknown (404, recently) or already queued."""
        if not user_id.isdigit() or user_id in self._cache or user_id in self._pending:
            return
        until = self._unknown_until.get(user_id)
        if until is not None and trio.current_time() < until:
            return
        try:
            self._send.send_nowait(user_id)
        except trio.WouldBlock:
            self._dropped += 1
            return
        self._pending.add(user_id)
        self._requested += 1

    async def wait_resolved(self, user_ids: Iterable[str]) -> None:
        """Until none of ``user_ids`` is queued or being looked up (bound it with ``move_on_after``)."""
        wanted = set(user_ids)
        for user_id in wanted:
            self.request(user_id)
        while wanted & self._pending:
            await self._changed.wait()

    # ------------------------------------------------------------------ the lookup task

    async def run(self) -> None:
        async for user_id in self._receive:
            try:
                await self._resolve(user_id)
            finally:
                self._pending.discard(user_id)
                self._changed.set()
                self._changed = trio.Event()

    async def _resolve(self, user_id: str) -> None:
        for _attempt in range(MAX_ATTEMPTS):
            await trio.sleep_until(max(self._blocked_until, trio.current_time()))
            try:
                response = await self._client.get(
                    f"{self._base}/v10/users/{user_id}", headers={"Authorization": self._token}
                )
            except httpx.HTTPError as exc:
                self._failed += 1
                log.info("user lookup failed", user_id=user_id, error=type(exc).__name__)
                return
            if response.status_code == 429:
                self._rate_limited += 1
                wait = min(_retry_after(response), MAX_RETRY_AFTER)
                self._blocked_until = trio.current_time() + wait
                log.info("user lookup rate limited", user_id=user_id, retry_after=wait)
                continue
            if response.status_code == 404:
                self._unknown += 1
                self._unknown_until[user_id] = trio.current_time() + NEGATIVE_TTL
                return
            label = label_of(_json(response)) if response.status_code == 200 else None
            if label is None:
                self._failed += 1
                log.info("user lookup unusable", user_id=user_id, status=response.status_code)
                return
            self._resolved += 1
            self._remember(user_id, label)
            return
        self._failed += 1  # still rate limited after MAX_ATTEMPTS: a later request retries

    def _remember(self, user_id: str, label: str) -> None:
        self._cache[user_id] = label
        self._cache.move_to_end(user_id)
        self._unknown_until.pop(user_id, None)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _retry_after(response: httpx.Response) -> float:
    """Seconds to wait after a 429: the body's ``retry_after`` (float), else the header, else 1."""
    body = _json(response)
    value = body.get("retry_after") if isinstance(body, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    try:
        return max(0.0, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


@asynccontextmanager
async def open_user_names(api_url: str, token: str) -> AsyncIterator[UserNames]:
    """Run the lookup task for the duration of the block."""
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT) as client, trio.open_nursery() as nursery:
        names = UserNames(api_url, token, client)
        nursery.start_soon(names.run)
        try:
            yield names
        finally:
            nursery.cancel_scope.cancel()
