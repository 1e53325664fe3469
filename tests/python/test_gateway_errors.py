"""Airlock's own answers: unknown methods, a dead upstream, and `airlock check` on broken files."""

from __future__ import annotations

import re
import sys
from typing import Any

import mcp.types as types
import pytest
from mcp import MCPError

from conftest import UNKNOWN_METHOD, UPSTREAM_UNAVAILABLE, dump

pytestmark = [pytest.mark.anyio, pytest.mark.gateway]

ECHO_POLICY = """\
@id("allow-echo")
permit(principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"everything/echo");
"""

# A minimal stdio MCP server that dies (exit 3, no answer) when its tool `crash` is called.
CRASHING_SERVER = r"""
import json, os, sys
for line in sys.stdin:
    msg = json.loads(line)
    method, mid = msg.get("method"), msg.get("id")
    if mid is None:
        continue
    if method == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "crasher", "version": "0"}}
    elif method == "tools/list":
        result = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in ("ok", "crash")]}
    elif method == "tools/call" and msg["params"]["name"] == "crash":
        os._exit(3)
    elif method == "tools/call":
        result = {"content": [{"type": "text", "text": "ok"}]}
    elif method == "ping":
        result = {}
    else:
        print(json.dumps({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "nope"}}), flush=True)
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": mid, "result": result}), flush=True)
"""
CRASHER_POLICY = """\
@id("allow-crasher")
permit(principal == Agent::"bot", action == Action::"call_tool", resource in Server::"crasher");
"""


def unknown_request(method: str) -> types.Request[Any, str]:
    return types.Request[dict[str, Any] | None, str](method=method, params=None)


async def test_unknown_method_is_refused_and_the_session_goes_on(airlock, direct, everything_cmd):
    config = airlock.config(ECHO_POLICY)
    async with direct(everything_cmd) as d:
        expected_echo = dump(await d.call_tool("echo", {"message": "after"}))
    async with airlock.session(config, everything_cmd) as s:
        with pytest.raises(MCPError) as err:
            await s.send_request(unknown_request("airlock/not-a-method"), types.EmptyResult)
        assert err.value.code == UNKNOWN_METHOD, f"{err.value.code}: {err.value}"
        await s.send_ping()
        assert dump(await s.call_tool("echo", {"message": "after"})) == expected_echo


async def test_dead_upstream_is_reported_as_unavailable(airlock, tmp_path):
    server = tmp_path / "crashing_server.py"
    server.write_text(CRASHING_SERVER)
    config = airlock.config(CRASHER_POLICY, server="crasher")
    async with airlock.session(config, [sys.executable, server]) as s:
        assert [t.name for t in (await s.list_tools()).tools] == ["ok", "crash"]
        assert [c.text for c in (await s.call_tool("ok", {})).content] == ["ok"]
        with pytest.raises(MCPError) as err:
            await s.call_tool("crash", {})
        assert err.value.code == UPSTREAM_UNAVAILABLE, f"{err.value.code}: {err.value}"


def test_check_accepts_a_valid_config(airlock):
    config = airlock.config(ECHO_POLICY)
    out = airlock.cli("check", "--config", config.path)
    assert out.returncode == 0, f"airlock check failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    assert out.stdout.strip(), "airlock check should print a summary"


@pytest.mark.parametrize(
    ("policy", "extra_toml", "where"),
    [
        # a Cedar syntax error on line 2
        ('@id("ok")\npermit(principal, action, resource) when { context.args. };\n', "", r"airlock\.cedar:2:\d+: "),
        # a policy the schema rejects (no such action) on line 1
        ('@id("bad") permit(principal, action == Action::"launch_rockets", resource);\n', "", r"airlock\.cedar:1:\d+: "),
        # an agent acting for a human the config does not define (line 18 of the generated file)
        (ECHO_POLICY, '[agents.rogue]\non_behalf_of = "mallory"\ntask = "t1"\n', r"airlock\.toml:18:\d+: "),
    ],
    ids=["cedar-syntax", "cedar-schema", "toml-unknown-human"],
)
def test_check_points_at_the_error(airlock, policy, extra_toml, where):
    config = airlock.config(policy, extra_toml=extra_toml)
    assert config.path.read_text().splitlines()[17:18] in ([], ['on_behalf_of = "mallory"'])
    out = airlock.cli("check", "--config", config.path)
    assert out.returncode == 2, f"expected exit 2, got {out.returncode}:\n{out.stdout}\n{out.stderr}"
    assert re.search(where, out.stdout + out.stderr), f"no {where!r} in:\n{out.stdout}\n{out.stderr}"
