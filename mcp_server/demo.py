"""`jobrelay demo`: one scripted agent session, through a real MCP client, on the sandbox.

Why it is built this way:

- The client is the SDK's own `Client(server)`, in-process: the same protocol a host speaks
  (tool calls, structured results, progress notifications), without a subprocess to manage.
  The server still serves the embedded sandbox on a real loopback port, so progress streams
  live exactly as it does under `jobrelay serve`.
- Settings are built here, not read from the environment: the demo never uses the user's
  keys or ledger. The ledger is a temporary file that disappears with the demo.
- Time is virtual (`ScaledClock`), shared by the server and the sandbox: jobs of a few
  virtual seconds take a fraction of a real one, and an advised wait of a minute is
  "fast-forwarded" by speeding the shared clock up, so the waits shown are the real advice.
- Every step checks what it expects; a surprise ends the demo with exit status 1, so the
  demo doubles as an end-to-end smoke test (CI runs it).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx
from mcp import Client
from mcp.types import CallToolResult

from mcp_server._clock import ScaledClock
from mcp_server.config import Settings, load_settings
from mcp_server.mcptasks import TasksClient, TaskState
from mcp_server.sandbox import KEY_INSUFFICIENT_CREDITS, Faults, SandboxState

__all__ = ["DemoError", "run_demo"]

#: Virtual seconds per real second during the session: a 6 s job takes 0.6 s.
DEMO_SCALE = 10.0
#: Virtual seconds per real second while an advised wait is fast-forwarded.
FAST_FORWARD_SCALE = 500.0
#: How long a simulated job takes, in virtual seconds.
JOB_SECONDS = 6.0
#: Wrap width of the narration.
WIDTH = 96

_INDENT = "    "
_OTHER_APP_KEY = "another-app-in-the-same-org"
"""The key of the simulated neighbour that uses up the org's rate window (never printed)."""


class DemoError(Exception):
    """A step did not behave as the script expects; the message says which and how."""


# ---- output -------------------------------------------------------------------------------------


class _Narrator:
    """Plain narration, plus a progress display: a redrawn bar on a terminal, lines otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self._bar_width = 0
        self._last_line: str | None = None

    def write(self, text: str = "") -> None:
        self._end_bar()
        self.out.write(self._printable(text) + "\n")
        self.out.flush()

    def para(self, text: str, indent: str = "") -> None:
        self.write(textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent))

    def step(self, number: int, title: str) -> None:
        self.write()
        self.write(f"{number}. {title}")

    def call(self, tool: str, args: Mapping[str, Any]) -> None:
        shown = ", ".join(f"{k}={_short_json(v)}" for k, v in args.items())
        self.write(f"  -> {tool}({shown})")

    def reads(self, result: CallToolResult) -> None:
        label = "agent reads (isError): " if result.is_error else "agent reads: "
        text = " ".join(_text_of(result).split())
        self.write(
            textwrap.fill(
                text, WIDTH, initial_indent=_INDENT + label, subsequent_indent=_INDENT + "  "
            )
        )

    def detail(self, text: str) -> None:
        self.para(text, _INDENT)

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        percent = 100.0 * progress / total if total else progress
        percent = max(0.0, min(100.0, percent))
        note = " ".join((message or "").split())
        if self.tty:
            filled = round(percent / 5)
            line = f"{_INDENT}[{'#' * filled}{'.' * (20 - filled)}] {percent:3.0f}%  {note}"
            columns = shutil.get_terminal_size((WIDTH, 24)).columns - 1
            line = self._printable(line)[: max(20, columns)]
            pad = " " * max(0, self._bar_width - len(line))
            self.out.write("\r" + line + pad)
            self._bar_width = len(line)
        else:
            line = f"{_INDENT}progress {percent:3.0f}%  {note}".rstrip()
            if line == self._last_line:
                return
            self._last_line = line
            self.out.write(self._printable(line) + "\n")
        self.out.flush()

    def _end_bar(self) -> None:
        self._last_line = None
        if self._bar_width:
            self.out.write("\n")
            self._bar_width = 0

    def _printable(self, text: str) -> str:
        """Never fail on a terminal that cannot show a character of a simulated record."""
        encoding = getattr(self.out, "encoding", None) or "utf-8"
        return text.encode(encoding, errors="replace").decode(encoding, errors="replace")


def _short_json(value: Any) -> str:
    """Arguments as the agent would send them, with long ids shortened for reading."""

    def shorten(v: Any) -> Any:
        if isinstance(v, str) and len(v) > 24:
            return v[:8] + "..."
        if isinstance(v, list):
            return [shorten(i) for i in v]
        if isinstance(v, dict):
            return {k: shorten(i) for k, i in v.items()}
        return v

    return json.dumps(shorten(value), ensure_ascii=False)


def _text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


# ---- the session --------------------------------------------------------------------------------


class _Session:
    """What every step needs: the client, the narrator, the shared clock and sandbox."""

    def __init__(
        self, client: Client, say: _Narrator, clock: ScaledClock, state: SandboxState
    ) -> None:
        self.client = client
        self.say = say
        self.clock = clock
        self.state = state

    async def call(
        self, tool: str, args: Mapping[str, Any], *, progress: bool = False
    ) -> CallToolResult:
        self.say.call(tool, args)
        result = await self.client.call_tool(
            tool, dict(args), progress_callback=self.say.progress if progress else None
        )
        self.say.reads(result)
        return result

    async def fast_forward(self, seconds: float, why: str) -> None:
        """Let `seconds` of virtual time pass quickly, at the speed of the shared clock."""
        before = self.clock.scale
        real = time.monotonic()
        self.state.set_faults({"time_scale": FAST_FORWARD_SCALE})
        try:
            await self.clock.sleep(seconds)
        finally:
            self.state.set_faults({"time_scale": before})
        took = time.monotonic() - real
        self.say.detail(f"(waited {seconds:.0f} s {why}: virtual time, {took:.1f} s real)")


def _structured(result: CallToolResult) -> dict[str, Any]:
    data = result.structured_content
    return dict(data) if isinstance(data, Mapping) else {}


def _expect(condition: bool, step: str, what: str) -> None:
    if not condition:
        raise DemoError(f"step {step!r}: {what}")


def _expect_ok(result: CallToolResult, step: str) -> dict[str, Any]:
    _expect(not result.is_error, step, f"the call failed: {_text_of(result)}")
    return _structured(result)


def _expect_error(result: CallToolResult, step: str, code: str) -> dict[str, Any]:
    data = _structured(result)
    error = data.get("error") or {}
    _expect(
        result.is_error and error.get("code") == code,
        step,
        f"expected an isError result with code {code!r}, got: {_text_of(result)}",
    )
    return dict(error)


def _show_error(say: _Narrator, error: Mapping[str, Any]) -> None:
    wait = error.get("retry_after_seconds")
    after = f", retry_after_seconds={wait:.0f}" if isinstance(wait, int | float) else ""
    say.detail(
        f"structured error: code={error.get('code')}, "
        f"retryable={str(error.get('retryable')).lower()}{after}"
    )


def _show_advice(say: _Narrator, advice: Mapping[str, Any]) -> None:
    wait = advice.get("retry_after_seconds")
    after = f", retry_after_seconds={wait:.0f}" if isinstance(wait, int | float) else ""
    say.detail(
        f"advice: {advice.get('title')} (retryable={str(advice.get('retryable')).lower()}{after})"
    )


def _contact_line(item: Mapping[str, Any]) -> str:
    email = item.get("email") or {}
    phone = item.get("phone") or {}
    parts = [str(item.get("name", "?"))]
    if isinstance(email, Mapping) and email.get("address"):
        conf = email.get("confidence")
        parts.append(f"{email['address']}" + (f" ({conf}%)" if conf is not None else ""))
    if isinstance(phone, Mapping) and phone.get("number"):
        kind = phone.get("type")
        parts.append(f"{phone['number']}" + (f" ({kind})" if kind else ""))
    return " | ".join(parts)


def _seo_line(item: Mapping[str, Any]) -> str:
    what = item.get("workflow", "seo")
    subject = item.get("keyword") or item.get("domain") or item.get("business_name") or ""
    facts = []
    for key in ("search_intent", "difficulty", "score", "search_volume"):
        if key in item and not isinstance(item[key], Mapping | list):
            facts.append(f"{key.replace('_', ' ')} {item[key]}")
    domains = [
        str(r.get("domain"))
        for r in item.get("results") or []
        if isinstance(r, Mapping) and r.get("domain")
    ][:3]
    if domains:
        facts.append("top: " + ", ".join(domains))
    head = f'{what} "{subject}"' if subject else str(what)
    return head + (": " + "; ".join(facts) if facts else "")


async def _search_and_start(s: _Session) -> tuple[str, str]:
    s.say.step(1, "Find prospects (search is free)")
    result = await s.call(
        "search_prospects",
        {
            "kind": "contacts",
            "filters": {"title": "VP Sales", "industry": "Computer Software"},
            "limit": 3,
        },
    )
    data = _expect_ok(result, "search")
    items = data.get("items") or []
    _expect(len(items) == 3, "search", f"expected 3 contacts, got {len(items)}")
    for item in items:
        s.say.detail(f"{item.get('name')}, {item.get('title')} at {item.get('company')}")
    ids = [str(i["search_result_id"]) for i in items]

    s.say.step(2, "Research those contacts (1 credit each; one job covers them all)")
    result = await s.call("start_research", {"kind": "contacts", "search_result_ids": ids})
    data = _expect_ok(result, "start_research")
    research = str(data.get("job_id"))
    s.say.detail(
        f"job_id={research}, state={data.get('state')}, "
        f"credits_remaining={data.get('credits_remaining')}"
    )

    s.say.step(3, "Start an SEO job (AgentSEO SERP analysis)")
    result = await s.call(
        "start_seo_job",
        {"workflow": "serp_analysis", "params": {"keyword": "crm software"}},
    )
    data = _expect_ok(result, "start_seo_job")
    seo = str(data.get("job_id"))
    s.say.detail(f"job_id={seo}, state={data.get('state')}")
    return research, seo


async def _wait_and_read(s: _Session, research: str, seo: str) -> None:
    s.say.step(4, "Wait for both jobs, with live progress (bounded waits, MCP progress)")
    for job in (seo, research):
        result = await s.call("wait_for_job", {"job_id": job, "wait_seconds": 30}, progress=True)
        data = _expect_ok(result, "wait_for_job")
        _expect(data.get("state") == "succeeded", "wait_for_job", f"{job} did not succeed")

    s.say.step(5, "Read compact results (full records are one fields=[...] away)")
    result = await s.call("get_job_result", {"job_id": research, "limit": 3})
    data = _expect_ok(result, "get_job_result")
    for item in data.get("items") or []:
        s.say.detail(_contact_line(item))
    result = await s.call("get_job_result", {"job_id": seo, "limit": 1})
    data = _expect_ok(result, "get_job_result")
    for item in data.get("items") or []:
        s.say.detail(_seo_line(item))


async def _rate_limit(s: _Session) -> None:
    s.say.step(6, "Rate limit: another app in the same Seamless org uses up this minute")
    s.say.para(
        "Seamless limits each endpoint to 60 requests a minute per organisation. jobrelay paces "
        "its own calls, but it cannot see other apps using the same org, so here a neighbour "
        "sends 60 company searches straight to the sandbox first.",
        _INDENT,
    )
    # Start from a fresh window so the advised wait is the whole minute, whatever the timing.
    now = s.clock.time()
    await s.fast_forward(60 - now % 60 + 1, "for the next minute to start")
    scale = s.clock.scale
    s.state.set_faults({"time_scale": 1.0})  # the burst and the refused call in real time
    try:
        await _burst_from_another_app(s.state)
        args = {"kind": "companies", "query": "fintech", "limit": 3}
        result = await s.call("search_prospects", args)
    finally:
        s.state.set_faults({"time_scale": scale})
    error = _expect_error(result, "rate limit", "rate_limited")
    _show_error(s.say, error)
    wait = float(error.get("retry_after_seconds") or 0)
    _expect(wait > 0, "rate limit", "the advice should say how long to wait")
    s.say.detail("Recovery: wait as advised, then make the same call once.")
    await s.fast_forward(wait, "as advised")
    result = await s.call("search_prospects", args)
    data = _expect_ok(result, "rate limit recovery")
    s.say.detail(f"{len(data.get('items') or [])} companies: the window has reset.")


async def _burst_from_another_app(state: SandboxState) -> None:
    """Use up the org's search window from outside jobrelay, as another integration would."""
    from mcp_server.sandbox.app import SEAMLESS_PREFIX, create_sandbox_app

    transport = httpx.ASGITransport(app=create_sandbox_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as http:
        for _ in range(state.faults.seamless_rate_limit):
            await http.post(
                f"{SEAMLESS_PREFIX}/search/companies",
                json={"keyword": "neighbour", "limit": 1},
                headers={"Token": _OTHER_APP_KEY},
            )


async def _failed_jobs(s: _Session) -> None:
    s.say.step(7, "A job that fails upstream is a result with advice, not a tool error")
    s.say.para(
        'The sandbox fails any SEO target containing "fail-transient" (retryable) or '
        '"fail-permanent" (not retryable).',
        _INDENT,
    )
    result = await s.call(
        "start_seo_job",
        {
            "workflow": "keyword_metrics",
            "params": {"keywords": ["fail-transient widgets"]},
            "wait_seconds": 30,
        },
        progress=True,
    )
    data = _expect_ok(result, "transient failure")
    advice = data.get("advice") or {}
    _expect(
        data.get("state") == "failed" and advice.get("retryable") is True,
        "transient failure",
        "expected a failed job with retryable advice",
    )
    _show_advice(s.say, advice)
    wait = float(advice.get("retry_after_seconds") or 0)
    s.say.detail(
        "Recovery: the advice says a resubmit is safe after the wait. (The sandbox would fail "
        "the same keyword again, so the resubmit leaves the marker out.)"
    )
    await s.fast_forward(wait, "as advised")
    result = await s.call(
        "start_seo_job",
        {"workflow": "keyword_metrics", "params": {"keywords": ["widgets"]}, "wait_seconds": 30},
    )
    data = _expect_ok(result, "transient recovery")
    _expect(data.get("state") == "succeeded", "transient recovery", "the resubmit should succeed")

    audit: dict[str, Any] = {"domain": "fail-permanent.example", "location": "Austin, TX"}
    result = await s.call(
        "start_seo_job", {"workflow": "local_audit", "params": audit, "wait_seconds": 30}
    )
    data = _expect_ok(result, "permanent failure")
    advice = data.get("advice") or {}
    _expect(
        data.get("state") == "failed" and advice.get("retryable") is False,
        "permanent failure",
        "expected a failed job with advice not to retry",
    )
    _show_advice(s.say, advice)
    s.say.detail("Recovery: the advice says change the input, so the agent fixes the domain.")
    audit["domain"] = "austin-plumbing.example"
    result = await s.call(
        "start_seo_job", {"workflow": "local_audit", "params": audit, "wait_seconds": 30}
    )
    data = _expect_ok(result, "permanent recovery")
    _expect(data.get("state") == "succeeded", "permanent recovery", "the fixed job should succeed")


async def _list_jobs(s: _Session, expected: int) -> None:
    s.say.step(8, "Lost the context? The ledger lists every job, with its state")
    result = await s.call("list_jobs", {})
    data = _expect_ok(result, "list_jobs")
    jobs = data.get("jobs") or []
    _expect(len(jobs) == expected, "list_jobs", f"expected {expected} jobs, got {len(jobs)}")
    for job in jobs:
        s.say.detail(f"{job.get('job_id')}  {job.get('operation'):<22} {job.get('state')}")


async def _credits(s: _Session) -> None:
    s.say.step(9, "Credit error: a second session whose Seamless org has no credits left")
    s.say.para(
        f"This server's SEAMLESS_API_KEY is the sandbox scenario key {KEY_INSUFFICIENT_CREDITS}.",
        _INDENT,
    )
    result = await s.call(
        "start_research",
        {
            "kind": "contacts",
            "contacts": [{"name": "Ada Lovelace", "company": "Analytical Engines"}],
        },
    )
    error = _expect_error(result, "credits", "credits_exhausted")
    _show_error(s.say, error)
    s.say.detail("Recovery: stop spending, tell the user; the free calls keep working:")
    result = await s.call("search_prospects", {"kind": "contacts", "query": "CTO", "limit": 2})
    _expect_ok(result, "search without credits")
    result = await s.call("get_usage", {})
    data = _expect_ok(result, "get_usage")
    providers: list[dict[str, Any]] = data.get("providers") or []
    seamless = next((p for p in providers if p.get("provider") == "seamless"), {})
    _expect(seamless.get("credits_remaining") == 0, "get_usage", "usage should show 0 credits left")


async def _as_a_task(s: _Session) -> None:
    s.say.step(10, "A tasks-capable host: the same kind of job as an MCP task")
    s.say.para(
        "A host on protocol 2026-07-28 that declares the io.modelcontextprotocol/tasks "
        "extension gets a task at once instead of a blocking call, polls tasks/get (or listens "
        "for notifications/tasks), and receives the tool's own result when the job ends. The "
        "task lives in the ledger beside its job, so it survives a server restart.",
        _INDENT,
    )
    result = await s.call(
        "start_seo_job", {"workflow": "serp_analysis", "params": {"keyword": "crm tasks"}}
    )
    data = _expect_ok(result, "task")
    _expect(data.get("state") == "succeeded", "task", "the task should end with the job done")


class _TaskLines:
    """Prints each distinct `tasks/get` answer the tasks client sees, one line each."""

    def __init__(self, say: _Narrator) -> None:
        self.say = say
        self.lines: list[str] = []

    async def __call__(self, state: TaskState) -> None:
        line = f"tasks/get -> {state.status}"
        if state.status == "working" and state.status_message:
            line += f" ({state.status_message}; poll every {state.poll_interval_ms} ms)"
        if not self.lines or self.lines[-1] != line:
            self.lines.append(line)
            self.say.detail(line)


# ---- entry point ----------------------------------------------------------------------------


def _settings(db: Path, extra: Mapping[str, str] | None = None) -> Settings:
    """The demo's own settings: the sandbox forced on, a throwaway ledger, no user keys."""
    return load_settings({"JOBRELAY_DB": str(db), "JOBRELAY_SANDBOX": "1", **(extra or {})})


async def _run(say: _Narrator, workdir: Path, scale: float) -> None:
    from mcp_server.server import build_server

    clock = ScaledClock(scale)
    state = SandboxState(clock=clock, faults=Faults(time_scale=scale, job_seconds=JOB_SECONDS))
    db = workdir / "jobs.sqlite3"
    async with Client(build_server(_settings(db), clock=clock, sandbox_state=state)) as client:
        session = _Session(client, say, clock, state)
        research, seo = await _search_and_start(session)
        await _wait_and_read(session, research, seo)
        await _rate_limit(session)
        await _failed_jobs(session)
        await _list_jobs(session, expected=6)
    credit_less = _settings(db, {"SEAMLESS_API_KEY": KEY_INSUFFICIENT_CREDITS})
    async with Client(build_server(credit_less, clock=clock, sandbox_state=state)) as client:
        await _credits(_Session(client, say, clock, state))
    lines = _TaskLines(say)
    async with Client(
        build_server(_settings(db), clock=clock, sandbox_state=state),
        extensions=[TasksClient(on_status=lines, sleep=clock.sleep)],
    ) as client:
        await _as_a_task(_Session(client, say, clock, state))
    _expect(
        bool(lines.lines) and lines.lines[-1] == "tasks/get -> completed",
        "task",
        f"expected tasks/get to end completed, saw {lines.lines}",
    )


@contextmanager
def _quiet_server_logs() -> Iterator[None]:
    """The server's "serving the embedded sandbox" warning is what the narration says."""
    logger = logging.getLogger("mcp_server")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


_INTRO = (
    "jobrelay demo: a scripted agent session through a real MCP client (in-process) against "
    "the embedded sandbox, which simulates the Seamless.ai and AgentSEO APIs on 127.0.0.1: no "
    "API keys, no internet. Time runs {scale:g}x faster than real time (a {job:g} s job takes "
    "{real:.1f} s), and the job ledger is a temporary file, removed at the end."
)


def run_demo(*, out: TextIO | None = None, time_scale: float = DEMO_SCALE) -> int:
    """Run the scripted session; 0 when every step behaved as expected, else 1."""
    say = _Narrator(out if out is not None else sys.stdout)
    say.para(_INTRO.format(scale=time_scale, job=JOB_SECONDS, real=JOB_SECONDS / time_scale))
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="jobrelay-demo-") as tmp, _quiet_server_logs():
            anyio.run(_run, say, Path(tmp), time_scale)
    except DemoError as exc:
        say.write()
        print(f"jobrelay demo: unexpected result at {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001  # top level of the command: report, exit 1
        say.write()
        traceback.print_exc(file=sys.stderr)
        print(f"jobrelay demo: failed: {exc!r}", file=sys.stderr)
        return 1
    say.write()
    say.para(
        f"Done in {time.monotonic() - started:.1f} s; every step behaved as expected. Next: "
        "`jobrelay doctor` checks your own configuration, and the README has the host "
        "configuration to paste (the server is `jobrelay serve`)."
    )
    return 0
