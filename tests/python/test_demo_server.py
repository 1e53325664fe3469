"""Airlock in front of the bundled demo company server, judged by the server's state file.

The policy lets the bot post to the "internal" forum channel only and forbids ACL changes. Each denied
call is paired with a control: the same call made directly, on a copy of the same state, must change the
state; so "unchanged through Airlock" means Airlock stopped it, not that the call was a no-op.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from mcp import MCPError

from conftest import DENIED

pytestmark = [pytest.mark.anyio, pytest.mark.demo]

POLICY = """\
@id("internal-posts-only")
permit(principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"corp/forum_post")
when { context.args has channel && context.args.channel == "internal" };

@id("no-acl-changes")
@reason("ACL changes need a human")
forbid(principal, action == Action::"call_tool", resource == Tool::"corp/acl_set");
"""
INTERNAL_POST = {"channel": "internal", "title": "airlock-test internal 7f3a", "body": "weekly sync notes"}
PUBLIC_POST = {"channel": "public", "title": "airlock-test public 9c1e", "body": "we are hiring"}
# Changes the seeded ACLs (checked by the control); not recursive, so only the policy's forbid denies it.
ACL_SET = {"repo": "eng/platform/api", "principal": "user:assistant", "access": "admin", "recursive": False}


def load_state(path: Path) -> Any:
    assert path.is_file(), f"the demo server did not write its state file {path}"
    return json.loads(path.read_text())


async def seed(direct, demo_cmd, state: Path) -> Any:
    """A fresh demo state (--reset), written by a direct run that only dumps it."""
    async with direct(demo_cmd(state, reset=True)) as s:
        await s.call_tool("state_dump", {})
    return load_state(state)


async def control(direct, demo_cmd, seeded: Path, tmp_path: Path, tool: str, args: dict[str, Any]) -> Any:
    """Make the call directly on a copy of the seeded state; return the state afterwards."""
    copy = tmp_path / f"control-{tool}.json"
    shutil.copyfile(seeded, copy)
    async with direct(demo_cmd(copy)) as s:
        result = await s.call_tool(tool, args)
        assert not result.is_error, f"control call {tool}({args}) failed directly: {result.content}"
    return load_state(copy)


def mentions(state: Any, text: str) -> bool:
    return text in json.dumps(state)


async def test_direct_demo_server_records_a_post(direct, demo_cmd, tmp_path):
    state = tmp_path / "state.json"
    before = await seed(direct, demo_cmd, state)
    async with direct(demo_cmd(state)) as s:
        names = {t.name for t in (await s.list_tools()).tools}
        assert {"forum_post", "forum_list", "acl_get", "acl_set", "state_dump"} <= names, names
        result = await s.call_tool("forum_post", INTERNAL_POST)
        assert not result.is_error, result.content
    after = load_state(state)
    assert not mentions(before, INTERNAL_POST["title"]) and mentions(after, INTERNAL_POST["title"])


@pytest.mark.gateway
async def test_internal_post_goes_through(airlock, direct, demo_cmd, tmp_path):
    state = tmp_path / "state.json"
    before = await seed(direct, demo_cmd, state)
    config = airlock.config(POLICY, server="corp")
    async with airlock.session(config, demo_cmd(state)) as s:
        assert {t.name for t in (await s.list_tools()).tools} == {"forum_post"}
        result = await s.call_tool("forum_post", INTERNAL_POST)
        assert not result.is_error, result.content
    after = load_state(state)
    assert not mentions(before, INTERNAL_POST["title"])
    assert mentions(after, INTERNAL_POST["title"]) and mentions(after, INTERNAL_POST["body"])


@pytest.mark.gateway
@pytest.mark.parametrize(
    ("tool", "args", "naming"),
    [
        ("forum_post", PUBLIC_POST, ()),  # no permit matches: default deny
        ("acl_set", ACL_SET, ("no-acl-changes", "ACL changes need a human")),
    ],
    ids=["public-post", "acl-set"],
)
async def test_denied_call_leaves_the_state_untouched(airlock, direct, demo_cmd, tmp_path, tool, args, naming):
    state = tmp_path / "state.json"
    before = await seed(direct, demo_cmd, state)
    assert await control(direct, demo_cmd, state, tmp_path, tool, args) != before, (
        f"control: {tool}({args}) made directly did not change the demo state; pick arguments that do"
    )
    config = airlock.config(POLICY, server="corp")
    async with airlock.session(config, demo_cmd(state)) as s:
        with pytest.raises(MCPError) as err:
            await s.call_tool(tool, args)
        assert err.value.code == DENIED, f"{err.value.code}: {err.value}"
        if naming:
            assert any(n in err.value.message for n in naming), err.value.message
        # the denied call never reached the server: the whole state (forum channels, ACLs, ...) is as seeded
        assert load_state(state) == before
        # and the session goes on: the permitted post still works
        assert not (await s.call_tool("forum_post", INTERNAL_POST)).is_error
    assert mentions(load_state(state), INTERNAL_POST["title"])
