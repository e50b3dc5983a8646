"""Exception groups at boundaries (house-style rule 4): one helper, used by every boundary.

An ``open_*`` context manager owns a nursery, so what leaves it is an exception group even when
one thing went wrong. The rules, the same at every boundary (roles, the voice session, the
gateway and media legs, the listeners, ``clank.open_session``, the CLI):

* one real error → it is re-raised alone (:func:`raise_single`);
* several → the first one decides (a role's end reason, the CLI's exit code) and **every other
  one is reported** (:func:`report_others`: a warning log line each, and the role's status),
  never dropped;
* ``trio.Cancelled`` is the nursery's business and never counts; the same error object carried
  twice (a run loop and a waiting caller) counts once.

:func:`leaves` is the walk they share: the distinct real errors, depth-first in raise order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import trio

E = TypeVar("E", bound=BaseException)

__all__ = ["describe", "first_of", "leaves", "raise_single", "report_others"]


def leaves(exc: BaseException) -> list[BaseException]:
    """The distinct real errors in ``exc`` (itself when it is no group), depth-first, in order."""
    found: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if isinstance(current, BaseExceptionGroup):
            pending.extend(reversed(current.exceptions))
        elif not isinstance(current, trio.Cancelled) and all(current is not seen for seen in found):
            found.append(current)
    return found


def first_of(exc: BaseException, kind: type[E]) -> E | None:
    """The first leaf of ``exc`` that is a ``kind`` (None when there is none)."""
    return next((leaf for leaf in leaves(exc) if isinstance(leaf, kind)), None)


def describe(exc: BaseException) -> str:
    """``Type: message`` — how a reported error reads in a log line or a status."""
    return f"{type(exc).__name__}: {exc}"


def report_others(
    errors: Sequence[BaseException], first: BaseException, warn: Callable[..., Any], **context: Any
) -> tuple[str, ...]:
    """Log (``warn("also failed", ...)``) every error of ``errors`` except ``first``; their descriptions."""
    others = tuple(describe(e) for e in errors if e is not first)
    for index, text in enumerate(others, start=2):
        warn("also failed", error=text, of=len(others) + 1, index=index, first=describe(first), **context)
    return others


def raise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise the one real error of ``group`` (ours or the caller's), else the group itself.

    With several errors the group propagates whole, so the next boundary up (a role, the CLI)
    can report every one of them.
    """
    found = leaves(group)
    if len(found) != 1:
        raise group
    single = found[0]
    context = single.__context__
    try:
        raise single
    finally:
        single.__context__ = context  # don't chain the group that contained it
        del single, context
