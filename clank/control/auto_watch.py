"""``watch.auto_watch``: start watching the only sharer by itself, as an agent would.

A task of the session's nursery polls the sharers (cheap: registry reads) every
:data:`POLL_INTERVAL`. When somebody shares and nothing is being watched, it calls
``start_screen_watch()`` without a target — so the agent surface's own rules pick the stream
(the only sharer; several sharers answer ``ambiguous_target`` and nothing starts). A sharer is
auto-watched once per sharing session: stop the watch by hand and it stays stopped until that
user stops sharing and shares again.
"""

from __future__ import annotations

from typing import Final

import trio

from clank.control.service import ClankService
from clank.logging import get_logger

log = get_logger("clank.control.auto_watch")

POLL_INTERVAL: Final = 1.0


async def run_auto_watch(service: ClankService, *, poll_interval: float = POLL_INTERVAL) -> None:
    """Run until cancelled (the session's end)."""
    started_for: set[str] = set()
    last_reason: str | None = None
    while True:
        sharers = service.list_sharers()
        sharing = {s["userId"] for s in sharers if s["live"] or s["webcam"]}
        started_for &= sharing  # who stopped sharing may be auto-watched again next time
        watching = any(s["watching"] for s in sharers)
        if sharing - started_for and not watching:
            result = await service.start_screen_watch()
            if result.ok and result.target_user_id is not None:
                started_for.add(result.target_user_id)
                log.info("auto watch started", target_user_id=result.target_user_id, kind=result.kind)
                last_reason = None
            elif result.reason != last_reason:
                last_reason = result.reason
                log.info("auto watch waiting", reason=result.reason)
        await trio.sleep(poll_interval)
