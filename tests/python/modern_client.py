"""Streamable HTTP client helpers for the tests, in both eras, on the pinned SDK (`mcp` 2.3.0).

The SDK speaks 2026-07-28 itself, as client and as server, so no hand-written modern client is
needed for ordinary exchanges:
- `mcp.Client(transport, mode=…)`: `mode="auto"` (the SDK's default) POSTs `server/discover` at
  2026-07-28 first and adopts the modern era when the server answers it, else falls back to the
  `initialize` handshake (2025-11-25); `mode="legacy"` only does the handshake; `mode="2026-07-28"`
  adopts the modern era with no probe at all.
- In the modern era the SDK stamps every request: `params._meta` gets
  `io.modelcontextprotocol/protocolVersion`, `…/clientInfo` and `…/clientCapabilities`, and the
  POST carries `MCP-Protocol-Version: 2026-07-28`, `Mcp-Method: <method>` and, for `tools/call`,
  `prompts/get` and `resources/read`, `Mcp-Name: <name or uri>` (`=?base64?…?=` when not
  header-safe). No `Mcp-Session-Id`, no GET stream, no DELETE; a cancelled call closes its POST
  instead of sending `notifications/cancelled`.

`connect()` opens either era with the agent's bearer token; `modern_request()` and `post()` build
and send raw frames for what the SDK will not send (mismatched headers, missing `_meta`, …).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
ACCEPT = "application/json, text/event-stream"
CLIENT_INFO = {"name": "airlock-tests", "version": "0"}

# 2026-07-28 error codes (JSON-RPC error.code).
HEADER_MISMATCH = -32020
MISSING_CLIENT_CAPABILITY = -32021
UNSUPPORTED_PROTOCOL_VERSION = -32022


def http_client(token: str | None = None, headers: Mapping[str, str] | None = None, timeout: float = 30) -> httpx2.AsyncClient:
    """An httpx2 client that sends `Authorization: Bearer TOKEN` (and `headers`) on every request."""
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    return httpx2.AsyncClient(headers=h, timeout=httpx2.Timeout(timeout, read=timeout * 4))


@contextlib.asynccontextmanager
async def connect(
    url: str,
    *,
    token: str | None = None,
    mode: str = "legacy",
    headers: Mapping[str, str] | None = None,
    timeout: float = 30,
    **client_kwargs: Any,
) -> AsyncIterator[Client]:
    """`async with connect(url, token=…, mode="legacy"|"auto"|"2026-07-28") as client:` — a connected `mcp.Client`.

    Response caching is off (`cache=None`) so every call reaches the server. An error that the
    SDK's task groups wrap (a refused handshake, an error in the body) is raised as itself.
    """
    try:
        async with http_client(token, headers, timeout) as hc:
            transport = streamable_http_client(url, http_client=hc)
            async with Client(transport, mode=mode, read_timeout_seconds=timeout, cache=None, **client_kwargs) as client:
                yield client
    except BaseExceptionGroup as group:
        sole: BaseException = group
        while isinstance(sole, BaseExceptionGroup) and len(sole.exceptions) == 1:
            sole = sole.exceptions[0]
        if isinstance(sole, BaseExceptionGroup):
            raise
        raise sole from None


def modern_request(
    method: str,
    params: Mapping[str, Any] | None = None,
    *,
    id: int | str = 1,  # noqa: A002 - the JSON-RPC member's name
    version: str = MODERN,
    capabilities: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
    headers: Mapping[str, str | None] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 request as the spec has it: (body, headers).

    The body's `params._meta` carries the protocol version, client info and capabilities; the
    headers carry `Accept`, `Content-Type`, `MCP-Protocol-Version`, `Mcp-Method` and, for a
    name-bearing method, `Mcp-Name`. `meta` adds or replaces `_meta` keys; `headers` adds or
    replaces headers (a None value removes one).
    """
    p = dict(params or {})
    m = {
        "io.modelcontextprotocol/protocolVersion": version,
        "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
        "io.modelcontextprotocol/clientCapabilities": dict(capabilities or {}),
    }
    m.update(meta or {})
    p["_meta"] = {**m, **(p.get("_meta") or {})}
    body = {"jsonrpc": "2.0", "id": id, "method": method, "params": p}
    h = {
        "Accept": ACCEPT,
        "Content-Type": "application/json",
        "MCP-Protocol-Version": version,
        "Mcp-Method": method,
    }
    name = {"tools/call": p.get("name"), "prompts/get": p.get("name"), "resources/read": p.get("uri")}.get(method)
    if isinstance(name, str):
        h["Mcp-Name"] = name
    for k, v in (headers or {}).items():
        h = {hk: hv for hk, hv in h.items() if hk.lower() != k.lower()}
        if v is not None:
            h[k] = v
    return body, h


def messages(response: httpx2.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a (read) response: one JSON body, or every SSE `data:` event."""
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return [response.json()]
    if content_type == "text/event-stream":
        out = []
        for event in response.text.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(line[5:].lstrip(" ") for line in event.split("\n") if line.startswith("data:"))
            if data.strip():
                out.append(json.loads(data))
        return out
    return []


async def post(
    url: str,
    body: Any,
    headers: Mapping[str, str],
    *,
    token: str | None = None,
    timeout: float = 30,
) -> httpx2.Response:
    """POST one raw frame (`body`: JSON-able, or bytes sent as they are) and read the whole answer."""
    h = dict(headers)
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx2.AsyncClient(timeout=timeout) as c:
        response = await c.post(url, content=content, headers=h)
        await response.aread()
        return response
