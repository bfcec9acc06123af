# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench bench-ci

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first, pinned: a CPU build; letting pip resolve torch freely pulls a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgemm demo
	$(BIN)/edgemm compress

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_demo_suite.py
	$(BIN)/python benchmarks/compare_int8.py

bench-ci: $(STAMP)
	$(BIN)/python benchmarks/run_demo_suite.py --ci
