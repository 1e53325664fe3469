#!/usr/bin/env bash
# The hot-path benchmark of `airlock run` (see crates/airlock-bench):
#   1. builds the release binaries,
#   2. writes a bench config + a policy permitting exactly the bench tool into a temp dir,
#   3. runs `airlock-bench latency` (direct vs bare relay vs airlock, same run, interleaved)
#      against server-everything's `echo` (fallback: the demo server's `forum_list`),
#   4. runs `airlock-bench rss` (idle RSS of `airlock run`).
#
# Usage: scripts/bench.sh            (env: CALLS=2000 WARMUP=200 ROUNDS=4 PATHS=direct,relay,airlock
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

everything="$root/tests/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
if [[ ${SERVER:-everything} == everything && -f $everything ]] && command -v node >/dev/null; then
    server_name=everything
    server="node $everything stdio"
    tool=echo
    args='{"message":"hi"}'
else
    [[ -x $airlock ]] || { echo "error: no server-everything and no $airlock for the demo server" >&2; exit 1; }
    echo "note: server-everything not found; using the demo server" >&2
    server_name=corp
    server="$airlock demo-server --state $work/company.json --reset"
    tool=forum_list
    args='{"channel":"internal"}'
fi

cat >"$work/airlock.toml" <<EOF
# Written by scripts/bench.sh: one agent, one server, one permitted tool.
[policy]
files = ["policy.cedar"]

[audit]
path = "audit.db"

[humans.alice]

[tasks.bench]
description = "bench"

[agents.bench]
on_behalf_of = "alice"
task = "bench"

[servers.$server_name]
description = "the bench server"
$([[ ${SANDBOX:-on} == off ]] && echo 'sandbox = "off"')

# The server runs in Airlock's default sandbox: its package tree readable, the work dir writable.
[sandbox.profiles.default]
read = ["$root/tests/node/node_modules"]
write = ["$work"]

# 2,000 calls a second is exactly the runaway the default rate breaker stops.
[breakers.defaults]
enabled = false
EOF
cat >"$work/policy.cedar" <<EOF
permit(principal == Agent::"bench", action == Action::"call_tool", resource == Tool::"$server_name/$tool");
EOF

echo "==> latency: $server ($tool), paths $PATHS" >&2
"$bin/airlock-bench" latency \
    --calls "$CALLS" --warmup "$WARMUP" --rounds "$ROUNDS" --paths "$PATHS" \
    --server "$server" --tool "$tool" --args "$args" \
    --relay "$bin/bare-relay" \
    --airlock "$airlock" --config "$work/airlock.toml" --agent bench --server-name "$server_name" \
    "${baseline[@]}" --json "$out/latency.json"

if [[ $PATHS == *airlock* ]]; then
    echo "==> rss of an idle airlock run" >&2
    "$bin/airlock-bench" rss \
        --airlock "$airlock" --config "$work/airlock.toml" --agent bench --server-name "$server_name" \
        --server "$server" --tool "$tool" --args "$args" --calls 500 --json "$out/rss.json"
    if [[ -n ${BASELINE:-} ]]; then
        echo "==> rss of an idle airlock run: baseline" >&2
        "$bin/airlock-bench" rss \
            --airlock "$BASELINE" --config "$work/airlock.toml" --agent bench \
            --server-name "$server_name" --server "$server" --tool "$tool" --args "$args" \
            --calls 500 --json "$out/rss-baseline.json"
    fi
fi
if [[ -n ${OUT:-} ]]; then
    echo "results in $out" >&2
fi
