"""Turn a failed bind of a local server (hypercorn inside a nursery) into one clear error."""

from __future__ import annotations

import errno
import os

from clank.errors import ListenFailed

_REASONS = {errno.EADDRINUSE: "address already in use", errno.EACCES: "permission denied"}


def _os_error(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _os_error(inner)
            if found is not None:
                return found
    return None


def listen_failed(exc: BaseException, host: str, port: int, change: str) -> ListenFailed | None:
    """The :class:`ListenFailed` for ``exc`` (an ``OSError``, maybe inside groups), else None."""
    found = _os_error(exc)
    if found is None:
        return None
    reason = _REASONS.get(found.errno or 0) or (os.strerror(found.errno) if found.errno else str(found))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ListenFailed(address, reason, change)
