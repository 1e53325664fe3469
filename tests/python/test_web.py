"""The approval web page in real headless Chromium (Debian's `chromium`, driven by Playwright
with `executable_path`; no browser is downloaded).

A human logs in, sees a held call appear without reloading, opens it, reads the arguments
(markup in them is shown as text, long values folded), and approves; the agent's call then
completes. The pages fit a 360 px wide phone screen, and the Stop button asks once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import MCPError
from playwright.async_api import Page, async_playwright

from conftest import Airlock
from test_serve import Served, hold_setup, status_json

pytestmark = [pytest.mark.anyio, pytest.mark.gateway]

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 360, "height": 740}
INJECTED = 'publish <script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
assert len(INJECTED) <= 80  # short enough to be shown unfolded


@pytest.fixture
def browser_available() -> None:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} missing: run scripts/setup-test-env.sh (installs Debian's chromium)", pytrace=False)


async def login(page: Page, s: Served, human: str) -> None:
    await page.goto(f"{s.origin}/login")
    await page.fill("#name", human)
    await page.fill("#token", s.tokens[human])
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{s.origin}/")


async def fits_the_screen(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"horizontal scroll: scrollWidth {width} at {page.url}"


async def test_log_in_see_the_request_appear_open_it_and_approve(
    airlock: Airlock, everything_cmd: list[str], browser_available: None
) -> None:
    tmp = airlock.tmp_path
    long_value = "x" * 400
    with hold_setup(airlock) as (s, cfg):
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = await browser.new_page(viewport=PHONE)
            dialogs: list[str] = []
            page.on("dialog", lambda d: dialogs.append(d.message))
            await login(page, s, "bob")
            assert await page.locator("a.request").count() == 0
            # A marker that a reload would wipe: the request must appear without one.
            await page.evaluate("window.__sameDocument = true")
            await page.wait_for_function("document.documentElement.dataset.live === 'on'", timeout=20_000)

            async with airlock.session(cfg, everything_cmd) as session:
                result: dict[str, Any] = {}

                async def call() -> None:
                    try:
                        result["r"] = await session.call_tool("echo", {"message": INJECTED, "note": long_value})
                    except MCPError as e:
                        result["r"] = e

                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    request = page.locator("a.request").first
                    await request.wait_for(timeout=20_000)
                    assert await page.evaluate("window.__sameDocument === true"), "the page reloaded"
                    assert "everything/echo" in await request.inner_text()
                    assert await page.locator("#pending-count").inner_text() == "1"
                    await fits_the_screen(page)
                    await page.screenshot(path=str(tmp / "home-360x740.png"))

                    await request.click()
                    await page.wait_for_selector("section.what")
                    args = page.locator(".json")
                    # Markup in the arguments is text on the page, never elements or script.
                    assert INJECTED.replace('"', '\\"') in await args.inner_text()
                    assert await args.locator("script, img").count() == 0
                    assert await page.evaluate("window.__pwned === undefined")
                    # The long value is folded until opened.
                    folded = args.locator("details.jfold")
                    assert await folded.count() == 1
                    assert not await folded.first.evaluate("d => d.open")
                    assert "400 characters" in await folded.first.inner_text()
                    text = await page.locator("main").inner_text()
                    for needle in ["bot", "alice", "t1", "test task", "loud-echoes", "echoing `publish` needs a sign-off"]:
                        assert needle in text, needle
                    await fits_the_screen(page)
                    await page.screenshot(path=str(tmp / "detail-360x740.png"), full_page=True)

                    await page.fill("#comment", "looks fine")
                    await page.click("button[value=approve]")
                    await page.wait_for_selector("#state.approved, #state.used", timeout=20_000)
                assert not isinstance(result["r"], MCPError), result["r"]
                assert [c.text for c in result["r"].content] == [f"Echo: {INJECTED}"]
            assert dialogs == []
            await browser.close()
    records = airlock.audit_query(cfg)
    votes = [r["detail"] for r in records if r["kind"] == "approval" and r["detail"]["event"] == "approved"]
    assert votes and votes[0]["channel"] == "web" and votes[0]["human"] == "bob"


async def test_the_stop_button_asks_once_then_stops_everything(airlock: Airlock, browser_available: None) -> None:
    with hold_setup(airlock) as (s, cfg):
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = await browser.new_page(viewport=PHONE)
            await login(page, s, "alice")
            stop = page.locator("form.stop button.big")
            assert await stop.inner_text() == "Stop everything"
            await stop.click()
            assert "Tap again" in await stop.inner_text()
            assert status_json(airlock, cfg.path)["kills"] == [], "one tap stops nothing"
            await stop.click()
            await page.wait_for_selector("section.kills", timeout=20_000)
            kills = status_json(airlock, cfg.path)["kills"]
            assert [(k["target"]["scope"], k["by"]) for k in kills] == [("all", "alice")]
            await fits_the_screen(page)
            await page.click("section.kills button")
            await page.wait_for_selector("form.stop button.big", timeout=20_000)
            assert status_json(airlock, cfg.path)["kills"] == []
            await browser.close()
