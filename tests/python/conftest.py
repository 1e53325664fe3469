"""Shared fixtures for Airlock's integration tests.

Every test talks MCP with the official Python SDK (`mcp` 2.x: `ClientSession` over `stdio_client`),
either to a peer server directly or to the real `airlock` binary, which spawns that same server as its
upstream. Comparing the two answers is how the tests show that Airlock changes nothing it should not.

    .venv/bin/pytest tests/python            # after scripts/setup-test-env.sh and cargo build

Environment:
    AIRLOCK_BIN           the gateway binary (default: <repo>/target/debug/airlock); a missing binary fails
                          the gateway tests, it does not skip them.
    AIRLOCK_DEMO_SERVER   command prefix for the demo company server (default: `airlock demo-server` when
                          the binary has it, else <repo>/target/debug/airlock-demo-server); skipped if none.
    AIRLOCK_TEST_TIMEOUT  seconds per MCP request (default 30).

Streamable HTTP (the gateway's `airlock serve` side, test_http.py): `airlock_serve(config)` starts the
binary and reads its `listening on http://…` line; `everything_http` is server-everything's
`streamableHttp` transport on a free port; `echo_http(era)` and `token_endpoint(…)` start the servers in
tests/fixtures (each prints `… listening on http://127.0.0.1:PORT…` and keeps a JSON-lines log);
modern_client.py has the SDK client helpers for both protocol eras.

Each process's stderr goes to a file in the test's tmp_path; a failing test shows them all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import queue
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client

REPO = Path(__file__).resolve().parents[2]
DEFAULT_AIRLOCK_BIN = REPO / "target" / "debug" / "airlock"
DEFAULT_DEMO_SERVER_BIN = REPO / "target" / "debug" / "airlock-demo-server"
EVERYTHING_JS = (
    REPO / "tests" / "node" / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
)
TIMEOUT = float(os.environ.get("AIRLOCK_TEST_TIMEOUT", "30"))

# Airlock's own JSON-RPC error codes (outside the spec-reserved -32000…-32099 range).
DENIED = -31001
UNKNOWN_METHOD = -31002
UPSTREAM_UNAVAILABLE = -31003


# === plain helpers (usable without fixtures) ===


@dataclasses.dataclass(frozen=True)
class AirlockConfig:
    """An airlock.toml written by `make_config`, with the paths a test needs to look at."""

    path: Path
    policy_path: Path
    audit_path: Path
    agent: str
    human: str
    task: str
    server: str


def _toml_str(value: str | Path) -> str:
    # A JSON string is a valid TOML basic string for everything a test writes.
    return json.dumps(str(value))


def make_config(
    tmp_path: Path,
    policy_text: str,
    *,
    server: str = "everything",
    agent: str = "bot",
    human: str = "alice",
    task: str = "t1",
    task_description: str = "test",
    extra_toml: str = "",
    name: str = "airlock",
) -> AirlockConfig:
    """Write `<name>.toml` + `<name>.cedar` into tmp_path (absolute paths inside) and describe them."""
    policy_path = tmp_path / f"{name}.cedar"
    audit_path = tmp_path / f"{name}-audit.db"
    config_path = tmp_path / f"{name}.toml"
    policy_path.write_text(policy_text)
    config_path.write_text(
        f"""\
[policy]
files = [{_toml_str(policy_path)}]

[audit]
path = {_toml_str(audit_path)}

[humans.{human}]

[tasks.{task}]
description = {_toml_str(task_description)}

[agents.{agent}]
on_behalf_of = {_toml_str(human)}
task = {_toml_str(task)}

[servers.{server}]
{extra_toml}"""
    )
    return AirlockConfig(config_path, policy_path, audit_path, agent, human, task, server)


SANDBOX_MARK = "# conftest: what the test servers need inside Airlock's default sandbox"


def allow_test_servers(config: AirlockConfig) -> None:
    """Give a config's `default` sandbox profile what the test servers need, once, before a session.

    `airlock run` starts every upstream in its sandbox profile. server-everything reads its package tree
    (tests/node/node_modules); the demo server and scripts write beside the config, in tmp_path. As root,
    the sandboxed server runs as `nobody`, so tmp_path (pytest makes its parents 0700) must be reachable:
    Landlock, not mode bits, is what keeps the rest of the machine out. Appended at session time so the
    line numbers `airlock check` tests point at stay those of the generated file.
    """
    text = config.path.read_text()
    if SANDBOX_MARK in text or "[sandbox.profiles.default]" in text:
        return
    tmp = config.path.parent
    if os.geteuid() == 0:
        tmp.chmod(0o777)
        for parent in tmp.parents:
            mode = parent.stat().st_mode
            if parent.owner() == "root" and not mode & 0o001:
                parent.chmod((mode & 0o7777) | 0o011)
    node_modules = REPO / "tests" / "node" / "node_modules"
    config.path.write_text(
        f"{text}\n{SANDBOX_MARK}\n[sandbox.profiles.default]\n"
        f"read = [{_toml_str(node_modules)}]\nwrite = [{_toml_str(tmp)}]\n"
    )


def runnable_upstream(upstream: Sequence[str]) -> list[str]:
    """The upstream command as the sandbox can run it.

    As root, Airlock runs the sandboxed server as `nobody`; an interpreter under a 0700 home (a pyenv
    Python in /root) is out of its reach, so a test server written for `sys.executable` runs on the
    system Python instead. Everything else is left as the test wrote it.
    """
    command = [str(c) for c in upstream]
    if os.geteuid() != 0 or not command or command[0] != sys.executable:
        return command
    if all(p.stat().st_mode & 0o001 for p in Path(sys.executable).resolve().parents):
        return command
    system = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    return [system, *command[1:]] if system else command


def canonical_digest(value: Any) -> str:
    """SHA-256 hex of RFC 8785 canonical JSON, for the values tests use (strings, ints, objects, arrays)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def dump(model: Any) -> Any:
    """A whole result as plain data, for exact comparisons (lists of models too)."""
    if isinstance(model, list):
        return [dump(m) for m in model]
    return model.model_dump(mode="json", by_alias=True)


async def initialize(session: ClientSession, protocol_version: str | None = None) -> types.InitializeResult:
    """The `initialize` handshake, optionally offering an older protocol version than the SDK's latest.

    `ClientSession.initialize()` always offers 2025-11-25; the SDK has no knob for that, so an older offer
    goes through the public `send_request` + `adopt` the same way `initialize()` does internally.
    """
    if protocol_version is None:
        return await session.initialize()
    result = await session.send_request(
        types.InitializeRequest(
            params=types.InitializeRequestParams(
                protocol_version=protocol_version,
                capabilities=types.ClientCapabilities(),
                client_info=types.Implementation(name="airlock-tests", version="0"),
            )
        ),
        types.InitializeResult,
    )
    session.adopt(result)
    await session.send_notification(types.InitializedNotification())
    return result


def _child_env() -> dict[str, str]:
    env = {"RUST_BACKTRACE": "1"}
    if "RUST_LOG" in os.environ:
        env["RUST_LOG"] = os.environ["RUST_LOG"]
    return env


@contextlib.asynccontextmanager
async def open_session(
    command: Sequence[str],
    *,
    stderr_path: Path,
    protocol_version: str | None = None,
    cwd: Path | None = None,
) -> AsyncIterator[ClientSession]:
    """Spawn `command`, speak MCP to it over stdio, and yield an initialized ClientSession."""
    params = StdioServerParameters(
        command=str(command[0]), args=[str(a) for a in command[1:]], env=_child_env(), cwd=cwd
    )
    try:
        with open(stderr_path, "a") as errlog, anyio.fail_after(TIMEOUT * 4):
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=TIMEOUT) as session:
                    try:
                        await initialize(session, protocol_version)
                    except MCPError as e:
                        raise HandshakeFailed(
                            f"`{shlex.join(map(str, command))}` did not complete the MCP handshake: {e} "
                            f"(its stderr: {stderr_path.name})"
                        ) from None
                    yield session
    except BaseExceptionGroup as group:
        # The SDK's task groups wrap whatever the test body raised; show the one real error instead.
        if (sole := _sole_exception(group)) is None:
            raise
        raise sole from None


class HandshakeFailed(AssertionError):
    """The process under test exited or answered `initialize` with an error."""


def _sole_exception(group: BaseException) -> BaseException | None:
    while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
        group = group.exceptions[0]
    return None if isinstance(group, BaseExceptionGroup) else group


def airlock_run_command(
    airlock_bin: Path,
    config: AirlockConfig,
    upstream: Sequence[str],
    *,
    agent: str | None = None,
    session: str | None = None,
    server: str | None = None,
) -> list[str]:
    """`airlock run --config FILE --agent ID [--session NAME] --server NAME -- CMD [ARGS…]`."""
    cmd = [str(airlock_bin), "run", "--config", str(config.path), "--agent", agent or config.agent]
    if session is not None:
        cmd += ["--session", session]
    cmd += ["--server", server or config.server, "--", *map(str, upstream)]
    return cmd


# === fixtures ===


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def airlock_bin() -> Path:
    path = Path(os.environ.get("AIRLOCK_BIN", DEFAULT_AIRLOCK_BIN))
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"airlock binary not found at {path}: build it first (cargo build -p airlock-cli) "
            "or point AIRLOCK_BIN at it",
            pytrace=False,
        )
    return path.resolve()


@pytest.fixture(scope="session")
def everything_cmd() -> list[str]:
    """The stdio command of the pinned @modelcontextprotocol/server-everything (tests/node)."""
    node = shutil.which("node")
    if node is None or not EVERYTHING_JS.is_file():
        pytest.fail(
            f"server-everything not installed ({EVERYTHING_JS}, node={node}): run scripts/setup-test-env.sh",
            pytrace=False,
        )
    return [node, str(EVERYTHING_JS), "stdio"]


def _help_mentions_state(cmd: Sequence[str]) -> bool:
    try:
        out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--state" in out.stdout + out.stderr  # clap exits 0 on --help, the stand-alone binary 2


@pytest.fixture(scope="session")
def demo_server_prefix() -> list[str]:
    """Command prefix of the demo company server; `--state FILE [--reset]` follows. Skips if not built."""
    if env := os.environ.get("AIRLOCK_DEMO_SERVER"):
        return shlex.split(env)
    airlock = Path(os.environ.get("AIRLOCK_BIN", DEFAULT_AIRLOCK_BIN))
    if airlock.is_file() and _help_mentions_state([str(airlock), "demo-server"]):
        return [str(airlock.resolve()), "demo-server"]
    if DEFAULT_DEMO_SERVER_BIN.is_file() and _help_mentions_state([str(DEFAULT_DEMO_SERVER_BIN)]):
        return [str(DEFAULT_DEMO_SERVER_BIN)]
    pytest.skip(
        "demo server not built yet: neither `airlock demo-server --help` nor "
        f"{DEFAULT_DEMO_SERVER_BIN} offers --state (or set AIRLOCK_DEMO_SERVER)"
    )


@pytest.fixture
def demo_cmd(demo_server_prefix: list[str]) -> Callable[..., list[str]]:
    """`demo_cmd(state_path, reset=False)` → the demo server's stdio command line."""

    def build(state: Path, *, reset: bool = False) -> list[str]:
        return [*demo_server_prefix, "--state", str(state), *(["--reset"] if reset else [])]

    return build


@pytest.fixture
def direct(tmp_path: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[ClientSession]]:
    """`async with direct(cmd, protocol_version=None) as session:` — a server without Airlock."""
    counter = iter(range(1_000))

    def open_direct(command: Sequence[str], *, protocol_version: str | None = None):
        return open_session(
            command, stderr_path=tmp_path / f"direct-{next(counter)}.stderr", protocol_version=protocol_version
        )

    return open_direct


class Airlock:
    """The real gateway binary, bound to one test's tmp_path."""

    def __init__(self, binary: Path, tmp_path: Path) -> None:
        self.binary = binary
        self.tmp_path = tmp_path
        self._runs = 0

    def config(self, policy_text: str, **kwargs: Any) -> AirlockConfig:
        return make_config(self.tmp_path, policy_text, **kwargs)

    def session(
        self,
        config: AirlockConfig,
        upstream: Sequence[str],
        *,
        agent: str | None = None,
        session: str | None = None,
        server: str | None = None,
        protocol_version: str | None = None,
    ) -> contextlib.AbstractAsyncContextManager[ClientSession]:
        """`async with airlock.session(cfg, upstream_cmd) as s:` — a ClientSession through `airlock run`."""
        self._runs += 1
        allow_test_servers(config)
        cmd = airlock_run_command(self.binary, config, runnable_upstream(upstream), agent=agent, session=session, server=server)
        return open_session(
            cmd,
            stderr_path=self.tmp_path / f"airlock-run-{self._runs}.stderr",
            protocol_version=protocol_version,
            cwd=config.path.parent,
        )

    def cli(self, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `airlock ARGS…` to completion (no check: tests assert on returncode themselves)."""
        return subprocess.run(
            [str(self.binary), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp_path,
            env={**os.environ, **_child_env()},
        )

    def audit_query(self, config: AirlockConfig, *, agent: str | None = None) -> list[dict[str, Any]]:
        out = self.cli("audit", "query", "--config", config.path, "--agent", agent or config.agent, "--json")
        assert out.returncode == 0, f"airlock audit query failed ({out.returncode}):\n{out.stderr}"
        try:
            records = json.loads(out.stdout)
        except json.JSONDecodeError as e:
            raise AssertionError(f"airlock audit query --json printed non-JSON ({e}):\n{out.stdout}") from e
        assert isinstance(records, list), f"expected a JSON array, got: {out.stdout[:500]}"
        return records

    def audit_verify(self, config: AirlockConfig) -> subprocess.CompletedProcess[str]:
        return self.cli("audit", "verify", "--config", config.path)


@pytest.fixture
def airlock(airlock_bin: Path, tmp_path: Path) -> Airlock:
    return Airlock(airlock_bin, tmp_path)


# === reporting: show every child's stderr when a test fails ===


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if report.failed and isinstance(tmp_path, Path):
        for log in sorted(tmp_path.glob("*.stderr")):
            text = log.read_text(errors="replace")
            if text.strip():
                report.sections.append((f"stderr of {log.stem}", text[-8_000:]))
    return report


# === Streamable HTTP peers: the test servers in tests/fixtures, server-everything, `airlock serve` ===

FIXTURES = REPO / "tests" / "fixtures"
_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:(\d+)\S*)")


@dataclasses.dataclass
class Listening:
    """A process serving HTTP on 127.0.0.1, started by `listening_process`."""

    proc: subprocess.Popen[str]
    url: str  # the URL the process printed (an MCP endpoint for the MCP servers)
    port: int
    stderr_path: Path
    log_path: Path | None = None  # the JSON-lines request log, for the fixtures that keep one

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> list[dict[str, Any]]:
        """The process's JSON-lines log so far (echo_http: HTTP requests; token_endpoint: exchanges)."""
        if self.log_path is None or not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def listening_process(
    cmd: Sequence[str | Path],
    *,
    what: str,
    stderr_path: Path,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = TIMEOUT,
):
    """Start `cmd`, wait for its `… listening on http://127.0.0.1:PORT…` line on stdout, stop it after.

    The line must come first on stdout (what `airlock serve` and the tests/fixtures servers print);
    the rest of stdout is drained in the background. A process that exits or stays silent fails the
    test with the end of its stderr.
    """
    stderr = open(stderr_path, "a")
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
        env={**os.environ, **_child_env(), **(env or {})},
    )
    try:
        assert proc.stdout is not None
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put("")

        threading.Thread(target=pump, daemon=True).start()
        try:
            first = lines.get(timeout=timeout)
        except queue.Empty:
            first = ""
        match = _LISTENING.search(first)
        if match is None:
            _stop(proc)
            stderr.flush()
            tail = stderr_path.read_text(errors="replace")[-4_000:]
            pytest.fail(
                f"{what} did not start (`{shlex.join(map(str, cmd))}` printed {first!r}, "
                f"exit status {proc.poll()}); its stderr:\n{tail}",
                pytrace=False,
            )
        yield Listening(proc, match.group(1), int(match.group(2)), stderr_path, log_path)
    finally:
        _stop(proc)
        stderr.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def everything_http_process(stderr_path: Path, *, timeout: float = TIMEOUT):
    """server-everything's Streamable HTTP transport (`node dist/index.js streamableHttp`).

    It takes its port from `PORT` (default 3001), serves `/mcp` (POST, GET for the SSE stream,
    DELETE), keeps one session per `Mcp-Session-Id` with an in-memory event store (resumable:
    priming events with ids, `Last-Event-ID` on GET), and says `… listening on port N` on stderr
    when ready. It binds every interface (express's default), so the port is picked here and the
    start retried if another process took it meanwhile.
    """
    node = shutil.which("node")
    if node is None or not EVERYTHING_JS.is_file():
        pytest.fail(
            f"server-everything not installed ({EVERYTHING_JS}, node={node}): run scripts/setup-test-env.sh",
            pytrace=False,
        )
    for attempt in range(3):
        port = _free_port()
        start = stderr_path.stat().st_size if stderr_path.exists() else 0
        out = open(stderr_path.with_suffix(".stdout"), "a")
        err = open(stderr_path, "a")
        proc = subprocess.Popen(
            [node, str(EVERYTHING_JS), "streamableHttp"],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PORT": str(port)},
        )
        ready = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if f"listening on port {port}" in stderr_path.read_text(errors="replace")[start:]:
                ready = True
                break
            time.sleep(0.05)
        try:
            if ready:
                yield f"http://127.0.0.1:{port}/mcp"
                return
            if proc.poll() is None or attempt == 2:
                pytest.fail(
                    f"server-everything (streamableHttp, PORT={port}) did not start; its stderr:\n"
                    f"{stderr_path.read_text(errors='replace')[-4_000:]}",
                    pytrace=False,
                )
        finally:
            _stop(proc)  # type: ignore[arg-type]  (a Popen[bytes] stops the same way)
            out.close()
            err.close()


@pytest.fixture
def everything_http(tmp_path: Path) -> Iterator[str]:
    """server-everything over Streamable HTTP on a free port: yields its MCP endpoint URL."""
    with everything_http_process(tmp_path / "everything-http.stderr") as url:
        yield url


@pytest.fixture
def echo_http(tmp_path: Path) -> Iterator[Callable[..., Listening]]:
    """`echo_http(era="legacy"|"modern"|"both", json_response=False)` → a running tests/fixtures/echo_http.py.

    Its `.url` is the MCP endpoint; `.log()` lists the HTTP requests it received.
    """
    with contextlib.ExitStack() as stack:
        counter = iter(range(1_000))

        def start(era: str = "legacy", *, json_response: bool = False) -> Listening:
            n = next(counter)
            log = tmp_path / f"echo-http-{n}.log"
            cmd = [sys.executable, FIXTURES / "echo_http.py", "--port", "0", "--era", era, "--log", log]
            if json_response:
                cmd.append("--json-response")
            return stack.enter_context(
                listening_process(cmd, what="echo_http.py", stderr_path=tmp_path / f"echo-http-{n}.stderr", log_path=log)
            )

        yield start


@pytest.fixture
def token_endpoint(tmp_path: Path) -> Iterator[Callable[..., Listening]]:
    """`token_endpoint(key=…, client_id=…, client_secret=…, **opts)` → a running tests/fixtures/token_endpoint.py.

    Its `.url` is the token endpoint (`…/token`); `.log()` lists the exchanges, granted or refused.
    Options: audience, issuer, expires_in.
    """
    with contextlib.ExitStack() as stack:
        counter = iter(range(1_000))

        def start(*, key: str, client_id: str, client_secret: str, **opts: Any) -> Listening:
            n = next(counter)
            log = tmp_path / f"token-endpoint-{n}.log"
            cmd: list[str | Path] = [
                sys.executable, FIXTURES / "token_endpoint.py", "--port", "0", "--key", key,
                "--client-id", client_id, "--client-secret", client_secret, "--log", log,
            ]
            for name, value in opts.items():
                cmd += [f"--{name.replace('_', '-')}", str(value)]
            return stack.enter_context(
                listening_process(
                    cmd, what="token_endpoint.py", stderr_path=tmp_path / f"token-endpoint-{n}.stderr", log_path=log
                )
            )

        yield start


@pytest.fixture
def airlock_serve(airlock_bin: Path, tmp_path: Path) -> Iterator[Callable[..., Listening]]:
    """`airlock_serve(config_path)` → a running `airlock serve --config FILE --listen 127.0.0.1:0`.

    Its `.base` is `http://127.0.0.1:PORT`; the MCP endpoints are `.base + "/mcp"` and
    `.base + "/mcp/<server>"`.
    """
    with contextlib.ExitStack() as stack:
        counter = iter(range(1_000))

        def start(config: Path, *, env: dict[str, str] | None = None) -> Listening:
            n = next(counter)
            return stack.enter_context(
                listening_process(
                    [airlock_bin, "serve", "--config", config, "--listen", "127.0.0.1:0"],
                    what="airlock serve",
                    stderr_path=tmp_path / f"airlock-serve-{n}.stderr",
                    env=env,
                    cwd=config.parent,
                )
            )

        yield start
