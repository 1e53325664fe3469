#!/usr/bin/env bash
# The benchmark of `airlock serve`'s Streamable HTTP gateway (see crates/airlock-bench,
# src/bin/http-bench.rs):
#   1. builds the release binaries (airlock, http-bench),
#   2. starts server-everything's Streamable HTTP transport on a free port,
#   3. writes a config into a temp dir: one agent (`bench`, a fresh bearer token), the upstream
#      as `[servers.everything] url = …`, a policy permitting its `echo`, breakers off,
#   4. starts `airlock serve` and runs `http-bench rss` on it (idle, then with 100 and 1,000
#      idle sessions open), then restarts it and runs `http-bench throughput` (direct vs
#      through the gateway, 1, 16 and 64 sessions, interleaved rounds),
#   5. stops everything it started.
#
# Usage: scripts/http-bench.sh     (env: SECONDS_PER_WINDOW=10 WARMUP=1 ROUNDS=3 SESSIONS=1,16,64
#                                   RSS_SESSIONS=0,100,1000 THREADS=1 (the client's runtime);
#                                   OUT=dir to keep the JSON results and the logs;
#                                   AIRLOCK=path to a prebuilt airlock;
#                                   BENCH_BIN=dir holding a prebuilt http-bench;
#                                   EVERYTHING=server-everything's dist/index.js, if not in
#                                   tests/node;
#                                   SKIP_RSS=1 / SKIP_THROUGHPUT=1 to run one half;
#                                   PERF=1 to record the gateway with `perf record` during the
#                                   throughput run, into OUT/perf.data)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

WINDOW=${SECONDS_PER_WINDOW:-10}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-1,16,64}
RSS_SESSIONS=${RSS_SESSIONS:-0,100,1000}
THREADS=${THREADS:-1}

everything=${EVERYTHING:-$root/tests/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js}
[[ -f $everything ]] || { echo "error: $everything missing: run scripts/setup-test-env.sh" >&2; exit 1; }
command -v node >/dev/null || { echo "error: node is not installed" >&2; exit 1; }

target=${CARGO_TARGET_DIR:-$root/target}
if [[ -z ${BENCH_BIN:-} || -z ${AIRLOCK:-} ]]; then
    echo "==> building release binaries (fat LTO: this takes minutes)" >&2
    pkgs=()
    [[ -z ${AIRLOCK:-} ]] && pkgs+=(-p airlock-cli)
    [[ -z ${BENCH_BIN:-} ]] && pkgs+=(-p airlock-bench)
    cargo build --release "${pkgs[@]}"
fi
bench=${BENCH_BIN:-$target/release}/http-bench
airlock=${AIRLOCK:-$target/release/airlock}
[[ -x $bench ]] || { echo "error: no $bench" >&2; exit 1; }
[[ -x $airlock ]] || { echo "error: no $airlock" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/airlock-http-bench.XXXXXX")
out=${OUT:-$work}
mkdir -p "$out"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# Waits until FILE holds PATTERN (a process's "listening" line), or fails with its log.
wait_for() {
    local file=$1 pattern=$2 pid=$3 what=$4
    for _ in $(seq 300); do
        grep -q "$pattern" "$file" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "error: $what did not start; its output:" >&2
    tail -n 30 "$file" "${file%.out}.err" >&2 2>/dev/null || true
    exit 1
}

# server-everything binds every interface and says "… listening on port N" when ready.
port=$("$bench" free-port)
PORT=$port node "$everything" streamableHttp >"$out/everything.out" 2>&1 &
upstream_pid=$!
pids+=("$upstream_pid")
wait_for "$out/everything.out" "listening on port $port" "$upstream_pid" "server-everything"
direct="http://127.0.0.1:$port/mcp"

token="agt_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
digest=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
cat >"$work/airlock.toml" <<EOF
# Written by scripts/http-bench.sh: one agent, one remote server, one permitted tool.
[policy]
files = ["$work/policy.cedar"]

[audit]
path = "$work/audit.db"

[humans.alice]

[tasks.bench]
description = "bench"

[agents.bench]
on_behalf_of = "alice"
task = "bench"
token_sha256 = "$digest"

[servers.everything]
url = "$direct"

# Thousands of calls a second are exactly the runaway the default rate breaker stops.
[breakers.defaults]
enabled = false
EOF
cat >"$work/policy.cedar" <<EOF
permit(principal == Agent::"bench", action == Action::"call_tool", resource == Tool::"everything/echo");
EOF

# Starts `airlock serve`; sets serve_pid and gateway (the /mcp/everything URL).
start_serve() {
    local n=$1
    "$airlock" serve --config "$work/airlock.toml" --listen 127.0.0.1:0 \
        >"$out/serve-$n.out" 2>"$out/serve-$n.err" &
    serve_pid=$!
    pids+=("$serve_pid")
    wait_for "$out/serve-$n.out" "listening on http://" "$serve_pid" "airlock serve"
    local addr
    addr=$(sed -n 's|^airlock serve: listening on http://\([^ ]*\).*|\1|p' "$out/serve-$n.out" | head -n 1)
    gateway="http://$addr/mcp/everything"
}

stop_serve() {
    kill "$serve_pid" 2>/dev/null || true
    wait "$serve_pid" 2>/dev/null || true
}

echo "==> $(nproc) cores, load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [[ -z ${SKIP_RSS:-} ]]; then
    start_serve 1
    echo "==> memory of airlock serve: idle, then $RSS_SESSIONS idle sessions" >&2
    "$bench" rss --gateway "$gateway" --token "$token" --pid "$serve_pid" \
        --upstream-pid "$upstream_pid" --sessions "$RSS_SESSIONS" --threads "$THREADS" \
        --json "$out/rss.json"
    stop_serve
fi
if [[ -z ${SKIP_THROUGHPUT:-} ]]; then
    # A fresh gateway: none of the memory bench's sessions linger in it.
    start_serve 2
    echo "==> throughput: direct vs gateway at $SESSIONS sessions" >&2
    perf_pid=
    if [[ -n ${PERF:-} ]]; then
        perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$serve_pid" \
            -o "$out/perf.data" >"$out/perf.log" 2>&1 &
        perf_pid=$!
        pids+=("$perf_pid")
    fi
    "$bench" throughput --direct "$direct" --gateway "$gateway" --token "$token" \
        --sessions "$SESSIONS" --seconds "$WINDOW" --warmup "$WARMUP" --rounds "$ROUNDS" \
        --gateway-pid "$serve_pid" --upstream-pid "$upstream_pid" --threads "$THREADS" \
        --json "$out/throughput.json"
    if [[ -n $perf_pid ]]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
    fi
    stop_serve
fi
echo "==> load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [[ -n ${OUT:-} ]]; then
    echo "results in $out" >&2
fi
