"""Shared helpers for `tools/bench.py` and `tools/chaos.py` (developer scripts, not shipped).

Everything here runs on loopback only: a recording sandbox served by uvicorn inside the
script's own event loop (so the script can read exact timestamps of every upstream request),
the jobrelay server in-process (`build_server` with a shared `ScaledClock`) or as a
subprocess over stdio / HTTP, and the external `jobrelay sandbox` subprocess for chaos runs.

`tools/` is not a package: the scripts import this file as `_benchlib` (their own directory
is on `sys.path` when run as `python tools/bench.py`), and it puts the checkout that holds it
first on `sys.path`, so a checkout runs its own `mcp_server` even when another one is
installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import anyio  # noqa: E402  # after the sys.path line above, on purpose
import anyio.abc  # noqa: E402
import httpx  # noqa: E402
import uvicorn  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402
from starlette.types import ASGIApp, Message, Receive, Scope, Send  # noqa: E402

from mcp_server._clock import Clock, ScaledClock  # noqa: E402
from mcp_server.config import load_settings  # noqa: E402
from mcp_server.models import TERMINAL_STATES, ErrorCode  # noqa: E402
from mcp_server.sandbox import Faults, SandboxState  # noqa: E402
from mcp_server.sandbox.app import AGENTSEO_PREFIX, SEAMLESS_PREFIX, create_sandbox_app  # noqa: E402

BENCH_KEY = "bench-key-0001"
"""Any non-scenario key is valid in the sandbox; a fixed one keeps runs comparable."""

ERROR_CODES = frozenset(ErrorCode)
TERMINAL = TERMINAL_STATES
"""Plain strings compare equal to these (`StrEnum`), as structured results carry them."""


# ---- small numbers helpers -------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """Linear-interpolated percentile (p in 0-100); None for no data."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * p / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def rnd(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def chars_to_tokens(chars: int) -> int:
    """The project's one estimate (`mcp_server._bounds`): compact JSON characters / 3."""
    from mcp_server import _bounds

    return _bounds.chars_to_tokens(chars)


# ---- machine ---------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What the figures came from (BENCHMARKS.md quotes this block)."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_mb: int | None = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_mb = int(line.split()[1]) // 1024
                break
    commit = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(  # noqa: S603  # a fixed git command on this checkout
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        commit = out.stdout.strip() or None
        dirty = subprocess.run(  # noqa: S603  # a fixed git command on this checkout
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if commit and dirty.stdout.strip():
            commit += "+uncommitted"
    from importlib.metadata import version

    load = None
    with contextlib.suppress(OSError):
        load = [round(x, 2) for x in os.getloadavg()]
    return {
        "nproc": os.cpu_count(),
        "loadavg_1_5_15": load,
        "cpu": cpu,
        "ram_mb": ram_mb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mcp": version("mcp"),
        "jobrelay_commit": commit,
    }


# ---- process memory ----------------------------------------------------------------------------


def proc_status_kb(pid: int, field_name: str) -> int | None:
    """`VmHWM` (peak RSS) or `VmRSS` of a live process, in KiB, from /proc."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return None


def children_of(pid: int, needle: str) -> list[int]:
    """Live direct children of `pid` whose command line contains `needle`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and needle in cmd:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def start_jobrelay(
    args: Sequence[str], env: Mapping[str, str], log: Path, *, command: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """`python -m mcp_server ARGS` from this checkout with only `env` (plus PATH/HOME);
    stderr goes to `log`. `command` instead of `python -m mcp_server`: another install's
    `jobrelay` executable (an older commit's server measured by this checkout's bench)."""
    full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}  # noqa: S108
    full.update(env)
    with log.open("wb") as err:
        return subprocess.Popen(  # noqa: S603  # our interpreter, our module (or the caller's)
            [*(command or (sys.executable, "-m", "mcp_server")), *args],
            cwd=str(REPO),
            env=full,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def kill_pid(pid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


# ---- a recording sandbox on loopback -------------------------------------------------------------


@dataclass
class Hit:
    """One upstream request as the sandbox saw it. `t`/`t_end` are virtual seconds of the
    sandbox clock (equal to real seconds at scale 1); `real` is `time.monotonic()`."""

    t: float
    real: float
    provider: str
    kind: str
    method: str
    path: str
    status: int = 0
    t_end: float = 0.0
    created: list[str] = field(default_factory=list)
    """Upstream ids this request created (Seamless requestIds, AgentSEO jobIds)."""
    done_ids: list[str] = field(default_factory=list)
    """Seamless poll: ids this response reported terminal."""
    terminal_real: float | None = None
    """SSE: real time the terminal event left the sandbox."""


_SEAMLESS_KINDS = (
    (re.compile(r"^/(contacts|companies)/research/poll$"), "poll"),
    (re.compile(r"^/(contacts|companies)/research$"), "research"),
    (re.compile(r"^/search/(contacts|companies)$"), "search"),
)
_AGENTSEO_KINDS = (
    (re.compile(r"^/jobs/[^/]+/events$"), "events"),
    (re.compile(r"^/jobs/[^/]+$"), "job"),
    (re.compile(r"^/(analyze/serp|keyword-metrics/overview|audit/local(/batch)?)$"), "workload"),
)


def classify(path: str) -> tuple[str, str]:
    """(provider, kind) of a sandbox path; kinds: research/poll/search, workload/job/events."""
    for prefix, provider, table in (
        (SEAMLESS_PREFIX, "seamless", _SEAMLESS_KINDS),
        (AGENTSEO_PREFIX, "agentseo", _AGENTSEO_KINDS),
    ):
        if path.startswith(prefix):
            rest = path[len(prefix) :] or "/"
            for pattern, kind in table:
                if pattern.match(rest):
                    return provider, kind
            return provider, "other"
    return "control", "other"


class Recorder:
    """ASGI middleware around the sandbox app: a timestamped log of every API request.

    Bodies are captured only where a benchmark needs them (ids created, ids reported done,
    the moment a terminal SSE event is sent), so recording costs little.
    """

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state
        self.hits: list[Hit] = []
        self.before: list[Callable[[Hit], Awaitable[None]]] = []
        """Hooks run before a request reaches the sandbox (to stage a situation for it)."""

    def count(self, provider: str, kind: str, status: int | None = None) -> int:
        return sum(
            1
            for h in self.hits
            if h.provider == provider and h.kind == kind and (status is None or h.status == status)
        )

    def select(self, provider: str, kind: str) -> list[Hit]:
        return [h for h in self.hits if h.provider == provider and h.kind == kind]

    def status_count(self, status: int) -> int:
        return sum(1 for h in self.hits if h.status == status)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        provider, kind = classify(path)
        if provider == "control":
            await self.app(scope, receive, send)
            return
        hit = Hit(
            t=self.state.clock.monotonic(),
            real=time.monotonic(),
            provider=provider,
            kind=kind,
            method=str(scope["method"]),
            path=path,
        )
        self.hits.append(hit)
        for hook in list(self.before):
            await hook(hit)
        capture = kind in ("research", "poll", "workload")
        chunks: list[bytes] = []

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                hit.status = int(message["status"])
                hit.t_end = self.state.clock.monotonic()
            elif message["type"] == "http.response.body":
                body = bytes(message.get("body", b""))
                if capture:
                    chunks.append(body)
                    if not message.get("more_body", False):
                        self._parse(hit, b"".join(chunks))
                elif kind == "events" and (b"event: completed" in body or b"event: failed" in body):
                    hit.terminal_real = time.monotonic()
            await send(message)

        await self.app(scope, receive, send_wrapper)

    @staticmethod
    def _parse(hit: Hit, raw: bytes) -> None:
        if not 200 <= hit.status < 300:
            return
        try:
            body = json.loads(raw)
        except ValueError:
            return
        if isinstance(body, list) and hit.kind == "workload":  # a batch: an array of job ids
            hit.created = [str(i) for i in body if isinstance(i, str | int)]
            return
        if not isinstance(body, dict):
            return
        if hit.kind == "research":
            hit.created = [str(i) for i in body.get("requestIds") or []]
        elif hit.kind == "workload":
            if "jobIds" in body:
                hit.created = [str(i) for i in body.get("jobIds") or []]
            elif "jobId" in body:
                hit.created = [str(body["jobId"])]
        elif hit.kind == "poll":
            hit.done_ids = [
                str(item.get("requestId"))
                for item in body.get("data") or []
                if isinstance(item, dict)
                and item.get("status") not in (None, "queued", "researching")
            ]


class _Uvicorn(uvicorn.Server):
    """uvicorn without signal handlers: the script owns Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class LoopbackSandbox:
    state: SandboxState
    recorder: Recorder
    root: str

    @property
    def seamless_url(self) -> str:
        return self.root + SEAMLESS_PREFIX

    @property
    def agentseo_url(self) -> str:
        return self.root + AGENTSEO_PREFIX

    @property
    def clock(self) -> ScaledClock:
        return self.state.clock


def sandbox_state(scale: float, **faults: Any) -> SandboxState:
    """A sandbox state on its own `ScaledClock(scale)`; pass `state.clock` to the server."""
    return SandboxState(clock=ScaledClock(scale), faults=Faults(time_scale=scale, **faults))


@asynccontextmanager
async def loopback_sandbox(state: SandboxState) -> AsyncIterator[LoopbackSandbox]:
    """Serve the sandbox (wrapped in a `Recorder`) on an ephemeral 127.0.0.1 port."""
    recorder = Recorder(create_sandbox_app(state), state)
    port = free_port()
    config = uvicorn.Config(
        recorder,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        date_header=False,
        backlog=4096,
    )
    server = _Uvicorn(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110  # uvicorn offers a flag, not an event
                await anyio.sleep(0.005)
        try:
            yield LoopbackSandbox(state, recorder, f"http://127.0.0.1:{port}")
        finally:
            server.should_exit = True


def server_env(
    sb_seamless: str, sb_agentseo: str, db: Path, *, plan: str = "hobby", **extra: str
) -> dict[str, str]:
    """jobrelay's environment for a sandbox treated exactly like the real APIs."""
    env = {
        "SEAMLESS_API_KEY": BENCH_KEY,
        "AGENTSEO_API_KEY": BENCH_KEY,
        "SEAMLESS_BASE_URL": sb_seamless,
        "AGENTSEO_BASE_URL": sb_agentseo,
        "AGENTSEO_PLAN": plan,
        "JOBRELAY_DB": str(db),
    }
    env.update(extra)
    return env


@asynccontextmanager
async def inprocess_jobrelay(
    sb: LoopbackSandbox, db: Path, *, plan: str = "hobby", clock: Clock | None = None, **env: str
) -> AsyncIterator[Client]:
    """jobrelay in this process (in-memory MCP client), on `sb`'s clock unless told otherwise."""
    from mcp_server.server import build_server

    settings = load_settings(server_env(sb.seamless_url, sb.agentseo_url, db, plan=plan, **env))
    server = build_server(settings, clock=clock or sb.clock)
    async with Client(server) as client:
        yield client


def stdio_params(
    env: Mapping[str, str], *, args: Sequence[str] = ("serve",)
) -> StdioServerParameters:
    """`python -m mcp_server serve` from this checkout, with only `env` (plus PATH/HOME)."""
    full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}  # noqa: S108
    full.update(env)
    return StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server", *args], env=full, cwd=str(REPO)
    )


TRIVIAL_SERVER = """
from mcp.server.mcpserver import MCPServer

server = MCPServer("trivial", version="0", log_level="WARNING")


@server.tool()
async def ping() -> str:
    return "pong"


server.run("stdio")
"""
"""The baseline for the overhead figure: one async tool returning a constant, same SDK."""


def trivial_params() -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-c", TRIVIAL_SERVER], cwd=str(REPO))


# ---- tool results --------------------------------------------------------------------------------


def text_of(result: Any) -> str:
    return "\n".join(str(getattr(block, "text", "")) for block in result.content)


def structured(result: Any) -> dict[str, Any]:
    data = getattr(result, "structured_content", None)
    return data if isinstance(data, dict) else {}


def result_chars(result: Any) -> int:
    """Characters an agent receives: the text blocks plus the structured JSON."""
    data = structured(result)
    return len(text_of(result)) + (len(json.dumps(data, separators=(",", ":"))) if data else 0)


def result_problems(result: Any) -> list[str]:
    """Why a tool result would not help an agent: traceback text, or no usable structure."""
    problems = []
    text = text_of(result)
    if "Traceback (most recent call last)" in text or 'File "' in text:
        problems.append("traceback in text")
    if not text.strip():
        problems.append("empty text")
    data = structured(result)
    if not data:
        problems.append("no structured content")
    if getattr(result, "is_error", False):
        err = data.get("error") if isinstance(data.get("error"), dict) else None
        if err is None:
            problems.append("isError without error object")
        else:
            if err.get("code") not in ERROR_CODES:
                problems.append(f"unknown error code {err.get('code')!r}")
            if not str(err.get("next_step") or "").strip():
                problems.append("error without next_step")
    return problems


def error_of(result: Any) -> dict[str, Any] | None:
    if not getattr(result, "is_error", False):
        return None
    err = structured(result).get("error")
    return err if isinstance(err, dict) else {}


_NEXT_CALL = re.compile(r"Next(?: step)?:\s*([a-z_]+)\((.*?)\)(?=[ .,;]|$)")
_ARG = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\[[^\]]*\]|-?\d+(?:\.\d+)?|true|false)')


def next_call(text: str) -> tuple[str, dict[str, Any]] | None:
    """The `Next: tool(arg=value, ...)` hint of a result text, parsed, or None.

    Values are JSON literals; a list written with `...` (an abbreviation) is returned as the
    string "..." so the caller fills it in from the structured result, as an agent would.
    """
    match = _NEXT_CALL.search(text)
    if match is None:
        return None
    args: dict[str, Any] = {}
    for name, raw in _ARG.findall(match.group(2)):
        if raw.startswith("[") and "..." in raw:
            args[name] = "..."
            continue
        try:
            args[name] = json.loads(raw)
        except ValueError:
            args[name] = raw
    return match.group(1), args


# ---- the external sandbox (chaos) --------------------------------------------------------------


class ExternalSandbox:
    """`python -m mcp_server sandbox --port 0` as a subprocess, controlled over /_sandbox."""

    def __init__(self, *, seed: int = 0, job_seconds: float = 2.0) -> None:
        self._args = [
            sys.executable,
            "-m",
            "mcp_server",
            "sandbox",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--seed",
            str(seed),
            "--job-seconds",
            str(job_seconds),
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.seamless_url = ""
        self.agentseo_url = ""
        self.root = ""

    def start(self, timeout: float = 20.0) -> None:
        self.proc = subprocess.Popen(  # noqa: S603  # our own interpreter and module
            self._args,
            cwd=str(REPO),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                if self.proc.poll() is not None:
                    break
                continue
            if "SEAMLESS_BASE_URL=" in line:
                self.seamless_url = line.split("=", 1)[1].strip()
            elif "AGENTSEO_BASE_URL=" in line:
                self.agentseo_url = line.split("=", 1)[1].strip()
                break
        if not (self.seamless_url and self.agentseo_url):
            self.stop()
            raise RuntimeError("jobrelay sandbox did not announce its URLs")
        self.root = self.seamless_url[: -len(SEAMLESS_PREFIX)]
        # Keep draining stderr so the child never blocks on a full pipe.
        stream = self.proc.stderr

        def drain() -> None:
            for _ in stream:
                pass

        import threading

        threading.Thread(target=drain, daemon=True).start()

    def control(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        with httpx.Client(base_url=self.root, timeout=10.0) as http:
            resp = http.request(method, path, json=dict(body) if body is not None else None)
            resp.raise_for_status()
            return resp.json()

    def faults(self, **values: Any) -> Any:
        return self.control("POST", "/_sandbox/faults", values)

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.control("GET", "/_sandbox/stats")
        return data

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


# ---- reporting -----------------------------------------------------------------------------------


@dataclass
class Check:
    """One figure against its target (full mode) or its loose threshold (quick mode)."""

    section: str
    metric: str
    value: float | int | str | None
    target: str
    ok: bool | None
    unit: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "ok": self.ok,
        }


def render_table(checks: Sequence[Check]) -> str:
    rows = [("section", "metric", "value", "target", "ok")]
    for c in checks:
        value = c.value
        if isinstance(value, float):
            shown = f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:.0f}"
        else:
            shown = "-" if value is None else str(value)
        if c.unit and value is not None:
            shown += f" {c.unit}"
        status = {True: "ok", False: "MISS", None: "info"}[c.ok]
        rows.append((c.section, c.metric, shown, c.target, status))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
