# Two commands do everything on a fresh machine:
#   make demo   set up .venv, train and test a neural ODE end to end (about a minute)
#   make test   set up .venv, run ruff and the whole test suite (notebooks included)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sciml-installed
# Tests, notebooks and benchmarks pin one thread: on 2 cores, 2 threads makes small matmuls ~100x slower.
export OMP_NUM_THREADS ?= 1

.PHONY: install demo test lint format docs benchmarks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"

# torch first, pinned: its CPU wheel is on these machines, while a bare `torch` pulls a CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[notebooks]" --group test
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m sciml.demo

lint: $(STAMP)
	$(BIN)/ruff check sciml tests benchmarks notebooks docs
	$(BIN)/ruff format --check sciml tests benchmarks notebooks docs

format: $(STAMP)
	$(BIN)/ruff check --fix sciml tests benchmarks notebooks docs
	$(BIN)/ruff format sciml tests benchmarks notebooks docs

test: lint
	SCIML_FAST=1 $(BIN)/pytest --nbmake --nbmake-timeout=600 tests notebooks

docs: $(STAMP)
	$(BIN)/python -m pip install --quiet -e . --group docs
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

benchmarks: $(STAMP)
	$(BIN)/python -m pip install --quiet --group bench
	for script in benchmarks/[!_]*.py; do \
		[ $$script = benchmarks/goals.py ] || $(BIN)/python $$script || exit 1; \
	done
	$(BIN)/python benchmarks/goals.py --check

clean:
	rm -rf $(VENV) runs docs/_build .pytest_cache .ruff_cache
