#!/usr/bin/env bash
# Set up the integration-test environment: a Python venv with the official MCP SDK and pytest
# (.venv at the repo root, from tests/python/requirements.txt) and the pinned npm peer servers
# (tests/node, from package-lock.json). Idempotent: each part is skipped while its stamp (a hash of
# its inputs) still matches, so a second run takes a second or two.
#
# Needs python3 (3.11+), node (20+) and npm. As root it installs missing Debian packages itself;
# as another user it skips apt and says what is missing.
#
# Env: PYTHON (default python3), AIRLOCK_VENV (default <repo>/.venv), SETUP_FORCE=1 to redo everything.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
venv="${AIRLOCK_VENV:-$repo/.venv}"
reqs="$repo/tests/python/requirements.txt"
node_dir="$repo/tests/node"
force="${SETUP_FORCE:-0}"

log() { printf 'setup-test-env: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# ---------------------------------------------------------------------------------------------
# Debian packages. Collect what is missing, then one `apt-get update` + install (root only).
# ---------------------------------------------------------------------------------------------
apt_pkgs=()
need_apt() { apt_pkgs+=("$@"); }

command -v "$python" >/dev/null 2>&1 || need_apt python3 python3-venv python3-pip
if command -v "$python" >/dev/null 2>&1 && ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    # Debian splits venv/ensurepip out of python3.
    need_apt python3-venv
fi
command -v node >/dev/null 2>&1 || need_apt nodejs
command -v npm >/dev/null 2>&1 || need_apt npm

# === browser =================================================================================
# Debian's chromium for the approval web page tests (tests/python/test_web.py drives it with
# Playwright's executable_path; no browser downloads work here, the Debian package does; as root
# it needs --no-sandbox). chromium-driver gives the matching chromedriver for WebDriver clients.
command -v chromium >/dev/null 2>&1 || need_apt chromium
command -v chromedriver >/dev/null 2>&1 || need_apt chromium-driver
# =============================================================================================

if [ "${#apt_pkgs[@]}" -gt 0 ]; then
    if is_root && command -v apt-get >/dev/null 2>&1; then
        log "installing Debian packages: ${apt_pkgs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
    else
        log "not root (or no apt-get): skipping apt; missing: ${apt_pkgs[*]}"
    fi
fi

command -v "$python" >/dev/null 2>&1 || die "$python not found"
command -v node >/dev/null 2>&1 || die "node not found (need node 20+)"
command -v npm >/dev/null 2>&1 || die "npm not found"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "node $(node --version) is too old: server-everything needs node 20+"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$("$python" --version 2>&1) is too old: need Python 3.11+"

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# ---------------------------------------------------------------------------------------------
# Python: .venv + tests/python/requirements.txt
# ---------------------------------------------------------------------------------------------
py_key="$(hash_of "$reqs")-$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
py_stamp="$venv/.airlock-setup-stamp"
if [ "$force" != 1 ] && [ -x "$venv/bin/python" ] && "$venv/bin/python" -c '' 2>/dev/null \
    && [ "$(cat "$py_stamp" 2>/dev/null)" = "$py_key" ]; then
    log "python venv up to date ($venv)"
else
    if ! { [ -x "$venv/bin/python" ] && "$venv/bin/python" -c '' 2>/dev/null; }; then
        log "creating venv $venv"
        rm -rf "$venv"
        "$python" -m venv "$venv"
    fi
    log "installing tests/python/requirements.txt"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$reqs"
    printf '%s\n' "$py_key" >"$py_stamp"
fi

# ---------------------------------------------------------------------------------------------
# Node: tests/node (npm ci from the committed package-lock.json)
# ---------------------------------------------------------------------------------------------
node_key="$(hash_of "$node_dir/package.json" "$node_dir/package-lock.json")-$(node --version)"
node_stamp="$node_dir/node_modules/.airlock-setup-stamp"   # npm ci wipes node_modules, and the stamp
if [ "$force" != 1 ] && [ "$(cat "$node_stamp" 2>/dev/null)" = "$node_key" ]; then
    log "node peers up to date ($node_dir/node_modules)"
else
    log "npm ci in tests/node"
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    printf '%s\n' "$node_key" >"$node_stamp"
fi

everything="$node_dir/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
[ -f "$everything" ] || die "server-everything entry point missing: $everything"
log "ready: $venv/bin/pytest tests/python (build the gateway first: cargo build -p airlock-cli)"
