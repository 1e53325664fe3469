#!/usr/bin/env bash
# The hot-path benchmark of `airlock run` (see crates/airlock-bench):
#   1. builds the release binaries,
#   2. writes the bench config (scripts/bench-config.sh: one agent, one server, one permitted
#      tool) into a temp dir,
#   3. runs `airlock-bench latency` (direct vs bare relay vs airlock, same run, interleaved)
#      against server-everything's `echo` (fallback: the demo server's `forum_list`),
#   4. runs `airlock-bench rss` (memory of an idle `airlock run`, RSS_RUNS runs: private memory,
#      RssAnon, is the target; VmRSS beside it).
#
# Usage: scripts/bench.sh            (env: CALLS=2000 WARMUP=200 ROUNDS=4 PATHS=direct,relay,airlock
#                                     RSS_RUNS=5 runs of the memory bench;
#                                     OUT=dir to keep the JSON results; SERVER=everything|demo;
#                                     AIRLOCK=path to use a prebuilt airlock instead of building it;
#                                     BASELINE=path to a second airlock build, run as a 4th path;
#                                     BENCH_BIN=dir holding prebuilt airlock-bench and bare-relay;
#                                     SANDBOX=off to run the server unsandboxed, e.g. under valgrind)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

CALLS=${CALLS:-2000}
WARMUP=${WARMUP:-200}
ROUNDS=${ROUNDS:-4}
PATHS=${PATHS:-direct,relay,airlock}

bin=${BENCH_BIN:-${CARGO_TARGET_DIR:-$root/target}/release}
if [[ -z ${BENCH_BIN:-} ]]; then
    echo "==> building release binaries" >&2
    cargo build --release -p airlock-bench
fi
airlock=${AIRLOCK:-$bin/airlock}
baseline=()
if [[ -n ${BASELINE:-} ]]; then
    PATHS="$PATHS,baseline"
    baseline=(--baseline "$BASELINE")
fi
# The gateway is built separately so the direct/relay numbers survive a broken airlock-cli.
if [[ -z ${AIRLOCK:-} ]] && ! cargo build --release -p airlock-cli; then
    echo "warning: airlock-cli did not build; benchmarking direct and relay only" >&2
    PATHS=direct,relay
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/airlock-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
# As root the sandboxed server runs as nobody, who must reach the work dir.
chmod 0777 "$work"
out=${OUT:-$work}
mkdir -p "$out"

IFS=$'\t' read -r server_name server tool args < <(
    scripts/bench-config.sh "$work" "$airlock" "${SANDBOX:-on}" "$work/airlock.toml")
[[ -n ${server_name:-} ]] || { echo "error: scripts/bench-config.sh wrote no config" >&2; exit 1; }

echo "==> latency: $server ($tool), paths $PATHS" >&2
"$bin/airlock-bench" latency \
    --calls "$CALLS" --warmup "$WARMUP" --rounds "$ROUNDS" --paths "$PATHS" \
    --server "$server" --tool "$tool" --args "$args" \
    --relay "$bin/bare-relay" \
    --airlock "$airlock" --config "$work/airlock.toml" --agent bench --server-name "$server_name" \
    "${baseline[@]}" --json "$out/latency.json"

if [[ $PATHS == *airlock* ]]; then
    echo "==> memory of an idle airlock run" >&2
    "$bin/airlock-bench" rss \
        --airlock "$airlock" --config "$work/airlock.toml" --agent bench --server-name "$server_name" \
        --server "$server" --tool "$tool" --args "$args" --calls 500 --runs "${RSS_RUNS:-5}" --json "$out/rss.json"
    if [[ -n ${BASELINE:-} ]]; then
        echo "==> memory of an idle airlock run: baseline" >&2
        "$bin/airlock-bench" rss \
            --airlock "$BASELINE" --config "$work/airlock.toml" --agent bench \
            --server-name "$server_name" --server "$server" --tool "$tool" --args "$args" \
            --calls 500 --runs "${RSS_RUNS:-5}" --json "$out/rss-baseline.json"
    fi
fi
if [[ -n ${OUT:-} ]]; then
    echo "results in $out" >&2
fi
