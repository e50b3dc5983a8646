"""Exception groups at public boundaries (house-style rule 4).

An ``open_*`` context manager owns a nursery, so what leaves it is an exception group even when
one thing went wrong. Callers of our public boundaries get that one error back, unwrapped; when
several real errors happened, the group itself propagates (nothing is hidden).
"""

from __future__ import annotations

from typing import NoReturn

import trio


def raise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise the one real error of ``group`` (ours or the caller's), else the group itself.

    Leaves are compared by identity, because a run loop and a waiting caller may both carry the
    same stop error. Cancellations are the nursery's business and are ignored.
    """
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        elif not isinstance(exc, trio.Cancelled) and all(exc is not seen for seen in leaves):
            leaves.append(exc)
    if len(leaves) != 1:
        raise group
    single = leaves[0]
    context = single.__context__
    try:
        raise single
    finally:
        single.__context__ = context  # don't chain the group that contained it
        del single, context
