"""The README and docs/ say what the code does (issue 14's "Docs" items), checked against the code:
no links out of the repository, the sandbox's JSON line and user list as ``clank sandbox`` prints
them, the client identity the README names, the exit codes docs/operations.md lists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import attrs
import trio

from clank import cli
from clank.config import ClientProperties
from clank.sandbox.app import open_sandbox

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_no_doc_links_outside_the_repository() -> None:
    for doc in DOCS:
        text = doc.read_text()
        assert "shared/reference" not in text, doc.name
        for target in re.findall(r"\]\(([^)#]+)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (doc.parent / target).resolve().exists(), f"{doc.name}: broken link {target}"


async def test_the_sandbox_json_line_in_docs_is_what_clank_sandbox_prints() -> None:
    text = (ROOT / "docs" / "sandbox.md").read_text()
    block = text.split("```json", 1)[1].split("```", 1)[0]
    documented = json.loads(block)
    with trio.fail_after(20):
        async with open_sandbox(scenario="empty") as sb:
            info = sb.info()
    assert sorted(documented) == sorted(info)
    assert [u["name"] for u in documented["users"]] == [u["name"] for u in info["users"]]
    # The separate-sandbox recipe (README and docs/sandbox.md) copies fields that exist.
    for doc in (ROOT / "README.md", ROOT / "docs" / "sandbox.md"):
        recipe = doc.read_text().split("CLANK_DISCORD_TOKEN=<token>", 1)[1].split("just run", 1)[0]
        for field in re.findall(r"<(\w+)>", "<token>" + recipe):
            assert field in info, f"{doc.name}: the recipe copies {field!r}, which the JSON line lacks"
        assert "CLANK_DISCORD_VOICE_URL_SCHEME=<voice_url_scheme>" in recipe, doc.name


def test_the_readme_names_the_client_identity_clank_sends() -> None:
    readme = (ROOT / "README.md").read_text()
    for key, value in attrs.asdict(ClientProperties()).items():
        if value:
            assert f'{key} = "{value}"' in readme or key == "system_locale", key
    assert "CLANK_LOG_LEVEL" in readme


def test_operations_md_lists_every_exit_code() -> None:
    table = (ROOT / "docs" / "operations.md").read_text().split("## Exit codes", 1)[1].split("##", 1)[0]
    codes = {int(c) for c in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    assert {code for _kind, code, _prefix in cli.EXIT_TABLE} | {0} <= codes
