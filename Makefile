# Two entry points: `make quickstart` runs the main job, `make test` runs the tests.
# Each creates the virtual environment (.venv) when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/omnirec: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/omnirec

.PHONY: install quickstart test benchmark readme
install: $(BIN)/omnirec

quickstart: install
	$(BIN)/omnirec quickstart --out runs/quickstart

test: install
	$(BIN)/python -m pytest

benchmark: install
	$(BIN)/python benchmarks/baselines.py --data-dir ../shared/data

# README's benchmark figures, rewritten from benchmarks/results/ (`--check` only compares)
readme: install
	$(BIN)/python benchmarks/readme_figures.py
