PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config/distributor.yaml
CORE_SOURCE := distributor/ingest/_core.c
JSON_SOURCE := distributor/receivers/_otlp_json.c

.PHONY: run test bench lint clean fuzz sanitize

# The venv is rebuilt whenever pyproject.toml, setup.py or a C extension changes (the editable install
# compiles them next to their sources); the stamp records what was installed.
$(VENV)/.installed: pyproject.toml setup.py $(CORE_SOURCE) $(JSON_SOURCE)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/distributor --config $(CONFIG) --config.expand-env

test: $(VENV)/.installed
	$(BIN)/pytest -q

bench: $(VENV)/.installed
	$(BIN)/python -m tests.bench

# Builds of the core for the fuzzer and the sanitizers, under build/, beside the installed one: the
# tests load them through INGEST_CORE_PATH. UndefinedBehaviorSanitizer stops at the first finding.
PY_INCLUDE = $(shell $(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
CORE_CFLAGS := -std=c11 -shared -fPIC -g -O1 -fno-omit-frame-pointer -Wall -Wextra \
	-Wno-missing-field-initializers -fsanitize=address,undefined -fno-sanitize-recover=all
# CPython itself is not built with AddressSanitizer: its runtime goes first, and leaks are not checked
# (the interpreter keeps memory until exit by design).
SANITIZER_ENV = LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libstdc++.so)" \
	ASAN_OPTIONS=detect_leaks=0 \
	UBSAN_OPTIONS=print_stacktrace=1
SECONDS ?= 60

build/sanitize/_core.so: $(CORE_SOURCE) $(VENV)/.installed
	mkdir -p $(@D)
	$(CC) $(CORE_CFLAGS) -I$(PY_INCLUDE) $< -o $@

build/sanitize/_otlp_json.so: $(JSON_SOURCE) $(VENV)/.installed
	mkdir -p $(@D)
	$(CC) $(CORE_CFLAGS) -I$(PY_INCLUDE) $< -o $@

sanitize: build/sanitize/_core.so build/sanitize/_otlp_json.so
	$(SANITIZER_ENV) INGEST_CORE_PATH=build/sanitize/_core.so CORE_DIFFERENTIAL_EXAMPLES=1000 \
		$(BIN)/pytest -q -p no:cacheprovider tests/test_core_differential.py
	$(SANITIZER_ENV) OTLP_JSON_ENCODER_PATH=build/sanitize/_otlp_json.so \
		$(BIN)/pytest -q -p no:cacheprovider tests/test_otlp_json_fast.py

# gcc's basic-block callbacks stand in for clang's libFuzzer instrumentation (see the end of _core.c).
build/fuzz/_core.so: $(CORE_SOURCE) $(VENV)/.installed
	mkdir -p $(@D)
	$(CC) $(CORE_CFLAGS) -DCORE_FUZZ_COVERAGE -fsanitize-coverage=trace-pc -I$(PY_INCLUDE) $< -o $@

$(VENV)/.fuzz-installed: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,lint,fuzz]'
	touch $@

fuzz: build/fuzz/_core.so $(VENV)/.fuzz-installed
	mkdir -p build/fuzz/corpus
	$(SANITIZER_ENV) INGEST_CORE_PATH=$< $(BIN)/python -m tests.fuzz_core -max_total_time=$(SECONDS) \
		-artifact_prefix=build/fuzz/ build/fuzz/corpus

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
