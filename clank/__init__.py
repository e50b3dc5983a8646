"""clank: eyes and a voice in Discord for agents and people.

The public names, for an embedder::

    import clank

    async with clank.open_session(clank.load_settings()) as service:   # a ClankService
        result = await service.start_screen_watch()

They are imported on first use, so ``import clank.wire.rtp`` (a sans-io module) does not pull in
trio and the rest of the service.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from clank.config import Settings, load_settings
    from clank.control.model import LookResult, StopResult, WatchResult
    from clank.control.service import ClankService
    from clank.errors import ClankError, ConfigError, TransportError, WatchError
    from clank.runner import open_session

#: public name -> the module that defines it
_PUBLIC: dict[str, str] = {
    "open_session": "clank.runner",
    "load_settings": "clank.config",
    "Settings": "clank.config",
    "ClankService": "clank.control.service",
    "WatchResult": "clank.control.model",
    "StopResult": "clank.control.model",
    "LookResult": "clank.control.model",
    "ClankError": "clank.errors",
    "ConfigError": "clank.errors",
    "TransportError": "clank.errors",
    "WatchError": "clank.errors",
}

__all__ = [
    "ClankError",
    "ClankService",
    "ConfigError",
    "LookResult",
    "Settings",
    "StopResult",
    "TransportError",
    "WatchError",
    "WatchResult",
    "__version__",
    "load_settings",
    "open_session",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'clank' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
