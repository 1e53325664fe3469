#!/usr/bin/env bash
# The bench config of scripts/bench.sh (latency and idle memory of `airlock run`), in a script of
# its own so that anything else measuring the same workload writes the same config.
#
# Usage: scripts/bench-config.sh WORK AIRLOCK SANDBOX TOML
#   WORK: the bench's work dir (writable by the sandboxed server); AIRLOCK: the airlock binary
#   (runs the demo server when server-everything is missing); SANDBOX: on|off; TOML: the config
#   file to write. Writes TOML and WORK/policy.cedar (one agent, one server, one permitted tool)
#   and prints four tab-separated fields: server name, server command, tool, tool arguments.
set -euo pipefail

work=$1 airlock=$2 sandbox=$3 toml=$4
root=$(cd "$(dirname "$0")/.." && pwd)

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

cat >"$toml" <<EOF
# Written by scripts/bench-config.sh: one agent, one server, one permitted tool.
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
$([[ $sandbox == off ]] && echo 'sandbox = "off"')

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
printf '%s\t%s\t%s\t%s\n' "$server_name" "$server" "$tool" "$args"
