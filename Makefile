# jobsvc — the two commands a new user runs are `make dev` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# `make dev` needs only the runtime: the test and lint tools took 203 of 208 s on a fresh clone.
RUNTIME_STAMP := $(VENV)/.runtime-stamp
BENCH_STAMP := $(VENV)/.bench-stamp

.DEFAULT_GOAL := help
.PHONY: help install dev test test-fast test-unit test-integration test-system lint format bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(RUNTIME_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# bench/ imports the peers it measures (procrastinate, pgqueuer, asyncpg, uvloop): mypy checks
# it against their real types, so `make lint` and `make bench` install them; `make test` does not.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

install: $(STAMP) ## create .venv and install jobsvc with its test tools

dev: $(RUNTIME_STAMP) ## run API + worker on an embedded PostgreSQL (data and results under .jobsvc/)
	$(BIN)/jobsvc dev

test: $(STAMP) ## run the whole suite (PostgreSQL: JOBSVC_TEST_DATABASE_URL, else Docker, else embedded)
	$(BIN)/pytest

test-fast: $(STAMP) ## the suite without the slow real-process crash and load tests
	$(BIN)/pytest -m 'not slow'

test-unit: $(STAMP) ## tests/unit only: no I/O, fakes and trio's mock clock (seconds, no PostgreSQL)
	$(BIN)/pytest tests/unit

test-integration: $(STAMP) ## tests/integration only: in-process, on real PostgreSQL, moto, the image server
	$(BIN)/pytest tests/integration

test-system: $(STAMP) ## tests/system only: real jobsvc processes (crash, signals, load, CLI…)
	$(BIN)/pytest tests/system

lint: $(BENCH_STAMP) ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check jobsvc tests bench
	$(BIN)/ruff format --check jobsvc tests bench
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix jobsvc tests bench
	$(BIN)/ruff format jobsvc tests bench

bench: $(BENCH_STAMP) ## run the benchmarks against procrastinate and pgqueuer (not part of make test)
	$(BIN)/python -m bench

clean: ## remove the venv and the dev data (.jobsvc/)
	rm -rf $(VENV) .jobsvc .mypy_cache .ruff_cache .pytest_cache
