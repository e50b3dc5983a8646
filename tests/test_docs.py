"""The docs stay true to the code: modules, paths, names, config keys, env vars, tools, commands, recipes.

Rules (each test names the doc line to fix when it fails):

* every module under ``clank/`` is named in docs/architecture.md by its path (``io/udp.py`` or
  ``clank/io/udp.py``), except ``__init__.py``, ``__main__.py`` and private modules (``_*.py``);
* every repository path the docs mention (``clank/...``, ``tests/...``, ``bench/...``,
  ``examples/...``, ``conf/...``, ``docs/...``, ``.ci/...``, and package-relative ``io/udp.py``
  forms) exists;
* every dotted ``clank.x.y`` name the docs mention imports (a module, or an attribute of one);
* every config key in a docs/configuration.md table row exists, with the code's default, expected
  form and ``CLANK_<SECTION>_<KEY>`` name in its row, and every backticked
  ``section.key`` in any doc is a setting (``section.*`` and ``section.a`` / ``.b`` forms included);
* every ``CLANK_*`` variable the docs mention is one clank reads;
* every agent tool is named in docs/api.md and every name in its tool tables is a tool;
* every ``just <recipe>`` the README and docs mention is a recipe of the justfile;
* every ``clank <command> --flag`` the docs show is a command of ``clank`` with that flag;
* docs/operations.md's exit-code table is the CLI's ``EXIT_TABLE`` (plus 0);
* every ``bench/bench_*.py`` has a row in docs/performance.md's bench table;
* CamelCase names and ``snake_case(`` calls in code spans are defined somewhere in ``clank/``,
  ``tests/`` or ``bench/`` (or are one of the few other projects' names listed here).

The HTTP route table is checked against docs/api.md in tests/control/test_control_docs_routes.py.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from clank.cli import EXIT_TABLE
from clank.cli import main as clank_main
from clank.config import ENV_ALIASES, ENV_IGNORED, settings_table
from clank.control.tools import TOOLS_BY_NAME

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clank"
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
PACKAGES = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _lines(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    """(``doc:line``, match) for every match of ``pattern`` in every doc."""
    found = []
    for doc in DOCS:
        for number, line in enumerate(_text(doc).splitlines(), 1):
            found += [(f"{doc.relative_to(ROOT)}:{number}", m.group(1)) for m in pattern.finditer(line)]
    return found


def documented_modules() -> list[str]:
    """Package-relative paths of the modules architecture.md must name (``io/udp.py``)."""
    return sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if not path.name.startswith("_") and "__pycache__" not in path.parts
    )


def test_every_module_is_named_in_architecture() -> None:
    text = _text(ROOT / "docs" / "architecture.md")
    named = set(re.findall(r"(?<![\w/.])(?:clank/)?([\w/]+\.py)\b", text))
    missing = [m for m in documented_modules() if m not in named]
    assert not missing, f"docs/architecture.md (module map) does not name: {missing}"


# A path in a doc: rooted at a top-level folder, or package-relative (io/udp.py) after a non-path char.
_ROOTED = re.compile(r"(?<![\w/.-])((?:clank|tests|bench|examples|conf|docs|\.ci)/[\w/.*-]*[\w*])")
_RELATIVE = re.compile(rf"(?<![\w/.-])((?:{'|'.join(PACKAGES)})/[\w/]+\.py)\b")


def test_every_path_the_docs_mention_exists() -> None:
    missing = []
    for where, path in _lines(_ROOTED):
        exists = any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()
        if not exists:
            missing.append(f"{where}: {path}")
    for where, path in _lines(_RELATIVE):
        if not (PACKAGE / path).exists():
            missing.append(f"{where}: {path}")
    assert not missing, "docs name paths that do not exist:\n" + "\n".join(missing)


_DOTTED = re.compile(r"(?<![\w./])(clank(?:\.\w+)+)")


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


# `runner.SHUTDOWN_BUDGET`: a name in one of the top-level modules, written without ``clank.``.
_SHORT = re.compile(r"`((?:runner|cli|errors|config)\.[A-Za-z_]\w*(?:\.\w+)*)`")


def test_every_dotted_name_the_docs_mention_imports() -> None:
    short = [(where, f"clank.{name}") for where, name in _lines(_SHORT) if not name.endswith(".py")]
    names = _lines(_DOTTED) + short
    bad = [f"{where}: {name}" for where, name in names if not _resolves(name)]
    assert not bad, "docs name clank.* objects that do not exist:\n" + "\n".join(bad)


KEYS = {key for key, _default, _expected in settings_table()}
SECTIONS = sorted({key.split(".", 1)[0] for key in KEYS})


def test_every_key_in_the_configuration_table_exists() -> None:
    rows = re.findall(r"^\| `([\w.]+)` \|", _text(ROOT / "docs" / "configuration.md"), re.MULTILINE)
    assert rows, "docs/configuration.md has no key table"
    unknown = [key for key in rows if key not in KEYS]
    assert not unknown, f"docs/configuration.md documents keys that are not settings: {unknown}"


_KEY = re.compile(rf"`((?:{'|'.join(SECTIONS)})\.[a-z0-9_.*]+)`")


def test_every_config_key_the_docs_mention_exists() -> None:
    bad = []
    for where, key in _lines(_KEY):
        if key.endswith(".*"):
            ok = any(k.startswith(key[:-1]) for k in KEYS)
        else:
            ok = key in KEYS or any(k.startswith(key + ".") for k in KEYS)
        if not ok and not key.endswith(".md"):
            bad.append(f"{where}: {key}")
    assert not bad, "docs name config keys that do not exist:\n" + "\n".join(bad)


ENV_NAMES = (
    set(ENV_ALIASES)
    | set(ENV_IGNORED)
    | {"CLANK_" + key.replace(".", "_").upper() for key in KEYS}
    | {"CLANK_"}  # the prefix itself, in prose
)


def test_every_env_var_the_docs_mention_exists() -> None:
    pattern = re.compile(r"(?<![\w<])(CLANK_[A-Z0-9_]*)(?![<\w])")
    bad = [f"{where}: {name}" for where, name in _lines(pattern) if name not in ENV_NAMES]
    assert not bad, "docs name CLANK_* variables clank does not read:\n" + "\n".join(bad)


def _tool_table_names(text: str) -> list[str]:
    """First-column names of the ``| tool | ...`` tables (``a`` / ``b`` cells split)."""
    names: list[str] = []
    in_table = False
    for line in text.splitlines():
        if line.startswith("| tool |"):
            in_table = True
        elif in_table and line.startswith("|"):
            names += re.findall(r"`(\w+)`", line.split("|")[1])
        else:
            in_table = False
    return names


def test_tool_tables_in_api_md_match_the_tool_table() -> None:
    text = _text(ROOT / "docs" / "api.md")
    listed = _tool_table_names(text)
    assert listed, "docs/api.md has no tool table"
    unknown = [name for name in listed if name not in TOOLS_BY_NAME]
    assert not unknown, f"docs/api.md lists tools that do not exist: {unknown}"
    named = set(re.findall(r"`(\w+)", text))
    undocumented = [name for name in TOOLS_BY_NAME if name not in named]
    assert not undocumented, f"docs/api.md does not name these tools: {undocumented}"


def test_mcp_tool_list_in_docs_is_the_tool_table() -> None:
    # "Tools (exactly `clank tools`): ..." in docs/api.md's MCP section lists every tool.
    text = _text(ROOT / "docs" / "api.md")
    match = re.search(r"^Tools \(exactly `clank tools`\):(.*?)(?:\n\n)", text, re.MULTILINE | re.DOTALL)
    assert match, "docs/api.md's MCP section has no 'Tools (exactly `clank tools`):' list"
    listed = re.findall(r"`(\w+)`", match.group(1))
    assert listed == list(TOOLS_BY_NAME), "docs/api.md's MCP tool list differs from clank/control/tools.py"


def _recipes() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*)(?: [^:]*)?:(?!=)", _text(ROOT / "justfile"), re.MULTILINE))


def test_just_recipes_the_docs_name_exist() -> None:
    recipes = _recipes()
    assert {"run", "test"} <= recipes
    bad = [f"{w}: just {r}" for w, r in _lines(re.compile(r"`just ([a-z][\w-]*)")) if r not in recipes]
    assert not bad, "docs name just recipes the justfile does not have:\n" + "\n".join(bad)


@pytest.mark.parametrize("command", ["just run", "just test"])
def test_readme_shows_the_two_commands(command: str) -> None:
    assert re.search(rf"^{command}\b", _text(ROOT / "README.md"), re.MULTILINE), command


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        clank_main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


# Log events the docs quote (`clank stopped`), not commands.
_LOG_EVENTS = frozenset({"stopped", "running"})


def test_clank_commands_and_flags_the_docs_show_exist(capsys: pytest.CaptureFixture[str]) -> None:
    top = _help(capsys)
    commands = set(re.findall(r"^    (\w+) ", top, re.MULTILINE))  # the COMMAND list of --help
    assert {"run", "sandbox", "mcp", "config", "tools"} <= commands, top
    flags = {command: set(re.findall(r"(--[\w-]+)", _help(capsys, command))) for command in commands}
    bad = []
    for where, shown in _lines(re.compile(r"`clank ([a-z][^`]*)`")):
        command, *rest = shown.split()
        if command in _LOG_EVENTS:
            continue
        if command not in commands:
            bad.append(f"{where}: clank {command} (commands: {sorted(commands)})")
            continue
        bad += [
            f"{where}: clank {command} {f}" for f in rest if f.startswith("--") and f not in flags[command]
        ]
    assert not bad, "docs show clank commands or flags that do not exist:\n" + "\n".join(bad)


def test_exit_code_table_is_the_cli_table() -> None:
    text = _text(ROOT / "docs" / "operations.md")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}
    assert documented == {0} | {code for _kind, code, _prefix in EXIT_TABLE}, documented


# Names the docs quote from other projects (davey, discord.py, MLS, browsers, the stdlib, PyAV, systemd).
EXTERNAL_NAMES = frozenset(
    {
        "DaveSession",
        "DiscordWebSocket",
        "EventSource",
        "LimitNICE",  # systemd unit settings
        "LimitRTPRIO",
        "MissingProposal",
        "NamedTuple",
        "OpenAI",
        "SignWithLabel",
        "SimpleQueue",
        "UnencryptedWhenPassthroughDisabled",
        "VideoReformatter",
        "set_passthrough_mode",
    }
)


def _defined_names() -> set[str]:
    paths = [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").glob("*.py")]
    source = "\n".join(path.read_text(encoding="utf-8") for path in paths)
    return (
        set(re.findall(r"^\s*class (\w+)", source, re.MULTILINE))
        | set(re.findall(r"^\s*(?:async )?def (\w+)", source, re.MULTILINE))
        | set(re.findall(r"^\s*(\w+)\s*(?::[^=\n]*)?=", source, re.MULTILINE))
    )


def test_class_and_function_names_the_docs_quote_exist() -> None:
    # In `code` spans: CamelCase names (classes, values) and snake_case calls (`open_video_pipeline(`).
    camel = re.compile(r"(?<![\w.])([A-Z][a-z]+(?:[A-Z][a-z0-9]*)+)\b")
    call = re.compile(r"(?<!\w)([a-z_][a-z0-9_]*_[a-z0-9_]+)\(")
    defined = _defined_names() | EXTERNAL_NAMES
    bad = []
    for where, span in _lines(re.compile(r"`([^`]+)`")):
        names = camel.findall(span) + call.findall(span)
        bad += [f"{where}: {name}" for name in names if name not in defined]
    assert not bad, "docs quote names defined nowhere (renamed or gone?):\n" + "\n".join(bad)


def test_architecture_names_the_layering_rules() -> None:
    from test_layering import ALLOWED, FORBIDDEN_IN_SANS_IO, SANS_IO  # the table the layering test enforces

    text = _text(ROOT / "docs" / "architecture.md")
    sentence = text.split("Sans-io packages (", 1)[1].split(".", 1)[0]
    assert all(f"`{name}`" in sentence for name in SANS_IO | FORBIDDEN_IN_SANS_IO), sentence
    table = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers = {layer for layer in ALLOWED if not layer.startswith("__")}
    missing = [
        layer for layer in layers if f"`clank/{layer}/`" not in table and f"`clank/{layer}.py`" not in table
    ]
    assert not missing, f"docs/architecture.md's layer table does not name: {missing}"


def test_every_bench_is_in_the_performance_table() -> None:
    text = _text(ROOT / "docs" / "performance.md")
    rows = set(re.findall(r"^\| `(bench_\w+\.py)` \|", text, re.MULTILINE))
    benches = {path.name for path in (ROOT / "bench").glob("bench_*.py")}
    assert benches <= rows, f"docs/performance.md's bench table lacks: {sorted(benches - rows)}"


def test_every_env_alias_is_in_configuration_md() -> None:
    text = _text(ROOT / "docs" / "configuration.md")
    aliases = text.split("plus short aliases", 1)[1].split(";", 1)[0]  # the list in "three layers"
    missing = [name for name in sorted(ENV_ALIASES) if f"`{name}`" not in aliases]
    assert not missing, f"docs/configuration.md does not name these env aliases: {missing}"


def _shown(value: object) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def test_configuration_table_shows_each_default_expected_form_and_env_name() -> None:
    text = _text(ROOT / "docs" / "configuration.md")
    rows = {
        m.group(1): (m.group(2), m.group(3), m.group(4))
        for m in re.finditer(r"^\| `([\w.]+)` \| `(.*?)` \| (.*?) \| (.*?) \|$", text, re.MULTILINE)
    }
    bad = []
    for key, default, expected in settings_table():
        shown, form, env = rows.get(key, ("", "", ""))
        if (
            shown != _shown(default)
            or form != expected
            or f"`CLANK_{key.replace('.', '_').upper()}`" not in env
        ):
            bad.append(
                f"{key}: docs say {shown!r} / {form!r} / {env!r}; code: {_shown(default)!r} / {expected!r}"
            )
    assert not bad, "docs/configuration.md's table differs from clank/config.py:\n" + "\n".join(bad)
