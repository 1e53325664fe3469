"""Human approval through the real gateway, with the official MCP client as the agent.

A held call stays open while a human decides from the CLI (`airlock approvals`); once approved it
returns exactly what the server returns directly; a denial is a JSON-RPC error, and the session
goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import anyio
import pytest
from mcp import MCPError

from conftest import dump

pytestmark = [pytest.mark.anyio, pytest.mark.gateway]

TOKEN = "alt_python_approval_tests"
POLICY = """\
@id("allow-echo")
permit(principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"everything/echo");

@id("loud-echoes")
@approval("echoing `publish` needs a sign-off")
@approvers("comms")
forbid(principal, action == Action::"call_tool", resource == Tool::"everything/echo")
when { context.args has message && context.args.message like "publish*" }
unless { context.approval.granted };
"""
APPROVERS = f"""
[humans.bob]
groups = ["comms"]
token_sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"
"""


async def _pending(airlock, config) -> dict:
    """Waits for the one pending request and returns it."""
    with anyio.fail_after(20):
        while True:
            out = airlock.cli("approvals", "list", "--json", "--config", config.path)
            assert out.returncode == 0, out.stderr
            pending = json.loads(out.stdout)
            if pending:
                return pending[0]
            await anyio.sleep(0.05)


def _decide(airlock, config, verb: str, approval_id: str, *extra: str):
    return subprocess.run(
        [str(airlock.binary), "approvals", verb, approval_id, "--config", str(config.path), "--as", "bob", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AIRLOCK_TOKEN": TOKEN},
    )


async def test_a_held_call_completes_after_a_cli_approval_and_a_denial_is_an_error(
    airlock, direct, everything_cmd
):
    config = airlock.config(POLICY, extra_toml=APPROVERS)
    async with direct(everything_cmd) as d:
        expected = dump(await d.call_tool("echo", {"message": "publish this"}))
    async with airlock.session(config, everything_cmd) as s:
        result: dict = {}

        async def call():
            result["value"] = await s.call_tool("echo", {"message": "publish this"})

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            held = await _pending(airlock, config)
            assert held["target"] == "echo" and held["agent"] == "bot"
            assert held["args_redacted"] == {"message": "publish this"}
            assert held["reasons"][0]["why"] == "echoing `publish` needs a sign-off"
            assert "value" not in result
            out = _decide(airlock, config, "approve", held["id"], "--comment", "fine")
            assert out.returncode == 0, out.stderr
        assert dump(result["value"]) == expected

        # A denial reaches the client as a JSON-RPC error naming the human; the session goes on.
        async def denied():
            with pytest.raises(MCPError) as e:
                await s.call_tool("echo", {"message": "publish that"})
            result["error"] = e.value

        async with anyio.create_task_group() as tg:
            tg.start_soon(denied)
            held = await _pending(airlock, config)
            out = _decide(airlock, config, "deny", held["id"], "--comment", "not now")
            assert out.returncode == 0, out.stderr
        assert result["error"].error.code == -31008
        assert "bob (not now)" in result["error"].error.message
        assert [c.text for c in (await s.call_tool("echo", {"message": "quiet"})).content] == ["Echo: quiet"]

    records = airlock.audit_query(config)
    allowed = [r for r in records if r["kind"] == "call" and r["decision"] == "allow" and r["target"] == "echo"]
    assert any(r["detail"] and r["detail"].get("approved_by") == ["bob"] for r in allowed), allowed
    assert airlock.audit_verify(config).returncode == 0
