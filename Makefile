# pixsift developer commands. Each target sets up .venv first if needed.
PYTHON ?= python3
VENV ?= .venv
# torch 2.14.1 and torchvision 0.29.1 are the releases this project is tested with.
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin

.PHONY: install demo test test-fast lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install  ## the offline demo: synthetic images, the bundled synthetic-tiny model, index and search
	$(BIN)/python -m pixsift.demo

lint: install
	$(BIN)/ruff check src tests tools benchmarks
	$(BIN)/ruff format --check src tests tools benchmarks
	$(BIN)/mypy

test: lint  ## everything CI runs
	$(BIN)/pytest

test-fast: install  ## skips the end-to-end subprocess tests
	$(BIN)/pytest -m "not slow"
