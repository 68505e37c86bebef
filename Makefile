# Every target creates .venv on first use and installs what it needs; nothing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help test check lint format typecheck imports run demo bench clean

help:
	@echo "make demo   - run the whole bot against a simulated Timbal org and a local Slack stand-in"
	@echo "make test   - run the whole test suite (starts its own redis-server)"
	@echo "make check  - ruff (lint + format check), mypy --strict and the import contracts"
	@echo "make bench  - print benchmark figures"
	@echo "make run    - run the bot with the settings in the environment (export .env first: set -a; . ./.env; set +a)"

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	@$(BIN)/python -m tests.redis_server >/dev/null
	$(BIN)/pytest

check: lint typecheck imports

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

# DESIGN.md's dependency rules (contracts in pyproject.toml)
imports: $(STAMP)
	PYTHONPATH=. $(BIN)/lint-imports --no-cache

run: $(STAMP)
	$(BIN)/timbal-jobs-bot run

demo: $(STAMP)
	$(BIN)/timbal-jobs-bot demo

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache *.egg-info
