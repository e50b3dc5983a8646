"""Shared test configuration."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def _cache_bytecode_outside_the_tree() -> None:
    """With ``PYTHONDONTWRITEBYTECODE=1`` every ``clank``/example subprocess a test starts would
    compile ~1,000 modules from source (seconds each on a 2-core machine, most of what such a
    test waits for). Keep the tree free of ``__pycache__`` as asked, but cache the bytecode under
    ``PYTHONPYCACHEPREFIX`` (default: a directory in the temp dir) for this process and its
    children. Python checks each cached file against its source's mtime and size."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return  # bytecode is cached the usual way (or already under a prefix)
    prefix = os.environ.get("PYTHONPYCACHEPREFIX") or str(
        Path(tempfile.gettempdir()) / f"clank-pycache-{os.getuid()}"
    )
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    sys.pycache_prefix = prefix
    sys.dont_write_bytecode = False


_cache_bytecode_outside_the_tree()

from hypothesis import HealthCheck, settings  # noqa: E402 - after the bytecode cache is set up

settings.register_profile(
    "clank",
    max_examples=int(os.environ.get("CLANK_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("clank")
