"""The scripts in examples/ run against the sandbox (so the docs' examples cannot rot), and embedded
clank writes nothing but the script's own output on stdout."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from clank_cli import clank_env

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 90

#: script, arguments, lines its stdout must contain (regexes), in order.
EXAMPLES = [
    (
        "watch_and_describe.py",
        ["--seconds", "40"],
        [
            r"watching Alice \(single_sharer\)",
            r"frame #\d+: \d+x\d+ JPEG, \d+ bytes",
            r"note \(first_frame\): ",
        ],
    ),
    (
        "status_report.py",
        ["--settle", "20"],
        [
            r"members: .*Alice",
            r"sharer Alice \(\d+\): Go Live",
            r"role voice: ready",
            r"privacy code( \d{5}){6}",
        ],
    ),
    # Listens for a fixed time: 5 s leaves a loaded machine room and costs no wall time here, as
    # watch_and_describe.py (waited for first, all three run at once) takes longer.
    ("speak_and_listen.py", ["--seconds", "5"], [r"spoke: 1 utterance", r"heard Alice: \d+ ms of audio"]),
]


@attrs.frozen
class _Run:
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, _Run]]:
    """Every example at once (each mostly waits on its sandbox's scenario, not on the CPU); each
    test then waits for its own one. Output goes to files: no pipe can fill while another runs."""
    env = clank_env()
    folder = tmp_path_factory.mktemp("examples")
    runs: dict[str, _Run] = {}
    with contextlib.ExitStack() as files:
        for script, args, _ in EXAMPLES:
            out, err = folder / f"{script}.out", folder / f"{script}.err"
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "examples" / script), *args],
                stdout=files.enter_context(out.open("wb")),
                stderr=files.enter_context(err.open("wb")),
                cwd=ROOT,
                env=env,
            )
            runs[script] = _Run(process, out, err)
    try:
        yield runs
    finally:
        for run in runs.values():
            if run.process.poll() is None:
                run.process.kill()
            run.process.wait()


@pytest.mark.parametrize(("script", "args", "expected"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_runs_against_the_sandbox(
    started: dict[str, _Run], script: str, args: list[str], expected: list[str]
) -> None:
    run = started[script]
    code = run.process.wait(timeout=LIMIT)
    proc = subprocess.CompletedProcess(
        run.process.args, code, run.stdout.read_bytes(), run.stderr.read_bytes()
    )
    stdout, stderr = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, f"stdout:\n{stdout}\nstderr:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr
    lines = stdout.splitlines()
    at = 0
    for pattern in expected:
        found = next((i for i in range(at, len(lines)) if re.search(pattern, lines[i])), None)
        assert found is not None, f"{pattern!r} not in the output after line {at}:\n{stdout}"
        at = found
    # Embedded clank logs through stdlib logging (the host decides); nothing of it on stdout.
    assert not [line for line in lines if line.startswith("{") or "[info" in line], stdout


def test_every_example_is_tested() -> None:
    assert {p.name for p in (ROOT / "examples").glob("*.py")} == {e[0] for e in EXAMPLES}
