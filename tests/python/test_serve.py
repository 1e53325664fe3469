"""`airlock serve`: the control plane's HTTP API, its guards, the page's login and CSRF, the
webhook, and kills from the API reaching a running `airlock run`.

Every test starts the real binary on 127.0.0.1 (port 0: the kernel picks one; the port is read
from the line `airlock serve` prints) and talks plain HTTP to it with the standard library.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import http.server
import json
import os
import queue
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Airlock, AirlockConfig, _toml_str
from mcp import MCPError

pytestmark = pytest.mark.gateway

ALLOW_ALL = 'permit(principal, action == Action::"call_tool", resource);\n'
STOPPED = -31007


# === helpers ===


def token_pair(airlock: Airlock) -> tuple[str, str]:
    """(token, token_sha256) from `airlock token new`."""
    out = airlock.cli("token", "new")
    assert out.returncode == 0, out.stderr
    lines = [line.strip() for line in out.stdout.splitlines()]
    token = lines[1]
    digest = lines[3].split('"')[1]
    assert hashlib.sha256(token.encode()).hexdigest() == digest
    return token, digest


class Served:
    """A running `airlock serve` and the credentials of its humans."""

    def __init__(self, proc: subprocess.Popen[str], port: int, tokens: dict[str, str], config: Path) -> None:
        self.proc = proc
        self.port = port
        self.tokens = tokens
        self.config = config
        self.origin = f"http://127.0.0.1:{port}"

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        as_human: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        h = dict(headers or {})
        if as_human is not None:
            h.setdefault("Authorization", f"Bearer {as_human}:{self.tokens[as_human]}")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def api(self, method: str, path: str, payload: Any = None, *, as_human: str = "alice") -> tuple[int, Any]:
        body = None if payload is None else json.dumps(payload)
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        status, _, data = self.request(method, path, body=body, headers=headers, as_human=as_human)
        return status, json.loads(data) if data else None

    def login(self, human: str = "alice") -> str:
        """Logs in through the form; returns the session cookie header value."""
        form = urllib.parse.urlencode({"name": human, "token": self.tokens[human]})
        status, headers, _ = self.request(
            "POST",
            "/login",
            body=form,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": self.origin},
        )
        assert status == 303, status
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
        return cookie.split(";")[0]

    def csrf(self, cookie: str) -> str:
        status, _, page = self.request("GET", "/", headers={"Cookie": cookie})
        assert status == 200
        text = page.decode()
        marker = 'name="csrf" value="'
        start = text.index(marker) + len(marker)
        return text[start : text.index('"', start)]

    def form(self, path: str, fields: dict[str, str], cookie: str, *, origin: str | None = "self") -> tuple[int, bytes]:
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
        if origin is not None:
            headers["Origin"] = self.origin if origin == "self" else origin
        status, _, body = self.request("POST", path, body=urllib.parse.urlencode(fields), headers=headers)
        return status, body


def write_config(airlock: Airlock, *, humans: dict[str, str], extra: str = "", policy: str = ALLOW_ALL) -> Path:
    """A config with agent bot (for alice, task t1), server everything, and `humans` (name → digest)."""
    tmp = airlock.tmp_path
    (tmp / "airlock.cedar").write_text(policy)
    people = "".join(f"[humans.{name}]\ntoken_sha256 = {_toml_str(d)}\n" for name, d in humans.items())
    path = tmp / "airlock.toml"
    path.write_text(
        f"""\
[policy]
files = [{_toml_str(tmp / "airlock.cedar")}]

[audit]
path = {_toml_str(tmp / "airlock-audit.db")}

{people}
[tasks.t1]
description = "test task"

[agents.bot]
on_behalf_of = "alice"
task = "t1"

[servers.everything]

[breakers.defaults]
enabled = false
{extra}"""
    )
    return path


@contextlib.contextmanager
def serving(airlock: Airlock, config: Path, tokens: dict[str, str], env: dict[str, str] | None = None) -> Iterator[Served]:
    n = len(list(airlock.tmp_path.glob("serve-*.stderr")))
    stderr = open(airlock.tmp_path / f"serve-{n}.stderr", "w")
    proc = subprocess.Popen(
        [str(airlock.binary), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, f"airlock serve did not start: {line!r}"
        port = int(line.split("127.0.0.1:")[1].split()[0])
        yield Served(proc, port, tokens, config)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.close()


@pytest.fixture
def served(airlock: Airlock) -> Iterator[Served]:
    alice, alice_d = token_pair(airlock)
    bob, bob_d = token_pair(airlock)
    config = write_config(airlock, humans={"alice": alice_d, "bob": bob_d})
    with serving(airlock, config, {"alice": alice, "bob": bob}) as s:
        yield s


def status_json(airlock: Airlock, config: Path) -> dict[str, Any]:
    out = airlock.cli("status", "--config", config, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# === the API ===


def test_api_refuses_missing_forged_and_malformed_credentials(served: Served) -> None:
    cases = {
        "missing": {},
        "not bearer": {"Authorization": "Basic YWxpY2U6eA=="},
        "no name": {"Authorization": f"Bearer {served.tokens['alice']}"},
        "forged": {"Authorization": "Bearer alice:alt_" + "0" * 64},
        "someone else's token": {"Authorization": f"Bearer alice:{served.tokens['bob']}"},
        "unknown human": {"Authorization": f"Bearer mallory:{served.tokens['alice']}"},
    }
    for what, headers in cases.items():
        status, h, body = served.request("GET", "/api/v1/status", headers=headers)
        assert status == 401, what
        assert h["www-authenticate"].startswith("Bearer"), what
        assert json.loads(body)["error"]["status"] == 401
        assert served.tokens["alice"].encode() not in body
    # And a kill with bad credentials changes nothing.
    status, _, _ = served.request(
        "POST",
        "/api/v1/kill",
        body=json.dumps({"scope": "all"}),
        headers={"Content-Type": "application/json", "Authorization": "Bearer bob:alt_nope"},
    )
    assert status == 401
    assert served.api("GET", "/api/v1/status")[1]["kills"] == []
    stderr = "".join(p.read_text() for p in Path(served.config).parent.glob("serve-*.stderr"))
    assert served.tokens["alice"] not in stderr and served.tokens["bob"] not in stderr, "tokens never reach the log"


def test_repeated_failures_throttle_a_name_but_never_its_valid_token(served: Served) -> None:
    bad = {"Authorization": "Bearer bob:alt_wrong"}
    for _ in range(5):
        assert served.request("GET", "/api/v1/status", headers=bad)[0] == 401
    assert served.request("GET", "/api/v1/status", headers=bad)[0] == 429
    # Failures naming bob are answered 429 now; bob's right token still passes (issue 15).
    assert served.api("GET", "/api/v1/status", as_human="bob")[0] == 200
    assert served.api("GET", "/api/v1/status", as_human="alice")[0] == 200


def test_a_login_flood_locks_out_neither_a_valid_human_nor_the_kill_path(airlock: Airlock, served: Served) -> None:
    """Issue 15, item 8: anything that reaches the port (an agent with a fetch tool) floods
    logins from loopback, the humans' own source: the humans still log in and kill."""
    from concurrent.futures import ThreadPoolExecutor

    form_headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": served.origin}

    def bad_login(i: int) -> int:
        name = "alice" if i % 3 == 0 else f"mallory{i}"
        form = urllib.parse.urlencode({"name": name, "token": "alt_" + "0" * 64})
        return served.request("POST", "/login", body=form, headers=form_headers)[0]

    def bad_bearer(_: int) -> int:
        return served.request("GET", "/api/v1/status", headers={"Authorization": "Bearer alice:alt_wrong"})[0]

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(bad_login, range(150))) + list(pool.map(bad_bearer, range(50)))
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(429) >= 150, "the flood is throttled"

    # Alice (the flood named her) logs in on the page and through the API with her token.
    cookie = served.login("alice")
    assert served.api("GET", "/api/v1/status", as_human="alice")[0] == 200
    # Bob stops everything from the API, alice resumes and stops the agent from the page.
    status, k = served.api("POST", "/api/v1/kill", {"scope": "all", "reason": "under a flood"}, as_human="bob")
    assert status == 200, k
    csrf = served.csrf(cookie)
    assert served.form("/resume", {"scope": "all", "target": "", "csrf": csrf}, cookie)[0] == 303
    stop = {"scope": "agent", "target": "bot", "csrf": csrf, "confirm": "yes"}
    assert served.form("/kill", stop, cookie)[0] == 303
    assert [x["target"] for x in status_json(airlock, served.config)["kills"]] == [{"scope": "agent", "target": "bot"}]
    # And the flood itself is still throttled.
    assert bad_login(1) == 429


def test_kill_and_resume_from_the_api(airlock: Airlock, served: Served) -> None:
    status, k = served.api("POST", "/api/v1/kill", {"scope": "agent", "target": "bot", "reason": "runaway"})
    assert status == 200, k
    assert k["kill"]["target"] == {"scope": "agent", "target": "bot"}
    assert k["kill"]["by"] == "alice" and k["kill"]["reason"] == "runaway"
    # The same state `airlock status` reads: one store.
    kills = status_json(airlock, served.config)["kills"]
    assert [x["id"] for x in kills] == [k["kill"]["id"]]
    assert served.api("GET", "/api/v1/status")[1]["kills"][0]["id"] == k["kill"]["id"]

    status, r = served.api("POST", "/api/v1/resume", {"scope": "agent", "target": "bot"}, as_human="bob")
    assert (status, r) == (200, {"resumed": 1})
    status, r = served.api("POST", "/api/v1/resume", {"scope": "agent", "target": "bot"})
    assert status == 409 and "nothing resumed" in r["error"]["message"]
    assert status_json(airlock, served.config)["kills"] == []

    out = airlock.cli("audit", "query", "--config", served.config, "--json")
    records = [r for r in json.loads(out.stdout) if r["kind"] in ("kill", "resume")]
    assert [(r["kind"], r["detail"]["by"]) for r in records] == [("kill", "alice"), ("resume", "bob")]
    assert airlock.cli("audit", "verify", "--config", served.config).returncode == 0


def test_bad_api_input_is_a_clear_4xx_and_changes_nothing(airlock: Airlock, served: Served) -> None:
    def raw(body: str, content_type: str = "application/json") -> tuple[int, Any]:
        status, _, data = served.request(
            "POST", "/api/v1/kill", body=body, headers={"Content-Type": content_type}, as_human="alice"
        )
        return status, json.loads(data)

    cases = [
        (raw("{not json"), 400, "malformed body"),
        (raw('{"scope": "agent"}'), 400, "needs a agent id"),
        (raw('{"scope": "planet", "target": "x"}'), 400, "unknown scope"),
        (raw('{"scope": "all", "extra": 1}'), 400, "unknown field"),
        (raw('{"scope": "all"}', "text/plain"), 415, "application/json"),
        (raw('{"scope": "agent", "target": "ghost"}'), 404, "unknown agent"),
        (raw('{"scope": "all", "reason": "a\\nb"}'), 400, "one line"),
    ]
    for (status, body), want, needle in cases:
        assert status == want, body
        assert needle in body["error"]["message"], body
    assert served.api("GET", "/api/v1/approvals?state=bogus")[0] == 400
    for path in ["/api/v1/approvals/apr-0000000000000000", "/api/v1/approvals/not-an-id"]:
        assert served.api("GET", path)[0] == 404
        assert served.api("POST", path + "/approve", {})[0] == 404
    assert served.api("POST", "/api/v1/approvals/apr-0000000000000000/deny", {"comment": 3})[0] == 400
    assert status_json(airlock, served.config)["kills"] == []


def test_foreign_host_and_cross_origin_posts_are_refused(airlock: Airlock, served: Served) -> None:
    status, _, _ = served.request("GET", "/login", headers={"Host": "attacker.example"})
    assert status == 400
    status, _, _ = served.request(
        "POST",
        "/api/v1/kill",
        body='{"scope": "all"}',
        headers={"Content-Type": "application/json", "Origin": "https://attacker.example"},
        as_human="alice",
    )
    assert status == 403
    assert status_json(airlock, served.config)["kills"] == []


# === the page's login and forms ===


def test_page_login_csrf_and_origin(airlock: Airlock, served: Served) -> None:
    # Not logged in: a page redirects to the login form, a form post is refused.
    status, headers, _ = served.request("GET", "/")
    assert status == 303 and headers["location"] == "/login"
    status, _, page = served.request("GET", "/login")
    assert status == 200 and b'type="password"' in page
    wrong = urllib.parse.urlencode({"name": "alice", "token": "alt_wrong"})
    status, _, page = served.request(
        "POST", "/login", body=wrong, headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": served.origin}
    )
    assert status == 401 and b"wrong name or token" in page
    # A login form posted from another site is refused before any check.
    right = urllib.parse.urlencode({"name": "alice", "token": served.tokens["alice"]})
    status, _, _ = served.request(
        "POST", "/login", body=right, headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"}
    )
    assert status == 403

    cookie = served.login("alice")
    csrf = served.csrf(cookie)
    stop_all = {"scope": "all", "target": "", "confirm": "yes"}
    assert served.form("/kill", stop_all, cookie)[0] == 403, "no CSRF token"
    assert served.form("/kill", {**stop_all, "csrf": "0" * 64}, cookie)[0] == 403, "a forged CSRF token"
    other = served.csrf(served.login("alice"))
    assert served.form("/kill", {**stop_all, "csrf": other}, cookie)[0] == 403, "another session's token"
    assert served.form("/kill", {**stop_all, "csrf": csrf}, cookie, origin=None)[0] == 403, "no Origin"
    assert served.form("/kill", {**stop_all, "csrf": csrf}, cookie, origin="https://evil.example")[0] == 403
    assert served.form("/kill", {**stop_all, "csrf": csrf}, "airlock_session=" + "0" * 64)[0] == 401
    # A GET never changes anything.
    assert served.request("GET", "/kill?scope=all&confirm=yes", headers={"Cookie": cookie})[0] == 405
    assert status_json(airlock, served.config)["kills"] == []

    # Without the script's second tap the page asks once; with confirm=yes it stops.
    status, page = served.form("/kill", {"scope": "agent", "target": "bot", "csrf": csrf}, cookie)
    assert status == 200 and b"Stop agent bot now" in page
    assert status_json(airlock, served.config)["kills"] == []
    status, _ = served.form("/kill", {"scope": "agent", "target": "bot", "csrf": csrf, "confirm": "yes"}, cookie)
    assert status == 303
    assert [k["target"] for k in status_json(airlock, served.config)["kills"]] == [{"scope": "agent", "target": "bot"}]
    assert served.form("/resume", {"scope": "agent", "target": "bot", "csrf": csrf}, cookie)[0] == 303
    assert status_json(airlock, served.config)["kills"] == []

    # Logging out ends the session on the server.
    assert served.form("/logout", {"csrf": csrf}, cookie)[0] == 303
    assert served.request("GET", "/", headers={"Cookie": cookie})[0] == 303


def test_pages_have_a_strict_content_security_policy(served: Served) -> None:
    for path in ["/login", "/assets/app.js", "/api/v1/status"]:
        _, headers, _ = served.request("GET", path)
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"


def test_the_event_stream_wakes_on_a_kill(served: Served) -> None:
    cookie = served.login("alice")
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=20)
    conn.request("GET", "/events", headers={"Cookie": cookie, "Accept": "text/event-stream"})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("content-type", "").startswith("text/event-stream")
    assert served.api("POST", "/api/v1/kill", {"scope": "all"})[0] == 200
    seen = b""
    while b"event: changed" not in seen:
        line = r.fp.readline()
        assert line, "the event stream ended"
        seen += line
    conn.close()
    status, _, _ = served.request("GET", "/events")
    assert status == 401, "the stream needs a login"


# === kills from the API reach a running gateway ===


@pytest.mark.anyio
async def test_a_kill_from_the_api_reaches_a_running_airlock_run(
    airlock: Airlock, served: Served, everything_cmd: list[str]
) -> None:
    tmp = airlock.tmp_path
    cfg = AirlockConfig(served.config, tmp / "airlock.cedar", tmp / "airlock-audit.db", "bot", "alice", "t1", "everything")
    async with airlock.session(cfg, everything_cmd) as session:
        assert not (await session.call_tool("echo", {"message": "before"})).is_error
        killed = served.api("POST", "/api/v1/kill", {"scope": "agent", "target": "bot", "reason": "from the api"})
        assert killed[0] == 200 and killed[1]["notified"] >= 2, killed  # the gateway and serve itself
        with pytest.raises(MCPError) as err:
            await session.call_tool("echo", {"message": "during"})
        assert err.value.code == STOPPED and "from the api" in str(err.value), f"{err.value.code}: {err.value}"
    # A stopped agent's gateway ends its session; after a resume from the API a new one works.
    assert served.api("POST", "/api/v1/resume", {"scope": "agent", "target": "bot"})[0] == 200
    async with airlock.session(cfg, everything_cmd) as session:
        assert not (await session.call_tool("echo", {"message": "after"})).is_error


# === the webhook ===


class Receiver:
    """A tiny HTTP receiver on 127.0.0.1 that records POSTs; `fail_first` answers 500 that often."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        self.fail_left = fail_first
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if outer.fail_left > 0:
                    outer.fail_left -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                outer.posts.put(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next(self, timeout: float = 20) -> tuple[dict[str, str], dict[str, Any], bytes]:
        headers, body = self.posts.get(timeout=timeout)
        return headers, json.loads(body), body

    def close(self) -> None:
        self.server.shutdown()


def test_webhook_posts_signed_events_and_resumes_after_a_restart(airlock: Airlock) -> None:
    alice, alice_d = token_pair(airlock)
    receiver = Receiver(fail_first=1)
    secret = "webhook-secret-for-tests"
    config = write_config(
        airlock,
        humans={"alice": alice_d},
        extra=f'\n[serve]\npublic_url = "https://airlock.example"\n[serve.webhook]\nurl = {_toml_str(receiver.url)}\nsecret_env = "AIRLOCK_TEST_HOOK_SECRET"\n',
    )
    env = {"AIRLOCK_TEST_HOOK_SECRET": secret}
    tokens = {"alice": alice}

    def check_signature(headers: dict[str, str], raw: bytes) -> None:
        want = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-airlock-signature"], want)

    try:
        # Without the secret in the environment, serve refuses to start.
        out = airlock.cli("serve", "--config", config, "--listen", "127.0.0.1:0", timeout=20)
        assert out.returncode == 2 and "AIRLOCK_TEST_HOOK_SECRET" in out.stderr
        assert secret not in (config.read_text() + out.stderr)

        with serving(airlock, config, tokens, env) as s:
            assert s.api("POST", "/api/v1/kill", {"scope": "agent", "target": "bot", "reason": "pager test"})[0] == 200
            headers, event, raw = receiver.next()  # delivered after one 500: retried
            check_signature(headers, raw)
            assert event["type"] == "kill" and headers["x-airlock-event"] == "kill"
            assert event["text"] == "alice stopped agent bot: pager test"
            assert event["url"] == "https://airlock.example/"
            assert headers["x-airlock-delivery"] == str(event["seq"])
            first_seq = event["seq"]
            assert s.api("POST", "/api/v1/resume", {"scope": "agent", "target": "bot"})[0] == 200
            headers, event, raw = receiver.next()
            check_signature(headers, raw)
            assert event["type"] == "resume" and event["seq"] > first_seq
            last_seq = event["seq"]

        # While serve is down, the CLI kills; after a restart that kill is announced, once,
        # and nothing already delivered is repeated.
        env_cli = {**os.environ, "AIRLOCK_TOKEN": alice}
        out = subprocess.run(
            [str(airlock.binary), "kill", "--config", str(config), "--all", "--as", "alice", "--reason", "offline"],
            capture_output=True, text=True, env=env_cli, timeout=30,
        )
        assert out.returncode == 0, out.stderr
        with serving(airlock, config, tokens, env):
            headers, event, raw = receiver.next()
            check_signature(headers, raw)
            assert event["type"] == "kill" and event["seq"] > last_seq
            assert event["text"] == "alice stopped all *: offline"
            time.sleep(3)  # one more poll period: nothing else arrives
            assert receiver.posts.empty()
    finally:
        receiver.close()


# === held calls decided from the API ===

HOLD_POLICY = """\
@id("allow-echo")
permit(principal == Agent::"bot", action == Action::"call_tool", resource == Tool::"everything/echo");

@id("loud-echoes")
@approval("echoing `publish` needs a sign-off")
@expires("EXPIRES")
forbid(principal, action == Action::"call_tool", resource == Tool::"everything/echo")
when { context.args has message && context.args.message like "publish*" }
unless { context.approval.granted };
"""
DENIED_BY_HUMAN = -31008


@contextlib.contextmanager
def hold_setup(airlock: Airlock, expires: str = "10m") -> Iterator[tuple[Served, AirlockConfig]]:
    alice, alice_d = token_pair(airlock)
    bob, bob_d = token_pair(airlock)
    config = write_config(
        airlock, humans={"alice": alice_d, "bob": bob_d}, policy=HOLD_POLICY.replace("EXPIRES", expires)
    )
    tmp = airlock.tmp_path
    cfg = AirlockConfig(config, tmp / "airlock.cedar", tmp / "airlock-audit.db", "bot", "alice", "t1", "everything")
    with serving(airlock, config, {"alice": alice, "bob": bob}) as s:
        yield s, cfg


async def pending_one(s: Served, *, not_id: str | None = None) -> dict[str, Any]:
    """Waits (bounded) until the API lists a pending request (other than `not_id`)."""
    import anyio

    with anyio.fail_after(20):
        while True:
            status, body = s.api("GET", "/api/v1/approvals?state=pending")
            assert status == 200, body
            found = [a for a in body["approvals"] if a["id"] != not_id]
            if found:
                return found[0]
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_a_held_call_approved_from_the_api_completes_and_a_denied_one_errors(
    airlock: Airlock, everything_cmd: list[str]
) -> None:
    import anyio

    with hold_setup(airlock) as (s, cfg):
        async with airlock.session(cfg, everything_cmd) as session:
            result: dict[str, Any] = {}

            async def call(message: str) -> None:
                try:
                    result[message] = await session.call_tool("echo", {"message": message})
                except MCPError as e:
                    result[message] = e

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "publish this")
                held = await pending_one(s)
                assert (held["agent"], held["on_behalf_of"], held["target"]) == ("bot", "alice", "echo")
                assert held["args_redacted"] == {"message": "publish this"}
                status, detail = s.api("GET", f"/api/v1/approvals/{held['id']}")
                assert status == 200 and detail["approval"]["reasons"][0]["policy"] == "loud-echoes"
                assert "publish this" not in result
                # Four eyes: alice is the on-behalf-of human; her approval alone does not release it.
                status, voted = s.api("POST", f"/api/v1/approvals/{held['id']}/approve", {}, as_human="alice")
                assert status == 200 and voted["approval"]["state"] == "pending", voted
                assert "other than alice" in voted["missing"]
                assert s.api("POST", f"/api/v1/approvals/{held['id']}/approve", {}, as_human="alice")[0] == 409
                # Approving what one did not see (another digest) changes nothing.
                status, r = s.api("POST", f"/api/v1/approvals/{held['id']}/approve", {"digest": "0" * 64}, as_human="bob")
                assert status == 409 and "digest" in r["error"]["message"]
                status, done = s.api(
                    "POST", f"/api/v1/approvals/{held['id']}/approve",
                    {"comment": "ok", "digest": held["digest"]}, as_human="bob",
                )
                assert status == 200 and done["approval"]["state"] == "approved", done
            assert [c.text for c in result["publish this"].content] == ["Echo: publish this"]
            # Decided: a second decision is a conflict, and the list moved it out of pending.
            assert s.api("POST", f"/api/v1/approvals/{held['id']}/deny", {}, as_human="bob")[0] == 409
            decided = s.api("GET", "/api/v1/approvals?state=decided")[1]["approvals"]
            assert held["id"] in [a["id"] for a in decided]

            # Changed arguments are a new request; deny it and the agent gets an error.
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "publish that")
                other = await pending_one(s, not_id=held["id"])
                assert other["id"] != held["id"] and other["digest"] != held["digest"]
                status, _ = s.api("POST", f"/api/v1/approvals/{other['id']}/deny", {"comment": "not now"}, as_human="bob")
                assert status == 200
            err = result["publish that"]
            assert isinstance(err, MCPError) and err.code == DENIED_BY_HUMAN, err
    records = airlock.audit_query(cfg)
    events = [r["detail"]["event"] for r in records if r["kind"] == "approval"]
    assert events[:3] == ["requested", "vote", "approved"] and "denied" in events
    assert airlock.audit_verify(cfg).returncode == 0


@pytest.mark.anyio
async def test_an_expired_request_cannot_be_approved(airlock: Airlock, everything_cmd: list[str]) -> None:
    import anyio

    with hold_setup(airlock, expires="2s") as (s, cfg):
        async with airlock.session(cfg, everything_cmd) as session:
            result: dict[str, Any] = {}

            async def call() -> None:
                try:
                    result["r"] = await session.call_tool("echo", {"message": "publish late"})
                except MCPError as e:
                    result["r"] = e

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                held = await pending_one(s)
            assert isinstance(result["r"], MCPError), result
            status, r = s.api("POST", f"/api/v1/approvals/{held['id']}/approve", {}, as_human="bob")
            assert status == 409 and "expired" in r["error"]["message"], r
            assert s.api("GET", f"/api/v1/approvals/{held['id']}")[1]["approval"]["state"] == "expired"


@pytest.mark.anyio
async def test_a_kill_from_the_api_denies_pending_requests(airlock: Airlock, everything_cmd: list[str]) -> None:
    import anyio

    with hold_setup(airlock) as (s, cfg):
        async with airlock.session(cfg, everything_cmd) as session:
            result: dict[str, Any] = {}

            async def call() -> None:
                try:
                    result["r"] = await session.call_tool("echo", {"message": "publish now"})
                except MCPError as e:
                    result["r"] = e

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                held = await pending_one(s)
                assert s.api("POST", "/api/v1/kill", {"scope": "all", "reason": "incident"}, as_human="bob")[0] == 200
            assert isinstance(result["r"], MCPError), result
        a = s.api("GET", f"/api/v1/approvals/{held['id']}")[1]["approval"]
        assert a["state"] == "denied" and a["votes"][-1]["channel"] == "kill"
