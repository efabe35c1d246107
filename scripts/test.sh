#!/usr/bin/env bash
# Runs every test of the workspace, PostgreSQL ones included (never skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

GATEHOUSE_TEST_POSTGRES_URL=$(scripts/postgres.sh)
export GATEHOUSE_TEST_POSTGRES_URL
echo "PostgreSQL for tests: ${GATEHOUSE_TEST_POSTGRES_URL%%@*}@${GATEHOUSE_TEST_POSTGRES_URL#*@}"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
