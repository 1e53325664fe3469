"""The Streamable HTTP gateway: `airlock serve` in front of HTTP and stdio upstreams (issue 16).

Contract under test:
- `http://ADDR/mcp/<server>` serves one upstream; `http://ADDR/mcp` all of them, tool names
  namespaced `<server>__<tool>`.
- Agents authenticate with `Authorization: Bearer <token>` (`[agents.NAME] token_sha256`); a
  missing, wrong or revoked token is 401 and nothing reaches an upstream.
- `[servers.X] url = …` (remote Streamable HTTP) or `command = […]` (stdio); upstream credentials
  come from `[servers.X.credentials] headers` with `${secret:NAME}` from `[secrets] file`, and
  never reach the agent.

Every test talks to the real binary with the SDK's Streamable HTTP client (`modern_client.connect`,
either era) or raw HTTP, to upstreams the tests start themselves: server-everything over HTTP and
stdio, and tests/fixtures/echo_http.py, whose request log shows what the gateway forwarded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp.types as types
import pytest
from mcp import MCPError

from conftest import DENIED, EVERYTHING_JS, TIMEOUT, Listening, _toml_str, dump
from modern_client import (
    ACCEPT,
    HEADER_MISMATCH,
    LEGACY,
    MODERN,
    UNSUPPORTED_PROTOCOL_VERSION,
    connect,
    messages,
    modern_request,
    post,
)

pytestmark = [pytest.mark.anyio, pytest.mark.gateway]

# The injected upstream credential, and a body-size limit small enough to cross cheaply.
SECRET = "sekrit-upstream-credential-7f3a9c"
MAX_FRAME = 64 * 1024

POLICY = """\
// bot (for alice): server-everything's echo and long-running tool, both servers' get-sum on stdio,
// and echo_http's tools; never "top secret" through echo.
@id("bot-everything")
permit(principal == Agent::"bot", action == Action::"call_tool", resource)
when { [Tool::"everything/echo", Tool::"everything/trigger-long-running-operation",
        Tool::"local/get-sum", Tool::"local/echo"].contains(resource) };

@id("no-secrets")
@reason("secrets must not be echoed")
forbid(principal, action == Action::"call_tool", resource)
when { [Tool::"everything/echo", Tool::"local/echo"].contains(resource)
       && context.args has message && context.args.message == "top secret" };

@id("bot-echo-http")
permit(principal == Agent::"bot", action == Action::"call_tool", resource in Server::"echo");

@id("no-headers-for-other")
@reason("the other agent may only speak")
forbid(principal == Agent::"other", action == Action::"call_tool", resource == Tool::"echo/echo_headers");

// other (for bob): echo_http's say, and nothing else.
@id("other-say")
permit(principal == Agent::"other", action == Action::"call_tool", resource == Tool::"echo/say");
"""

BOT_EVERYTHING = {"echo", "trigger-long-running-operation"}
BOT_LOCAL = {"get-sum", "echo"}
ECHO_TOOLS = {"echo", "say", "echo_headers", "slow", "cancelled_calls", "notify_list_changed"}


def token_and_digest() -> tuple[str, str]:
    token = "agt_" + secrets.token_hex(20)
    return token, hashlib.sha256(token.encode()).hexdigest()


def text(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def assert_denied(err: pytest.ExceptionInfo[MCPError], *naming: str) -> None:
    assert err.value.code == DENIED, f"expected Airlock's deny code {DENIED}, got {err.value.code}: {err.value}"
    if naming:
        assert any(n in err.value.message for n in naming), f"deny message should name {naming}: {err.value.message!r}"


# === the gateway under test ===


@dataclasses.dataclass
class Gateway:
    served: Listening
    config: Path
    tokens: dict[str, str]  # agent → bearer token
    humans: dict[str, str] = dataclasses.field(default_factory=dict)  # human → control-plane token

    async def api(self, method: str, path: str, payload: Any = None, *, as_human: str = "bob") -> tuple[int, Any]:
        """The control plane's HTTP API (kills, approvals), as a human."""
        async with httpx2.AsyncClient(timeout=TIMEOUT) as c:
            r = await c.request(
                method,
                f"{self.served.base}{path}",
                json=payload,
                headers={"Authorization": f"Bearer {as_human}:{self.humans[as_human]}"},
            )
            return r.status_code, (r.json() if r.content else None)

    def endpoint(self, server: str | None = None) -> str:
        return f"{self.served.base}/mcp" + (f"/{server}" if server else "")

    def connect(self, server: str | None = None, *, agent: str = "bot", mode: str = "legacy", **kwargs: Any):
        return connect(self.endpoint(server), token=self.tokens[agent], mode=mode, **kwargs)

    async def raw(
        self,
        method: str,
        server: str | None,
        *,
        body: bytes | Any = None,
        headers: dict[str, str] | None = None,
        agent: str | None = "bot",
    ) -> httpx2.Response:
        h = dict(headers or {})
        if agent is not None:
            h.setdefault("Authorization", f"Bearer {self.tokens[agent]}")
        content = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        async with httpx2.AsyncClient(timeout=TIMEOUT) as c:
            r = await c.request(method, self.endpoint(server), content=content, headers=h)
            await r.aread()
            return r

    async def initialize(self, server: str | None, *, agent: str = "bot") -> str:
        """A legacy session by hand (initialize + initialized): its Mcp-Session-Id."""
        r = await self.raw("POST", server, body=INITIALIZE, headers=JSON_HEADERS, agent=agent)
        assert r.status_code == 200, (r.status_code, r.text)
        assert messages(r)[-1]["result"]["protocolVersion"] == LEGACY, r.text
        sid = r.headers["mcp-session-id"]
        r = await self.raw("POST", server, body=INITIALIZED, headers=session_headers(sid), agent=agent)
        assert r.status_code == 202, (r.status_code, r.text)
        return sid

    def audit(self, airlock: Any, agent: str) -> list[dict[str, Any]]:
        out = airlock.cli("audit", "query", "--config", self.config, "--agent", agent, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def stderr(self) -> str:
        return self.served.stderr_path.read_text(errors="replace")


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
JSON_HEADERS = {"Accept": ACCEPT, "Content-Type": "application/json"}


def session_headers(sid: str) -> dict[str, str]:
    return {**JSON_HEADERS, "Mcp-Session-Id": sid, "MCP-Protocol-Version": LEGACY}


def tools_list(id_: int = 2) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/list"}


def url_server(url: str, *, credentials: bool = False) -> str:
    text_ = f"url = {_toml_str(url)}\ntimeout_secs = {int(TIMEOUT)}\n"
    if credentials:
        text_ += f"\n[servers.NAME.credentials]\nheaders = {{ Authorization = {_toml_str('Bearer ${secret:x_token}')} }}\n"
    return text_


def stdio_everything() -> str:
    node = shutil.which("node") or "node"
    return f'command = [{_toml_str(node)}, {_toml_str(EVERYTHING_JS)}, "stdio"]\nsandbox = "off"\n'


@pytest.fixture
def gateway(tmp_path: Path, airlock_serve: Callable[..., Listening]) -> Callable[..., Gateway]:
    """`gateway({"name": url_server(…) | stdio_everything()}, policy=POLICY)` → a running `airlock serve`.

    Agents: bot (for alice) and other (for bob), task t1, each with a fresh token (`token_sha256`);
    the secret `x_token` = SECRET in a mode-600 secrets file; `[gateway] max_frame_bytes` = MAX_FRAME.
    """

    def start(
        servers: dict[str, str],
        *,
        policy: str = POLICY,
        secrets_extra: dict[str, str] | None = None,
        extra_config: str = "",
    ) -> Gateway:
        tokens: dict[str, str] = {}
        agents = ""
        for agent, human in (("bot", "alice"), ("other", "bob")):
            token, digest = token_and_digest()
            tokens[agent] = token
            agents += f"[agents.{agent}]\non_behalf_of = \"{human}\"\ntask = \"t1\"\ntoken_sha256 = \"{digest}\"\n\n"
        humans: dict[str, str] = {}
        human_sections = ""
        for human in ("alice", "bob"):
            token, digest = token_and_digest()
            humans[human] = token
            human_sections += f"[humans.{human}]\ntoken_sha256 = \"{digest}\"\n"
        secrets_file = tmp_path / "secrets.toml"
        extra = "".join(f"{k} = {_toml_str(v)}\n" for k, v in (secrets_extra or {}).items())
        secrets_file.write_text(f"x_token = {_toml_str(SECRET)}\n{extra}")
        secrets_file.chmod(0o600)
        (tmp_path / "airlock.cedar").write_text(policy)
        upstreams = "".join(f"[servers.{name}]\n{body.replace('servers.NAME.', f'servers.{name}.')}\n" for name, body in servers.items())
        config = tmp_path / "airlock.toml"
        config.write_text(
            f"""\
[gateway]
max_frame_bytes = {MAX_FRAME}

[policy]
files = [{_toml_str(tmp_path / "airlock.cedar")}]

[audit]
path = {_toml_str(tmp_path / "airlock-audit.db")}

[secrets]
file = {_toml_str(secrets_file)}

{human_sections}
[tasks.t1]
description = "test task"

{agents}[breakers.defaults]
enabled = false

{upstreams}
{extra_config}"""
        )
        return Gateway(airlock_serve(config), config, tokens, humans)

    return start


async def progress_of(client: Any, tool: str, args: dict[str, Any]) -> tuple[types.CallToolResult, list[tuple[float, float | None]]]:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(p: float, total: float | None, _message: str | None) -> None:
        seen.append((p, total))

    result = await client.call_tool(tool, args, progress_callback=on_progress)
    return result, seen


async def cancel_after_first_progress(client: Any, tool: str, args: dict[str, Any]) -> None:
    first = anyio.Event()

    async def on_progress(_p: float, _t: float | None, _m: str | None) -> None:
        first.set()

    async with anyio.create_task_group() as tg:

        async def run() -> None:
            await client.call_tool(tool, args, progress_callback=on_progress)
            raise AssertionError("the call finished before it was cancelled")

        tg.start_soon(run)
        with anyio.fail_after(TIMEOUT):
            await first.wait()
        tg.cancel_scope.cancel()


async def cancelled_labels(client: Any, label: str, tool: str = "cancelled_calls") -> dict[str, list[str]]:
    calls: dict[str, list[str]] = {}
    for _ in range(100):
        calls = json.loads(text(await client.call_tool(tool, {})))
        if label in calls["cancelled"]:
            break
        await anyio.sleep(0.05)
    return calls


def forwarded(upstream: Listening) -> list[dict[str, Any]]:
    """The JSON-RPC bodies echo_http received (requests and notifications), in order."""
    out = []
    for r in upstream.log():
        if r["body"]:
            try:
                out.append(json.loads(r["body"]))
            except ValueError:
                out.append({"unparsed": r["body"][:200]})
    return out


def called_tools(upstream: Listening) -> list[str]:
    return [b["params"]["name"] for b in forwarded(upstream) if isinstance(b, dict) and b.get("method") == "tools/call"]


# === (a) tools listed and namespaced, only what policy allows ===


async def test_aggregated_endpoint_namespaces_and_filters_tools(gateway, everything_http):
    gw = gateway({"everything": url_server(everything_http), "local": stdio_everything()})
    with anyio.fail_after(TIMEOUT * 3):
        async with connect(everything_http) as d:
            upstream_tools = {t.name: t for t in (await d.list_tools()).tools}
            expected_sum = dump(await d.call_tool("get-sum", {"a": 1, "b": 2}))
            expected_echo = dump(await d.call_tool("echo", {"message": "agg"}))
        async with gw.connect() as c:
            listed = (await c.list_tools()).tools
            names = {t.name for t in listed}
            assert names == {f"everything__{n}" for n in BOT_EVERYTHING} | {f"local__{n}" for n in BOT_LOCAL}
            for tool in listed:
                server, _, name = tool.name.partition("__")
                original = upstream_tools[name]
                assert server in ("everything", "local"), tool.name
                assert tool.input_schema == original.input_schema, tool.name
                assert tool.annotations == original.annotations, tool.name
            # Both servers have `echo`: the prefix picks the upstream; results are the upstream's own.
            assert dump(await c.call_tool("local__get-sum", {"a": 1, "b": 2})) == expected_sum
            assert dump(await c.call_tool("everything__echo", {"message": "agg"})) == expected_echo
            assert text(await c.call_tool("local__echo", {"message": "agg"})) == "Echo: agg"
            with pytest.raises(MCPError) as err:
                await c.call_tool("everything__get-sum", {"a": 1, "b": 2})
            assert_denied(err)
        # One upstream's endpoint: its allowed tools, under their own names.
        async with gw.connect("everything") as c:
            assert {t.name for t in (await c.list_tools()).tools} == BOT_EVERYTHING
        async with gw.connect("local") as c:
            assert {t.name for t in (await c.list_tools()).tools} == BOT_LOCAL


# === (b) allowed calls pass, denied ones name the policy ===


async def test_allowed_call_passes_and_denied_call_names_the_policy(gateway, everything_http):
    gw = gateway({"everything": url_server(everything_http)})
    with anyio.fail_after(TIMEOUT * 2):
        async with connect(everything_http) as d:
            expected = dump(await d.call_tool("echo", {"message": "through the airlock"}))
        async with gw.connect("everything") as c:
            assert dump(await c.call_tool("echo", {"message": "through the airlock"})) == expected
            with pytest.raises(MCPError) as err:
                await c.call_tool("echo", {"message": "top secret"})
            assert_denied(err, "no-secrets", "secrets must not be echoed")
            with pytest.raises(MCPError) as err:
                await c.call_tool("get-sum", {"a": 1, "b": 2})
            assert_denied(err)
            # The session goes on.
            assert dump(await c.call_tool("echo", {"message": "through the airlock"})) == expected


# === (c) progress streams through ===


async def test_long_running_call_streams_progress(gateway, everything_http, echo_http):
    upstream = echo_http()
    gw = gateway({"everything": url_server(everything_http), "echo": url_server(upstream.url)})
    with anyio.fail_after(TIMEOUT * 2):
        async with gw.connect("everything") as c:
            result, seen = await progress_of(c, "trigger-long-running-operation", {"duration": 1, "steps": 2})
            assert seen == [(1.0, 2.0), (2.0, 2.0)]
            assert "Long running operation completed" in text(result)
        async with gw.connect() as c:
            result, seen = await progress_of(c, "echo__slow", {"steps": 3, "delay_ms": 50, "label": "p"})
            assert seen == [(1.0, 3.0), (2.0, 3.0), (3.0, 3.0)]
            assert text(result) == "done p after 3 steps"


# === (d) cancellation reaches the upstream ===


async def test_cancel_reaches_the_upstream(gateway, echo_http):
    upstream = echo_http()
    gw = gateway({"echo": url_server(upstream.url)})
    with anyio.fail_after(TIMEOUT * 2):
        async with gw.connect("echo") as c:
            await cancel_after_first_progress(c, "slow", {"steps": 200, "delay_ms": 50, "label": "c1"})
            calls = await cancelled_labels(c, "c1")
    assert calls["started"] == ["c1"] and calls["cancelled"] == ["c1"] and calls["completed"] == [], calls
    cancels = [b for b in forwarded(upstream) if b.get("method") == "notifications/cancelled"]
    assert len(cancels) == 1, forwarded(upstream)


# === (e) identity ===


async def test_missing_or_wrong_token_is_401_and_reaches_no_upstream(gateway, echo_http):
    upstream = echo_http()
    gw = gateway({"echo": url_server(upstream.url)})
    other_token, _ = token_and_digest()
    cases = {
        "missing": {},
        "wrong token": {"Authorization": f"Bearer {other_token}"},
        "digest as token": {"Authorization": f"Bearer {hashlib.sha256(gw.tokens['bot'].encode()).hexdigest()}"},
        "not bearer": {"Authorization": f"Basic {gw.tokens['bot']}"},
        "bearer without a token": {"Authorization": "Bearer"},
    }
    for server in ("echo", None):
        for what, auth in cases.items():
            r = await gw.raw("POST", server, body=INITIALIZE, headers={**JSON_HEADERS, **auth}, agent=None)
            assert r.status_code == 401, (server, what, r.status_code, r.text)
            assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), (what, r.headers)
            assert gw.tokens["bot"] not in r.text
    # Not even the handshake reached the upstream.
    assert upstream.log() == []
    # A GET stream and a DELETE without a token are refused the same way.
    assert (await gw.raw("GET", "echo", headers={"Accept": "text/event-stream"}, agent=None)).status_code == 401
    assert (await gw.raw("DELETE", "echo", agent=None)).status_code == 401
    assert upstream.log() == []
    assert gw.tokens["bot"] not in gw.stderr() and gw.tokens["other"] not in gw.stderr()


async def test_one_agents_token_never_acts_as_another(airlock, gateway, echo_http):
    upstream = echo_http()
    gw = gateway({"echo": url_server(upstream.url)})
    with anyio.fail_after(TIMEOUT * 2):
        async with gw.connect("echo", agent="bot") as bot, gw.connect("echo", agent="other") as other:
            assert {t.name for t in (await bot.list_tools()).tools} == ECHO_TOOLS
            assert {t.name for t in (await other.list_tools()).tools} == {"say"}
            assert text(await bot.call_tool("echo", {"message": "bot here"})) == "bot here"
            assert text(await other.call_tool("say", {"text": "other here"})) == "other here"
            with pytest.raises(MCPError) as err:
                await other.call_tool("echo", {"message": "as bot?"})
            assert_denied(err)
            with pytest.raises(MCPError) as err:
                await other.call_tool("echo_headers", {})
            assert_denied(err, "no-headers-for-other", "the other agent may only speak")
    assert called_tools(upstream) == ["echo", "say"], "denied calls never reach the upstream"

    # A session belongs to the token that opened it: another agent's token cannot use or end it.
    sid = await gw.initialize("echo", agent="bot")
    r = await gw.raw("POST", "echo", body={"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                           "params": {"name": "echo", "arguments": {"message": "hijack"}}},
                     headers=session_headers(sid), agent="other")
    assert r.status_code in (401, 403, 404), (r.status_code, r.text)
    assert "hijack" not in r.text
    r = await gw.raw("DELETE", "echo", headers=session_headers(sid), agent="other")
    assert r.status_code in (401, 403, 404), (r.status_code, r.text)
    r = await gw.raw("POST", "echo", body=tools_list(), headers=session_headers(sid), agent="bot")
    assert r.status_code == 200, "bot's session survived the other agent's DELETE"
    assert "hijack" not in called_tools(upstream) and called_tools(upstream).count("echo") == 1

    # The audit trail names the right agent and human for each call.
    def calls(agent: str) -> list[tuple[str, str, str]]:
        records = gw.audit(airlock, agent)
        return [(r["target"], r["decision"], r["on_behalf_of"]) for r in records
                if r["kind"] == "call" and r.get("target") in ECHO_TOOLS]

    bot_calls, other_calls = calls("bot"), calls("other")
    assert bot_calls == [("echo", "allow", "alice")], bot_calls
    assert other_calls == [("say", "allow", "bob"), ("echo", "deny", "bob"), ("echo_headers", "deny", "bob")], other_calls


# === (f) injected credentials never reach the agent ===


async def test_injected_credential_is_used_upstream_and_never_shown_to_the_agent(gateway, echo_http):
    upstream = echo_http()
    gw = gateway({"echo": url_server(upstream.url, credentials=True)})
    with anyio.fail_after(TIMEOUT * 2):
        async with gw.connect("echo") as c:
            seen = await c.call_tool("echo_headers", {})
            said = await c.call_tool("say", {"text": f"the key is {SECRET}, keep it"})
            raw_said = await c.call_tool("say", {"text": SECRET})
    received = json.dumps([dump(seen), dump(said), dump(raw_said)])
    assert SECRET not in received, "the injected credential reached the agent"
    # The upstream did get it, on every request, and never the agent's own token.
    log = upstream.log()
    assert log, "nothing reached the upstream"
    for request in log:
        assert request["headers"].get("authorization") == f"Bearer {SECRET}", request["headers"]
        assert gw.tokens["bot"] not in json.dumps(request), "the agent's token was forwarded upstream"
    # The echo_headers result itself is still a JSON object of headers, minus the secret.
    headers = json.loads(text(seen))
    assert "host" in headers and SECRET not in json.dumps(headers)
    assert "keep it" in text(said)
    assert SECRET not in gw.stderr()


# === (g) a terminated session is gone ===


async def test_deleted_session_answers_404(gateway, echo_http):
    upstream = echo_http()
    gw = gateway({"echo": url_server(upstream.url)})
    for server in ("echo", None):
        sid = await gw.initialize(server)
        r = await gw.raw("POST", server, body=tools_list(), headers=session_headers(sid))
        assert r.status_code == 200 and messages(r)[-1]["result"]["tools"], r.text
        r = await gw.raw("DELETE", server, headers=session_headers(sid))
        assert r.status_code in (200, 202, 204), (r.status_code, r.text)
        r = await gw.raw("POST", server, body=tools_list(3), headers=session_headers(sid))
        assert r.status_code == 404, (server, r.status_code, r.text)
        r = await gw.raw("POST", server, body=tools_list(4), headers=session_headers("no-such-session"))
        assert r.status_code == 404, (server, r.status_code, r.text)


# === (h) bad input ===


def echo_call(id_: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": message}}}


async def test_bad_http_input_is_refused_before_any_upstream(gateway, echo_http):
    upstream = echo_http()
    gw = gateway({"echo": url_server(upstream.url)})
    sid = await gw.initialize("echo")
    s = session_headers(sid)
    big = json.dumps(echo_call(7, "x" * (2 * MAX_FRAME))).encode()

    r = await gw.raw("POST", "echo", body=big, headers=s)
    assert r.status_code == 413, (r.status_code, r.text[:300])

    async def chunks():
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    async with httpx2.AsyncClient(timeout=TIMEOUT) as h:
        r = await h.post(gw.endpoint("echo"), content=chunks(), headers={**s, "Authorization": f"Bearer {gw.tokens['bot']}"})
    assert r.status_code == 413, ("chunked, no Content-Length", r.status_code, r.text[:300])

    r = await gw.raw("POST", "echo", body=json.dumps(echo_call(8, "text/plain")).encode(), headers={**s, "Content-Type": "text/plain"})
    assert r.status_code == 415, (r.status_code, r.text)

    r = await gw.raw("POST", "echo", body=b'{"jsonrpc": "2.0", "id": 9, "method": ', headers=s)
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.json()["error"]["code"] == -32700, r.text

    r = await gw.raw("POST", "echo", body=echo_call(10, "foreign origin"), headers={**s, "Origin": "https://attacker.example"})
    assert r.status_code == 403, (r.status_code, r.text)
    r = await gw.raw("POST", "echo", body=echo_call(11, "own origin"), headers={**s, "Origin": gw.served.base})
    assert r.status_code == 200, ("the gateway's own origin is fine", r.status_code, r.text)

    # A foreign Host (a rebound DNS name): refused like the control plane does (guard.rs: 400).
    r = await gw.raw("POST", "echo", body=echo_call(12, "foreign host"), headers={**s, "Host": "attacker.example"})
    assert r.status_code in (400, 403, 421), (r.status_code, r.text)

    # Of all these, only the well-formed call from the gateway's own origin reached the upstream.
    assert called_tools(upstream) == ["echo"], forwarded(upstream)
    assert [b["params"]["arguments"]["message"] for b in forwarded(upstream) if b.get("method") == "tools/call"] == ["own origin"]


def slowloris(port: int, path: str, stop: threading.Event, opened: list[socket.socket], seconds: float) -> None:
    """One connection that sends a request line and then a header byte every 200 ms, never finishing."""
    deadline = time.monotonic() + seconds
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return  # refused (a connection limit, say): not this test's concern
    opened.append(s)
    try:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode())
        while not stop.is_set() and time.monotonic() < deadline:
            s.sendall(b"a")
            time.sleep(0.2)
    except OSError:
        pass  # the gateway gave up on it: fine
    finally:
        s.close()


async def test_slow_clients_do_not_stop_others(gateway, echo_http):
    upstream = echo_http()
    gw = gateway({"echo": url_server(upstream.url)})
    stop = threading.Event()
    opened: list[socket.socket] = []
    threads = [
        threading.Thread(target=slowloris, args=(gw.served.port, "/mcp/echo", stop, opened, 20.0), daemon=True)
        for _ in range(32)
    ]
    for t in threads:
        t.start()
    try:
        await anyio.sleep(1.0)
        assert len(opened) >= 16, "the slow clients could not even connect"
        started = time.monotonic()
        with anyio.fail_after(10):
            async with gw.connect("echo") as c:
                assert text(await c.call_tool("echo", {"message": "still served"})) == "still served"
        assert time.monotonic() - started < 10
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)


# === (i) 2026-07-28 through the gateway ===


async def test_modern_client_to_legacy_upstream(gateway, everything_http):
    gw = gateway({"everything": url_server(everything_http)})
    with anyio.fail_after(TIMEOUT * 2):
        async with connect(everything_http) as d:
            expected = dump(await d.call_tool("echo", {"message": "modern"}))
        async with gw.connect("everything", mode="auto") as c:
            assert c.protocol_version == MODERN, "the gateway answers server/discover for a legacy upstream"
            assert {t.name for t in (await c.list_tools()).tools} == BOT_EVERYTHING
            got = dump(await c.call_tool("echo", {"message": "modern"}))
            assert got["content"] == expected["content"]
            with pytest.raises(MCPError) as err:
                await c.call_tool("echo", {"message": "top secret"})
            assert_denied(err, "no-secrets", "secrets must not be echoed")
            _, seen = await progress_of(c, "trigger-long-running-operation", {"duration": 1, "steps": 2})
            assert seen == [(1.0, 2.0), (2.0, 2.0)]


async def test_modern_client_to_modern_upstream(gateway, echo_http):
    upstream = echo_http("modern")
    gw = gateway({"echo": url_server(upstream.url, credentials=True)})
    with anyio.fail_after(TIMEOUT * 2):
        async with gw.connect("echo", mode="auto") as c:
            assert c.protocol_version == MODERN
            assert text(await c.call_tool("echo", {"message": "2026"})) == "2026"
            seen = await c.call_tool("echo_headers", {})
    assert SECRET not in json.dumps(dump(seen))
    calls = [(r, json.loads(r["body"])) for r in upstream.log() if r["body"] and json.loads(r["body"]).get("method") == "tools/call"]
    assert calls, upstream.log()
    for request, body in calls:
        h = request["headers"]
        assert h["mcp-protocol-version"] == MODERN and h["mcp-method"] == "tools/call" and h["mcp-name"] == body["params"]["name"]
        assert body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == MODERN
        assert h["authorization"] == f"Bearer {SECRET}" and gw.tokens["bot"] not in json.dumps(request)


async def test_legacy_client_to_modern_upstream(gateway, echo_http):
    upstream = echo_http("modern")
    gw = gateway({"echo": url_server(upstream.url)})
    with anyio.fail_after(TIMEOUT * 2):
        async with gw.connect("echo", mode="legacy") as c:
            assert c.protocol_version == LEGACY
            assert text(await c.call_tool("echo", {"message": "bridged"})) == "bridged"
            _, seen = await progress_of(c, "slow", {"steps": 2, "delay_ms": 20, "label": "b"})
            assert seen == [(1.0, 2.0), (2.0, 2.0)]


async def test_modern_cancel_by_closing_the_stream_reaches_the_upstream(gateway, echo_http):
    upstream = echo_http()  # legacy: the gateway must turn the closed stream into notifications/cancelled
    gw = gateway({"echo": url_server(upstream.url)})
    with anyio.fail_after(TIMEOUT * 2):
        async with gw.connect("echo", mode="auto") as c:
            assert c.protocol_version == MODERN
            await cancel_after_first_progress(c, "slow", {"steps": 200, "delay_ms": 50, "label": "m1"})
            calls = await cancelled_labels(c, "m1")
    assert calls["cancelled"] == ["m1"] and calls["completed"] == [], calls


async def test_modern_headers_must_match_the_body(gateway, echo_http):
    upstream = echo_http("modern")
    gw = gateway({"echo": url_server(upstream.url)})
    token = gw.tokens["other"]  # may call say, may not call echo_headers

    async def send(body: Any, headers: dict[str, str]) -> httpx2.Response:
        return await post(gw.endpoint("echo"), body, headers, token=token)

    # The header names an allowed tool, the body a forbidden one: refused, not decided on the header.
    body, headers = modern_request("tools/call", {"name": "echo_headers", "arguments": {}}, headers={"Mcp-Name": "say"})
    r = await send(body, headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == HEADER_MISMATCH, (r.status_code, r.text)
    body, headers = modern_request("tools/call", {"name": "echo_headers", "arguments": {}}, headers={"Mcp-Method": "tools/list"})
    r = await send(body, headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == HEADER_MISMATCH, (r.status_code, r.text)
    body, headers = modern_request("tools/call", {"name": "say", "arguments": {"text": "x"}}, headers={"Mcp-Name": None})
    r = await send(body, headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == HEADER_MISMATCH, (r.status_code, r.text)
    body, headers = modern_request("tools/call", {"name": "say", "arguments": {"text": "x"}}, version="2099-01-01")
    r = await send(body, headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == UNSUPPORTED_PROTOCOL_VERSION, (r.status_code, r.text)
    assert MODERN in r.json()["error"]["data"]["supported"]
    r = await send({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {}},
                   {**JSON_HEADERS, "MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list"})
    assert r.status_code == 400 and r.json()["error"]["code"] == -32602, (r.status_code, r.text)
    assert called_tools(upstream) == [], "nothing ambiguous reached the upstream"

    # The same request with matching headers goes through.
    body, headers = modern_request("tools/call", {"name": "say", "arguments": {"text": "fine"}})
    r = await send(body, headers)
    assert r.status_code == 200, r.text
    assert messages(r)[-1]["result"]["content"][0]["text"] == "fine"
    assert called_tools(upstream) == ["say"]


# === the control plane reaches HTTP sessions: kills, approvals; ops endpoints ===

KILLED = -31007
HOLD_POLICY = POLICY + """
@id("publish-needs-sign-off")
@approval("echoing `publish` needs a sign-off")
forbid(principal, action == Action::"call_tool", resource == Tool::"echo/echo")
when { context.args has message && context.args.message like "publish*" }
unless { context.approval.granted };
"""


async def test_a_kill_stops_open_http_sessions_at_once(gateway, echo_http):
    upstream = echo_http()
    gw = gateway({"echo": url_server(upstream.url)})
    with anyio.fail_after(TIMEOUT * 2):
        async with gw.connect("echo") as c:
            assert text(await c.call_tool("echo", {"message": "before"})) == "before"
            outcome: dict[str, Any] = {}

            async def long_call() -> None:
                try:
                    await c.call_tool("slow", {"steps": 400, "delay_ms": 50, "label": "k1"})
                    outcome["result"] = "completed"
                except MCPError as e:
                    outcome["error"] = e

            async with anyio.create_task_group() as tg:
                tg.start_soon(long_call)
                await anyio.sleep(0.5)
                status, body = await gw.api("POST", "/api/v1/kill", {"scope": "agent", "target": "bot", "reason": "runaway"})
                assert status == 200, body
                # The store's notification wakes the gateway; the in-flight call ends without
                # waiting for the upstream (bounded generously: no timing assertion).
                with anyio.fail_after(TIMEOUT):
                    while not outcome:
                        await anyio.sleep(0.02)
            assert isinstance(outcome.get("error"), MCPError) and outcome["error"].code == KILLED, outcome
            with pytest.raises(MCPError) as err:
                await c.call_tool("echo", {"message": "after"})
            assert err.value.code == KILLED
    # Another agent is not stopped by bot's kill.
    async with gw.connect("echo", agent="other") as c:
        assert text(await c.call_tool("say", {"text": "still here"})) == "still here"


async def test_a_held_http_call_completes_once_a_human_approves(gateway, echo_http):
    upstream = echo_http()
    gw = gateway({"echo": url_server(upstream.url)}, policy=HOLD_POLICY)
    with anyio.fail_after(TIMEOUT * 2):
        async with gw.connect("echo") as c:
            result: dict[str, Any] = {}

            async def call() -> None:
                result["r"] = await c.call_tool("echo", {"message": "publish it"})

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                held = None
                while held is None:
                    status, body = await gw.api("GET", "/api/v1/approvals?state=pending")
                    assert status == 200, body
                    held = next(iter(body["approvals"]), None)
                    await anyio.sleep(0.05)
                assert (held["agent"], held["on_behalf_of"], held["target"]) == ("bot", "alice", "echo")
                assert "r" not in result and called_tools(upstream) == []
                # Bob approves: not the human the agent acts for.
                status, done = await gw.api("POST", f"/api/v1/approvals/{held['id']}/approve", {"digest": held["digest"]})
                assert status == 200, done
            assert text(result["r"]) == "publish it"
    assert called_tools(upstream) == ["echo"]


async def test_one_unreachable_upstream_leaves_the_others_working(gateway, echo_http):
    upstream = echo_http()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/mcp"  # nothing listens once closed
    gw = gateway({"gone": url_server(dead), "echo": url_server(upstream.url)})
    with anyio.fail_after(TIMEOUT * 2):
        async with gw.connect() as c:
            names = {t.name for t in (await c.list_tools()).tools}
            assert names == {f"echo__{n}" for n in ECHO_TOOLS}
            assert text(await c.call_tool("echo__echo", {"message": "alive"})) == "alive"
            with pytest.raises(MCPError):
                await c.call_tool("gone__anything", {})
        r = await gw.raw("POST", "gone", body=INITIALIZE, headers=JSON_HEADERS)
        assert messages(r)[-1]["error"]["code"] == -31003, (r.status_code, r.text)
        assert "cannot be reached" in messages(r)[-1]["error"]["message"]
        # A failed initialize opens no session.
        assert "mcp-session-id" not in r.headers


async def test_health_readiness_and_metrics(gateway, echo_http):
    upstream = echo_http()
    gw = gateway({"echo": url_server(upstream.url)})
    async with httpx2.AsyncClient(timeout=TIMEOUT) as h:
        assert (await h.get(f"{gw.served.base}/healthz")).status_code == 200
        assert (await h.get(f"{gw.served.base}/readyz")).status_code == 200
    async with gw.connect("echo") as c:
        assert text(await c.call_tool("echo", {"message": "m"})) == "m"
    async with gw.connect("echo", agent="other") as c:
        with pytest.raises(MCPError) as err:
            await c.call_tool("echo", {"message": "not yours"})
        assert_denied(err)
    await gw.raw("POST", "echo", body=INITIALIZE, headers=JSON_HEADERS, agent=None)
    async with httpx2.AsyncClient(timeout=TIMEOUT) as h:
        r = await h.get(f"{gw.served.base}/metrics")
    assert r.status_code == 200
    metrics = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            metrics[name] = float(value)
    assert metrics["airlock_mcp_requests_total"] >= 3  # initialize, tools/list, two calls
    assert metrics['airlock_mcp_answers_total{outcome="ok"}'] >= 2
    assert metrics['airlock_mcp_answers_total{outcome="denied"}'] >= 1
    assert metrics['airlock_http_refused_total{reason="unauthenticated"}'] >= 1
    assert metrics["airlock_mcp_request_duration_seconds_count"] >= 3
    assert "airlock_approvals_pending" in metrics and "airlock_kills_active" in metrics


async def interrupt_a_long_call(client: Any, label: str, interrupt: Callable[[], Any]) -> tuple[Any, float]:
    """Starts echo_http's `slow` (400 steps), runs `interrupt()` once it is under way, and waits for
    the call's end: its outcome (`"completed"` or the MCPError) and how long it took to come after
    the interruption."""
    outcome: dict[str, Any] = {}
    started = anyio.Event()

    async def on_progress(_p: float, _t: float | None, _m: str | None) -> None:
        started.set()

    async def long_call() -> None:
        try:
            await client.call_tool("slow", {"steps": 400, "delay_ms": 50, "label": label}, progress_callback=on_progress)
            outcome["r"] = "completed"
        except MCPError as e:
            outcome["r"] = e

    async with anyio.create_task_group() as tg:
        tg.start_soon(long_call)
        await started.wait()
        result = interrupt()
        if hasattr(result, "__await__"):
            await result
        at = time.monotonic()
        while "r" not in outcome:
            await anyio.sleep(0.01)
    return outcome["r"], time.monotonic() - at


async def test_a_registered_agent_acts_until_revoked_then_every_session_ends(airlock, gateway, echo_http):
    upstream = echo_http()
    policy = POLICY + '\npermit(principal == Agent::"temp", action == Action::"call_tool", resource) when { [Tool::"echo/echo", Tool::"echo/slow"].contains(resource) };\n'
    gw = gateway({"echo": url_server(upstream.url)}, policy=policy)
    out = airlock.cli("agents", "add", "temp", "--on-behalf-of", "alice", "--task", "t1", "--config", gw.config)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1]
    gw.tokens["temp"] = token
    # The control plane knows a registered agent too: it can be stopped and resumed.
    status, body = await gw.api("POST", "/api/v1/kill", {"scope": "agent", "target": "temp", "reason": "check"})
    assert status == 200, body
    status, body = await gw.api("POST", "/api/v1/resume", {"scope": "agent", "target": "temp"})
    assert status == 200, body
    with anyio.fail_after(TIMEOUT * 2):
        async with gw.connect("echo", agent="temp") as c:
            # Added while the gateway runs: known to identity and to policy at once.
            assert text(await c.call_tool("echo", {"message": "registered"})) == "registered"
            def revoke() -> None:
                out = airlock.cli("agents", "revoke", "temp", "--config", gw.config)
                assert out.returncode == 0, out.stderr

            ended, after = await interrupt_a_long_call(c, "revoked", revoke)
            print(f"revocation ended the call in flight after {after:.3f} s")
            in_flight = {"r": ended}
            # The call in flight was answered: stopped, and saying why.
            assert isinstance(in_flight["r"], MCPError) and in_flight["r"].code == KILLED, in_flight
            assert "revoked" in in_flight["r"].message
            with pytest.raises(MCPError):
                await c.call_tool("echo", {"message": "after"})
    # The upstream was told to stop the call (legacy: notifications/cancelled).
    async with gw.connect("echo") as c:
        calls = await cancelled_labels(c, "revoked")
    assert calls["cancelled"] == ["revoked"] and calls["completed"] == [], calls
    r = await gw.raw("POST", "echo", body=INITIALIZE, headers=JSON_HEADERS, agent="temp")
    assert r.status_code == 401
    # Recorded as the registered agent, for the human it named; nothing after the revocation.
    calls = [r for r in gw.audit(airlock, "temp") if r["kind"] == "call"]
    assert calls and all(r["decision"] == "allow" and r["on_behalf_of"] == "alice" for r in calls)


def oauth_gateway(gateway: Any, echo_http: Any, token_endpoint: Any) -> tuple[Gateway, Any, Any]:
    """A gateway whose `echo` upstream (echo_http) is reached with a token exchanged per human at a
    token endpoint (RFC 8693); `other` may call `echo` too. Returns the gateway, the upstream and
    the token endpoint."""
    key, client_secret = secrets.token_hex(32), secrets.token_hex(16)
    tokens = token_endpoint(key=key, client_id="airlock", client_secret=client_secret, expires_in=3600)
    upstream = echo_http()
    server = url_server(upstream.url) + (
        "\n[servers.NAME.credentials.oauth]\n"
        f"token_url = {_toml_str(tokens.url)}\n"
        'client_id = "airlock"\n'
        'client_secret = "${secret:client_secret}"\n'
        'subject_signing_key = "${secret:subject_key}"\n'
    )
    policy = POLICY + '\npermit(principal == Agent::"other", action == Action::"call_tool", resource == Tool::"echo/echo");\n'
    return gateway({"echo": server}, policy=policy, secrets_extra={"client_secret": client_secret, "subject_key": key}), upstream, tokens


async def test_upstream_sees_each_human_through_a_token_exchange(gateway, echo_http, token_endpoint):
    gw, upstream, tokens = oauth_gateway(gateway, echo_http, token_endpoint)
    with anyio.fail_after(TIMEOUT * 2):
        for agent in ("bot", "other"):
            async with gw.connect("echo", agent=agent) as c:
                for n in range(2):
                    assert text(await c.call_tool("echo", {"message": f"{agent}-{n}"})) == f"{agent}-{n}"
                seen = dump(await c.call_tool("echo_headers", {})) if agent == "bot" else None
            if seen is not None:
                # The exchanged token reached the upstream; the agent got it redacted.
                assert "at-alice-" not in json.dumps(seen), seen
    exchanges = [e for e in tokens.log() if e["ok"]]
    # One exchange per (human, agent), cached for the later calls; the subject is the human,
    # the actor the agent (RFC 8693 act claim).
    assert sorted((e["sub"], e["claims"]["act"]["sub"]) for e in exchanges) == [("alice", "bot"), ("bob", "other")]
    auth = {}
    for r in upstream.log():
        body = json.loads(r["body"]) if r["body"] else {}
        if isinstance(body, dict) and body.get("method") == "tools/call":
            auth.setdefault(body["params"]["arguments"].get("message", "headers"), r["headers"].get("authorization"))
    assert auth["bot-0"] == auth["bot-1"] and auth["bot-0"].startswith("Bearer at-alice-")
    assert auth["other-0"].startswith("Bearer at-bob-")
    assert gw.tokens["bot"] not in gw.stderr() and "at-alice-" not in gw.stderr()


async def test_sigterm_drains_in_flight_calls_then_exits(gateway, echo_http):
    upstream = echo_http()
    gw = gateway({"echo": url_server(upstream.url)})
    with anyio.fail_after(TIMEOUT * 2):
        async with gw.connect("echo") as c:
            first = anyio.Event()
            result: dict[str, Any] = {}

            async def on_progress(_p: float, _t: float | None, _m: str | None) -> None:
                first.set()

            async def call() -> None:
                result["r"] = await c.call_tool(
                    "slow", {"steps": 10, "delay_ms": 100, "label": "drain"}, progress_callback=on_progress
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await first.wait()
                gw.served.proc.terminate()
                await anyio.sleep(0.2)
                # Draining: no new sessions, and not ready.
                r = await gw.raw("POST", "echo", body=INITIALIZE, headers=JSON_HEADERS)
                assert r.status_code == 503, (r.status_code, r.text)
            # The call in flight was answered in full before the gateway went away.
            assert not result["r"].is_error
        code = await anyio.to_thread.run_sync(lambda: gw.served.proc.wait(timeout=TIMEOUT))
    assert code == 0, gw.stderr()


async def test_an_agent_may_present_a_jwt_from_the_configured_issuer(gateway, echo_http, tmp_path):
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}))
    upstream = echo_http()
    extra = f"""[identity.jwt]
issuer = "https://idp.test"
audience = "airlock"
jwks_file = {_toml_str(jwks)}
"""
    gw = gateway({"echo": url_server(upstream.url)}, extra_config=extra)

    def mint(**claims: Any) -> str:
        now = int(time.time())
        body = {"iss": "https://idp.test", "aud": "airlock", "sub": "bot", "iat": now, "exp": now + 300, **claims}
        return pyjwt.encode(body, key, algorithm="ES256", headers={"kid": "k1"})

    gw.tokens["jwt-bot"] = mint()
    with anyio.fail_after(TIMEOUT):
        async with gw.connect("echo", agent="jwt-bot") as c:
            assert text(await c.call_tool("echo", {"message": "signed"})) == "signed"
    # Expired, wrong audience, another issuer's key: 401, nothing upstream.
    other_key = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    refused = {
        "expired": mint(exp=now - 120, iat=now - 600),
        "audience": mint(aud="someone-else"),
        "forged": pyjwt.encode(
            {"iss": "https://idp.test", "aud": "airlock", "sub": "bot", "exp": now + 300}, other_key,
            algorithm="ES256", headers={"kid": "k1"},
        ),
        "unknown agent": mint(sub="nobody"),
    }
    before = len(upstream.log())
    for why, token in refused.items():
        gw.tokens["x"] = token
        r = await gw.raw("POST", "echo", body=INITIALIZE, headers=JSON_HEADERS, agent="x")
        assert r.status_code == 401, (why, r.status_code, r.text)
    assert len(upstream.log()) == before


async def read_events(response: httpx2.Response, want: Callable[[list[tuple[str | None, dict[str, Any]]]], bool]) -> list[tuple[str | None, dict[str, Any]]]:
    """SSE events `(id, message)` from a streaming response, until `want(events)` holds."""
    events: list[tuple[str | None, dict[str, Any]]] = []
    buf = ""
    async for chunk in response.aiter_text():
        buf += chunk.replace("\r\n", "\n")
        while "\n\n" in buf:
            raw, buf = buf.split("\n\n", 1)
            lines = raw.split("\n")
            data = "\n".join(line[5:].lstrip(" ") for line in lines if line.startswith("data:"))
            ids = [line[3:].strip() for line in lines if line.startswith("id:")]
            if data.strip():
                events.append((ids[-1] if ids else None, json.loads(data)))
                if want(events):
                    return events
    return events


async def test_a_broken_stream_is_resumed_with_last_event_id(gateway, echo_http):
    upstream = echo_http()
    gw = gateway({"echo": url_server(upstream.url)})
    sid = await gw.initialize("echo")
    h = {**session_headers(sid), "Authorization": f"Bearer {gw.tokens['bot']}"}
    call = {"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {
        "name": "slow", "arguments": {"steps": 8, "delay_ms": 150, "label": "resume"}, "_meta": {"progressToken": "p11"}}}
    with anyio.fail_after(TIMEOUT * 2):
        # The agent reads two progress events, then its connection breaks.
        async with httpx2.AsyncClient(timeout=TIMEOUT) as c:
            async with c.stream("POST", gw.endpoint("echo"), json=call, headers=h) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                seen = await read_events(r, lambda ev: len(ev) >= 2)
        assert all(m.get("method") == "notifications/progress" for _, m in seen)
        last = seen[-1][0]
        assert last, "every event carries an id"
        # It reconnects with the last id it saw: the rest of that stream follows, answer included.
        async with httpx2.AsyncClient(timeout=TIMEOUT) as c:
            async with c.stream("GET", gw.endpoint("echo"), headers={**h, "Last-Event-ID": last}) as r:
                assert r.status_code == 200
                rest = await read_events(r, lambda ev: any(m.get("id") == 11 for _, m in ev))
    progress = [m["params"]["progress"] for _, m in seen + rest if m.get("method") == "notifications/progress"]
    assert progress == sorted(set(progress)), f"no event twice, none out of order: {progress}"
    assert progress == list(range(1, 9)), progress
    answer = [m for _, m in rest if m.get("id") == 11]
    assert len(answer) == 1 and not answer[0]["result"].get("isError"), answer


async def test_an_upstream_holds_no_more_sessions_than_its_max_sessions(gateway, echo_http):
    upstream = echo_http()
    gw = gateway({"echo": url_server(upstream.url) + "max_sessions = 1\n"})
    with anyio.fail_after(TIMEOUT):
        first = await gw.initialize("echo")
        r = await gw.raw("POST", "echo", body=INITIALIZE, headers=JSON_HEADERS, agent="other")
        assert r.status_code == 503 and "max_sessions" in r.text, (r.status_code, r.text)
        # The first session ends: its place is free again.
        r = await gw.raw("DELETE", "echo", headers=session_headers(first))
        assert r.status_code == 204
        await gw.initialize("echo", agent="other")


async def test_stopping_a_human_ends_every_agent_acting_for_them_and_their_tokens(gateway, echo_http, token_endpoint):
    gw, upstream, tokens = oauth_gateway(gateway, echo_http, token_endpoint)
    with anyio.fail_after(TIMEOUT * 2):
        async with gw.connect("echo") as bot, gw.connect("echo", agent="other") as other:
            assert text(await bot.call_tool("echo", {"message": "a"})) == "a"
            async def stop_alice() -> None:
                status, body = await gw.api("POST", "/api/v1/kill", {"scope": "human", "target": "alice", "reason": "left the company"})
                assert status == 200, body

            ended, _ = await interrupt_a_long_call(bot, "human", stop_alice)
            in_flight = {"r": ended}
            assert isinstance(in_flight["r"], MCPError) and in_flight["r"].code == KILLED, in_flight
            assert "on behalf of alice" in in_flight["r"].message
            # bob's agent is not touched.
            assert text(await other.call_tool("echo", {"message": "b"})) == "b"
        # Resumed: alice's agent needs a new token; the cached one was dropped at the kill.
        status, body = await gw.api("POST", "/api/v1/resume", {"scope": "human", "target": "alice"})
        assert status == 200, body
        async with gw.connect("echo") as bot:
            assert text(await bot.call_tool("echo", {"message": "again"})) == "again"
    alice = [e for e in tokens.log() if e["ok"] and e["sub"] == "alice"]
    assert len(alice) == 2, alice
    bad = await gw.api("POST", "/api/v1/kill", {"scope": "human", "target": "nobody"})
    assert bad[0] == 404 or bad[0] == 400, bad
