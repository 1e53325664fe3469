"""The Streamable HTTP peers of the gateway tests, checked directly (no Airlock in between).

Each test shows that a fixture behaves as test_http.py assumes, and pins the wire facts the
gateway has to live with: what the SDK's client sends in each era, how it cancels, what
server-everything answers over HTTP.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import anyio
import httpx2
import jwt
import mcp.types as types
import pytest
from mcp import MCPError

from conftest import TIMEOUT
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

pytestmark = pytest.mark.anyio

ECHO_TOOLS = {"echo", "say", "echo_headers", "slow", "cancelled_calls", "notify_list_changed"}


def text(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def call_json(client: Any, tool: str, args: dict[str, Any] | None = None) -> Any:
    return json.loads(text(await client.call_tool(tool, args or {})))


async def wait_cancelled(client: Any, label: str) -> dict[str, list[str]]:
    """Poll `cancelled_calls` until `label` shows as cancelled (or give up after a few seconds)."""
    calls: dict[str, list[str]] = {}
    for _ in range(100):
        calls = await call_json(client, "cancelled_calls")
        if label in calls["cancelled"]:
            break
        await anyio.sleep(0.05)
    return calls


async def cancel_after_first_progress(client: Any, args: dict[str, Any]) -> list[float]:
    """Start `slow`, cancel it (the caller's scope) once one progress notification arrived."""
    seen: list[float] = []
    first = anyio.Event()

    async def on_progress(progress: float, _total: float | None, _message: str | None) -> None:
        seen.append(progress)
        first.set()

    async with anyio.create_task_group() as tg:

        async def run() -> None:
            await client.call_tool("slow", args, progress_callback=on_progress)
            raise AssertionError("the slow call finished before it was cancelled")

        tg.start_soon(run)
        with anyio.fail_after(TIMEOUT):
            await first.wait()
        tg.cancel_scope.cancel()
    return seen


def bodies(log: list[dict[str, Any]]) -> list[Any]:
    return [json.loads(r["body"]) if r["body"] else None for r in log]


# === echo_http.py, legacy era (the default) ===


async def test_echo_http_legacy_session_tools_headers_and_progress(echo_http):
    server = echo_http()
    with anyio.fail_after(TIMEOUT):
        async with connect(server.url, token="agent-token", mode="auto") as c:
            # mode="auto" probes server/discover first; a legacy-only server refuses it, the SDK falls back.
            assert c.session.discover_result is None
            assert c.protocol_version == LEGACY
            assert {t.name for t in (await c.list_tools()).tools} == ECHO_TOOLS
            assert text(await c.call_tool("echo", {"message": "hi there"})) == "hi there"
            assert text(await c.call_tool("say", {"text": "s3cr3t"})) == "s3cr3t"
            headers = await call_json(c, "echo_headers")
            progress: list[tuple[float, float | None, str | None]] = []

            async def on_progress(p: float, total: float | None, message: str | None) -> None:
                progress.append((p, total, message))

            done = await c.call_tool("slow", {"steps": 3, "delay_ms": 20, "label": "p"}, progress_callback=on_progress)
            assert text(done) == "done p after 3 steps"
            assert progress == [(1.0, 3.0, "step 1 of 3"), (2.0, 3.0, "step 2 of 3"), (3.0, 3.0, "step 3 of 3")]

    # What the SDK's client sent on a legacy session (the tool saw it; the log shows every request).
    assert headers["authorization"] == "Bearer agent-token"
    assert headers["accept"] == ACCEPT
    assert headers["content-type"] == "application/json"
    assert headers["mcp-protocol-version"] == LEGACY
    assert headers["mcp-session-id"]
    assert "mcp-method" not in headers and "mcp-name" not in headers

    log = server.log()
    sent = bodies(log)
    probe, init, initialized = log[0], log[1], log[2]
    assert sent[0]["method"] == "server/discover"
    assert probe["headers"]["mcp-protocol-version"] == MODERN and probe["headers"]["mcp-method"] == "server/discover"
    assert sent[0]["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == MODERN
    assert sent[1]["method"] == "initialize" and sent[1]["params"]["protocolVersion"] == LEGACY
    assert "mcp-protocol-version" not in init["headers"] and "mcp-session-id" not in init["headers"]
    assert sent[2] == {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert initialized["headers"]["mcp-session-id"] == headers["mcp-session-id"]
    # After `initialized` the client opens the GET stream, and it ends the session with DELETE.
    gets = [r for r in log if r["method"] == "GET"]
    assert gets and gets[0]["headers"]["mcp-session-id"] == headers["mcp-session-id"]
    assert log[-1]["method"] == "DELETE" and log[-1]["headers"]["mcp-session-id"] == headers["mcp-session-id"]


async def test_echo_http_legacy_cancel_is_a_posted_notification(echo_http):
    server = echo_http()
    with anyio.fail_after(TIMEOUT):
        async with connect(server.url, mode="legacy") as c:
            seen = await cancel_after_first_progress(c, {"steps": 100, "delay_ms": 50, "label": "c1"})
            calls = await wait_cancelled(c, "c1")
    assert seen[:1] == [1.0]
    assert calls["started"] == ["c1"] and calls["cancelled"] == ["c1"] and calls["completed"] == []
    cancels = [b for b in bodies(server.log()) if b and b.get("method") == "notifications/cancelled"]
    assert len(cancels) == 1, cancels
    call_id = next(b["id"] for b in bodies(server.log()) if b and b.get("method") == "tools/call")
    assert cancels[0]["params"]["requestId"] == call_id


async def test_echo_http_legacy_get_stream_carries_list_changed(echo_http):
    server = echo_http()
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(message, types.ToolListChangedNotification):
            changed.set()
        elif getattr(message, "method", None) == "notifications/tools/list_changed":
            changed.set()

    with anyio.fail_after(TIMEOUT):
        async with connect(server.url, mode="legacy", message_handler=on_message) as c:
            # The GET stream opens in the background after `initialized`; wait until it is there.
            for _ in range(100):
                if any(r["method"] == "GET" for r in server.log()):
                    break
                await anyio.sleep(0.05)
            await anyio.sleep(0.2)
            assert text(await c.call_tool("notify_list_changed", {})) == "sent"
            await changed.wait()


async def test_echo_http_refuses_a_modern_request_like_a_legacy_server(echo_http):
    server = echo_http()
    body, headers = modern_request("server/discover")
    r = await post(server.url, body, headers)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32000


async def test_echo_http_json_response_mode(echo_http):
    server = echo_http(json_response=True)
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    r = await post(server.url, init, {"Accept": ACCEPT, "Content-Type": "application/json"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json()["result"]["protocolVersion"] == LEGACY and r.headers["mcp-session-id"]
    with anyio.fail_after(TIMEOUT):
        async with connect(server.url, mode="legacy") as c:
            assert text(await c.call_tool("echo", {"message": "json"})) == "json"


# === echo_http.py --era modern: the SDK's 2026-07-28 server and client ===


async def test_echo_http_modern_exchange_headers_and_meta(echo_http):
    server = echo_http("modern")
    with anyio.fail_after(TIMEOUT):
        async with connect(server.url, token="agent-token", mode="auto") as c:
            assert c.protocol_version == MODERN
            assert c.session.discover_result is not None
            assert MODERN in c.session.discover_result.supported_versions
            assert {t.name for t in (await c.list_tools()).tools} == ECHO_TOOLS
            assert text(await c.call_tool("echo", {"message": "modern"})) == "modern"
            headers = await call_json(c, "echo_headers")
            progress: list[float] = []

            async def on_progress(p: float, _t: float | None, _m: str | None) -> None:
                progress.append(p)

            await c.call_tool("slow", {"steps": 2, "delay_ms": 20, "label": "m"}, progress_callback=on_progress)
            assert progress == [1.0, 2.0]

    assert headers["mcp-protocol-version"] == MODERN
    assert headers["mcp-method"] == "tools/call" and headers["mcp-name"] == "echo_headers"
    assert headers["authorization"] == "Bearer agent-token" and headers["accept"] == ACCEPT
    assert "mcp-session-id" not in headers

    log = server.log()
    assert {r["method"] for r in log} == {"POST"}, "no GET stream, no DELETE in 2026-07-28"
    assert all("mcp-session-id" not in r["headers"] for r in log)
    sent = bodies(log)
    assert [b["method"] for b in sent][:1] == ["server/discover"]
    assert "initialize" not in [b.get("method") for b in sent]
    for request, b in zip(log, sent):
        meta = b["params"]["_meta"]
        assert meta["io.modelcontextprotocol/protocolVersion"] == MODERN
        assert "io.modelcontextprotocol/clientCapabilities" in meta
        assert meta["io.modelcontextprotocol/clientInfo"]["name"]
        assert request["headers"]["mcp-method"] == b["method"]
    calls = [(r, b) for r, b in zip(log, sent) if b["method"] == "tools/call"]
    assert all(r["headers"]["mcp-name"] == b["params"]["name"] for r, b in calls)
    # The progress token rides in _meta next to the envelope keys.
    slow = next(b for _, b in calls if b["params"]["name"] == "slow")
    assert "progressToken" in slow["params"]["_meta"]


async def test_echo_http_modern_cancel_closes_the_stream(echo_http):
    server = echo_http("modern")
    with anyio.fail_after(TIMEOUT):
        async with connect(server.url, mode="auto") as c:
            assert c.protocol_version == MODERN
            seen = await cancel_after_first_progress(c, {"steps": 100, "delay_ms": 50, "label": "m1"})
            calls = await wait_cancelled(c, "m1")
    assert seen[:1] == [1.0]
    assert calls["cancelled"] == ["m1"] and calls["completed"] == []
    # Nothing is posted: closing the response stream is the cancellation.
    assert not [b for b in bodies(server.log()) if b.get("method") == "notifications/cancelled"]


async def test_echo_http_modern_refuses_initialize_and_checks_headers(echo_http):
    server = echo_http("modern")
    with anyio.fail_after(TIMEOUT):
        with pytest.raises(MCPError) as err:
            async with connect(server.url, mode="legacy"):
                pass
    assert err.value.code == UNSUPPORTED_PROTOCOL_VERSION

    body, headers = modern_request("tools/call", {"name": "echo", "arguments": {"message": "x"}})
    r = await post(server.url, body, headers)
    assert r.status_code == 200
    assert [m["result"]["content"][0]["text"] for m in messages(r)][-1:] == ["x"]
    # Mcp-Name must match the body's name, Mcp-Method the method: else 400 with -32020.
    body, headers = modern_request("tools/call", {"name": "echo", "arguments": {"message": "x"}}, headers={"Mcp-Name": "say"})
    r = await post(server.url, body, headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == HEADER_MISMATCH
    body, headers = modern_request("tools/list", headers={"Mcp-Method": "tools/call"})
    r = await post(server.url, body, headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == HEADER_MISMATCH
    # A non-header-safe name travels base64-encoded (=?base64?…?=) and is compared decoded.
    name = "échø"
    encoded = "=?base64?" + base64.b64encode(name.encode()).decode() + "?="
    body, headers = modern_request("tools/call", {"name": name, "arguments": {}}, headers={"Mcp-Name": encoded})
    r = await post(server.url, body, headers)
    assert r.status_code != 400 or r.json()["error"]["code"] != HEADER_MISMATCH, r.text
    # Missing _meta envelope: 400 with -32602.
    r = await post(server.url, {"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {}}, headers)
    assert r.status_code == 400


# === token_endpoint.py ===

KEY = "test-shared-key-0123456789abcdef0123"


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def exchange_form(subject_token: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": subject_token,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        **extra,
    }


def mint(sub: str, *, key: str = KEY, ttl: int = 300, aud: str | None = None, **claims: Any) -> str:
    now = int(time.time())
    body = {"sub": sub, "iat": now, "exp": now + ttl, **claims}
    if aud is not None:
        body["aud"] = aud
    return jwt.encode(body, key, algorithm="HS256")


async def test_token_endpoint_exchanges_and_logs(token_endpoint):
    te = token_endpoint(key=KEY, client_id="airlock", client_secret="s3cret", expires_in=120)
    auth = {"Authorization": basic("airlock", "s3cret")}
    async with httpx2.AsyncClient(timeout=TIMEOUT) as h:
        first = await h.post(te.url, data=exchange_form(mint("alice", aud=te.url, act={"sub": "bot"}), resource="http://up/mcp"), headers=auth)
        second = await h.post(te.url, data=exchange_form(mint("alice", aud=te.url)), headers=auth)
        bob = await h.post(te.url, data=exchange_form(mint("bob", aud=te.url)), headers=auth)
        refused = {
            "wrong secret": await h.post(te.url, data=exchange_form(mint("alice", aud=te.url)), headers={"Authorization": basic("airlock", "no")}),
            "no client auth": await h.post(te.url, data=exchange_form(mint("alice", aud=te.url))),
            "forged token": await h.post(te.url, data=exchange_form(mint("alice", aud=te.url, key="another-key-0123456789abcdef0123")), headers=auth),
            "expired token": await h.post(te.url, data=exchange_form(mint("alice", aud=te.url, ttl=-60)), headers=auth),
            "wrong grant": await h.post(te.url, data={**exchange_form(mint("alice", aud=te.url)), "grant_type": "client_credentials"}, headers=auth),
        }
    assert first.status_code == 200, first.text
    assert first.json() == {
        "access_token": "at-alice-1",
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer",
        "expires_in": 120,
    }
    assert second.json()["access_token"] == "at-alice-2" and bob.json()["access_token"] == "at-bob-3"
    expected = {
        "wrong secret": (401, "invalid_client"),
        "no client auth": (401, "invalid_client"),
        "forged token": (400, "invalid_request"),
        "expired token": (400, "invalid_request"),
        "wrong grant": (400, "unsupported_grant_type"),
    }
    assert {k: (r.status_code, r.json()["error"]) for k, r in refused.items()} == expected
    assert refused["wrong secret"].headers["www-authenticate"].startswith("Basic")

    log = te.log()
    granted = [e for e in log if e["ok"]]
    assert [(e["sub"], e["access_token"]) for e in granted] == [("alice", "at-alice-1"), ("alice", "at-alice-2"), ("bob", "at-bob-3")]
    assert granted[0]["claims"]["act"] == {"sub": "bot"} and granted[0]["form"]["resource"] == "http://up/mcp"
    assert len(log) == 3 + len(refused)
    assert all("subject_token" not in (e["form"] or {}) for e in log)
    assert "eyJ" not in json.dumps(log) and "s3cret" not in json.dumps(log), "no JWT, no client secret in the log"


# === server-everything over Streamable HTTP ===


async def test_everything_http_session_progress_and_what_it_answers(everything_http):
    with anyio.fail_after(TIMEOUT * 2):
        async with connect(everything_http, mode="auto") as c:
            # TypeScript SDK 1.32.2: no 2026-07-28; the discover probe is refused and the client falls back.
            assert c.protocol_version == LEGACY and c.session.discover_result is None
            names = {t.name for t in (await c.list_tools()).tools}
            assert {"echo", "get-sum", "trigger-long-running-operation"} <= names
            assert text(await c.call_tool("echo", {"message": "over http"})) == "Echo: over http"
            progress: list[tuple[float, float | None]] = []

            async def on_progress(p: float, total: float | None, _m: str | None) -> None:
                progress.append((p, total))

            await c.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 2}, progress_callback=on_progress)
            assert progress == [(1.0, 2.0), (2.0, 2.0)]


async def test_everything_http_raw_answers(everything_http):
    """The answers a gateway gets from server-everything's HTTP transport, pinned."""
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    h = {"Accept": ACCEPT, "Content-Type": "application/json"}
    # A modern probe without a session: 400, -32000 "Server not initialized".
    body, headers = modern_request("server/discover")
    r = await post(everything_http, body, headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == -32000, r.text

    r = await post(everything_http, init, h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    sid = r.headers["mcp-session-id"]
    events = [e for e in r.text.replace("\r\n", "\n").split("\n\n") if e.strip()]
    # Resumability: a priming event (an id, empty data) comes first, then the result with its own id.
    assert events[0].startswith("id: ") and "data: " in events[0]
    assert messages(r)[-1]["result"]["protocolVersion"] == LEGACY
    s = {**h, "Mcp-Session-Id": sid, "MCP-Protocol-Version": LEGACY}
    r = await post(everything_http, {"jsonrpc": "2.0", "method": "notifications/initialized"}, s)
    assert r.status_code == 202

    async with httpx2.AsyncClient(timeout=TIMEOUT) as client:
        # The GET stream opens (200, text/event-stream); a second one for the same session is 409.
        async with client.stream("GET", everything_http, headers={**s, "Accept": "text/event-stream"}) as g:
            assert g.status_code == 200 and g.headers["content-type"].startswith("text/event-stream")
            second = await client.get(everything_http, headers={**s, "Accept": "text/event-stream"})
            assert second.status_code == 409
        # Wrong Content-Type: 415; wrong Accept: 406; bad JSON: 400 with -32700.
        r = await client.post(everything_http, content=b"{}", headers={**s, "Content-Type": "text/plain"})
        assert r.status_code == 415
        r = await client.post(everything_http, content=b"{}", headers={**s, "Accept": "application/json"})
        assert r.status_code == 406
        r = await client.post(everything_http, content=b"{nope", headers=s)
        assert r.status_code == 400 and r.json()["error"]["code"] == -32700
        # An unknown session id: 400 from the express wrapper (not the SDK's 404).
        r = await client.post(everything_http, content=json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}), headers={**s, "Mcp-Session-Id": "nope"})
        assert r.status_code == 400
        # DELETE ends the session; the same id is then unknown: 400 again, not 404.
        r = await client.delete(everything_http, headers=s)
        assert r.status_code == 200
        r = await client.post(everything_http, content=json.dumps({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}), headers=s)
        assert r.status_code == 400
