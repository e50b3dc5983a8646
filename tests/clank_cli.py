"""Running the ``clank`` command line in a child process, for the tests that start one.

Import as ``from clank_cli import ...`` (``tests/`` is on ``sys.path`` through its conftest)::

    env = clank_env(CLANK_LOG_FORMAT="json", CLANK_GUILD_ID=guild)  # none of the host's CLANK_*
    code, stderr = await run_clank_once(["run", "--port", "0"], env)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

__all__ = ["ROOT", "clank_env", "run_clank_once"]

ROOT = Path(__file__).resolve().parents[1]
"""The checkout: child processes run there, so ``python -m clank`` imports this tree."""


def clank_env(**settings: str) -> dict[str, str]:
    """This process's environment without any ``CLANK_*`` variable (a developer's own settings
    must not reach the child), plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLANK_")}
    env.update(settings)
    return env


async def run_clank_once(args: Sequence[str], env: dict[str, str]) -> tuple[int, str]:
    """``python -m clank <args>`` until it exits by itself: its exit code and its stderr."""
    proc = await trio.run_process(
        [sys.executable, "-m", "clank", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        env=env,
    )
    return proc.returncode, proc.stderr.decode()
