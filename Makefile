# Insight Gateway: `make run` starts a seeded demo, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST     ?= 127.0.0.1
PORT     ?= 8000
DATA_DIR ?= ./var

.PHONY: install run test lint clean bench bench-accuracy

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/insightgw serve --demo --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

test: install
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
