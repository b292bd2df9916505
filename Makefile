# Two commands on a fresh machine with Python 3.11+ and Node.js 20: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
NODE_STAMP := shopify/node_modules/.installed-$(shell cksum shopify/package-lock.json | cut -d' ' -f1)

.PHONY: install run test test-python test-js lint conservation mutation audit

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

$(NODE_STAMP): shopify/package-lock.json
	npm --prefix shopify ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

install: $(STAMP) $(NODE_STAMP)

## Run the service on http://127.0.0.1:8000 (embedded PostgreSQL in ./.data, simulators).
run: $(STAMP)
	$(BIN)/giftsync serve $(ARGS)

## The whole suite: Python against a real PostgreSQL (embedded, or TEST_DATABASE_URL), then
## the Shopify app's extensions (type-check, bundle, node:test).
test: test-python test-js

test-python: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-js: $(NODE_STAMP)
	npm --prefix shopify test

## The money conservation state machine with many examples (CI runs 100).
conservation: $(STAMP)
	CONSERVATION_EXAMPLES=1000 $(BIN)/python -m pytest tests/test_money_conservation.py -p no:cacheprovider -q

## Mutation testing of the pure money rules; lists the mutants the tests let live.
mutation: $(STAMP)
	rm -rf mutants
	$(BIN)/mutmut run || true
	$(BIN)/mutmut results

## Known vulnerabilities in the installed dependencies (says so when it cannot check).
audit: $(STAMP)
	$(BIN)/python -m pip install --quiet pip-audit
	$(BIN)/python scripts/audit.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict app
