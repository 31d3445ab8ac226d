PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/distributor.yaml

.PHONY: run test bench lint clean

# The venv is rebuilt whenever pyproject.toml changes; the stamp records what was installed.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/distributor --config $(CONFIG)

test: $(VENV)/.installed
	$(BIN)/pytest -q

bench: $(VENV)/.installed
	$(BIN)/python -m tests.bench

lint: $(VENV)/.installed
	$(BIN)/ruff check distributor overrides tests examples
	$(BIN)/ruff format --check distributor overrides tests examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info
