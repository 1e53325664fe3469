#!/usr/bin/env bash
# Runs every test: Rust unit, property and integration tests, then the Python suite that drives
# the real `airlock` binary with the official MCP client and server-everything.
# Installs what the tests need first (scripts/setup-test-env.sh), so it works on a new machine.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-test-env.sh
cargo build --workspace --bins
cargo test --workspace
AIRLOCK_BIN="$PWD/target/debug/airlock" .venv/bin/python -m pytest tests/python -q
