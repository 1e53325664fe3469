#!/usr/bin/env bash
# The kill-switch benchmark (see crates/airlock-bench/src/bin/kill-bench.rs): builds the release
# `airlock` and `kill-bench`, then starts AGENTS `airlock run` gateways (each wrapping the test
# recorder, a python3 server that forks a SIGTERM-ignoring child, with one call in flight) and
# times KILLS `airlock kill --agent` subprocesses until the in-flight call's error reached the
# agent and the upstream's process tree is gone: first with the recorder unsandboxed
# (`sandbox = "off"`), then in Airlock's default sandbox (`--sandboxed`, as deployed), while BUSY
# more agents call `echo` at BUSY_RATE calls a second each, so the audit database is busy. Then the
# breaker accounting cost per call.
#
# Usage: scripts/kill-bench.sh     (env: AGENTS=50 KILLS=100 BUSY=10 BUSY_RATE=50
#                                   OUT=prefix: kill samples as JSON in
#                                   <prefix>.off.json and <prefix>.sandboxed.json)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}

cargo build --release -p airlock-cli -p airlock-bench --bin airlock --bin kill-bench
args=(--airlock "$target/release/airlock" --agents "${AGENTS:-50}" --kills "${KILLS:-100}"
      --busy "${BUSY:-10}" --busy-rate "${BUSY_RATE:-50}")
for mode in off sandboxed; do
    extra=()
    [[ $mode == sandboxed ]] && extra+=(--sandboxed)
    [[ -n ${OUT:-} ]] && extra+=(--out "$OUT.$mode.json")
    "$target/release/kill-bench" "${args[@]}" "${extra[@]}"
done
cargo run --release -q -p airlock-control --example breaker_bench
