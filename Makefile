# telebridge — developer entry points. `make demo` and `make test` work on a fresh machine
# with Python >= 3.11 and make: each bootstraps its own virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo console test lint typecheck pytest bench clean

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
	@echo
	@echo "The web console and its phone in the browser: run 'make console', then open"
	@echo "  http://127.0.0.1:8080/console  (the phone: http://127.0.0.1:8080/console/phone)"

# The bridge on loopback with the console open to this machine only (no key, offline speech).
console: $(VENV)/.installed-run
	TELEBRIDGE_CONSOLE=local TELEBRIDGE_PUBLIC_URL=http://127.0.0.1:8080 \
		$(BIN)/telebridge serve --host 127.0.0.1 --port 8080

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
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info call.wav test-artefacts
