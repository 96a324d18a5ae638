# Insight Gateway: `make run` starts a seeded demo, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST     ?= 127.0.0.1
PORT     ?= 8000
DATA_DIR ?= ./var

.PHONY: install run test lint clean bench bench-accuracy browser

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/insightgw serve --demo --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

test: install browser
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check gateway clients tests bench
	$(BIN)/ruff format --check gateway clients tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/first_query.py

$(VENV)/.installed-bench: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench-accuracy: $(VENV)/.installed-bench
	$(BIN)/python bench/accuracy.py

clean:
	rm -rf $(DATA_DIR)

# Debian's chromium, driven by the web console tests (tests/e2e/test_e2e_console.py). Installed
# with apt-get when /usr/bin/chromium is missing (with sudo unless root; apt-get update first
# when the package lists do not know chromium yet). If it cannot be installed the suite still
# runs and the console tests fail, saying why.
browser:
	@if [ -x /usr/bin/chromium ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "browser: no apt-get here; install chromium yourself or the console tests fail"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	echo "browser: installing Debian's chromium for the console tests"; \
	export DEBIAN_FRONTEND=noninteractive; \
	{ apt-cache show chromium >/dev/null 2>&1 || $$SUDO apt-get update -qq; } && \
	$$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null \
	  || echo "browser: chromium could not be installed; the console tests will fail"

.PHONY: docs
docs: install  # docs/api.md from the app's OpenAPI document (a test fails when it is stale)
	$(BIN)/python -m gateway.openapi_doc --output docs/api.md

# Query performance (bench/perf.py, bench/load.py; figures in bench/README.md). perf: the
# floor (exact DuckDB SQL), the gateway in process, through HTTP with the SDK and OpenDP's
# Polars API, side by side on PERF_CUSTOMERS customers per partner; load: concurrency 1, 4, 16
# against a second process on LOAD_CUSTOMERS. PERF_DIR keeps the uploaded store between runs.
PERF_CUSTOMERS ?= 10000000
LOAD_CUSTOMERS ?= 1000000
PERF_DIR ?= ./var/bench
.PHONY: bench-perf bench-load bench-ingest
bench-perf: $(VENV)/.installed-bench
	$(BIN)/python bench/perf.py --customers $(PERF_CUSTOMERS) --data-dir $(PERF_DIR)/perf-$(PERF_CUSTOMERS)

bench-load: $(VENV)/.installed-bench
	$(BIN)/python bench/load.py --customers $(LOAD_CUSTOMERS) --data-dir $(PERF_DIR)/perf-$(LOAD_CUSTOMERS)

INGEST_ROWS ?= 10000000
bench-ingest: install
	$(BIN)/python bench/ingest.py --rows $(INGEST_ROWS)
