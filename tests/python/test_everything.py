"""Airlock in front of the reference server `@modelcontextprotocol/server-everything` (pinned in tests/node).

Each gateway test opens the same server directly as well, so "unchanged" means equal to what the server
itself answers, down to the whole result model.
"""

from __future__ import annotations

import json
import re

import pytest
from mcp import MCPError

from conftest import DENIED, canonical_digest, dump

pytestmark = pytest.mark.anyio

# Tools of server-everything 2026.8.31 that these tests rely on.
ECHO, SUM, TINY_IMAGE, LONG_RUNNING, ENV = (
    "echo",
    "get-sum",
    "get-tiny-image",
    "trigger-long-running-operation",
    "get-env",
)
ARCHITECTURE_DOC = "demo://resource/static/document/architecture.md"
FEATURES_DOC = "demo://resource/static/document/features.md"

POLICY = """\
@id("allow-echo")
permit(principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"everything/echo");

@id("no-secrets")
@reason("secrets must not be echoed")
forbid(principal, action == Action::"call_tool", resource == Tool::"everything/echo")
when { context.args has message && context.args.message == "top secret" };

@id("allow-tiny-image")
permit(principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"everything/get-tiny-image");

@id("allow-one-second-operations")
permit(principal == Agent::"bot", action == Action::"call_tool",
       resource == Tool::"everything/trigger-long-running-operation")
when { context.args has duration && context.args.duration == 1 };

@id("allow-sum")
permit(principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"everything/get-sum");

@id("no-add")
@reason("adding is not part of the task")
forbid(principal, action == Action::"call_tool", resource == Tool::"everything/get-sum");

@id("other-agent-env")
permit(principal == Agent::"other", action == Action::"call_tool", resource == Tool::"everything/get-env");

@id("allow-architecture-doc")
permit(principal == Agent::"bot", action == Action::"read_resource",
       resource == Resource::"everything/demo://resource/static/document/architecture.md");

@id("allow-simple-prompt")
permit(principal == Agent::"bot", action == Action::"get_prompt", resource == Prompt::"everything/simple-prompt");
"""
OTHER_AGENT = """
[agents.other]
on_behalf_of = "alice"
task = "t1"
"""
# Tools the bot could ever call under POLICY: conditional permits and conditional forbids keep a tool
# visible; an unconditional forbid (get-sum), no permit at all, or a permit for another agent hides it.
VISIBLE_TOOLS = {ECHO, TINY_IMAGE, LONG_RUNNING}


@pytest.fixture
def config(airlock):
    return airlock.config(POLICY, extra_toml=OTHER_AGENT)


NO_ADD = ("no-add", "adding is not part of the task")  # policy id, @reason
NO_SECRETS = ("no-secrets", "secrets must not be echoed")


def assert_denied(err: pytest.ExceptionInfo[MCPError], naming: tuple[str, ...] = ()) -> None:
    """Airlock's deny code; with `naming`, the message names the policy (its id or its reason)."""
    assert err.value.code == DENIED, f"expected Airlock's deny code {DENIED}, got {err.value.code}: {err.value}"
    if naming:
        assert any(n in err.value.message for n in naming), f"deny message should name {naming}: {err.value.message!r}"


# === direct (no gateway): the peer itself behaves as these tests assume ===


async def test_direct_server_everything_offers_what_the_tests_use(direct, everything_cmd):
    async with direct(everything_cmd) as s:
        assert s.initialize_result.protocol_version == "2025-11-25"
        names = [t.name for t in (await s.list_tools()).tools]
        assert {ECHO, SUM, TINY_IMAGE, LONG_RUNNING, ENV} <= set(names), names
        echo = await s.call_tool(ECHO, {"message": "hi"})
        assert [c.text for c in echo.content] == ["Echo: hi"]
        resources = [r.uri for r in (await s.list_resources()).resources]
        assert {ARCHITECTURE_DOC, FEATURES_DOC} <= set(map(str, resources))
        prompts = [p.name for p in (await s.list_prompts()).prompts]
        assert {"simple-prompt", "args-prompt"} <= set(prompts)


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18"])
async def test_direct_older_protocol_versions(direct, everything_cmd, version):
    async with direct(everything_cmd, protocol_version=version) as s:
        assert s.initialize_result.protocol_version == version
        assert [c.text for c in (await s.call_tool(ECHO, {"message": version})).content] == [f"Echo: {version}"]


# === through Airlock ===


@pytest.mark.gateway
async def test_tools_list_shows_only_tools_the_agent_could_call(airlock, config, direct, everything_cmd):
    async with direct(everything_cmd) as d:
        all_tools = (await d.list_tools()).tools
    async with airlock.session(config, everything_cmd) as s:
        listed = await s.list_tools()
    # Same tool objects, same order, nothing else: Airlock filters, it does not rewrite.
    assert dump(listed.tools) == dump([t for t in all_tools if t.name in VISIBLE_TOOLS])
    assert listed.next_cursor is None


@pytest.mark.gateway
async def test_allowed_calls_return_exactly_what_the_server_returns(airlock, config, direct, everything_cmd):
    calls = [(ECHO, {"message": "hello through the airlock"}), (TINY_IMAGE, {})]

    async def run_all(session):
        results = [dump(await session.call_tool(name, args)) for name, args in calls]
        progress: list[tuple[float, float | None]] = []

        async def on_progress(done, total, _message):
            progress.append((done, total))

        long = await session.call_tool(LONG_RUNNING, {"duration": 1, "steps": 2}, progress_callback=on_progress)
        return results + [dump(long)], progress

    async with direct(everything_cmd) as d:
        expected, expected_progress = await run_all(d)
    async with airlock.session(config, everything_cmd) as s:
        got, got_progress = await run_all(s)
    assert got == expected
    assert got_progress == expected_progress == [(1.0, 2.0), (2.0, 2.0)]


@pytest.mark.gateway
async def test_denied_calls_get_a_policy_error_and_the_session_goes_on(airlock, config, direct, everything_cmd):
    async with direct(everything_cmd) as d:
        expected_echo = dump(await d.call_tool(ECHO, {"message": "still here"}))
        expected_tools = dump((await d.list_tools()).tools)

    async with airlock.session(config, everything_cmd) as s:
        # forbid overrides permit; the error names the policy and its reason
        with pytest.raises(MCPError) as err:
            await s.call_tool(SUM, {"a": 1, "b": 2})
        assert_denied(err, NO_ADD)

        # a conditional forbid on an otherwise allowed tool, decided on the arguments
        with pytest.raises(MCPError) as err:
            await s.call_tool(ECHO, {"message": "top secret"})
        assert_denied(err, NO_SECRETS)

        # default deny: no policy permits the bot to call get-env (only another agent)
        with pytest.raises(MCPError) as err:
            await s.call_tool(ENV, {})
        assert_denied(err)

        # ... and a conditional permit whose condition does not hold
        with pytest.raises(MCPError) as err:
            await s.call_tool(LONG_RUNNING, {"duration": 5, "steps": 1})
        assert_denied(err)

        # the session is still usable afterwards
        assert dump(await s.call_tool(ECHO, {"message": "still here"})) == expected_echo
        assert dump((await s.list_tools()).tools) == [t for t in expected_tools if t["name"] in VISIBLE_TOOLS]


@pytest.mark.gateway
@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18", "2025-11-25"])
async def test_legacy_protocol_versions_pass_through(airlock, config, direct, everything_cmd, version):
    # The SDK's ClientSession.initialize() always offers 2025-11-25; older offers go through
    # conftest.initialize(). 2026-07-28 (server/discover) is not tested: server-everything answers
    # server/discover with -32601, so it has no modern mode to compare against.
    async with direct(everything_cmd, protocol_version=version) as d:
        expected = dump(await d.call_tool(ECHO, {"message": version}))
    async with airlock.session(config, everything_cmd, protocol_version=version) as s:
        assert s.initialize_result.protocol_version == version
        assert dump(await s.call_tool(ECHO, {"message": version})) == expected
        with pytest.raises(MCPError) as err:
            await s.call_tool(SUM, {"a": 1, "b": 2})
        assert_denied(err, NO_ADD)


@pytest.mark.gateway
async def test_resources_and_prompts_are_filtered_and_enforced(airlock, config, direct, everything_cmd):
    async with direct(everything_cmd) as d:
        all_resources = dump((await d.list_resources()).resources)
        all_prompts = dump((await d.list_prompts()).prompts)
        expected_doc = dump(await d.read_resource(ARCHITECTURE_DOC))
        expected_prompt = dump(await d.get_prompt("simple-prompt"))

    async with airlock.session(config, everything_cmd) as s:
        assert dump((await s.list_resources()).resources) == [r for r in all_resources if r["uri"] == ARCHITECTURE_DOC]
        assert dump((await s.list_prompts()).prompts) == [p for p in all_prompts if p["name"] == "simple-prompt"]
        assert dump(await s.read_resource(ARCHITECTURE_DOC)) == expected_doc
        assert dump(await s.get_prompt("simple-prompt")) == expected_prompt
        with pytest.raises(MCPError) as err:
            await s.read_resource(FEATURES_DOC)
        assert_denied(err)
        with pytest.raises(MCPError) as err:
            await s.get_prompt("args-prompt", {"city": "Paris"})
        assert_denied(err)


@pytest.mark.gateway
async def test_every_call_is_audited_and_the_chain_verifies(airlock, config, everything_cmd):
    calls = [
        (ECHO, {"message": "first"}, "allow"),
        (SUM, {"a": 1, "b": 2}, "deny"),
        (ECHO, {"message": "second"}, "allow"),
    ]
    async with airlock.session(config, everything_cmd, session="s-audit") as s:
        for name, args, decision in calls:
            if decision == "allow":
                await s.call_tool(name, args)
            else:
                with pytest.raises(MCPError):
                    await s.call_tool(name, args)

    records = airlock.audit_query(config)
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), f"seq not strictly increasing: {seqs}"

    call_records = [r for r in records if r["kind"] == "call" and r.get("target") in {ECHO, SUM}]
    assert [(r["target"], r["decision"]) for r in call_records] == [(n, d) for n, _, d in calls]
    for record, (name, args, decision) in zip(call_records, calls):
        assert record["agent"] == "bot"
        assert record["on_behalf_of"] == "alice"
        assert record["task"] == "t1"
        assert record["session"] == "s-audit"
        assert record["server"] == "everything"
        assert record["args_digest"] == canonical_digest(args), record
        redacted = record["args_redacted"]
        assert (json.loads(redacted) if isinstance(redacted, str) else redacted) == args, record
        assert re.fullmatch(r"[0-9a-f]{64}", record["policy_digest"] or ""), record
        if decision == "deny":
            assert any(n in str(reason) for reason in record["reasons"] for n in NO_ADD), record
    assert len({r["policy_digest"] for r in call_records}) == 1

    # the two allowed calls were forwarded and have results; the denied one never reached the server
    result_records = [r for r in records if r["kind"] == "result" and r.get("target") in {ECHO, SUM}]
    assert [r["target"] for r in result_records] == [ECHO, ECHO], result_records
    for record in result_records:
        assert record["status"] == "ok", record
        assert isinstance(record["duration_us"], int) and record["duration_us"] >= 0, record
    # each allowed call record carries its result, joined from the result record that points at it
    allowed = [r for r in call_records if r["decision"] == "allow"]
    assert [r["seq"] for r in allowed] == [r["ref_seq"] for r in result_records]
    for record in allowed:
        assert record["result_status"] == "ok", record
        assert isinstance(record["result_duration_us"], int), record

    verify = airlock.audit_verify(config)
    assert verify.returncode == 0, f"audit verify failed ({verify.returncode}):\n{verify.stdout}\n{verify.stderr}"
    counts = [int(n) for n in re.findall(r"\d+", verify.stdout + verify.stderr)]
    assert any(n >= len(records) for n in counts), f"verify should print the record count: {verify.stdout!r}"
