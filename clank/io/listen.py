"""Turn a failed bind of a local server (hypercorn inside a nursery) into one clear error."""

from __future__ import annotations

import errno
import os

from clank.errors import ListenFailed
from clank.io.groups import first_of

_REASONS = {errno.EADDRINUSE: "address already in use", errno.EACCES: "permission denied"}


def listen_failed(exc: BaseException, host: str, port: int, change: str) -> ListenFailed | None:
    """The :class:`ListenFailed` for ``exc`` (an ``OSError``, maybe inside groups), else None."""
    found = first_of(exc, OSError)
    if found is None:
        return None
    reason = _REASONS.get(found.errno or 0) or (os.strerror(found.errno) if found.errno else str(found))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ListenFailed(address, reason, change)
