#!/usr/bin/env bash
# Runs every test: Rust unit, property and integration tests, then the Python suite that drives
# the real `airlock` binary with the official MCP client and server-everything.
# Installs what the tests need first (scripts/setup-test-env.sh), so it works on a new machine.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-test-env.sh

# As root, Airlock runs sandboxed servers as `nobody`, and the tests start servers that live in
# this checkout: every directory above it must let `nobody` pass through. A checkout inside a
# `mktemp -d` folder (mode 0700) would not; grant traversal (o+x, not listing) where it lacks.
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null 2>&1; then
    d="$PWD"
    while [ "$d" != "/" ]; do
        if ! setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$d" 2>/dev/null; then
            chmod o+x "$d"
            echo "test.sh: made $d traversable (o+x) for sandboxed test servers, which run as nobody" >&2
        fi
        d="$(dirname "$d")"
    done
fi
cargo build --workspace --bins
cargo test --workspace
AIRLOCK_BIN="$PWD/target/debug/airlock" .venv/bin/python -m pytest tests/python -q
