"""Fault scenarios for `tools/chaos.py`: a stalling, lying fake upstream on loopback (issue 20).

    python tools/chaos.py --quick                       # the scenarios, then the quick soak
    python tools/chaos.py --quick --scenarios-only      # just the scenarios (~13 s)
    python tools/chaos.py --scenarios stall_search,id_flood --scenarios-only

Topology: `Liar`, a small fake of both APIs (Seamless search/research/poll, AgentSEO workflow
POST and `GET /jobs/{id}`; no event stream, so jobrelay polls) served by uvicorn on an
ephemeral 127.0.0.1 port in this event loop, and jobrelay in-process (`build_server`) over a
real HTTP client. Both share one `ScaledClock`, so jobrelay's 45 s deadline or 60 s breaker
take a few real seconds while every duration stays self-consistent; figures are reported in
virtual seconds.

Each scenario is one `Scenario` entry in `SCENARIOS`: a name, the issue item it guards, how
the liar misbehaves (`setup`), and `run(ctx)`, which drives jobrelay like an agent and returns
the problems it saw (empty = passed) plus figures. Items still to be covered are listed in
`PENDING`; to add one, write its `run` (and a `setup` if the liar needs a new lie, e.g. a
field of its `Lies`), append a `Scenario(...)` and drop it from `PENDING`:

    Scenario("oversized_record", "20.5", "a 5 MB title is shown truncated", _oversized,
             setup=lambda lies: setattr(lies, "record_title_bytes", 5_000_000))

`fast=True` scenarios run in the test suite (`tests/test_scenarios.py`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import _benchlib as bl  # tools/ is not a package; see _benchlib's docstring
import anyio
import uvicorn
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcp_server import _bounds as B
from mcp_server._clock import ScaledClock
from mcp_server.config import load_settings

SEAMLESS = "/seamless/api/client/v1"
AGENTSEO = "/agentseo/api/v1"
SCALE = 20.0
"""Virtual seconds per real second: a 45 s deadline is 2.25 s, the 60 s breaker 3 s."""
MAX_WAIT = 45.0
"""`JOBRELAY_MAX_WAIT_SECONDS` (the default) in every scenario."""
SLACK = 6.0
"""Virtual seconds of real processing tolerated on top of a deadline (0.3 s real at SCALE)."""
CALL_TIMEOUT = 20.0
"""Real seconds any one tool call may take before the scenario counts it as hung."""

PENDING: dict[str, str] = {}
"""Issue 20 items without a scenario yet: reported, not run (none left)."""


@dataclass
class Lies:
    """How the fake upstream misbehaves; every field is a switch a scenario sets."""

    stall: set[str] = field(default_factory=set)
    """Routes that accept the request and never answer: search, research, poll, seo_start,
    seo_job."""
    research_credits: str | None = "999000"
    """`X-PublicAPI-Credits` on research answers (None: no header)."""
    search_credits: str | None = None
    ids_per_research: int | None = None
    """requestIds in a research 202 whatever was asked (None: one per target, honest)."""
    search_fails: bool = False
    """Every search answers 503 (opens the breaker)."""
    poll_fail_pattern: tuple[int, ...] = ()
    """Poll/job GETs whose number modulo 10 is listed answer 503 (1, 4, 7: a sustained 30 %)."""
    job_seconds: float = 4.0
    """A research job is done this many virtual seconds after its POST."""
    record_title_chars: int = 0
    """A finished contact record's `title` has this many characters (0: an ordinary title)."""


class Liar:
    """The fake upstream: both APIs, lying as `lies` says; counts every call by route."""

    def __init__(self, clock: ScaledClock) -> None:
        self.clock = clock
        self.lies = Lies()
        self.calls: dict[str, int] = {}
        self.release = anyio.Event()
        self._done_at: dict[str, float] = {}
        self._reads = 0
        self._serial = 0

    def reset(self, lies: Lies) -> None:
        self.release.set()  # let stalled handlers from the previous scenario go
        self.release = anyio.Event()
        self.lies = lies
        self.calls = {}
        self._done_at = {}
        self._reads = 0

    def _count(self, route: str) -> None:
        self.calls[route] = self.calls.get(route, 0) + 1

    async def _maybe_stall(self, route: str) -> Response | None:
        self._count(route)
        if route in self.lies.stall:
            await self.release.wait()
            return JSONResponse({"message": "gave up"}, status_code=504)
        return None

    def _flaky(self) -> bool:
        self._reads += 1
        return self._reads % 10 in self.lies.poll_fail_pattern

    def _headers(self, credits: str | None) -> dict[str, str]:
        headers = {"Date": _http_date(self.clock.time())}
        if credits is not None:
            headers["X-PublicAPI-Credits"] = credits
        return headers

    async def search(self, _request: Request) -> Response:
        if (stalled := await self._maybe_stall("search")) is not None:
            return stalled
        if self.lies.search_fails:
            return JSONResponse({"message": "overloaded"}, 503, self._headers(None))
        body = {"data": [], "supplementalData": {"isMore": False, "total": 0}}
        return JSONResponse(body, headers=self._headers(self.lies.search_credits))

    async def research(self, request: Request) -> Response:
        if (stalled := await self._maybe_stall("research")) is not None:
            return stalled
        body = await request.json()
        targets = sum(len(body.get(k) or []) for k in ("searchResultIds", "contacts", "companies"))
        count = self.lies.ids_per_research or targets
        ids = []
        for _ in range(count):
            self._serial += 1
            ids.append(f"liar-{self._serial}")
        for rid in ids[:1000]:
            self._done_at[rid] = self.clock.monotonic() + self.lies.job_seconds
        return JSONResponse(
            {"success": True, "requestIds": ids}, 202, self._headers(self.lies.research_credits)
        )

    async def poll(self, request: Request) -> Response:
        if (stalled := await self._maybe_stall("poll")) is not None:
            return stalled
        if self._flaky():
            return JSONResponse({"message": "overloaded"}, 503, self._headers(None))
        now = self.clock.monotonic()
        data = []
        for rid in request.query_params.get("requestIds", "").split(","):
            done_at = self._done_at.get(rid)
            if done_at is None:
                continue
            item: dict[str, Any] = {"requestId": rid, "status": "researching"}
            if now >= done_at:
                item["status"] = "done"
                item["contact"] = {"fullName": "Ada Lovelace", "company": "Liar Inc"}
                if self.lies.record_title_chars:
                    item["contact"]["title"] = "T" * self.lies.record_title_chars
            data.append(item)
        return JSONResponse({"success": True, "data": data}, headers=self._headers(None))

    async def seo_start(self, _request: Request) -> Response:
        if (stalled := await self._maybe_stall("seo_start")) is not None:
            return stalled
        self._serial += 1
        env = {"jobId": f"seo-liar-{self._serial}", "status": "queued", "phase": "queued"}
        return JSONResponse(env, 202, self._headers(None))

    async def seo_job(self, request: Request) -> Response:
        if (stalled := await self._maybe_stall("seo_job")) is not None:
            return stalled
        env = {"jobId": request.path_params["job_id"], "status": "processing"}
        return JSONResponse(env, headers=self._headers(None))

    async def no_stream(self, _request: Request) -> Response:
        self._count("seo_events")
        return JSONResponse({"error": {"code": "NOT_FOUND", "message": "no stream"}}, 404)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(SEAMLESS + "/search/{kind}", self.search, methods=["POST"]),
                Route(SEAMLESS + "/{kind}/research", self.research, methods=["POST"]),
                Route(SEAMLESS + "/{kind}/research/poll", self.poll, methods=["GET"]),
                Route(AGENTSEO + "/jobs/{job_id}/events", self.no_stream, methods=["GET"]),
                Route(AGENTSEO + "/jobs/{job_id}", self.seo_job, methods=["GET"]),
                Route(AGENTSEO + "/{path:path}", self.seo_start, methods=["POST"]),
            ]
        )


def _http_date(epoch: float) -> str:
    from email.utils import formatdate

    return formatdate(epoch, usegmt=True)


@asynccontextmanager
async def serve_liar(clock: ScaledClock) -> AsyncIterator[tuple[Liar, str]]:
    """The liar on an ephemeral loopback port; yields it and its root URL."""
    liar = Liar(clock)
    port = bl.free_port()
    config = uvicorn.Config(
        liar.app(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        date_header=False,
        server_header=False,
        timeout_graceful_shutdown=1,
    )
    server = bl._Uvicorn(config)  # the shared signal-free uvicorn
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110  # uvicorn offers a flag, not an event
                await anyio.sleep(0.005)
        try:
            yield liar, f"http://127.0.0.1:{port}"
        finally:
            liar.release.set()
            server.should_exit = True


# --------------------------------------------------------------------------------------------
# scenarios


@dataclass
class Ctx:
    """What a scenario gets: the MCP client on jobrelay, the liar, the shared clock."""

    client: Client
    liar: Liar
    clock: ScaledClock
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    took: float = 0.0
    """Virtual seconds the last call took."""
    env: dict[str, str] = field(default_factory=dict)
    """jobrelay's environment (pointed at the liar), for scenarios that start `serve` themselves."""

    async def call(self, tool: str, args: dict[str, Any]) -> Any:
        """One tool call, bounded in real time; its virtual duration is left in `took`."""
        start = self.clock.monotonic()
        with anyio.fail_after(CALL_TIMEOUT):
            result = await self.client.call_tool(tool, args)
        took = self.clock.monotonic() - start
        problems = bl.result_problems(result)
        if problems:
            self.problems.append(f"{tool}: {', '.join(problems)}: {bl.text_of(result)[:160]}")
        self.took = took
        return result

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.problems.append(what)


def _research_args(n: int) -> dict[str, Any]:
    return {
        "kind": "contacts",
        "contacts": [{"name": f"Scenario Person {n}", "company": "Liar Inc"}],
        "wait_seconds": 0,
    }


def _look_again(ctx: Ctx, result: Any, tool: str) -> None:
    """The answer says when to look again: seconds and an absolute UTC time."""
    error = bl.error_of(result) or {}
    ctx.expect(bool(error.get("retry_after_seconds")), f"{tool}: no retry_after_seconds")
    at = str(error.get("retry_at") or "")
    ctx.expect(at.endswith("Z") and at[11:19] in bl.text_of(result), f"{tool}: no retry_at")


async def _stall_search(ctx: Ctx) -> None:
    result = await ctx.call("search_prospects", {"kind": "contacts", "query": "cto"})
    took = ctx.took
    ctx.figures["search_prospects_s"] = round(took, 1)
    ctx.expect(took <= MAX_WAIT + SLACK, f"search_prospects took {took:.1f} s (cap {MAX_WAIT})")
    _look_again(ctx, result, "search_prospects")


async def _stall_seo_status(ctx: Ctx) -> None:
    ids = []
    for kw in ("stall a", "stall b"):
        started = await ctx.call(
            "start_seo_job",
            {"workflow": "serp_analysis", "params": {"keyword": kw}, "wait_seconds": 0},
        )
        ids.append(bl.structured(started).get("job_id"))
    result = await ctx.call("get_job_status", {"job_ids": ids})
    took = ctx.took
    ctx.figures["get_job_status_s"] = round(took, 1)
    ctx.expect(took <= MAX_WAIT + SLACK, f"get_job_status took {took:.1f} s (cap {MAX_WAIT})")
    jobs = bl.structured(result).get("jobs") or []
    ctx.expect(
        all(j.get("next_check_after_seconds") for j in jobs), "get_job_status: no time to look"
    )


async def _stall_poll(ctx: Ctx) -> None:
    started = await ctx.call("start_research", _research_args(1))
    job_id = bl.structured(started).get("job_id")
    ctx.expect(bool(job_id), "research start lost its job id")
    result = await ctx.call("get_job_status", {"job_ids": [job_id]})
    took = ctx.took
    ctx.figures["get_job_status_s"] = round(took, 1)
    ctx.expect(took <= MAX_WAIT + SLACK, f"get_job_status took {took:.1f} s (cap {MAX_WAIT})")
    job = (bl.structured(result).get("jobs") or [{}])[0]
    ctx.expect(bool(job.get("next_check_after_seconds")), "get_job_status: no time to look")
    ctx.expect(job.get("state") == "running", f"stalled poll: job {job.get('state')}")
    waited = await ctx.call("wait_for_job", {"job_id": job_id, "wait_seconds": 30})
    ctx.figures["wait_for_job_30_s"] = round(ctx.took, 1)
    ctx.expect(ctx.took <= 30 + SLACK, f"wait_for_job(30) took {ctx.took:.1f} s")
    ctx.expect(bl.structured(waited).get("state") == "running", "stalled wait lost the job")


async def _stall_paid_post(ctx: Ctx) -> None:
    result = await ctx.call("start_research", _research_args(1))
    took = ctx.took
    ctx.figures["start_research_s"] = round(took, 1)
    ctx.expect(took <= MAX_WAIT + SLACK, f"start_research took {took:.1f} s")
    error = bl.error_of(result) or {}
    ctx.expect(error.get("code") == "outcome_unknown", f"stalled POST gave {error.get('code')}")
    ctx.expect(bool(bl.structured(result).get("job_id")), "stalled POST lost its job id")
    ctx.expect(ctx.liar.calls.get("research") == 1, "stalled paid POST was replayed")


async def _lying_credits(ctx: Ctx) -> None:
    for n, value in enumerate(("-5", "abc", "99999999999999", "2.5"), start=1):
        ctx.liar.lies.research_credits = value
        result = await ctx.call("start_research", _research_args(n))
        code = (bl.error_of(result) or {}).get("code")
        ctx.expect(code is None, f"start_research after credits {value!r}: {code}")
    posts = ctx.liar.calls.get("research", 0)
    ctx.figures["research_posts_sent"] = posts
    ctx.expect(posts == 4, f"{posts} of 4 research POSTs sent: a bad header locked research out")


async def _credits_zero_corrected(ctx: Ctx) -> None:
    ctx.liar.lies.research_credits = "0"
    await ctx.call("start_research", _research_args(1))
    refused = await ctx.call("start_research", _research_args(2))
    error = bl.error_of(refused) or {}
    text = bl.text_of(refused)
    ctx.expect(error.get("code") == "credits_exhausted", f"0 credits gave {error.get('code')}")
    ctx.expect("POST /contacts/research" in text, "refusal does not say which answer said 0")
    ctx.liar.lies.search_credits = "999000"
    await ctx.call("search_prospects", {"kind": "contacts"})
    again = await ctx.call("start_research", _research_args(3))
    ctx.expect(bl.error_of(again) is None, "a good answer did not lift the local refusal")
    ctx.figures["research_posts_sent"] = ctx.liar.calls.get("research", 0)
    ctx.expect(ctx.liar.calls.get("research") == 2, "research POSTs: expected 2")


async def _id_flood(ctx: Ctx) -> None:
    ctx.liar.lies.ids_per_research = 100_000
    result = await ctx.call("start_research", _research_args(1))
    text = bl.text_of(result)
    data = bl.structured(result)
    ctx.expect((bl.error_of(result) or {}).get("code") == "outcome_unknown", "flood accepted")
    ctx.expect("100000 target" not in text and "started" not in text, "flood reported started")
    ctx.figures["answer_chars"] = len(text)
    job_id = data.get("job_id")
    ctx.expect(bool(job_id), "flood lost the job id")
    if job_id:
        await ctx.call("wait_for_job", {"job_id": job_id, "wait_seconds": 27})
    polls = ctx.liar.calls.get("poll", 0)
    ctx.figures["poll_calls_in_27s_wait"] = polls
    ctx.expect(polls == 0, f"{polls} poll calls for a refused answer (was 1,000)")


async def _degraded_30pct(ctx: Ctx) -> None:
    ctx.liar.lies.search_fails = True
    for _ in range(2):
        failed = await ctx.call("search_prospects", {"kind": "contacts"})
    error = bl.error_of(failed) or {}
    ctx.expect(error.get("code") == "upstream_degraded", f"breaker: {error.get('code')}")
    if not error.get("retry_at"):
        return
    announced = datetime.fromisoformat(str(error["retry_at"])).timestamp()
    ctx.liar.lies.poll_fail_pattern = (1, 4, 7)
    started = await ctx.call("start_research", _research_args(1))
    job_id = bl.structured(started).get("job_id")
    began = ctx.clock.time()
    state, waits, instants = "", 0, set()
    while job_id and state != "succeeded" and waits < 8:
        waits += 1
        data = bl.structured(await ctx.call("wait_for_job", {"job_id": job_id, "wait_seconds": 20}))
        state = str(data.get("state"))
        advice = data.get("advice") or {}
        if advice.get("code") == "upstream_degraded" and ctx.clock.time() < announced:
            instants.add(advice.get("retry_at"))
    ctx.figures["waits"] = waits
    ctx.figures["reported_after_s"] = round(ctx.clock.time() - began, 1)
    ctx.figures["announced_in_s"] = round(announced - began, 1)
    ctx.expect(state == "succeeded", f"job still {state} after {waits} waits")
    ctx.expect(ctx.clock.time() <= announced + 1, "finished job reported after the announced time")
    ctx.expect(
        instants <= {error["retry_at"]}, f"announced time moved: {sorted(map(str, instants))}"
    )


HUGE = 1_000_000
"""Characters of item 3's oversized inputs (a 1 MB name, id or field)."""
SMALL_ANSWER_TOKENS = 1_000
"""Item 3: a refusal of a 1 MB input stays under this many tokens (`_bounds.tokens`)."""


def _answer_tokens(result: Any) -> int:
    """Tokens an agent reads: the text block and structuredContent, by the one estimator."""
    return B.tokens(bl.text_of(result)) + B.tokens(bl.structured(result))


async def _bounded_input(ctx: Ctx) -> None:
    """Item 3: 1 MB inputs refused as invalid_input before the ledger or upstream sees them."""
    before = bl.structured(await ctx.call("list_jobs", {"limit": 100})).get("jobs") or []
    cases: tuple[tuple[str, str, dict[str, Any]], ...] = (
        (
            "1 MB contact name",
            "start_research",
            {
                "kind": "contacts",
                "contacts": [{"name": "N" * HUGE, "company": "Liar Inc"}],
                "wait_seconds": 0,
            },
        ),
        (
            "1 MB company name",
            "start_research",
            {"kind": "companies", "companies": [{"name": "C" * HUGE}]},
        ),
        ("1 MB job id", "get_job_status", {"job_ids": ["J" * HUGE]}),
        ("1 MB job id", "wait_for_job", {"job_id": "J" * HUGE, "wait_seconds": 0}),
        ("1 MB job id", "get_job_result", {"job_id": "J" * HUGE}),
        ("1 MB field", "get_job_result", {"job_id": "sea_none", "fields": ["F" * HUGE]}),
    )
    largest = refused = 0
    for case, tool, args in cases:
        result = await ctx.call(tool, args)
        code = (bl.error_of(result) or {}).get("code")
        refused += code == "invalid_input"
        ctx.expect(code == "invalid_input", f"{tool} with a {case}: {code or 'accepted'}")
        size = _answer_tokens(result)
        largest = max(largest, size)
        ctx.expect(size < SMALL_ANSWER_TOKENS, f"{tool} with a {case}: {size:,}-token answer")
        whole = bl.text_of(result) + B.compact_json(bl.structured(result))
        for ch in "NCJF":
            ctx.expect(
                ch * (B.ECHO_CHARS + 1) not in whole,
                f"{tool} with a {case}: echoes more than {B.ECHO_CHARS} chars of it",
            )
    after = bl.structured(await ctx.call("list_jobs", {"limit": 100})).get("jobs") or []
    ctx.figures["refused"] = f"{refused}/{len(cases)}"
    ctx.figures["largest_answer_tokens"] = largest
    ctx.figures["upstream_calls"] = sum(ctx.liar.calls.values())
    ctx.figures["ledger_jobs_added"] = len(after) - len(before)
    ctx.expect(not ctx.liar.calls, f"oversized inputs reached upstream: {dict(ctx.liar.calls)}")
    ctx.expect(len(after) == len(before), f"{len(after) - len(before)} ledger job(s) created")


def _self_pointing(tool: str, args: dict[str, Any], result: Any) -> str | None:
    """The answer's `Next:` call if it is the very call that produced it (defaults filled)."""
    hint = bl.next_call(bl.text_of(result))
    if hint is None or hint[0] != tool:
        return None
    defaults = {"offset": 0, "limit": B.DEFAULT_LIMIT_RESULT, "fields": None}
    same = {**defaults, **args} == {**defaults, **hint[1]}
    return f"{tool}({hint[1]})" if same else None


async def _oversized_record(ctx: Ctx) -> None:
    """Item 5: a poll record with a 5 MB title is shown, cut with the marker; no loop."""
    started = await ctx.call("start_research", _research_args(1))
    job_id = bl.structured(started).get("job_id")
    ctx.expect(bool(job_id), "research start lost its job id")
    if not job_id:
        return
    marker = B.TRUNCATED.split("{", 1)[0]
    calls: list[tuple[str, dict[str, Any]]] = [
        ("wait_for_job", {"job_id": job_id, "wait_seconds": 20}),
        ("get_job_result", {"job_id": job_id}),
        ("get_job_result", {"job_id": job_id, "offset": 0}),
        ("get_job_result", {"job_id": job_id, "offset": 5}),
    ]
    largest = followed = shown_title = 0
    while calls and followed < 8:
        tool, args = calls.pop(0)
        followed += 1
        result = await ctx.call(tool, args)
        data = bl.structured(result)
        size = _answer_tokens(result)
        largest = max(largest, size)
        ctx.expect(size <= B.DEFAULT_ANSWER_TOKENS, f"{tool}({args}): {size:,}-token answer")
        if loop := _self_pointing(tool, args, result):
            ctx.problems.append(f"{tool}({args}) answers Next: {loop}: a loop")
        shown = data.get("results") if tool == "wait_for_job" else data.get("items")
        past_end = tool == "get_job_result" and args.get("offset", 0) >= 1
        if past_end:
            hint = bl.next_call(bl.text_of(result))
            ctx.expect(hint is not None, f"{tool}({args}): past the end without a next step")
            if hint is not None and hint[0] == "get_job_result":
                calls.append(hint)  # follow it as an agent would
            continue
        ctx.expect(len(shown or []) == 1, f"{tool}({args}): {len(shown or [])} record(s) shown")
        title = str((shown or [{}])[0].get("title", ""))
        shown_title = max(shown_title, len(title))
        ctx.expect(
            marker in title and len(title) <= B.MAX_FIELD_VALUE_CHARS + 40,
            f"{tool}({args}): title of {len(title):,} chars, marker {marker in title}",
        )
        ctx.expect(marker in bl.text_of(result), f"{tool}({args}): text without the marker")
    ctx.figures["calls"] = followed
    ctx.figures["largest_answer_tokens"] = largest
    ctx.figures["title_chars"] = ctx.liar.lies.record_title_chars
    ctx.figures["shown_title_chars"] = shown_title


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def _deep_research(request_id: int, depth: int) -> str:
    contact = '{"name":"Deep Person","company":"Liar Inc","extra":' + _nested(depth) + "}"
    return (
        f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call","params":'
        f'{{"name":"start_research","arguments":{{"kind":"contacts","contacts":[{contact}]}}}}}}'
    )


MALFORMED: tuple[tuple[str, str, Any], ...] = (
    ("invalid JSON", '{"jsonrpc":"2.0","id":14,"method":', None),
    ("params as a list", '{"jsonrpc":"2.0","id":15,"method":"ping","params":[1]}', 15),
    ("no jsonrpc", '{"id":16,"method":"ping"}', 16),
    ("a batch array", '[{"jsonrpc":"2.0","id":12,"method":"ping"}]', None),
    ("args 250 deep", _deep_research(19, 250), 19),
    (
        "params 1,100 deep",
        '{"jsonrpc":"2.0","id":10,"method":"ping","params":' + _nested(1100) + "}",
        10,
    ),
    ("id 10^30", '{"jsonrpc":"2.0","id":' + str(10**30) + ',"method":"ping"}', 10**30),
    (
        "5,000-digit int",
        '{"jsonrpc":"2.0","id":18,"method":"ping","params":{"n":' + "7" * 5000 + "}}",
        18,
    ),
    ("lone-surrogate id", '{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}', None),
)
"""(case, raw line, the id its answer must carry): item 7's malformed requests."""
BAD_NOTIFICATION = '{"jsonrpc":"2.0","method":"notifications/x","params":[1]}'
ANSWER_WITHIN = 1.0
"""Real seconds each malformed line, and the ping after it, may take."""


async def _malformed_jsonrpc(ctx: Ctx) -> None:
    """`jobrelay serve` over real stdio: each malformed line answered in 1 s, still serving."""
    full = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}  # noqa: S108
    full.update(ctx.env)
    process = await anyio.open_process(
        [sys.executable, "-m", "mcp_server", "serve"], env=full, cwd=str(bl.REPO)
    )
    assert process.stdin is not None
    assert process.stdout is not None
    out = BufferedByteReceiveStream(process.stdout)

    async def send(line: str) -> None:
        assert process.stdin is not None
        await process.stdin.send(line.encode() + b"\n")

    async def receive() -> dict[str, Any]:
        return dict(json.loads(await out.receive_until(b"\n", 1 << 24)))

    async def ping(request_id: int) -> bool:
        await send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "ping"}))
        while True:
            answer = await receive()
            if answer.get("id") == request_id:
                return answer.get("result") == {}

    slowest = 0.0
    answered = 0
    async with process:
        try:
            with anyio.fail_after(30):
                await send(
                    json.dumps(
                        {
                            "jsonrpc": "2.0",
                            "id": 1,
                            "method": "initialize",
                            "params": {
                                "protocolVersion": "2025-06-18",
                                "capabilities": {},
                                "clientInfo": {"name": "chaos", "version": "1"},
                            },
                        }
                    )
                )
                await receive()
                await send('{"jsonrpc":"2.0","method":"notifications/initialized"}')
            for n, (case, line, request_id) in enumerate(MALFORMED, 1000):
                start = time.monotonic()
                try:
                    with anyio.fail_after(ANSWER_WITHIN):
                        await send(line)
                        answer = await receive()
                except TimeoutError:
                    ctx.problems.append(f"{case}: no answer within {ANSWER_WITHIN} s")
                    break
                slowest = max(slowest, time.monotonic() - start)
                refused = "error" in answer or (answer.get("result") or {}).get("isError") is True
                ctx.expect(
                    answer.get("id") == request_id, f"{case}: answered id {answer.get('id')!r}"
                )
                ctx.expect(refused, f"{case}: not refused: {str(answer)[:120]}")
                answered += refused
                try:
                    with anyio.fail_after(ANSWER_WITHIN):
                        ctx.expect(await ping(n), f"{case}: the ping after it failed")
                except TimeoutError:
                    ctx.problems.append(f"{case}: session stopped serving")
                    break
            else:
                await send(BAD_NOTIFICATION)  # dropped: the next answer is tools/list's
                await send(json.dumps({"jsonrpc": "2.0", "id": 2000, "method": "tools/list"}))
                try:
                    with anyio.fail_after(ANSWER_WITHIN):
                        answer = await receive()
                except TimeoutError:
                    answer = {}
                ctx.expect(
                    answer.get("id") == 2000 and bool(answer.get("result", {}).get("tools")),
                    f"bad notification answered or tools/list failed: {str(answer)[:120]}",
                )
        finally:
            await process.stdin.aclose()
            with anyio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
    ctx.figures["answered"] = f"{answered}/{len(MALFORMED)}"
    ctx.figures["slowest_answer_ms"] = round(slowest * 1000)
    ctx.expect(not ctx.liar.calls, f"malformed requests reached upstream: {dict(ctx.liar.calls)}")


@dataclass(frozen=True)
class Scenario:
    name: str
    item: str
    """The issue item it guards, e.g. `20.1`."""
    what: str
    run: Callable[[Ctx], Awaitable[None]]
    setup: Callable[[Lies], None] = lambda _lies: None
    fast: bool = True
    """Part of the subset the test suite runs."""


def _stall(*routes: str) -> Callable[[Lies], None]:
    return lambda lies: lies.stall.update(routes)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("stall_search", "20.1", "search never answered", _stall_search, _stall("search")),
    Scenario(
        "stall_seo_status",
        "20.1",
        "two SEO status GETs stall",
        _stall_seo_status,
        _stall("seo_job"),
        fast=False,  # 2.3 s real; tests/test_hostile_upstream.py covers it too
    ),
    Scenario(
        "stall_poll",
        "20.1",
        "research polls stall",
        _stall_poll,
        _stall("poll"),
        fast=False,  # 2.3 s real
    ),
    Scenario(
        "stall_paid_post",
        "20.1",
        "research POST stalls",
        _stall_paid_post,
        _stall("research"),
        fast=False,  # 2.3 s real; the no-double-spend tests cover the stalled POST too
    ),
    Scenario("lying_credits", "20.2", "credits -5, abc, 1e14, 2.5", _lying_credits),
    Scenario("credits_zero", "20.2", "a 0 corrected by a search", _credits_zero_corrected),
    Scenario(
        "bounded_input",
        "20.3",
        "(none reached) 1 MB name, job id and field to 4 tools",
        _bounded_input,
    ),
    Scenario("id_flood", "20.4", "202 with 100,000 ids for 1 target", _id_flood),
    Scenario(
        "oversized_record",
        "20.5",
        "finished poll record with a 5,000,000-char title",
        _oversized_record,
        setup=lambda lies: setattr(lies, "record_title_chars", 5_000_000),
    ),
    Scenario("degraded_30pct", "20.6", "breaker open, 30 % 5xx polls", _degraded_30pct),
    Scenario(
        "malformed_jsonrpc",
        "20.7",
        "9 malformed lines + a bad notification to `serve` over stdio",
        _malformed_jsonrpc,
    ),
)


async def run_one(
    scenario: Scenario, *, liar: Liar, root: str, clock: ScaledClock, work: Path
) -> dict[str, Any]:
    lies = Lies()
    scenario.setup(lies)
    liar.reset(lies)
    env = bl.server_env(
        root + SEAMLESS,
        root + AGENTSEO,
        work / f"{scenario.name}.sqlite3",
        JOBRELAY_MAX_WAIT_SECONDS=str(int(MAX_WAIT)),
    )
    from mcp_server.server import build_server

    server = build_server(load_settings(env), clock=clock)
    real = time.monotonic()
    virtual = clock.monotonic()
    ctx: Ctx | None = None
    try:
        async with Client(server) as client:
            ctx = Ctx(client, liar, clock, env=env)
            await scenario.run(ctx)
    except Exception as exc:  # noqa: BLE001  # a crash is this scenario's failure, not the run's
        problems = [*(ctx.problems if ctx else []), f"crashed: {type(exc).__name__}: {exc}"[:300]]
    else:
        problems = ctx.problems
    finally:
        liar.release.set()
    return {
        "name": scenario.name,
        "item": scenario.item,
        "what": scenario.what,
        "ok": not problems,
        "problems": problems[:10],
        "virtual_seconds": round(clock.monotonic() - virtual, 1),
        "real_seconds": round(time.monotonic() - real, 2),
        "figures": dict(ctx.figures) if ctx else {},
        "upstream_calls": dict(liar.calls),
    }


async def run_scenarios(
    names: Sequence[str] | None = None, *, fast_only: bool = False, scale: float = SCALE
) -> dict[str, Any]:
    """Run the named scenarios (all by default) against one liar; a result per scenario."""
    chosen = [
        s for s in SCENARIOS if (names is None or s.name in names) and (s.fast or not fast_only)
    ]
    unknown = sorted(set(names or ()) - {s.name for s in SCENARIOS})
    if unknown:
        raise ValueError(f"unknown scenario(s): {', '.join(unknown)}")
    clock = ScaledClock(scale)
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="jobrelay-scenarios-") as tmp:
        async with serve_liar(clock) as (liar, root):
            for scenario in chosen:
                results.append(
                    await run_one(scenario, liar=liar, root=root, clock=clock, work=Path(tmp))
                )
    return {
        "time_scale": scale,
        "seconds": round(time.monotonic() - started, 1),
        "ok": all(r["ok"] for r in results),
        "results": results,
        "pending": dict(PENDING),
    }


def checks(report: dict[str, Any]) -> list[bl.Check]:
    """One table row per scenario (and one per pending item) for chaos's table."""
    rows = []
    for r in report["results"]:
        figures = ", ".join(f"{k} {v}" for k, v in r["figures"].items()) or "-"
        value = f"{'ok' if r['ok'] else '; '.join(r['problems'])[:120]} ({figures})"
        rows.append(bl.Check("scenario", f"{r['item']} {r['name']}", value, "ok", r["ok"]))
    for item, what in report["pending"].items():
        rows.append(bl.Check("scenario", f"{item} (pending)", what, "-", None))
    return rows
