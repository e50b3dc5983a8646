"""The scripts in examples/ run against the sandbox (so the docs' examples cannot rot), and embedded
clank writes nothing but the script's own output on stdout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
    ("speak_and_listen.py", ["--seconds", "2.5"], [r"spoke: 1 utterance", r"heard Alice: \d+ ms of audio"]),
]


@pytest.mark.parametrize(("script", "args", "expected"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_example_runs_against_the_sandbox(script: str, args: list[str], expected: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLANK_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=LIMIT,
        check=False,
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
