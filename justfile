# clank tasks. Every recipe creates/updates the virtual environment (.venv) itself.

set shell := ["bash", "-euo", "pipefail", "-c"]

export UV_PYTHON_DOWNLOADS := "never"
venv := ".venv"
py := venv + "/bin/python"

# Run clank: the sandbox demo when no CLANK_DISCORD_TOKEN is set, real Discord otherwise.
run *ARGS: env
    #!/usr/bin/env bash
    # On a terminal, job control (set -m) makes clank the terminal's foreground job: Ctrl-C reaches
    # clank alone (it leaves voice and exits 0), and just, which never saw the signal, exits with
    # clank's own code instead of "error: interrupted by SIGINT" and 130.
    if [ -t 0 ]; then set -m; fi
    {{py}} -m clank run {{ARGS}}

# Lint, type check and run every test, one pytest-xdist worker per core (PYTEST_XDIST_AUTO_NUM_WORKERS=N
# to choose; `just test -n 0` runs in one process). Tests marked `serial` run while no other test runs.
test *ARGS: env lint typecheck
    {{py}} -m pytest -n auto --dist loadgroup {{ARGS}}

# Benchmarks (print figures next to their goals).
bench: env
    for b in bench/bench_*.py; do echo "== $b"; {{py}} "$b"; done

# ruff lint + format check.
lint: env
    {{venv}}/bin/ruff check clank tests bench examples
    {{venv}}/bin/ruff format --check clank tests bench examples

# mypy --strict on the package and examples/.
typecheck: env
    {{venv}}/bin/mypy

# Format the code.
fmt: env
    {{venv}}/bin/ruff format clank tests bench examples
    {{venv}}/bin/ruff check --fix clank tests bench examples

# Run the local Discord sandbox on its own.
sandbox *ARGS: env
    #!/usr/bin/env bash
    if [ -t 0 ]; then set -m; fi  # Ctrl-C reaches the sandbox alone (see `run`)
    {{py}} -m clank sandbox {{ARGS}}

# Create or update .venv from uv.lock. Without uv on PATH it installs uv into .tools/ (a private
# venv), which works where `pip install` is refused (PEP 668 "externally-managed-environment").
env:
    #!/usr/bin/env bash
    set -euo pipefail
    uv="$(command -v uv || true)"
    if [ -z "$uv" ]; then
        if [ ! -x .tools/bin/uv ]; then
            echo "uv not found: installing it into .tools/ (python3 -m venv; Debian: apt install python3-venv)" >&2
            python3 -m venv .tools
            .tools/bin/pip install --quiet --disable-pip-version-check uv
        fi
        uv=.tools/bin/uv
    fi
    "$uv" sync --quiet --frozen --extra dev --python "$(command -v python3)"
