"""The gateway's request pipeline with the official SDK as the agent and server-everything upstream.

- The agent's answer to a server request (sampling) is audited like the agent's own calls.
- MCP tasks (2025-11-25): the result of a task, fetched with `tasks/result`, is audited and labels
  the session like the call it came from; a task id the agent never created through Airlock is
  refused without reaching the server.

server-everything 2026.8.31 advertises the `tasks` capability (`list`, `cancel`,
`requests.tools.call`) and has one task tool, `simulate-research-query` (`execution.taskSupport:
"required"`, four one-second stages). The SDK (mcp 2.3.0) has the task types but no client
method for a task-augmented `tools/call`; `send_request` also checks every `tools/call` result
against CallToolResult, so `create_task` lets a CreateTaskResult through that check.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import mcp.client.session as client_session
import mcp.types as types
import pytest
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client

from conftest import (
    DENIED,
    TIMEOUT,
    _child_env,
    _sole_exception,
    airlock_run_command,
    allow_test_servers,
    dump,
    runnable_upstream,
)

pytestmark = pytest.mark.anyio

SAMPLING_TOOL = "trigger-sampling-request"
TASK_TOOL = "simulate-research-query"
SAMPLED_TEXT = "sampled by the test client"


@contextlib.asynccontextmanager
async def sdk_session(command: Sequence[str], stderr_path: Path, **client: Any) -> AsyncIterator[ClientSession]:
    """An initialized ClientSession over stdio to `command`, with extra ClientSession arguments."""
    params = StdioServerParameters(command=str(command[0]), args=[str(a) for a in command[1:]], env=_child_env())
    try:
        with open(stderr_path, "a") as errlog, anyio.fail_after(TIMEOUT * 4):
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=TIMEOUT, **client) as session:
                    await session.initialize()
                    yield session
    except BaseExceptionGroup as group:
        if (sole := _sole_exception(group)) is None:
            raise
        raise sole from None


def through_airlock(airlock, config, upstream: Sequence[str], **client: Any):
    allow_test_servers(config)
    cmd = airlock_run_command(airlock.binary, config, runnable_upstream(upstream))
    return sdk_session(cmd, airlock.tmp_path / "airlock-run-pipeline.stderr", **client)


def direct_session(upstream: Sequence[str], tmp_path: Path, **client: Any):
    return sdk_session(upstream, tmp_path / "direct-pipeline.stderr", **client)


# === the agent's answers to server requests ===


async def sampling(_context, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=SAMPLED_TEXT),
        model="test-model",
        stop_reason="endTurn",
    )


SAMPLING_POLICY = f"""\
@id("allow-sampling-tool")
permit(principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"everything/{SAMPLING_TOOL}");
"""


@pytest.mark.gateway
async def test_the_agents_answer_to_a_sampling_request_is_audited(airlock, everything_cmd, tmp_path):
    args = {"prompt": "say hi", "maxTokens": 5}
    async with direct_session(everything_cmd, tmp_path, sampling_callback=sampling) as d:
        expected = dump(await d.call_tool(SAMPLING_TOOL, args))
    config = airlock.config(SAMPLING_POLICY)
    async with through_airlock(airlock, config, everything_cmd, sampling_callback=sampling) as s:
        got = dump(await s.call_tool(SAMPLING_TOOL, args))
    assert got == expected
    assert SAMPLED_TEXT in got["content"][0]["text"]

    records = airlock.audit_query(config)
    answers = [r for r in records if r.get("method") == "sampling/createMessage"]
    assert any(r.get("status") == "ok" or r.get("result_status") == "ok" for r in answers), (
        "no audit record of the agent's sampling answer; records (kind, method, status): "
        f"{[(r['kind'], r['method'], r['status'] or r['result_status']) for r in records]}"
    )


# === tasks ===

TASK_POLICY = f"""\
@id("allow-research")
permit(principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"everything/{TASK_TOOL}");

@id("allow-echo")
permit(principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"everything/echo");

@id("no-echo-after-confidential")
@reason("this agent has read confidential data")
forbid(principal, action == Action::"call_tool", resource == Tool::"everything/echo")
when {{ context.session.labels.contains("confidential") }};
"""
TASK_FLOW = f"""
[flow.labels.confidential]
tools = ["everything/{TASK_TOOL}"]
"""


@pytest.fixture
def task_results_pass_sdk_checks(monkeypatch):
    """Lets a CreateTaskResult through the SDK's CallToolResult check of `tools/call` results."""
    strict = client_session._methods.validate_server_result

    def lenient(method: str, version: str, raw: Any) -> None:
        if method == "tools/call" and isinstance(raw, dict) and "task" in raw:
            return
        strict(method, version, raw)

    monkeypatch.setattr(client_session._methods, "validate_server_result", lenient)


async def create_task(session: ClientSession, name: str, arguments: dict[str, Any]) -> types.CreateTaskResult:
    request = types.CallToolRequest(
        params=types.CallToolRequestParams(name=name, arguments=arguments, task=types.TaskMetadata(ttl=60_000))
    )
    return await session.send_request(request, types.CreateTaskResult)


async def task_result(session: ClientSession, task_id: str) -> types.CallToolResult:
    """Waits (polling tasks/get, with a deadline) for the task to complete, then fetches its result."""
    with anyio.fail_after(TIMEOUT):
        while True:
            task = await session.send_request(
                types.GetTaskRequest(params=types.GetTaskRequestParams(task_id=task_id)), types.GetTaskResult
            )
            if task.status == "completed":
                break
            assert task.status == "working", task
            await anyio.sleep((task.poll_interval or 100) / 1000)
    return await session.send_request(
        types.GetTaskPayloadRequest(params=types.GetTaskPayloadRequestParams(task_id=task_id)), types.CallToolResult
    )


async def research(session: ClientSession) -> dict[str, Any]:
    created = await create_task(session, TASK_TOOL, {"topic": "payroll"})
    assert created.task.status == "working", created
    result = dump(await task_result(session, created.task.task_id))
    result.pop("_meta", None)  # names the task id, which differs between runs
    return result


@pytest.mark.gateway
async def test_a_task_result_is_audited_and_labels_the_session_and_other_task_ids_are_refused(
    airlock, everything_cmd, tmp_path, task_results_pass_sdk_checks
):
    async with direct_session(everything_cmd, tmp_path) as d:
        expected = await research(d)
    config = airlock.config(TASK_POLICY, extra_toml=TASK_FLOW)
    async with through_airlock(airlock, config, everything_cmd) as s:
        assert [c.text for c in (await s.call_tool("echo", {"message": "before"})).content] == ["Echo: before"]
        assert await research(s) == expected
        with pytest.raises(MCPError) as err:
            await s.call_tool("echo", {"message": "after"})
        assert err.value.code == DENIED, err.value
        # A task id this agent never created through Airlock.
        for request in (
            types.GetTaskRequest(params=types.GetTaskRequestParams(task_id="not-a-task-of-mine")),
            types.GetTaskPayloadRequest(params=types.GetTaskPayloadRequestParams(task_id="not-a-task-of-mine")),
            types.CancelTaskRequest(params=types.CancelTaskRequestParams(task_id="not-a-task-of-mine")),
        ):
            with pytest.raises(MCPError) as err:
                await s.send_request(request, types.GetTaskResult)
            assert err.value.code == DENIED, f"{request.method}: {err.value.code} {err.value}"

    records = airlock.audit_query(config)
    assert any(r.get("method") == "tasks/result" for r in records), "no audit record of tasks/result"
    labels = [r for r in records if r["kind"] == "flow"]
    assert [r["detail"]["label"] for r in labels] == ["confidential"], labels
