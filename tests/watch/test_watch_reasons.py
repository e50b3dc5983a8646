"""Every reason a watch can end with is a documented, stable code (the table is the contract)."""

from __future__ import annotations

import ast
import inspect

from clank.session import stream_leg, stream_watch, watch_handle, webcam_watch
from clank.session.watch_handle import WATCH_FAILURES


def _raised_reasons() -> set[str]:
    # The watch code: the stream role, the webcam role, what they share and the stream-leg flow.
    modules = (stream_watch, webcam_watch, watch_handle, stream_leg)
    tree = ast.parse("\n".join(inspect.getsource(module) for module in modules))
    reasons: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "WatchError"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            reasons.add(node.args[0].value)
    return reasons


def test_every_raised_reason_is_in_the_table() -> None:
    raised = _raised_reasons()
    assert {"no_credentials", "stream_deleted", "target_left", "not_in_voice", "transport"} <= raised
    assert raised <= set(WATCH_FAILURES), raised - set(WATCH_FAILURES)


def test_every_table_entry_has_a_meaning() -> None:
    for reason, meaning in WATCH_FAILURES.items():
        assert reason.islower() and " " not in reason and meaning
