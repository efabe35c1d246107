# Gatehouse: `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help run test fuzz bench bench-django fmt fmt-check lint build migrate clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

run: ## Build and serve on 127.0.0.1:8080 (SQLite in data/, mails as .eml files in data/mail/)
	$(CARGO) build --bin gatehouse
	@echo "Serving on http://127.0.0.1:8080 — database data/gatehouse.db, mails in data/mail/*.eml"
	./target/debug/gatehouse serve

test: fmt-check lint ## Check formatting and lints, then run every test (PostgreSQL included)
	scripts/test.sh

fuzz: ## schemathesis (pinned, in target/fuzz-venv) against a fresh service on SQLite and PostgreSQL (FUZZ_EXAMPLES=100)
	python3 scripts/fuzz.py

bench: ## Load the release build on PostgreSQL with wrk; report in bench/out/ (BENCH_SECONDS=10)
	python3 scripts/bench.py

bench-django: ## Import a generated 100,000-user Django table, then a storm of first (PBKDF2) logins; bench/out/django.md
	python3 scripts/bench_django.py

fmt: ## Format the code
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all --check

lint: ## Clippy on every target, warnings denied
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build: ## Release build of the gatehouse binary
	$(CARGO) build --release --bin gatehouse

migrate: ## Apply pending migrations to $$DATABASE_URL (default: data/gatehouse.db)
	$(CARGO) run --bin gatehouse -- migrate

clean: ## Remove build output and local data
	$(CARGO) clean
	rm -rf data
