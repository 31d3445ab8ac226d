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

# mypy cannot follow the package-dir mapping that installs overrides/ as distributor.overrides, so it
# checks a view of the tree where distributor/overrides links to overrides/.
LINT_VIEW := .lint-view/distributor

lint: $(VENV)/.installed
	$(BIN)/ruff check distributor overrides tests examples
	$(BIN)/ruff format --check distributor overrides tests examples
	rm -rf .lint-view && mkdir -p $(LINT_VIEW)
	for entry in distributor/*; do ln -s "$$PWD/$$entry" $(LINT_VIEW)/; done
	ln -s "$$PWD/overrides" $(LINT_VIEW)/overrides
	cd .lint-view && ../$(BIN)/mypy --config-file ../pyproject.toml

clean:
	rm -rf $(VENV) build *.egg-info .lint-view
