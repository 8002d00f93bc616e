# telebridge — developer entry points. `make demo` and `make test` work on a fresh machine
# with Python >= 3.11 and make: each bootstraps its own virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck pytest bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Marker files so a changed pyproject.toml reinstalls, and nothing else does.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --quiet .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed-run

demo: $(VENV)/.installed-run
	$(BIN)/telebridge simulate --carrier plivo --digits 1 --out call.wav

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check telebridge tests $(wildcard bench) examples
	$(BIN)/ruff format --check telebridge tests $(wildcard bench) examples

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

pytest: $(VENV)/.installed-dev
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.latency
	$(BIN)/python -m bench.cost

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info call.wav
