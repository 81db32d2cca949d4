# The two commands of the README: `make demo` and `make test`. Both set up first.
PY ?= python3
VENV := .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

.PHONY: setup demo test test-fast lint typecheck bench clean

$(UV):
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Installs exactly what uv.lock pins (the lock CI tested); idempotent.
$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --all-extras --python $(PY)
	touch $@

setup: $(VENV)/.synced

demo: setup
	$(VENV)/bin/deployctl demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

test: setup lint typecheck
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

# The fast tier: everything but the end-to-end tests with real executor processes.
test-fast: setup lint typecheck
	$(VENV)/bin/pytest -q -m "not slow" $(PYTEST_ARGS)

# Benchmarks (docs/benchmarks.md). The peers (arq, taskiq) pin an older redis-py, so
# they get their own venv, built from bench/peers.txt only when that file changes.
bench: setup
	BENCH_PEERS_PYTHON=$(PY) $(VENV)/bin/python -m bench peers-venv
	$(VENV)/bin/python -m bench all

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
