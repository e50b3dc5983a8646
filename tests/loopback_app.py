"""Serve an ASGI app (a fake vision endpoint, a fake REST server ...) on 127.0.0.1 for a test.

Import as ``from loopback_app import serve_on_loopback`` (``tests/`` is on ``sys.path`` through
its conftest)::

    async with serve_on_loopback(app) as base_url:   # "http://127.0.0.1:<port>"
        ...
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve


@asynccontextmanager
async def serve_on_loopback(app: object) -> AsyncIterator[str]:
    """Run ``app`` under hypercorn on a free loopback port for the block; yields its base URL."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 0.2
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        # cast: hypercorn's ASGI typing and Starlette's are structurally equal, nominally distinct.
        binds = await nursery.start(partial(serve, cast(Any, app), config, shutdown_trigger=stop.wait))
        try:
            yield f"http://127.0.0.1:{int(binds[0].rpartition(':')[2])}"
        finally:
            stop.set()
