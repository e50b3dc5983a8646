"""House-style layering: imports point down, sans-io cores stay free of I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "clank"

LOWER = {"errors"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "wire": {"errors", "wire"},
    "crypto": {"errors", "wire", "crypto"},
    "codecs": {"errors", "wire", "codecs"},
    "protocol": {"errors", "wire", "crypto", "codecs", "protocol"},
    "media": {"errors", "wire", "codecs", "media"},
    "config": {"errors", "config"},
    "logging": {"errors", "logging"},
}
_BASE = {"errors", "wire", "crypto", "codecs", "protocol", "media", "config", "logging"}
ALLOWED["io"] = _BASE | {"io"}
ALLOWED["session"] = _BASE | {"io", "session"}
ALLOWED["watch"] = _BASE | {"io", "session", "watch"}
ALLOWED["control"] = _BASE | {"io", "session", "watch", "control"}
ALLOWED["sandbox"] = _BASE | {"io", "sandbox"}
ALLOWED["cli"] = _BASE | {"io", "session", "watch", "control", "sandbox", "cli", "runner"}
# The composition root: the only product module besides cli that may start the sandbox.
ALLOWED["runner"] = _BASE | {"io", "session", "watch", "control", "sandbox", "runner"}
# The package root re-exports the public names (imported lazily, see clank/__init__.py).
ALLOWED["__init__"] = {"runner", "config", "control", "errors"}
ALLOWED["__main__"] = {"cli"}

SANS_IO = {"wire", "crypto", "codecs", "protocol"}
FORBIDDEN_IN_SANS_IO = {"trio", "trio_websocket", "socket", "time", "structlog", "av", "asyncio", "threading"}


def _layer(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


MODULES = sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path) -> None:
    layer = _layer(path)
    assert layer in ALLOWED, f"unknown layer {layer!r}: add it to the layering table"
    for name, line in _imports(path):
        parts = name.split(".")
        if parts[0] == "clank" and len(parts) > 1:
            target = parts[1]
            assert target in ALLOWED[layer], f"{path.name}:{line}: {layer} must not import clank.{target}"
        if layer in SANS_IO:
            assert parts[0] not in FORBIDDEN_IN_SANS_IO, f"{path.name}:{line}: sans-io {layer} imports {name}"


def test_layering_table_catches_a_forbidden_edge(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import trio\nfrom clank.session import voice\n")
    names = [n for n, _ in _imports(bad)]
    assert "trio" in names and "clank.session" in names
    assert "session" not in ALLOWED["wire"]
