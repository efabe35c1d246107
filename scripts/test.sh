#!/usr/bin/env bash
# Runs every test of the workspace, PostgreSQL and browser ones included (never skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

GATEHOUSE_TEST_POSTGRES_URL=$(scripts/postgres.sh)
export GATEHOUSE_TEST_POSTGRES_URL
echo "PostgreSQL for tests: $GATEHOUSE_TEST_POSTGRES_URL"
GATEHOUSE_TEST_CHROMIUM=$(scripts/chromium.sh)
export GATEHOUSE_TEST_CHROMIUM
GATEHOUSE_TEST_CHROMEDRIVER=$(scripts/chromium.sh chromedriver)
export GATEHOUSE_TEST_CHROMEDRIVER
echo "Chromium for browser tests: $GATEHOUSE_TEST_CHROMIUM (driven by $GATEHOUSE_TEST_CHROMEDRIVER)"

# Each test makes its own database; sweep those of earlier runs.
if command -v psql >/dev/null; then
  psql "$GATEHOUSE_TEST_POSTGRES_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'gatehouse\_test\_%'" 2>/dev/null |
    while read -r db; do psql "$GATEHOUSE_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

# The verifier crate is for other services: none of the server's own parts.
if cargo tree -p gatehouse-verifier --features actix -e normal --prefix none | grep -E '^(gatehouse-domain|diesel|argon2)[ -]'; then
  echo "gatehouse-verifier must not depend on the crates above" >&2
  exit 1
fi

# A short schemathesis pass on both stores; `make fuzz` runs the long one.
FUZZ_EXAMPLES=${FUZZ_EXAMPLES:-10} python3 scripts/fuzz.py
