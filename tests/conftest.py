"""Shared test configuration."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any


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

import pytest  # noqa: E402 - after the bytecode cache is set up
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "clank",
    max_examples=int(os.environ.get("CLANK_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("clank")


# --- serial tests under pytest-xdist ------------------------------------------------------------
# ``just test`` runs the suite on every core (pytest-xdist). A few end-to-end tests over real
# sockets keep real-clock margins (their timing policy is decided on a fake clock elsewhere): they
# carry ``@pytest.mark.serial`` and run while no other test runs, in the same pytest run (so
# ``-k``/``-m``/paths and "no tests ran" mean what they always did). Two flock(2) locks in the temp
# dir, named by the run's id: every test holds ``run`` shared; a serial one holds ``gate`` (so no
# new test starts: a waiting serial test cannot be starved) and then ``run`` exclusively.
_XDIST_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
_RUN_IDS: set[str] = set()


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with path.open("a") as file:
        fcntl.flock(file, mode)  # blocks; released when the file closes
        yield


@contextlib.contextmanager
def _turn(serial: bool) -> Iterator[None]:
    if _XDIST_RUN is None:  # one process: nothing else runs anyway
        yield
        return
    base = _lock_base(_XDIST_RUN)
    gate, run = base.with_suffix(".gate"), base.with_suffix(".run")
    if serial:
        with _flock(gate, fcntl.LOCK_EX), _flock(run, fcntl.LOCK_EX):
            yield
        return
    with contextlib.ExitStack() as stack:
        with _flock(gate, fcntl.LOCK_EX):  # a serial test waiting holds it: wait behind it
            stack.enter_context(_flock(run, fcntl.LOCK_SH))
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    with _turn(item.get_closest_marker("serial") is not None):
        return (yield)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A module whose tests share a module-scoped fixture (a sandbox process, started examples, a
    DAVE pair) keeps them on one xdist worker (``--dist loadgroup``): it is set up once, as in a
    single process, and its tests see it in the order they were written."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = [] if info is None else [d for ds in info.name2fixturedefs.values() for d in ds]
        if any(d.scope == "module" for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


def _lock_base(run_id: str) -> Path:
    return Path(tempfile.gettempdir()) / f"clank-pytest-{run_id}"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """(The xdist controller.) Remember the run's id to remove its lock files at the end."""
    _RUN_IDS.add(node.workerinput["testrunuid"])


def pytest_sessionfinish(session: pytest.Session) -> None:
    for run_id in _RUN_IDS:
        for suffix in (".gate", ".run"):
            _lock_base(run_id).with_suffix(suffix).unlink(missing_ok=True)
