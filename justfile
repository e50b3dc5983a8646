# clank tasks. Every recipe creates/updates the virtual environment (.venv) itself.

set shell := ["bash", "-euo", "pipefail", "-c"]

export UV_PYTHON_DOWNLOADS := "never"
venv := ".venv"
py := venv + "/bin/python"

# Run clank: the sandbox demo when no CLANK_DISCORD_TOKEN is set, real Discord otherwise.
run *ARGS: env
    {{py}} -m clank run {{ARGS}}

# Lint, type check and run every test.
test *ARGS: env lint typecheck
    {{py}} -m pytest {{ARGS}}

# Benchmarks (print figures next to their goals).
bench: env
    for b in bench/bench_*.py; do echo "== $b"; {{py}} "$b"; done

# ruff lint + format check.
lint: env
    {{venv}}/bin/ruff check clank tests bench
    {{venv}}/bin/ruff format --check clank tests bench

# mypy --strict on the package.
typecheck: env
    {{venv}}/bin/mypy

# Format the code.
fmt: env
    {{venv}}/bin/ruff format clank tests bench
    {{venv}}/bin/ruff check --fix clank tests bench

# Run the local Discord sandbox on its own.
sandbox *ARGS: env
    {{py}} -m clank sandbox {{ARGS}}

# Create or update .venv from uv.lock (installs uv with pip when missing).
env:
    @command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
    @uv sync --quiet --frozen --extra dev --python "$(command -v python3)"
