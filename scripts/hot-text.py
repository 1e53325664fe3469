#!/usr/bin/env python3
"""Regenerates crates/airlock-cli/hot-text.ld: the functions an idle or busy `airlock run` runs
once start-up is over, grouped by the linker into one `.text.hot` section at the head of the
code (see the section "Idle memory of `airlock run`" in BENCHMARKS.md for why).

Usage: python3 scripts/hot-text.py [AIRLOCK]     (default: $CARGO_TARGET_DIR/release/airlock;
        build it first: cargo build --release -p airlock-cli)

Two passes over the same workload (initialize, tools/list, permitted and denied calls, a ping)
against server-everything (scripts/setup-test-env.sh), or the demo server without it:
  1. valgrind --tool=callgrind: every function that runs after `malloc_trim`, which
     `release_startup_pages` calls just before it releases the start-up pages;
  2. perf page-fault samples (skipped when perf cannot record): the functions whose code
     faulted back in after the release, in the real run, without valgrind (which lacks some
     system calls, so a few paths differ under it).
The union is written out. A name that goes stale (renamed, or inlined away) matches nothing
and only costs memory; the build never depends on the file being current.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "airlock-cli", "hot-text.ld")
CALLS = 300


def die(msg):
    sys.exit(f"hot-text: {msg}")


def write_config(work, airlock, sandbox):
    """The bench's own config (scripts/bench-config.sh), so the list matches what it measures."""
    out = subprocess.run(
        [f"{ROOT}/scripts/bench-config.sh", work, airlock, "on" if sandbox == "default" else "off",
         f"{work}/airlock-{sandbox}.toml"],
        check=True, capture_output=True, text=True).stdout
    name, server, tool, args = out.rstrip("\n").split("\t")
    return name, shlex.split(server), tool, json.loads(args)


def drive(wrap, airlock, work, sandbox, server_name, server, tool, args):
    """Runs the workload through `wrap + airlock run ...`; the gateway's stderr is discarded."""
    argv = wrap + [airlock, "run", "--config", f"{work}/airlock-{sandbox}.toml", "--agent", "bench",
                   "--server", server_name, "--"] + server
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, cwd=work)
    next_id = [0]

    def send(msg):
        p.stdin.write((json.dumps(msg) + "\n").encode())
        p.stdin.flush()

    def request(method, params):
        next_id[0] += 1
        send({"jsonrpc": "2.0", "id": next_id[0], "method": method, "params": params})
        while True:
            line = p.stdout.readline()
            if not line:
                die(f"the gateway closed its output ({' '.join(argv[:3])} ...)")
            msg = json.loads(line)
            if msg.get("id") == next_id[0]:
                return msg

    request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "hot-text", "version": "0"}})
    send({"jsonrpc": "2.0", "method": "notifications/initialized", "params": {}})
    request("tools/list", {})
    time.sleep(2.5)  # one tick of the anchor task
    for i in range(CALLS):
        request("tools/call", {"name": tool, "arguments": args})
        if i % 50 == 0:
            request("tools/call", {"name": "not-permitted", "arguments": {}})
            request("ping", {})
    time.sleep(2.5)
    p.stdin.close()
    p.wait(timeout=60)


def callgrind_functions(airlock, work, cfg):
    if not shutil.which("valgrind"):
        die("needs valgrind")
    out = f"{work}/cg.out"
    wrap = ["valgrind", "--tool=callgrind", "--dump-after=malloc_trim", "--demangle=no",
            "--dump-instr=no", f"--callgrind-out-file={out}.%p"]
    drive(wrap, airlock, work, "off", *cfg)
    # The gateway's first dump (.1) is start-up; its last file (no suffix) is what ran after.
    # Other files are forked children's.
    dumps = [f for f in os.listdir(work) if re.fullmatch(r"cg\.out\.\d+\.1", f)]
    if len(dumps) != 1 or not os.path.exists(f"{work}/{dumps[0][:-2]}"):
        die(f"expected one callgrind profile split at malloc_trim, found {sorted(dumps)}")
    earlier, final = dumps[0], dumps[0][:-2]
    return parse_callgrind([f"{work}/{earlier}", f"{work}/{final}"], os.path.realpath(airlock))


def parse_callgrind(files, exe):
    """Names of the executable's functions with a cost in the last file (earlier files only
    define compressed names)."""
    names = {"fn": {}, "ob": {}}
    hot = {}

    def resolve(kind, v):
        m = re.match(r"\((\d+)\)(?: (.*))?$", v)
        if not m:
            return v
        if m[2] is not None:
            names[kind][m[1]] = m[2]
        return names[kind].get(m[1])

    for i, path in enumerate(files):
        last = i == len(files) - 1
        ob = fn = None
        after_calls = False
        with open(path) as f:
            for line in f:
                key, eq, val = line.rstrip("\n").partition("=")
                if eq and key in ("ob", "cob"):
                    r = resolve("ob", val)
                    if key == "ob":
                        ob = r
                elif eq and key in ("fn", "cfn"):
                    r = resolve("fn", val)
                    if key == "fn":
                        fn = r
                elif eq and key == "calls":
                    after_calls = True
                elif line[:1].isdigit() or line[:1] in "+-*":
                    if after_calls:  # the cost line of a call belongs to the callee
                        after_calls = False
                    # Valgrind names the object "???" for code outside the `.text` section, as
                    # in `.text.hot`: taken as the executable's (another's name is harmless).
                    elif last and fn and ob and (ob == "???" or os.path.realpath(ob) == exe):
                        cost = line.split()
                        if len(cost) > 1:
                            hot[fn] = hot.get(fn, 0) + int(cost[1])
    # Callgrind marks recursion cycles with 'N.
    return {re.sub(r"'\d+$", "", n): c for n, c in hot.items() if not n.startswith("0x")}


def perf_functions(airlock, work, cfg):
    """Functions whose code faulted in after the executable's text was released."""
    if not shutil.which("perf"):
        print("hot-text: no perf; skipping the page-fault pass", file=sys.stderr)
        return {}
    data = f"{work}/pf.data"
    wrap = ["perf", "record", "-q", "-e", "page-faults", "-e", "syscalls:sys_enter_madvise",
            "-c", "1", "-d", "-o", data, "--"]
    try:
        drive(wrap, airlock, work, "default", *cfg)
        text = subprocess.run(["perf", "script", "-i", data, "--show-mmap-events", "-F",
                               "pid,event,addr,ip,sym,trace", "--no-demangle"],
                              capture_output=True, text=True, check=True).stdout
    except (subprocess.CalledProcessError, SystemExit) as e:
        print(f"hot-text: perf failed ({e}); skipping the page-fault pass", file=sys.stderr)
        return {}
    exe = os.path.realpath(airlock)
    gateway = text_start = text_end = None
    released = False
    hot = {}
    for line in text.splitlines():
        if "PERF_RECORD_MMAP" in line and line.rstrip().endswith(exe) and " r-xp " in line:
            m = re.search(r"(\d+)/\d+: \[(0x[0-9a-f]+)\((0x[0-9a-f]+)\)", line)
            if m and gateway is None:
                gateway, text_start = m[1], int(m[2], 16)
                text_end = text_start + int(m[3], 16)
            continue
        fields = line.split()
        if gateway is None or not fields or fields[0] != gateway:
            continue
        m = re.search(r"sys_enter_madvise: start: (0x[0-9a-f]+)", line)
        if m and int(m[1], 16) == text_start:
            released = True
        elif released and "page-faults" in line:
            # `addr symbol ip symbol`: a fault in the text is the fetch of the function's code.
            m = re.search(r"page-faults:\s+([0-9a-f]+) (\S+)", line)
            if m and text_start <= int(m[1], 16) < text_end and m[2] != "[unknown]":
                hot[m[2]] = hot.get(m[2], 0) + 1
    if not released:
        print("hot-text: perf saw no release of the text; skipping its samples", file=sys.stderr)
    return hot


def main():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    airlock = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else f"{target}/release/airlock")
    if not os.path.exists(airlock):
        die(f"no {airlock}: cargo build --release -p airlock-cli")
    work = tempfile.mkdtemp(prefix="airlock-hot-text.")
    os.chmod(work, 0o777)  # as root the sandboxed server runs as nobody
    try:
        write_config(work, airlock, "off")
        cfg = write_config(work, airlock, "default")
        hot = callgrind_functions(airlock, work, cfg)
        print(f"hot-text: callgrind: {len(hot)} functions", file=sys.stderr)
        faulted = perf_functions(airlock, work, cfg)
        new = [n for n in faulted if n not in hot]
        print(f"hot-text: perf: {len(faulted)} functions faulted in, {len(new)} more",
              file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # The ThinLTO suffix (.llvm.<module hash>) changes with every edit of the module: match
    # any suffix. (The legacy symbol hash, h<16 hex>, stays: it depends on the crate's
    # -C metadata, not on its code.) Order: callgrind's by cost, then perf's.
    order = sorted(hot, key=lambda n: -hot[n]) + new
    seen, lines = set(), []
    for name in order:
        base = re.sub(r"\.llvm\.\d+$", "", name)
        if base in seen or not re.fullmatch(r"[A-Za-z0-9_.$]+", base):
            continue
        seen.add(base)
        # Cold functions (#[cold], as growing a Vec is) are in `.text.unlikely.` sections.
        lines.append(f"    *(.text.{base} .text.{base}.llvm.* .text.unlikely.{base} "
                     f".text.unlikely.{base}.llvm.*)\n")
    with open(OUT, "w") as f:
        f.write("/* Generated by scripts/hot-text.py; linked into release `airlock` builds by\n"
                "   crates/airlock-cli/build.rs. The code `airlock run` runs after start-up, in\n"
                "   one place, so the few pages it needs stay few. */\n")
        f.write("SECTIONS {\n  .text.hot : {\n")
        f.writelines(lines)
        f.write("  }\n} INSERT BEFORE .text;\n")
    print(f"hot-text: wrote {len(lines)} functions to {os.path.relpath(OUT, ROOT)}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
