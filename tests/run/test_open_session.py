"""``clank.open_session``: the embedder's entry point, and the docs/api.md example that uses it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trio

import clank

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 60


def _docs_example() -> str:
    text = (ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    found = [b for b in blocks if "clank.open_session(" in b]
    assert found, "docs/api.md shows no clank.open_session example"
    return found[0]


def test_public_names_are_exported_lazily() -> None:
    assert set(clank.__all__) >= {"open_session", "load_settings", "ClankService", "ClankError"}
    from clank.control.service import ClankService
    from clank.runner import open_session

    assert clank.open_session is open_session
    assert clank.ClankService is ClankService


async def test_docs_example_runs_against_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    # The share-link listener's default port may be taken on a shared machine.
    monkeypatch.setenv("CLANK_LINK_PORT", "0")
    source = _docs_example()
    body, sep, _ = source.rpartition("trio.run(main)")
    assert sep, "the example ends with trio.run(main)"
    printed: list[str] = []
    namespace: dict[str, Any] = {"print": lambda *a: printed.append(" ".join(map(str, a)))}
    exec(compile(body, "docs/api.md", "exec"), namespace)
    with trio.fail_after(LIMIT):
        await namespace["main"]()
    assert printed[0].startswith("waiting_for_frame_context "), printed
    assert re.fullmatch(r"\d+x\d+ JPEG, \d+ bytes", printed[1]), printed
    assert "voice" in printed[2], printed


async def test_open_session_yields_the_service_in_voice() -> None:
    settings = clank.load_settings(environ={}, overrides={"link.port": 0})
    with trio.fail_after(LIMIT):
        async with clank.open_session(settings, scenario="empty") as service:
            assert isinstance(service, clank.ClankService)
            assert service.session.in_voice
            assert (await service.start_screen_watch()).reason == "nobody_sharing"


def test_every_lazy_name_is_in_all() -> None:
    for name in clank.__all__:
        assert getattr(clank, name) is not None
