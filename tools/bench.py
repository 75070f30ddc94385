"""jobrelay benchmarks: the issue-8 figures, side by side, from one run on loopback.

    python tools/bench.py --quick            # smoke run for CI (under a minute), loose thresholds
    python tools/bench.py                    # the full run behind BENCHMARKS.md (minutes)
    python tools/bench.py --only rate,agent  # some sections
    python tools/bench.py --rate-scale 10    # the rate section in virtual time (10x)

Prints a table and writes JSON (`--json`, default `bench-results.json`). Exit status: 0 when
every figure meets the mode's thresholds (targets in full mode, loose ones in quick mode), 1
when one does not, 2 on a usage error. Nothing leaves 127.0.0.1.

Sections (see BENCHMARKS.md for what each measures and why):
  rate        upstream 429s and makespan vs N/rate for the Seamless research and poll
              endpoints and the AgentSEO workload/control budgets, at the documented limits
  completion  time from the sandbox marking a job done to wait_for_job returning: SSE,
              jobrelay polling, and a naive 5 s per-id poller
  polls       Seamless poll calls per interval with 1, 10, 100 outstanding jobs (and naive)
  overhead    get_job_status on a finished job vs a trivial tool, same SDK, over stdio
  telemetry   get_job_status with JOBRELAY_METRICS=1 vs without (issue 19), over stdio
  scale       1,000 concurrent wait_for_job calls over HTTP: server peak RSS and errors
  tokens      size of the tool list and of a default 10-contact research result
  agent       a scripted agent following the next-step hints through a forced 429 and 422
  agent_text  the same task read from text blocks only, plus a forced invalid argument and a
              lost context recovered through list_jobs
  shared      2 and 4 stdio jobrelay processes sharing one SQLite ledger and one org key:
              upstream 429s, combined makespan vs N/rate, peak per endpoint (issue 17.5)
  burst       60 SEO jobs and 60 research POSTs into an idle window, jobrelay beside a
              naive client that sends them all at once (issue 17.7)
  waits       100, 300, 1,000 concurrent SSE waits over HTTP beside the SDK floor (a one-tool
              server holding the same calls as long, with as many progress notifications):
              server CPU and memory per wait, growth exponent (issue 17.6)
  webhooks    Seamless research webhooks over Streamable HTTP (issue 18): delivery to
              wait_for_job return, poll calls per job with webhooks on vs off, 30 % of
              deliveries dropped, 50 % repeated; on 2 replicas (PostgreSQL + Redis;
              skipped without), deliveries to one and calls to the other
  replicas    3 `jobrelay serve` HTTP replicas on PostgreSQL + Redis behind a round-robin
              client, one org key: 429s, makespan, peak per endpoint; then kill -9 one
              replica mid-wait: lost jobs, duplicate paid POSTs (issue 17.5;
              tools/_bench_replicas.py; skipped with the reason without PostgreSQL or Redis)

Virtual time: `rate`, `polls`, `tokens` and `agent` run jobrelay in-process on the same
`ScaledClock` as the sandbox, so every window, reset header, job duration and poll interval is
in one self-consistent virtual time (`burst` too, at the rate section's scale). Ratios of
durations are scale-invariant there: see BENCHMARKS.md. `completion`, `overhead` and `scale`
measure milliseconds and memory and always run at real speed with jobrelay as a separate
process; so does `shared`, whose stdio processes share their buckets through the ledger file
on the system clock.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench_waits  # the waits section (issue 17.6)
import _benchlib as bl  # tools/ is not a package; see _benchlib's docstring
import anyio
import httpx
from mcp import Client

from mcp_server._clock import Clock
from mcp_server.sandbox import Faults
from mcp_server.upstream.agentseo import PLAN_BUDGETS, Plan

SECTIONS = (
    "rate",
    "completion",
    "polls",
    "overhead",
    "telemetry",
    "scale",
    "tokens",
    "agent",
    "agent_text",
    "shared",
    "burst",
    "waits",
    "webhooks",
    "replicas",
)
SEAMLESS_RATE = Faults().seamless_rate_limit / 60.0
"""Per second; what the sandbox enforces: the documented 60 per minute per endpoint per org."""
HOBBY_WORKLOAD_RATE, HOBBY_CONTROL_RATE = (n / 60.0 for n in PLAN_BUDGETS[Plan.HOBBY])
"""Per second; AgentSEO Hobby's documented workload and control budgets (60 and 600/min)."""
JOB_SECONDS = Faults().job_seconds
"""The sandbox's default job duration (virtual seconds)."""


@dataclass(frozen=True)
class Mode:
    name: str
    rate_scale: float
    research_targets: int
    batch_size: int
    seo_jobs: int
    control_jobs: int
    control_requests: int
    completion_jobs: int
    completion_job_seconds: float
    completion_poll_seconds: tuple[float, float]
    completion_gap: tuple[float, float]
    naive_interval: float
    poll_counts: tuple[int, ...]
    poll_scale: float
    poll_window: float
    overhead_calls: int
    scale_waits: int
    scale_research_jobs: int
    scale_research_size: int
    scale_seo_jobs: int
    scale_job_seconds: float
    virtual_scale: float
    shared_targets: dict[int, int]
    """Research targets per stdio process, by number of processes sharing one ledger."""
    shared_job_seconds: float
    burst_jobs: int
    webhook_jobs: int
    webhook_workers: int
    loose: bool


FULL = Mode(
    name="full",
    rate_scale=1.0,
    research_targets=200,
    batch_size=100,
    seo_jobs=200,
    control_jobs=20,
    control_requests=2000,
    completion_jobs=30,
    completion_job_seconds=3.0,
    completion_poll_seconds=(2.0, 8.0),
    completion_gap=(0.3, 1.7),
    naive_interval=5.0,
    poll_counts=(1, 10, 100),
    poll_scale=20.0,
    poll_window=60.0,
    overhead_calls=400,
    scale_waits=1000,
    scale_research_jobs=10,
    scale_research_size=100,
    scale_seo_jobs=50,
    scale_job_seconds=40.0,
    virtual_scale=20.0,
    shared_targets={2: 60, 4: 60},
    shared_job_seconds=JOB_SECONDS,
    burst_jobs=60,
    webhook_jobs=80,
    webhook_workers=4,
    loose=False,
)
QUICK = Mode(
    name="quick",
    rate_scale=3.0,
    research_targets=12,
    batch_size=10,
    seo_jobs=12,
    control_jobs=5,
    control_requests=100,
    completion_jobs=4,
    completion_job_seconds=1.0,
    completion_poll_seconds=(0.5, 1.5),
    completion_gap=(0.05, 0.3),
    naive_interval=1.0,
    poll_counts=(1, 10),
    poll_scale=50.0,
    poll_window=30.0,
    overhead_calls=30,
    scale_waits=40,
    scale_research_jobs=2,
    scale_research_size=10,
    scale_seo_jobs=4,
    scale_job_seconds=3.0,
    virtual_scale=50.0,
    shared_targets={2: 4, 4: 2},
    shared_job_seconds=0.5,
    burst_jobs=20,
    webhook_jobs=16,
    webhook_workers=4,
    loose=True,
)


@dataclass
class Run:
    mode: Mode
    work: Path
    checks: list[bl.Check] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def check(
        self,
        section: str,
        metric: str,
        value: float | int | str | None,
        *,
        target: str = "",
        ok: bool | None = None,
        unit: str = "",
    ) -> None:
        self.checks.append(bl.Check(section, metric, value, target, ok, unit))

    def check_clean(self, section: str, name: str, part: dict[str, Any]) -> None:
        """The two figures every workload owes first: no upstream 429, and all planned work
        done (a ratio over a run that lost starts would look better than it is)."""
        self.check(
            section,
            f"{name}: upstream 429s",
            part["upstream_429"],
            target="0",
            ok=part["upstream_429"] == 0,
        )
        self.check(
            section,
            f"{name}: all planned work done",
            part["complete"],
            target="True",
            ok=part["complete"],
        )

    def check_max(
        self,
        section: str,
        metric: str,
        value: float | None,
        *,
        full: float,
        quick: float,
        unit: str = "",
        also: bool = True,
    ) -> None:
        """A figure with an upper limit (`full`, or `quick` in the loose mode): the target text
        is made from the number it is checked against. `also`: a precondition of the figure."""
        limit = quick if self.mode.loose else full
        target = f"<= {limit:g} {unit}".rstrip()
        ok = also and value is not None and value <= limit
        self.check(section, metric, value, target=target, ok=ok, unit=unit)


async def _call(client: Client, tool: str, args: dict[str, Any]) -> Any:
    return await client.call_tool(tool, args)


async def _wait_terminal(
    client: Client, job_id: str, *, wait_seconds: float = 45, rounds: int = 20
) -> tuple[Any, int]:
    """wait_for_job until the job is terminal (bounded); returns the last result, calls made."""
    result: Any = None
    for n in range(1, rounds + 1):
        result = await _call(
            client, "wait_for_job", {"job_id": job_id, "wait_seconds": wait_seconds}
        )
        state = bl.structured(result).get("state")
        if state in bl.TERMINAL or bl.error_of(result) is not None:
            return result, n
    return result, rounds


def _peak_per_window(times: list[float], window: float = 60.0) -> int:
    """Most requests in any `window`-second span (sliding)."""
    xs = sorted(times)
    best = 0
    lo = 0
    for hi, t in enumerate(xs):
        while xs[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# =====================================================================================
# rate budget


async def _start_until_accepted(
    client: Client, tool: str, args: dict[str, Any], clock: Any, stats: dict[str, Any]
) -> str | None:
    """Start a job; on an isError result follow its retry_after_seconds (bounded)."""
    for _ in range(30):
        result = await _call(client, tool, args)
        err = bl.error_of(result)
        if err is None:
            job_id = bl.structured(result).get("job_id")
            return str(job_id) if job_id else None
        stats["client_errors"] += 1
        wait = err.get("retry_after_seconds")
        refusals = stats.get("_refusals")
        if isinstance(refusals, list):
            refusals.append((clock.monotonic(), wait, err.get("code")))
        if not err.get("retryable") or wait is None:
            stats["gave_up"] += 1
            return None
        await clock.sleep(float(wait))
    stats["gave_up"] += 1
    return None


def _makespan(times: list[float], rate: float) -> float | None:
    """N requests at exactly `rate` occupy N/rate: first send to last send plus one slot."""
    if not times:
        return None
    return max(times) - min(times) + 1.0 / rate


async def _start_and_wait_each(
    client: Client,
    tool: str,
    args_for: Callable[[int], dict[str, Any]],
    *,
    n: int,
    clock: Clock,
    stats: dict[str, Any],
    done: dict[str, float],
) -> None:
    """Start n jobs from 4 concurrent drivers, each waited on as soon as it is accepted (so
    status traffic runs throughout); `done` gets each finished job's clock time."""
    pending = list(range(n))

    async def waiter(job_id: str) -> None:
        result, _ = await _wait_terminal(client, job_id)
        if bl.structured(result).get("state") in bl.TERMINAL:
            done[job_id] = clock.monotonic()

    async with anyio.create_task_group() as waits:

        async def worker() -> None:
            while pending:
                job_id = await _start_until_accepted(
                    client, tool, args_for(pending.pop(0)), clock, stats
                )
                if job_id:
                    waits.start_soon(waiter, job_id)

        async with anyio.create_task_group() as workers:
            for _ in range(4):
                workers.start_soon(worker)


async def _rate_research_per_target(run: Run, out: dict[str, Any]) -> None:
    mode = run.mode
    state = bl.sandbox_state(mode.rate_scale, job_seconds=JOB_SECONDS, initial_credits=10**6)
    n = mode.research_targets
    stats = {"client_errors": 0, "gave_up": 0}
    done: dict[str, float] = {}
    async with (
        bl.loopback_sandbox(state) as sb,
        bl.inprocess_jobrelay(sb, run.work / "rate-research.sqlite3") as client,
    ):

        def research_args(i: int) -> dict[str, Any]:
            contact = {"name": f"Rate Person{i:04d}", "company": f"Ratecorp {i:04d}"}
            return {"kind": "contacts", "contacts": [contact]}

        await _start_and_wait_each(
            client, "start_research", research_args, n=n, clock=sb.clock, stats=stats, done=done
        )
        figures = _research_figures(sb.recorder, n, stats, done)
        posts = [h for h in sb.recorder.select("seamless", "research") if h.status == 202]
        first = min((h.t for h in posts), default=0.0)
        e2e = (max(done.values()) - first) if len(done) == n else None
        out["seamless_research_per_target"] = {
            **figures,
            "end_to_end_s": bl.rnd(e2e),
            "ideal_end_to_end_s": n / SEAMLESS_RATE + JOB_SECONDS,
            "end_to_end_ratio": bl.rnd(e2e / (n / SEAMLESS_RATE + JOB_SECONDS), 4) if e2e else None,
        }


def _research_figures(
    rec: bl.Recorder, n: int, stats: dict[str, Any], done: dict[str, float]
) -> dict[str, Any]:
    """What the sandbox saw of `n` per-target research jobs: POSTs, polls, 429s, makespan."""
    posts = [h.t for h in rec.select("seamless", "research") if h.status == 202]
    polls = [h.t for h in rec.select("seamless", "poll")]
    span = _makespan(posts, SEAMLESS_RATE)
    return {
        "targets": n,
        "research_posts": len(posts),
        "poll_calls": len(polls),
        "upstream_429": rec.status_count(429),
        "client_errors": stats["client_errors"],
        "gave_up": stats["gave_up"],
        "jobs_finished": len(done),
        "complete": len(posts) == n and len(done) == n and stats["gave_up"] == 0,
        "submit_makespan_s": bl.rnd(span),
        "ideal_submit_s": n / SEAMLESS_RATE,
        "submit_ratio": bl.rnd(span / (n / SEAMLESS_RATE), 4) if span else None,
        "research_peak_per_min": _peak_per_window(posts),
        "poll_peak_per_min": _peak_per_window(polls),
    }


async def _rate_research_batched(run: Run, out: dict[str, Any]) -> None:
    mode = run.mode
    state = bl.sandbox_state(mode.rate_scale, job_seconds=JOB_SECONDS, initial_credits=10**6)
    size = mode.batch_size
    async with (
        bl.loopback_sandbox(state) as sb,
        bl.inprocess_jobrelay(sb, run.work / "rate-batched.sqlite3") as client,
    ):
        clock = sb.clock
        t0 = clock.monotonic()
        jobs = []
        for b in range(2):
            contacts = [
                {"name": f"Batch Person{b}-{i:03d}", "company": f"Batchcorp {b}-{i:03d}"}
                for i in range(size)
            ]
            result = await _call(
                client, "start_research", {"kind": "contacts", "contacts": contacts}
            )
            jobs.append(str(bl.structured(result).get("job_id")))
        finished = 0
        results = []
        async with anyio.create_task_group() as tg:

            async def wait_one(job_id: str) -> None:
                nonlocal finished
                result, _ = await _wait_terminal(client, job_id)
                results.append(bl.structured(result).get("results_total"))
                finished += bl.structured(result).get("state") in bl.TERMINAL

            for job_id in jobs:
                tg.start_soon(wait_one, job_id)
        elapsed = clock.monotonic() - t0
        rec = sb.recorder
        polls = rec.select("seamless", "poll")
        out["seamless_research_batched"] = {
            "targets": 2 * size,
            "research_posts": rec.count("seamless", "research"),
            "poll_calls": len(polls),
            "upstream_429": rec.status_count(429),
            "jobs_finished": finished,
            "complete": finished == 2 and results == [size, size],
            "results": results,
            "makespan_s": bl.rnd(elapsed),
            "job_seconds": JOB_SECONDS,
        }


async def _rate_seo_workload(run: Run, out: dict[str, Any]) -> None:
    mode = run.mode
    state = bl.sandbox_state(mode.rate_scale, job_seconds=JOB_SECONDS)
    n = mode.seo_jobs
    stats = {"client_errors": 0, "gave_up": 0}
    done: dict[str, float] = {}
    async with (
        bl.loopback_sandbox(state) as sb,
        bl.inprocess_jobrelay(sb, run.work / "rate-seo.sqlite3") as client,
    ):

        def seo_args(i: int) -> dict[str, Any]:
            return {"workflow": "serp_analysis", "params": {"keyword": f"rate kw {i:04d}"}}

        await _start_and_wait_each(
            client, "start_seo_job", seo_args, n=n, clock=sb.clock, stats=stats, done=done
        )
        rec = sb.recorder
        posts = [h for h in rec.select("agentseo", "workload") if h.status == 202]
        control = rec.select("agentseo", "events") + rec.select("agentseo", "job")
        span = _makespan([h.t for h in posts], HOBBY_WORKLOAD_RATE)
        out["agentseo_workload"] = {
            "jobs": n,
            "workload_posts": len(posts),
            "control_requests": len(control),
            "upstream_429": rec.status_count(429),
            "client_errors": stats["client_errors"],
            "gave_up": stats["gave_up"],
            "jobs_finished": len(done),
            "complete": len(posts) == n and len(done) == n and stats["gave_up"] == 0,
            "submit_makespan_s": bl.rnd(span),
            "ideal_submit_s": n / HOBBY_WORKLOAD_RATE,
            "submit_ratio": bl.rnd(span / (n / HOBBY_WORKLOAD_RATE), 4) if span else None,
            "workload_peak_per_min": _peak_per_window([h.t for h in posts]),
            "control_peak_per_min": _peak_per_window([h.t for h in control]),
        }


async def _rate_seo_control(run: Run, out: dict[str, Any]) -> None:
    """A status storm: get_job_status on K open SEO jobs until M control requests were sent."""
    mode = run.mode
    state = bl.sandbox_state(mode.rate_scale, job_seconds=10**6)
    k, m = mode.control_jobs, mode.control_requests
    stats = {"client_errors": 0, "gave_up": 0}
    async with (
        bl.loopback_sandbox(state) as sb,
        bl.inprocess_jobrelay(sb, run.work / "rate-control.sqlite3") as client,
    ):
        clock = sb.clock
        jobs = []
        for i in range(k):
            args = {"workflow": "serp_analysis", "params": {"keyword": f"control kw {i:03d}"}}
            job_id = await _start_until_accepted(client, "start_seo_job", args, clock, stats)
            if job_id:
                jobs.append(job_id)
        if not jobs:
            raise RuntimeError("no AgentSEO job could be started for the control storm")
        issued = 0
        advice_seen = 0

        def sent() -> int:
            return sb.recorder.count("agentseo", "job", 200)

        async def storm() -> None:
            # A status answered from the ledger because the window is spent (issue 17.7: the
            # window, not a pace, decides) is not a control request; a storm asks again a
            # second later (the answer's own `next_check_after_seconds` is the running jobs'
            # 10 s, which would leave a freed window idle for up to 10 s).
            nonlocal issued, advice_seen
            while sent() + len(jobs) <= m:
                before = sent()
                issued += len(jobs)
                result = await _call(client, "get_job_status", {"job_ids": jobs})
                if bl.error_of(result) is not None:
                    stats["client_errors"] += 1
                for job in bl.structured(result).get("jobs", []):
                    advice_seen += "advice" in job
                if sent() - before < len(jobs):
                    stats["answered_locally"] = stats.get("answered_locally", 0) + 1
                    await clock.sleep(1.0)

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(storm)
        rec = sb.recorder
        gets = [h for h in rec.select("agentseo", "job") if h.status == 200]
        span = _makespan([h.t for h in gets], HOBBY_CONTROL_RATE)
        out["agentseo_control"] = {
            "open_jobs": len(jobs),
            "control_requests_planned": m,
            "control_requests_issued": issued,
            "control_requests_ok": len(gets),
            "complete": len(jobs) == k and len(gets) >= m - k and stats["gave_up"] == 0,
            "calls_answered_locally": stats.get("answered_locally", 0),
            "upstream_429": rec.status_count(429),
            "client_errors": stats["client_errors"],
            "statuses_with_advice": advice_seen,
            "makespan_s": bl.rnd(span),
            "ideal_s": len(gets) / HOBBY_CONTROL_RATE,
            "ratio": bl.rnd(span / (len(gets) / HOBBY_CONTROL_RATE), 4) if span and gets else None,
            "control_peak_per_min": _peak_per_window([h.t for h in gets]),
        }


async def section_rate(run: Run) -> None:
    out: dict[str, Any] = {"time_scale": run.mode.rate_scale}
    async with anyio.create_task_group() as tg:
        tg.start_soon(_rate_research_per_target, run, out)
        tg.start_soon(_rate_research_batched, run, out)
        tg.start_soon(_rate_seo_workload, run, out)
        tg.start_soon(_rate_seo_control, run, out)
    run.data["rate"] = out
    sec = "rate"
    per = out["seamless_research_per_target"]
    bat = out["seamless_research_batched"]
    wl = out["agentseo_workload"]
    ctl = out["agentseo_control"]
    for name, part in (
        ("seamless research+poll (per-target)", per),
        ("seamless research+poll (2 batches)", bat),
        ("agentseo workload+SSE", wl),
        ("agentseo control storm", ctl),
    ):
        run.check_clean(sec, name, part)
    # Quick mode's small, scaled run is a smoke test: real overheads count k times (see
    # BENCHMARKS.md), so its threshold only catches a broken limiter, not a 5 % regression.
    run.check_max(
        sec,
        f"seamless research: {per['targets']} POSTs makespan / (N/rate)",
        per["submit_ratio"],
        full=1.05,
        quick=5.0,
        unit="x",
        also=per["complete"],
    )
    run.check(
        sec,
        "seamless research: end-to-end incl. polling / (N/rate + job time)",
        per["end_to_end_ratio"],
        target="info",
    )
    for metric, value, cap in (
        ("seamless research endpoint: peak requests in any 60 s", per["research_peak_per_min"], 60),
        ("seamless poll endpoint: peak calls in any 60 s", per["poll_peak_per_min"], 60),
        ("agentseo workload: peak requests in any 60 s", wl["workload_peak_per_min"], 60),
        ("agentseo control: peak requests in any 60 s", ctl["control_peak_per_min"], 600),
    ):
        run.check(sec, metric, value, target=f"<= {cap}", ok=value <= cap)
    run.check(
        sec,
        f"seamless 2x{bat['targets'] // 2} batches: makespan (job time {JOB_SECONDS:.0f} s)",
        bat["makespan_s"],
        target="info",
        unit="s",
    )
    run.check_max(
        sec,
        f"agentseo workload: {wl['jobs']} POSTs makespan / (N/rate)",
        wl["submit_ratio"],
        full=1.05,
        quick=5.0,
        unit="x",
        also=wl["complete"],
    )
    run.check_max(
        sec,
        f"agentseo control: {ctl['control_requests_ok']} GETs makespan / (N/rate)",
        ctl["ratio"],
        full=1.05,
        quick=5.0,
        unit="x",
        also=ctl["complete"],
    )


# =====================================================================================
# completion detection


async def section_completion(run: Run) -> None:
    mode = run.mode
    js = mode.completion_job_seconds
    n = mode.completion_jobs
    rng = random.Random(8)  # noqa: S311  # a reproducible workload, not a secret
    gaps_sse = [rng.uniform(*mode.completion_gap) for _ in range(n)]
    gaps_poll = [rng.uniform(*mode.completion_gap) for _ in range(n)]
    gaps_naive = list(gaps_poll)
    # Research durations vary per job (same list for jobrelay and the naive poller), so
    # completion falls at every phase of a poll cadence rather than in step with it.
    durations = [rng.uniform(*mode.completion_poll_seconds) for _ in range(n)]
    sse: list[dict[str, float]] = []
    poll: list[dict[str, float]] = []
    naive: list[dict[str, float]] = []
    naive_stats = {"calls": 0, "rate_limited": 0}
    errors: list[str] = []

    seo_state = bl.sandbox_state(1.0, job_seconds=js)
    sea_state = bl.sandbox_state(1.0)
    naive_state = bl.sandbox_state(1.0)
    async with (
        bl.loopback_sandbox(seo_state) as seo_sb,
        bl.loopback_sandbox(sea_state) as sea_sb,
        bl.loopback_sandbox(naive_state) as nsb,
    ):
        db = run.work / "completion.sqlite3"
        env = bl.server_env(sea_sb.seamless_url, seo_sb.agentseo_url, db)
        async with Client(bl.stdio_params(env)) as client:
            rec = seo_sb.recorder
            sea_rec = sea_sb.recorder

            async def sse_group() -> None:
                async with anyio.create_task_group() as tg:
                    for i in range(n):
                        await anyio.sleep(gaps_sse[i])
                        args = {"workflow": "serp_analysis", "params": {"keyword": f"cd kw {i}"}}
                        result = await _call(client, "start_seo_job", args)
                        job_id = bl.structured(result).get("job_id")
                        hit = rec.select("agentseo", "workload")[-1]
                        if not job_id or not hit.created:
                            errors.append(f"sse start {i}: {bl.text_of(result)[:120]}")
                            continue
                        tg.start_soon(sse_wait, str(job_id), hit)

            async def sse_wait(job_id: str, hit: bl.Hit) -> None:
                result, _ = await _wait_terminal(client, job_id, wait_seconds=30)
                returned = time.monotonic()
                if bl.structured(result).get("state") != "succeeded":
                    errors.append(f"sse wait {job_id}: {bl.text_of(result)[:120]}")
                    return
                done_at = hit.real + js
                streams = [
                    h
                    for h in rec.select("agentseo", "events")
                    if h.path.endswith(f"/jobs/{hit.created[0]}/events") and h.terminal_real
                ]
                sent = streams[-1].terminal_real if streams else None
                sse.append(
                    {
                        "latency": returned - done_at,
                        "delivery": (returned - sent) if sent else float("nan"),
                    }
                )

            async def poll_group() -> None:
                async with anyio.create_task_group() as tg:
                    for i in range(n):
                        await anyio.sleep(gaps_poll[i])
                        contact = {"name": f"Done Person{i:03d}", "company": "Completion Inc"}
                        args = {"kind": "contacts", "contacts": [contact]}
                        sea_state.faults.job_seconds = durations[i]  # read at creation
                        result = await _call(client, "start_research", args)
                        job_id = bl.structured(result).get("job_id")
                        posts = sea_rec.select("seamless", "research")
                        if not job_id or not posts or not posts[-1].created:
                            errors.append(f"poll start {i}: {bl.text_of(result)[:120]}")
                            continue
                        tg.start_soon(poll_wait, str(job_id), posts[-1], durations[i])

            async def poll_wait(job_id: str, hit: bl.Hit, duration: float) -> None:
                result, _ = await _wait_terminal(client, job_id, wait_seconds=30)
                returned = time.monotonic()
                if bl.structured(result).get("state") != "succeeded":
                    errors.append(f"poll wait {job_id}: {bl.text_of(result)[:120]}")
                    return
                rid = hit.created[0]
                done_at = hit.real + duration
                polls = sea_rec.select("seamless", "poll")
                seen = [p for p in polls if rid in p.done_ids]
                if not seen:
                    errors.append(f"poll {job_id}: no poll reported it done")
                    return
                first_seen = seen[0]
                before = [p.real for p in polls if p.real < first_seen.real]
                interval = first_seen.real - max(before) if before else float("nan")
                poll.append(
                    {
                        "latency": returned - done_at,
                        "sampling": first_seen.real - done_at,
                        "delivery": returned - first_seen.real,
                        "interval": interval,
                    }
                )

            async def naive_group() -> None:
                headers = {"Token": bl.BENCH_KEY}
                async with (
                    httpx.AsyncClient(base_url=nsb.seamless_url, headers=headers) as http,
                    anyio.create_task_group() as tg,
                ):
                    for i in range(n):
                        await anyio.sleep(gaps_naive[i])
                        body = {
                            "contacts": [{"contactName": f"Naive Person{i}", "companyName": "N"}]
                        }
                        naive_state.faults.job_seconds = durations[i]
                        resp = await http.post("/contacts/research", json=body)
                        if resp.status_code != 202:
                            errors.append(f"naive start {i}: HTTP {resp.status_code}")
                            continue
                        rid = resp.json()["requestIds"][0]
                        tg.start_soon(naive_wait, http, rid, durations[i])

            async def naive_wait(http: httpx.AsyncClient, rid: str, duration: float) -> None:
                hit = next(
                    h for h in nsb.recorder.select("seamless", "research") if rid in h.created
                )
                for _ in range(int(60 / mode.naive_interval) + 5):
                    await anyio.sleep(mode.naive_interval)
                    naive_stats["calls"] += 1
                    resp = await http.get("/contacts/research/poll", params={"requestIds": rid})
                    if resp.status_code == 429:
                        naive_stats["rate_limited"] += 1
                        continue
                    data = resp.json().get("data") or [{}]
                    if data[0].get("status") not in (None, "researching"):
                        naive.append({"latency": time.monotonic() - (hit.real + duration)})
                        return

            async with anyio.create_task_group() as tg:
                tg.start_soon(sse_group)
                tg.start_soon(poll_group)
                tg.start_soon(naive_group)
            jobrelay_polls = sea_rec.count("seamless", "poll")
            jobrelay_429 = sea_rec.status_count(429) + rec.status_count(429)

    def summary(rows: list[dict[str, float]], key: str) -> dict[str, float | None]:
        vals = [r[key] for r in rows if r[key] == r[key]]
        return {
            "p50_ms": bl.rnd(1000 * (bl.percentile(vals, 50) or 0), 1) if vals else None,
            "p95_ms": bl.rnd(1000 * (bl.percentile(vals, 95) or 0), 1) if vals else None,
            "max_ms": bl.rnd(1000 * max(vals), 1) if vals else None,
        }

    excess = [r["latency"] - r["interval"] for r in poll if r["interval"] == r["interval"]]
    within = sum(1 for e in excess if e <= 0.050)
    out: dict[str, Any] = {
        "jobs_per_mode": n,
        "sse_job_seconds": js,
        "research_job_seconds_range": list(mode.completion_poll_seconds),
        "sse": {
            "samples": len(sse),
            "latency": summary(sse, "latency"),
            "delivery": summary(sse, "delivery"),
        },
        "polling": {
            "samples": len(poll),
            "latency": summary(poll, "latency"),
            "sampling_delay": summary(poll, "sampling"),
            "delivery": summary(poll, "delivery"),
            "interval_in_effect": summary(poll, "interval"),
            "within_interval_plus_50ms": within,
            "excess_over_interval_p95_ms": bl.rnd(1000 * (bl.percentile(excess, 95) or 0), 1)
            if excess
            else None,
            "poll_calls": jobrelay_polls,
            "upstream_429": jobrelay_429,
        },
        "naive_5s_per_id": {
            "interval_s": mode.naive_interval,
            "samples": len(naive),
            "latency": summary(naive, "latency"),
            "poll_calls": naive_stats["calls"],
            "rate_limited": naive_stats["rate_limited"],
        },
        "errors": errors,
    }
    run.data["completion"] = out
    sec = "completion"
    sse_p95 = out["sse"]["latency"]["p95_ms"]
    run.check(
        sec,
        "SSE: done -> wait_for_job returns, p50",
        out["sse"]["latency"]["p50_ms"],
        target="info",
        unit="ms",
    )
    run.check_max(
        sec, "SSE: done -> wait_for_job returns, p95", sse_p95, full=50, quick=500, unit="ms"
    )
    run.check(
        sec,
        "polling: done -> returns, p50",
        out["polling"]["latency"]["p50_ms"],
        target="info",
        unit="ms",
    )
    run.check(
        sec,
        "polling: done -> returns, p95",
        out["polling"]["latency"]["p95_ms"],
        target="info",
        unit="ms",
    )
    run.check_max(
        sec,
        "polling: latency - poll interval in effect, p95",
        out["polling"]["excess_over_interval_p95_ms"],
        full=50,
        quick=500,
        unit="ms",
    )
    run.check(
        sec,
        f"naive {mode.naive_interval:g} s per-id poller: p50 / p95",
        "{p50_ms} / {p95_ms}".format(**out["naive_5s_per_id"]["latency"]),
        target="comparison",
        unit="ms",
    )
    run.check(
        sec,
        "samples (SSE / polling / naive) and errors",
        f"{len(sse)}/{len(poll)}/{len(naive)}, {len(errors)} errors",
        target=f"{n}/{n}/{n}, 0 errors",
        ok=len(sse) == n and len(poll) == n and len(naive) == n and not errors,
    )


# =====================================================================================
# poll calls per interval


def _rounds(times: list[float], gap: float = 1.0) -> list[int]:
    """Group request times into rounds (a pause longer than `gap` starts a new one)."""
    sizes: list[int] = []
    last: float | None = None
    for t in sorted(times):
        if last is None or t - last > gap:
            sizes.append(0)
        sizes[-1] += 1
        last = t
    return sizes


async def _polls_jobrelay(run: Run, n: int) -> dict[str, Any]:
    mode = run.mode
    state = bl.sandbox_state(mode.poll_scale, job_seconds=10**6, initial_credits=10**6)
    stats = {"client_errors": 0, "gave_up": 0}
    async with (
        bl.loopback_sandbox(state) as sb,
        bl.inprocess_jobrelay(sb, run.work / f"polls-{n}.sqlite3") as client,
    ):
        clock = sb.clock
        jobs = []
        for i in range(n):
            contact = {"name": f"Poll Person{i:03d}", "company": f"Pollco {n}"}
            job_id = await _start_until_accepted(
                client, "start_research", {"kind": "contacts", "contacts": [contact]}, clock, stats
            )
            if job_id:
                jobs.append(job_id)
        t0 = clock.monotonic()
        t_end = t0 + mode.poll_window
        waits = 0

        async def waiter(job_id: str) -> None:
            nonlocal waits
            for _ in range(50):
                left = t_end - clock.monotonic()
                if left <= 0.5:
                    return
                waits += 1
                await _call(
                    client, "wait_for_job", {"job_id": job_id, "wait_seconds": min(45.0, left)}
                )

        async with anyio.create_task_group() as tg:
            for job_id in jobs:
                tg.start_soon(waiter, job_id)
        polls = [h.t for h in sb.recorder.select("seamless", "poll") if t0 <= h.t <= t_end]
        rounds = _rounds(polls)
        return {
            "outstanding_jobs": len(jobs),
            "window_s": mode.poll_window,
            "poll_calls": len(polls),
            "rounds": len(rounds),
            "max_calls_per_round": max(rounds, default=0),
            "mean_calls_per_round": bl.rnd(sum(rounds) / len(rounds), 2) if rounds else None,
            "calls_per_min": bl.rnd(60 * len(polls) / mode.poll_window, 1),
            "upstream_429": sb.recorder.status_count(429),
            "wait_calls": waits,
        }


async def _polls_naive(run: Run, n: int) -> dict[str, Any]:
    """Per-id polling every 5 s: what jobrelay's coalescing replaces."""
    mode = run.mode
    state = bl.sandbox_state(mode.poll_scale, job_seconds=10**6, initial_credits=10**6)
    async with bl.loopback_sandbox(state) as sb:
        clock = sb.clock
        async with httpx.AsyncClient(
            base_url=sb.seamless_url, headers={"Token": bl.BENCH_KEY}
        ) as http:
            contacts = [{"contactName": f"Naive {i}", "companyName": f"N{n}"} for i in range(n)]
            resp = await http.post("/contacts/research", json={"contacts": contacts})
            ids = resp.json()["requestIds"]
            t0 = clock.monotonic()

            async def poller(rid: str) -> None:
                while clock.monotonic() + 5.0 <= t0 + mode.poll_window:
                    await clock.sleep(5.0)
                    await http.get("/contacts/research/poll", params={"requestIds": rid})

            async with anyio.create_task_group() as tg:
                for rid in ids:
                    tg.start_soon(poller, rid)
        polls = [h for h in sb.recorder.select("seamless", "poll") if h.t >= t0]
        rounds = _rounds([h.t for h in polls])
        return {
            "outstanding_jobs": n,
            "poll_calls": len(polls),
            "max_calls_per_round": max(rounds, default=0),
            "calls_per_min": bl.rnd(60 * len(polls) / mode.poll_window, 1),
            "upstream_429": sum(1 for h in polls if h.status == 429),
        }


async def section_polls(run: Run) -> None:
    out: dict[str, Any] = {"time_scale": run.mode.poll_scale, "jobrelay": {}, "naive_5s_per_id": {}}

    async def one(n: int) -> None:
        out["jobrelay"][str(n)] = await _polls_jobrelay(run, n)
        out["naive_5s_per_id"][str(n)] = await _polls_naive(run, n)

    async with anyio.create_task_group() as tg:
        for n in run.mode.poll_counts:
            tg.start_soon(one, n)
    run.data["polls"] = out
    for n in run.mode.poll_counts:
        jr = out["jobrelay"][str(n)]
        nv = out["naive_5s_per_id"][str(n)]
        run.check(
            "polls",
            f"{n} outstanding: poll calls per round (jobrelay)",
            jr["max_calls_per_round"],
            target="1",
            ok=jr["max_calls_per_round"] == 1 and jr["upstream_429"] == 0,
        )
        run.check(
            "polls",
            f"{n} outstanding: calls/min jobrelay vs naive (429s)",
            f"{jr['calls_per_min']} vs {nv['calls_per_min']} "
            f"({jr['upstream_429']} vs {nv['upstream_429']})",
            target="comparison",
        )


# =====================================================================================
# overhead


async def _timed_calls(client: Client, tool: str, args: dict[str, Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await client.call_tool(tool, args)
        out.append(time.perf_counter() - t)
    return out


async def section_overhead(run: Run) -> None:
    mode = run.mode
    state = bl.sandbox_state(1.0, job_seconds=0.3)
    trivial: list[float] = []
    research: list[float] = []
    seo: list[float] = []
    async with bl.loopback_sandbox(state) as sb:
        env = bl.server_env(sb.seamless_url, sb.agentseo_url, run.work / "overhead.sqlite3")
        async with Client(bl.stdio_params(env)) as jr, Client(bl.trivial_params()) as tv:
            contact = {"name": "Overhead Person", "company": "Overhead Inc"}
            r1 = await _call(
                jr,
                "start_research",
                {"kind": "contacts", "contacts": [contact], "wait_seconds": 20},
            )
            r2 = await _call(
                jr,
                "start_seo_job",
                {
                    "workflow": "serp_analysis",
                    "params": {"keyword": "overhead"},
                    "wait_seconds": 20,
                },
            )
            research_args = {"job_ids": [bl.structured(r1)["job_id"]]}
            seo_args = {"job_ids": [bl.structured(r2)["job_id"]]}
            status_research = bl.structured(await _call(jr, "get_job_status", research_args))
            status_seo = bl.structured(await _call(jr, "get_job_status", seo_args))
            upstream_before = len(sb.recorder.hits)
            for _ in range(30):  # warm-up
                await tv.call_tool("ping", {})
                await jr.call_tool("get_job_status", research_args)
                await jr.call_tool("get_job_status", seo_args)
            # One call of each in turn: on a shared machine, load spikes hit all three alike.
            for _ in range(mode.overhead_calls):
                trivial += await _timed_calls(tv, "ping", {}, 1)
                research += await _timed_calls(jr, "get_job_status", research_args, 1)
                seo += await _timed_calls(jr, "get_job_status", seo_args, 1)
            upstream_during = len(sb.recorder.hits) - upstream_before
    t_med = bl.median(trivial) or float("nan")
    r_med = bl.median(research) or float("nan")
    s_med = bl.median(seo) or float("nan")
    out: dict[str, Any] = {
        "calls_each": len(trivial),
        "trivial_median_ms": bl.rnd(1000 * t_med, 3),
        "status_research_median_ms": bl.rnd(1000 * r_med, 3),
        "status_seo_median_ms": bl.rnd(1000 * s_med, 3),
        "ratio_research": bl.rnd(r_med / t_med, 3),
        "ratio_seo": bl.rnd(s_med / t_med, 3),
        "status_research_chars": len(json.dumps(status_research)),
        "status_seo_chars": len(json.dumps(status_seo)),
        "upstream_requests_during_calls": upstream_during,
    }
    run.data["overhead"] = out
    sec = "overhead"
    run.check(
        sec, "trivial tool median (stdio)", out["trivial_median_ms"], target="baseline", unit="ms"
    )
    for kind in ("research", "seo"):
        run.check(
            sec,
            f"get_job_status ({kind} job) median",
            out[f"status_{kind}_median_ms"],
            target="info",
            unit="ms",
        )
        run.check_max(
            sec,
            f"get_job_status ({kind} job) / trivial",
            out[f"ratio_{kind}"],
            full=1.3,
            quick=4.0,
            unit="x",
        )
    run.check(
        sec,
        "upstream requests during the timed calls (finished jobs)",
        upstream_during,
        target="0",
        ok=upstream_during == 0,
    )


TELEMETRY_PAIRS = 3
"""Fresh process pairs the telemetry section runs; its figure is the median of their ratios
(one pair's ratio swings with which process the shared machine's scheduler favours)."""


async def _telemetry_pair(run: Run, sb: Any, rep: int) -> dict[str, list[float]]:
    """One jobrelay with metrics off and one with them on, calls alternated; the timings."""
    timed: dict[str, list[float]] = {"off": [], "on": []}
    envs = {
        name: bl.server_env(
            sb.seamless_url, sb.agentseo_url, run.work / f"telemetry-{rep}-{name}.sqlite3", **extra
        )
        for name, extra in (("off", {}), ("on", {"JOBRELAY_METRICS": "1"}))
    }
    async with (
        Client(bl.stdio_params(envs["off"])) as off,
        Client(bl.stdio_params(envs["on"])) as on,
    ):
        clients = {"off": off, "on": on}
        args: dict[str, dict[str, Any]] = {}
        for name, client in clients.items():
            started = await _call(
                client,
                "start_research",
                {
                    "kind": "contacts",
                    "contacts": [{"name": "Metrics Person", "company": "Metrics Inc"}],
                    "wait_seconds": 20,
                },
            )
            args[name] = {"job_ids": [bl.structured(started)["job_id"]]}
        for _ in range(30):  # warm-up
            for name, client in clients.items():
                await client.call_tool("get_job_status", args[name])
        for i in range(run.mode.overhead_calls):
            for name in ("off", "on") if i % 2 == 0 else ("on", "off"):
                timed[name] += await _timed_calls(clients[name], "get_job_status", args[name], 1)
    return timed


async def section_telemetry(run: Run) -> None:
    """get_job_status on a finished job, one jobrelay with JOBRELAY_METRICS=1 beside one
    without (same sandbox, calls alternated so load spikes hit both alike), in
    `TELEMETRY_PAIRS` fresh pairs: the cost of issue 19's metrics."""
    state = bl.sandbox_state(1.0, job_seconds=0.3)
    pairs = []
    async with bl.loopback_sandbox(state) as sb:
        for rep in range(1 if run.mode.name == "quick" else TELEMETRY_PAIRS):
            timed = await _telemetry_pair(run, sb, rep)
            off_med = bl.median(timed["off"]) or float("nan")
            on_med = bl.median(timed["on"]) or float("nan")
            pairs.append(
                {
                    "calls_each": len(timed["off"]),
                    "status_off_median_ms": bl.rnd(1000 * off_med, 3),
                    "status_on_median_ms": bl.rnd(1000 * on_med, 3),
                    "ratio_on_off": bl.rnd(on_med / off_med, 3),
                }
            )
    ratios = [p["ratio_on_off"] for p in pairs if p["ratio_on_off"] is not None]
    out: dict[str, Any] = {
        "pairs": pairs,
        "ratio_on_off_median": bl.median(ratios),
        "status_off_median_ms": bl.median([p["status_off_median_ms"] or 0.0 for p in pairs]),
        "status_on_median_ms": bl.median([p["status_on_median_ms"] or 0.0 for p in pairs]),
    }
    run.data["telemetry"] = out
    sec = "telemetry"
    run.check(
        sec,
        "get_job_status median, metrics off (median of pairs)",
        out["status_off_median_ms"],
        target="baseline",
        unit="ms",
    )
    run.check(
        sec,
        "get_job_status median, JOBRELAY_METRICS=1 (median of pairs)",
        out["status_on_median_ms"],
        target="info",
        unit="ms",
    )
    run.check(
        sec, "on / off ratio of each pair", ", ".join(f"{r:.3f}" for r in ratios), target="info"
    )
    run.check_max(
        sec,
        f"get_job_status metrics on / off, median of {len(ratios)} pairs",
        out["ratio_on_off_median"],
        full=1.1,
        quick=3.0,  # one pair of 30 calls on a loaded CI machine: a smoke check only
        unit="x",
    )


# =====================================================================================
# scale: 1,000 concurrent waits over HTTP


async def section_scale(run: Run) -> None:
    await _scale_http(run)


def _scale_plan(mode: Mode) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    research = [
        {
            "kind": "contacts",
            "contacts": [
                {"name": f"Scale Person{j}-{i:03d}", "company": f"Scaleco {j}"}
                for i in range(mode.scale_research_size)
            ],
        }
        for j in range(mode.scale_research_jobs)
    ]
    seo = [
        {"workflow": "serp_analysis", "params": {"keyword": f"scale kw {i:03d}"}}
        for i in range(mode.scale_seo_jobs)
    ]
    return research, seo


async def _fan_out_waits(
    client: Client,
    jobs: list[str],
    n: int,
    results: dict[str, int],
    peak: Callable[[], None],
    *,
    answered: list[float],
) -> None:
    """`answered` gets the `time.monotonic()` of every answer, in order."""

    async def one(i: int) -> None:
        job_id = jobs[i % len(jobs)]
        try:
            result = await client.call_tool("wait_for_job", {"job_id": job_id, "wait_seconds": 45})
        except Exception as exc:  # noqa: BLE001  # counted: any failure of the call is an error
            results["exceptions"] += 1
            results.setdefault("first_exception", repr(exc)[:200])  # type: ignore[arg-type]  # str in an int dict, for the report
            return
        finally:
            answered.append(time.monotonic())
        if bl.error_of(result) is not None or bl.result_problems(result):
            results["error_results"] += 1
        elif bl.structured(result).get("state") in bl.TERMINAL:
            results["finished"] += 1
        else:
            results["not_finished"] += 1

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
        tg.start_soon(_sample_forever, peak)
        # the sampler is cancelled when every wait has returned
        while sum(v for k, v in results.items() if k != "first_exception") < n:  # noqa: ASYNC110
            await anyio.sleep(0.05)
        tg.cancel_scope.cancel()


async def _sample_forever(sample: Callable[[], None]) -> None:
    while True:
        sample()
        await anyio.sleep(0.1)


async def _scale_http(run: Run) -> None:
    import httpx2  # the SDK's HTTP client
    from mcp.client.streamable_http import streamable_http_client

    mode = run.mode
    sandbox = bl.ExternalSandbox(job_seconds=mode.scale_job_seconds)
    sandbox.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        sandbox.faults(agentseo_plan="pro", initial_credits=10**6)
        port = bl.free_port()
        env = bl.server_env(
            sandbox.seamless_url, sandbox.agentseo_url, run.work / "scale.sqlite3", plan="pro"
        )
        serve = ["serve", "--transport", "http", "--host", "127.0.0.1", "--port", str(port)]
        proc = bl.start_jobrelay(serve, env, run.work / "scale-server.log")
        url = f"http://127.0.0.1:{port}/mcp"
        with anyio.fail_after(120):  # a loaded machine can take a while to import and bind
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"jobrelay serve --transport http exited {proc.returncode}")
                try:
                    async with httpx.AsyncClient() as probe:
                        await probe.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)
                    break
                except httpx.TransportError:
                    await anyio.sleep(0.1)
        rss_idle = bl.proc_status_kb(proc.pid, "VmRSS")
        limits = httpx2.Limits(max_connections=mode.scale_waits + 50, max_keepalive_connections=100)
        timeout = httpx2.Timeout(120.0)
        results: dict[str, int] = {
            "finished": 0,
            "not_finished": 0,
            "error_results": 0,
            "exceptions": 0,
        }
        samples: list[tuple[float, int]] = []
        answered: list[float] = []
        pid = proc.pid

        def sample() -> None:
            value = bl.proc_status_kb(pid, "VmRSS")
            if value:
                samples.append((time.monotonic(), value))

        async with (
            httpx2.AsyncClient(limits=limits, timeout=timeout) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            research, seo = _scale_plan(mode)
            jobs: list[str] = []
            for args in research:
                jobs.append(
                    str(bl.structured(await client.call_tool("start_research", args))["job_id"])
                )
            for args in seo:
                jobs.append(
                    str(bl.structured(await client.call_tool("start_seo_job", args))["job_id"])
                )
            t0 = time.monotonic()
            await _fan_out_waits(client, jobs, mode.scale_waits, results, sample, answered=answered)
            elapsed = time.monotonic() - t0
        peak = bl.proc_status_kb(proc.pid, "VmHWM")
        stats = sandbox.stats()
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        sandbox.stop()
    _scale_report(
        run,
        results=results,
        peak_kb=peak,
        idle_kb=rss_idle,
        samples=[(at - t0, kb) for at, kb in samples],
        first_answer=(min(answered) - t0) if answered else None,
        elapsed=elapsed,
        jobs=jobs,
        stats=stats,
    )


def _scale_report(
    run: Run,
    *,
    results: dict[str, Any],
    peak_kb: int | None,
    idle_kb: int | None,
    samples: list[tuple[float, int]],
    first_answer: float | None,
    elapsed: float,
    jobs: list[str],
    stats: dict[str, Any],
) -> None:
    mode = run.mode
    errors = results["error_results"] + results["exceptions"]
    peak_mb = (peak_kb or 0) / 1024
    responses = stats.get("responses", {})
    upstream_429 = sum(v for k, v in responses.items() if k.endswith(" 429"))
    out: dict[str, Any] = {
        "transport": "http",
        "concurrent_waits": mode.scale_waits,
        "jobs": len(jobs),
        "results": results,
        "errors": errors,
        "peak_rss_mb": bl.rnd(peak_mb, 1),
        "rss_before_load_mb": bl.rnd((idle_kb or 0) / 1024, 1),
        "rss_max_sampled_mb": bl.rnd(max((kb for _, kb in samples), default=0) / 1024, 1),
        # The peak splits in two: every wait open (the highest 0.1 s sample before the first
        # answer), then the answers, when most of them finish at once (BENCHMARKS.md).
        "rss_all_open_mb": bl.rnd(
            max((kb for at, kb in samples if first_answer is None or at < first_answer), default=0)
            / 1024,
            1,
        ),
        "rss_highest_sample_at_s": bl.rnd(max(samples, key=lambda s: s[1])[0], 1)
        if samples
        else None,
        "first_answer_s": None if first_answer is None else bl.rnd(first_answer, 1),
        "wall_s": bl.rnd(elapsed, 2),
        "upstream_requests": stats.get("requests", {}),
        "upstream_429": upstream_429,
    }
    run.data["scale"] = out
    sec = "scale"
    run.check(sec, "transport", "http", target="info")
    run.check_max(
        sec,
        f"{mode.scale_waits} concurrent wait_for_job: server peak RSS",
        out["peak_rss_mb"],
        full=150,
        quick=400,
        unit="MB",
    )
    run.check(
        sec,
        "RSS with every wait open (highest 0.1 s sample before the first answer)",
        out["rss_all_open_mb"],
        target="info",
        unit="MB",
    )
    run.check(
        sec,
        f"{mode.scale_waits} concurrent wait_for_job: errors",
        errors,
        target="0",
        ok=errors == 0 and results["finished"] == mode.scale_waits,
    )
    run.check(
        sec, "upstream 429s during the fan-out", upstream_429, target="0", ok=upstream_429 == 0
    )


# =====================================================================================
# tokens


async def section_tokens(run: Run) -> None:
    state = bl.sandbox_state(run.mode.virtual_scale, job_seconds=JOB_SECONDS)
    async with (
        bl.loopback_sandbox(state) as sb,
        bl.inprocess_jobrelay(sb, run.work / "tokens.sqlite3") as client,
    ):
        listed = await client.list_tools()
        tools = [t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in listed.tools]
        tool_chars = len(json.dumps(tools, separators=(",", ":")))
        contacts = [{"name": f"Token Person{i}", "company": "Tokenworks"} for i in range(10)]
        start = await _call(client, "start_research", {"kind": "contacts", "contacts": contacts})
        job_id = str(bl.structured(start)["job_id"])
        done, _ = await _wait_terminal(client, job_id)
        page = await _call(client, "get_job_result", {"job_id": job_id})
        per_tool = {t["name"]: len(json.dumps(t, separators=(",", ":"))) for t in tools}
    out: dict[str, Any] = {
        "tools": len(tools),
        "tool_list_chars": tool_chars,
        "tool_list_tokens": bl.chars_to_tokens(tool_chars),
        "per_tool_chars": per_tool,
        "start_research_10_chars": bl.result_chars(start),
        "research_10_result_chars": bl.result_chars(done),
        "research_10_result_tokens": bl.chars_to_tokens(bl.result_chars(done)),
        "research_10_results_shown": len(bl.structured(done).get("results") or []),
        "get_job_result_default_chars": bl.result_chars(page),
        "get_job_result_default_tokens": bl.chars_to_tokens(bl.result_chars(page)),
    }
    run.data["tokens"] = out
    run.check(
        "tokens",
        f"tool list ({len(tools)} tools)",
        out["tool_list_tokens"],
        target="info",
        unit="tok",
    )
    run.check(
        "tokens",
        "10-contact research result (wait_for_job)",
        out["research_10_result_tokens"],
        target="info",
        unit="tok",
    )
    # The size is jobrelay's own cap (projection.MAX_RESULT_CHARS), so only the count can fail.
    run.check(
        "tokens",
        "10-contact research result: contacts shown",
        out["research_10_results_shown"],
        target="10",
        ok=out["research_10_results_shown"] == 10,
    )
    run.check(
        "tokens",
        "get_job_result default page",
        out["get_job_result_default_tokens"],
        target="info",
        unit="tok",
    )


# =====================================================================================
# agent scenario


@dataclass
class _Step:
    tool: str
    args: dict[str, Any]
    is_error: bool
    code: str | None
    chars: int
    text: str


def _burn_research_window(sb: Any, clock: Clock) -> Callable[[Any], Awaitable[None]]:
    """A hook: just before jobrelay's first research POST reaches the sandbox, another
    consumer in the same org uses up what is left of this minute's research window (requests
    with an empty body: a 400 counts against the window and spends nothing). So jobrelay's POST
    meets a genuine 429 with the sandbox's own reset headers, whatever the timing."""
    inner = httpx.ASGITransport(app=sb.recorder.app)
    burned = False

    async def other_consumer(hit: bl.Hit) -> None:
        nonlocal burned
        if burned or hit.kind != "research":
            return
        burned = True
        # Stage it early in a window, so the reset is further away than jobrelay waits
        # inline (20 s) and the agent itself has to deal with the 429.
        left = 60.0 - clock.time() % 60.0
        if left < 35.0:
            await clock.sleep(left + 0.5)
        async with httpx.AsyncClient(
            transport=inner, base_url=sb.seamless_url, headers={"Token": "other-user"}
        ) as http:
            for _ in range(200):
                resp = await http.post("/contacts/research", json={})
                if resp.headers.get("x-ratelimit-remaining") == "0":
                    return

    return other_consumer


async def section_agent(run: Run) -> None:
    """A scripted agent: the task says what to do; every other move comes from the results'
    own hints (`Next: tool(...)`) and, for errors, their structured advice."""
    scale = run.mode.virtual_scale
    state = bl.sandbox_state(scale, job_seconds=JOB_SECONDS, initial_credits=6)
    steps: list[_Step] = []
    asked_user: list[str] = []
    outcome: dict[str, Any] = {}
    async with (
        bl.loopback_sandbox(state) as sb,
        bl.inprocess_jobrelay(sb, run.work / "agent.sqlite3") as client,
    ):
        clock = sb.clock
        sb.recorder.before.append(_burn_research_window(sb, clock))

        def user_fixes(error: dict[str, Any]) -> bool:
            """The human in the loop, asked because the advice said to tell the user."""
            asked_user.append(str(error.get("next_step")))
            if error.get("code") == "credits_exhausted":
                state.set_faults({"initial_credits": 1000})  # the user buys credits
                return True
            return False

        async def act(tool: str, args: dict[str, Any]) -> Any:
            result = await _call(client, tool, args)
            err = bl.error_of(result)
            steps.append(
                _Step(
                    tool,
                    args,
                    err is not None,
                    (err or {}).get("code"),
                    bl.result_chars(result),
                    bl.text_of(result),
                )
            )
            return result

        async def pursue(tool: str, args: dict[str, Any]) -> Any:
            """Call, recover from errors as advised, follow `Next:` hints until none is left."""
            result: Any = None
            for _ in range(12):
                result = await act(tool, args)
                err = bl.error_of(result)
                if err is not None:
                    wait = err.get("retry_after_seconds")
                    if err.get("retryable") and wait is not None:
                        await clock.sleep(float(wait))  # "retry the same tool after ..."
                        continue
                    if "user" in str(err.get("next_step", "")).lower() and user_fixes(err):
                        continue
                    return result
                hint = bl.next_call(bl.text_of(result))
                if hint is None:
                    return result
                tool, args = hint
                for name, value in list(args.items()):
                    if value == "...":  # an abbreviated list in the hint: the full one is above
                        items = bl.structured(result).get("items") or []
                        args[name] = [
                            i[name.removesuffix("s")] for i in items if name.removesuffix("s") in i
                        ]
            return result

        research = await pursue(
            "search_prospects",
            {"kind": "contacts", "filters": {"company_name": "Acme Robotics"}, "limit": 10},
        )
        outcome["research"] = bl.structured(research)
        serp = await pursue(
            "start_seo_job", {"workflow": "serp_analysis", "params": {"keyword": "robot vacuum"}}
        )
        outcome["serp"] = bl.structured(serp)
        rec = sb.recorder
        jobrelay_429 = sum(1 for h in rec.hits if h.status == 429)
        jobrelay_422 = sum(1 for h in rec.hits if h.status == 422)
        stats = state.stats()
    res = outcome["research"]
    serp_out = outcome["serp"]
    calls = len(steps)
    forced = int(jobrelay_429 >= 1) + int(jobrelay_422 >= 1)
    result_chars = sum(s.chars for s in steps)
    codes = [s.code for s in steps if s.is_error]
    # Recovered: both forced errors happened, and still both goals were reached without a
    # single credit-spending POST sent twice. (jobrelay may absorb the 429 itself when the
    # reset fits its inline wait; then the agent never sees it, which is fine.)
    recovered = (
        res.get("state") == "succeeded"
        and res.get("results_total") == 10
        and serp_out.get("state") == "succeeded"
        and jobrelay_429 == 1
        and jobrelay_422 == 1
        and stats["duplicate_paid_posts"] == 0
    )
    out: dict[str, Any] = {
        "time_scale": scale,
        "tool_calls": calls,
        "budget": 6 + forced,
        "forced_errors_seen_by_sandbox": {"429": jobrelay_429, "422": jobrelay_422},
        "error_codes_seen_by_agent": codes,
        "asked_user": asked_user,
        "result_chars": result_chars,
        "result_tokens": bl.chars_to_tokens(result_chars),
        "research_state": res.get("state"),
        "research_results": res.get("results_total"),
        "serp_state": serp_out.get("state"),
        "paid_posts": stats["paid_posts"],
        "duplicate_paid_posts": stats["duplicate_paid_posts"],
        "recovered": recovered,
        "transcript": [
            {
                "tool": s.tool,
                "args": s.args,
                "error": s.code,
                "chars": s.chars,
                "text": s.text[:300],
            }
            for s in steps
        ],
    }
    run.data["agent"] = out
    sec = "agent"
    run.check(
        sec,
        "forced errors (429, 422) reached the sandbox",
        f"{jobrelay_429}, {jobrelay_422}",
        target="1, 1",
        ok=jobrelay_429 == 1 and jobrelay_422 == 1,
    )
    run.check(sec, "tool calls", calls, target=f"<= {6 + forced}", ok=calls <= 6 + forced)
    run.check(
        sec,
        "result tokens",
        out["result_tokens"],
        target="<= 8000",
        ok=out["result_tokens"] <= 8000,
        unit="tok",
    )
    run.check(
        sec,
        "recovered from both using only the advice",
        str(recovered),
        target="True",
        ok=recovered,
    )
    run.check(
        sec,
        "duplicate credit-spending POSTs",
        stats["duplicate_paid_posts"],
        target="0",
        ok=stats["duplicate_paid_posts"] == 0,
    )


_RETRY_AFTER = re.compile(r"Next: Retry (\w+) after (?:about )?\S+ \(in (?:about )?([^)]*)\)")
_INVALID = re.compile(r"(\w+): input should be (.*?) \(got '([^']*)'\)")
_CONTACT_LINE = re.compile(r"^\d+\. [^|]+ \| .+ \| [^ |]+@[^ |]+ ", re.M)


def _seconds(span: str) -> float:
    """`55 s`, `1 min 5 s`, `2 h 3 min`: the wait a text states."""
    total = 0.0
    for value, unit in re.findall(r"(\d+) (h|min|s)\b", span):
        total += int(value) * {"h": 3600, "min": 60, "s": 1}[unit]
    return total


async def section_agent_text(run: Run) -> None:
    """The same task for an agent whose host forwards only text blocks (issue 13 item 6).

    It never reads structuredContent: it acts on each text's `Next:` literally, waits the
    seconds a text states, fixes an argument from the allowed values a text lists, and asks
    the user when a text says to. Scenario: 10 contacts at one company, one SERP analysis, a
    forced invalid argument, a forced 429 and a forced 422, then the job ids are forgotten and
    the contacts found again through list_jobs."""
    scale = run.mode.virtual_scale
    state = bl.sandbox_state(scale, job_seconds=JOB_SECONDS, initial_credits=6)
    steps: list[_Step] = []
    asked_user: list[str] = []
    texts: dict[str, str] = {}
    async with (
        bl.loopback_sandbox(state) as sb,
        bl.inprocess_jobrelay(sb, run.work / "agent-text.sqlite3") as client,
    ):
        clock = sb.clock
        sb.recorder.before.append(_burn_research_window(sb, clock))

        async def act(tool: str, args: dict[str, Any]) -> str:
            result = await _call(client, tool, args)
            err = bl.error_of(result)  # recorded for the report only; the agent reads text
            text = bl.text_of(result)
            steps.append(_Step(tool, args, err is not None, (err or {}).get("code"), 0, text))
            return text

        def fixed(text: str, args: dict[str, Any]) -> dict[str, Any] | None:
            """An invalid argument, fixed from the allowed values the text lists."""
            m = _INVALID.search(text)
            if m is None or "Next: Call" not in text:
                return None
            name, allowed, got = m.groups()
            choices = re.findall(r"'([^']*)'", allowed)
            best = next((c for c in choices if c.startswith(got) or got.startswith(c)), None)
            return {**args, name: best} if best else None

        async def pursue(tool: str, args: dict[str, Any]) -> str:
            text = ""
            for _ in range(12):
                text = await act(tool, args)
                if m := _RETRY_AFTER.search(text):
                    await clock.sleep(_seconds(m.group(2)) + 0.5)  # "Retry <tool> after ..."
                    continue
                if "Next: Tell the user to add Seamless research credits" in text:
                    asked_user.append(text.split("Next: ", 1)[1].split(".")[0])
                    state.set_faults({"initial_credits": 1000})  # the user buys credits
                    continue  # the same call, now that the cause is fixed
                if (args_fixed := fixed(text, args)) is not None:
                    args = args_fixed
                    continue
                hint = bl.next_call(text)
                if hint is None:
                    return text
                tool, args = hint
            return text

        # A typo the agent makes first: the forced invalid input.
        task = {"kind": "contact", "filters": {"company_name": "Acme Robotics"}, "limit": 10}
        texts["research"] = await pursue("search_prospects", task)
        serp = {"workflow": "serp_analysis", "params": {"keyword": "robot vacuum"}}
        texts["serp"] = await pursue("start_seo_job", serp | {"wait_seconds": 45})
        # Context lost: no job id is remembered; list_jobs must lead back to the contacts.
        texts["recovered"] = await pursue("list_jobs", {})
        rec = sb.recorder
        jobrelay_429 = sum(1 for h in rec.hits if h.status == 429)
        jobrelay_422 = sum(1 for h in rec.hits if h.status == 422)
        stats = state.stats()
    from mcp_server import _bounds

    calls = len(steps)
    codes = [s.code for s in steps if s.is_error]
    forced = int(jobrelay_429 >= 1) + int(jobrelay_422 >= 1) + int("invalid_input" in codes)
    tokens = sum(_bounds.tokens(s.text) for s in steps)
    contacts = len(_CONTACT_LINE.findall(texts["research"]))
    recovered_contacts = len(_CONTACT_LINE.findall(texts["recovered"]))
    serp_rows = len(re.findall(r"^   #\d+ ", texts["serp"], re.M))
    followed = (
        contacts == 10
        and serp_rows >= 5
        and recovered_contacts == 10
        and codes == ["invalid_input", "rate_limited", "credits_exhausted"]
        and stats["duplicate_paid_posts"] == 0
    )
    out: dict[str, Any] = {
        "time_scale": scale,
        "tool_calls": calls,
        "budget": 6 + forced,
        "error_codes_seen_by_agent": codes,
        "asked_user": asked_user,
        "text_tokens": tokens,
        "contacts_in_text": contacts,
        "serp_rows_in_text": serp_rows,
        "contacts_after_list_jobs": recovered_contacts,
        "duplicate_paid_posts": stats["duplicate_paid_posts"],
        "succeeded": followed,
        "transcript": [
            {"tool": s.tool, "args": s.args, "error": s.code, "text": s.text[:300]} for s in steps
        ],
    }
    run.data["agent_text"] = out
    sec = "agent_text"
    run.check(
        sec,
        "forced errors (invalid, 429, 422) seen",
        ", ".join(str(c) for c in codes),
        target="invalid_input, rate_limited, credits_exhausted",
        ok=codes == ["invalid_input", "rate_limited", "credits_exhausted"]
        and jobrelay_429 == 1
        and jobrelay_422 == 1,
    )
    run.check(sec, "tool calls", calls, target=f"<= {6 + forced}", ok=calls <= 6 + forced)
    run.check(
        sec,
        "text tokens read (compact chars / 3)",
        tokens,
        target=f"<= {_bounds.DEFAULT_ANSWER_TOKENS}",
        ok=tokens <= _bounds.DEFAULT_ANSWER_TOKENS,
        unit="tok",
    )
    run.check(
        sec,
        "every Next: followed literally reached the goal",
        str(followed),
        target="True",
        ok=followed,
    )


# =====================================================================================


# =====================================================================================
# shared: stdio processes on one SQLite ledger (issue 17.5)


async def _shared_processes(run: Run, procs: int, per_process: int) -> dict[str, Any]:
    """`procs` stdio servers, one ledger file, one org key, each researching its targets."""
    # Real time: the stdio servers run on the system clock, like the processes of a user.
    state = bl.sandbox_state(1.0, job_seconds=run.mode.shared_job_seconds, initial_credits=10**6)
    refusals: list[tuple[float, Any, Any]] = []
    stats: dict[str, Any] = {"client_errors": 0, "gave_up": 0, "_refusals": refusals}
    done: dict[str, float] = {}
    async with bl.loopback_sandbox(state) as sb:
        env = bl.server_env(sb.seamless_url, sb.agentseo_url, run.work / f"shared-{procs}.sqlite3")
        t0 = time.monotonic()
        async with AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(Client(bl.stdio_params(env))) for _ in range(procs)
            ]

            def args_for(p: int) -> Callable[[int], dict[str, Any]]:
                def research_args(i: int) -> dict[str, Any]:
                    contact = {"name": f"Shared P{p} Person{i:04d}", "company": f"Sharedco {p}"}
                    return {"kind": "contacts", "contacts": [contact]}

                return research_args

            async with anyio.create_task_group() as tg:
                for p, client in enumerate(clients):
                    tg.start_soon(
                        functools.partial(
                            _start_and_wait_each,
                            client,
                            "start_research",
                            args_for(p),
                            n=per_process,
                            clock=sb.clock,
                            stats=stats,
                            done=done,
                        )
                    )
        return {
            "processes": procs,
            **_research_figures(sb.recorder, procs * per_process, stats, done),
            "shared_rows": _shared_rows(run.work / f"shared-{procs}.sqlite3"),
            "trace": _shared_trace(sb.recorder, refusals),
            "wall_s": bl.rnd(time.monotonic() - t0),
        }


def _announced(listening: anyio.Event, port: int) -> None:
    del port
    listening.set()


def _shared_trace(rec: bl.Recorder, refusals: list[tuple[float, Any, Any]]) -> dict[str, Any]:
    """Every research POST (time, status) and every refusal a driver followed (time, wait),
    seconds from the first POST: what a makespan miss is read from."""
    hits = rec.select("seamless", "research")
    first = min((h.t for h in hits), default=0.0)
    clock = rec.state.clock
    return {
        "first_post_epoch": bl.rnd(first + clock.time() - clock.monotonic(), 3),
        "research_posts": [[bl.rnd(h.t - first, 3), h.status] for h in hits],
        "refusals": [[bl.rnd(t - first, 3), w, c] for t, w, c in refusals],
    }


def _shared_rows(db: Path) -> dict[str, int]:
    """Rows the processes shared through the ledger file: proof that they did share."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
            for table in ("limiter_buckets", "lease_board")
        }


async def section_shared(run: Run) -> None:
    out: dict[str, Any] = {}
    for procs, per_process in sorted(run.mode.shared_targets.items()):
        out[str(procs)] = await _shared_processes(run, procs, per_process)
    run.data["shared"] = out
    for label, part in out.items():
        name = f"{label} stdio processes, one ledger, {part['targets']} targets"
        run.check_clean("shared", name, part)
        rows = part["shared_rows"]
        run.check(
            "shared",
            f"{name}: shared bucket rows in the ledger (ids handed to a poller)",
            f"{rows['limiter_buckets']} ({rows['lease_board']})",
            target=">= 1",
            ok=rows["limiter_buckets"] >= 1,
        )
        run.check_max(
            "shared",
            f"{name}: combined makespan / (N/rate)",
            part["submit_ratio"],
            full=1.05,
            quick=1.05,
            unit="x",
            also=part["complete"],
        )
        for metric, value in (
            ("research endpoint: peak requests in any 60 s", part["research_peak_per_min"]),
            ("poll endpoint: peak calls in any 60 s", part["poll_peak_per_min"]),
        ):
            run.check("shared", f"{name}: {metric}", value, target="<= 60", ok=value <= 60)


# =====================================================================================
# burst: an idle window, jobrelay beside a naive client (issue 17.7)


async def _burst_jobrelay(run: Run, kind: str) -> dict[str, Any]:
    mode = run.mode
    n = mode.burst_jobs
    state = bl.sandbox_state(mode.rate_scale, job_seconds=JOB_SECONDS, initial_credits=10**6)
    errors = 0
    async with (
        bl.loopback_sandbox(state) as sb,
        bl.inprocess_jobrelay(sb, run.work / f"burst-{kind}.sqlite3") as client,
    ):
        clock = sb.clock
        t0 = clock.monotonic()
        ends: list[float] = []

        async def one(i: int) -> None:
            nonlocal errors
            if kind == "seo":
                tool = "start_seo_job"
                args: dict[str, Any] = {
                    "workflow": "serp_analysis",
                    "params": {"keyword": f"burst kw {i:03d}"},
                }
            else:
                tool = "start_research"
                contact = {"name": f"Burst Person{i:03d}", "company": f"Burstco {i:03d}"}
                args = {"kind": "contacts", "contacts": [contact]}
            result = await _call(client, tool, {**args, "wait_seconds": 45})
            if bl.error_of(result) is not None:
                errors += 1
                return
            job_id = str(bl.structured(result)["job_id"])
            if bl.structured(result).get("state") not in bl.TERMINAL:
                result, _ = await _wait_terminal(client, job_id)
            if bl.structured(result).get("state") in bl.TERMINAL:
                ends.append(clock.monotonic())

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        return _burst_figures(sb, kind, n, t0, ends, errors=errors)


def _burst_figures(
    sb: Any, kind: str, n: int, t0: float, ends: list[float], *, errors: int
) -> dict[str, Any]:
    rec = sb.recorder
    provider, posts_kind = ("agentseo", "workload") if kind == "seo" else ("seamless", "research")
    posts = [h.t for h in rec.select(provider, posts_kind) if h.status == 202]
    return {
        "jobs": n,
        "accepted_posts": len(posts),
        "upstream_429": rec.status_count(429),
        "agent_errors": errors,
        "finished": len(ends),
        "complete": len(posts) == n and len(ends) == n and errors == 0,
        "post_spread_s": bl.rnd(max(posts) - min(posts)) if posts else None,
        "end_to_end_s": bl.rnd(max(ends) - t0) if len(ends) == n else None,
    }


async def _burst_naive(run: Run, kind: str) -> dict[str, Any]:
    """Every POST at once, then each job polled until done (SEO: every 10 s per job, 360 a
    minute for 60 jobs, inside the 600 control budget; research: one batched poll every 5 s)."""
    mode = run.mode
    n = mode.burst_jobs
    state = bl.sandbox_state(mode.rate_scale, job_seconds=JOB_SECONDS, initial_credits=10**6)
    async with bl.loopback_sandbox(state) as sb:
        clock = sb.clock
        ends: list[float] = []
        t0 = clock.monotonic()
        if kind == "seo":
            async with httpx.AsyncClient(
                base_url=sb.agentseo_url, headers={"x-api-key": bl.BENCH_KEY}, timeout=60
            ) as http:

                async def one(i: int) -> None:
                    resp = await http.post("/analyze/serp", json={"keyword": f"naive kw {i:03d}"})
                    if resp.status_code != 202:
                        return
                    job_id = resp.json()["jobId"]
                    for _ in range(100):
                        await clock.sleep(10.0)
                        env = (await http.get(f"/jobs/{job_id}")).json()
                        if env.get("status") in ("completed", "failed"):
                            ends.append(clock.monotonic())
                            return

                async with anyio.create_task_group() as tg:
                    for i in range(n):
                        tg.start_soon(one, i)
        else:
            async with httpx.AsyncClient(
                base_url=sb.seamless_url, headers={"Token": bl.BENCH_KEY}, timeout=60
            ) as http:
                ids: list[str] = []

                async def post(i: int) -> None:
                    target = {"contactName": f"Naive Person{i:03d}", "companyName": f"N{i:03d}"}
                    resp = await http.post("/contacts/research", json={"contacts": [target]})
                    if resp.status_code == 202:
                        ids.extend(resp.json()["requestIds"])

                async with anyio.create_task_group() as tg:
                    for i in range(n):
                        tg.start_soon(post, i)
                pending = set(ids)
                for _ in range(100):
                    if not pending:
                        break
                    await clock.sleep(5.0)
                    resp = await http.get(
                        "/contacts/research/poll", params={"requestIds": ",".join(sorted(pending))}
                    )
                    for item in resp.json().get("data", []) if resp.status_code == 200 else []:
                        if item.get("status") not in ("researching", "new"):
                            pending.discard(item.get("requestId"))
                            ends.append(clock.monotonic())
        return _burst_figures(sb, kind, n, t0, ends, errors=0)


async def section_burst(run: Run) -> None:
    out: dict[str, Any] = {"time_scale": run.mode.rate_scale}

    async def both(kind: str) -> None:
        out[kind] = {
            "jobrelay": await _burst_jobrelay(run, kind),
            "naive": await _burst_naive(run, kind),
        }

    async with anyio.create_task_group() as tg:
        tg.start_soon(both, "seo")
        tg.start_soon(both, "research")
    run.data["burst"] = out
    for kind, label in (("seo", "SEO jobs"), ("research", "research POSTs")):
        jr, nv = out[kind]["jobrelay"], out[kind]["naive"]
        name = f"{jr['jobs']} {label} into an idle window"
        run.check_clean("burst", f"{name}, jobrelay", jr)
        run.check_max(
            "burst",
            f"{name}, jobrelay: first to last POST",
            jr["post_spread_s"],
            full=5.0,
            quick=5.0,
            unit="s",
            also=jr["complete"],
        )
        ratio = (
            bl.rnd(jr["end_to_end_s"] / nv["end_to_end_s"], 3)
            if jr["end_to_end_s"] and nv["end_to_end_s"]
            else None
        )
        out[kind]["end_to_end_ratio"] = ratio
        run.check(
            "burst",
            f"{name}: end to end, jobrelay / naive (s; naive 429s)",
            f"{ratio} ({jr['end_to_end_s']} vs {nv['end_to_end_s']}; {nv['upstream_429']})",
            target="comparison",
        )


# ==============================================================================    )


# webhooks (issue 18)

WEBHOOK_SCALE = 20.0
"""Virtual seconds per real second: a 6 s research job takes 0.3 s; latencies are real ms."""
WEBHOOK_SECRET = "bench-webhook-secret-0123456789abcdef"  # noqa: S105  # a made-up secret


@contextlib.asynccontextmanager
async def _webhook_world(
    run: Run,
    name: str,
    *,
    webhooks: bool,
    drop_rate: float = 0.0,
    duplicate_rate: float = 0.0,
    shared: tuple[str, str] | None = None,
) -> Any:
    """A delivering sandbox (recorded) and jobrelay over Streamable HTTP on one clock; yields
    (MCP client, recorder, webhook sender). `shared`: (PostgreSQL URL, Redis URL): two
    replicas on them, the deliveries going to the first and the client to the second."""
    import httpx2
    import uvicorn
    from mcp.client.streamable_http import streamable_http_client

    from mcp_server._http_app import host_allowlist, origin_allowlist
    from mcp_server.config import load_settings
    from mcp_server.sandbox._webhooks import webhooks_of
    from mcp_server.sandbox.app import create_sandbox_app
    from mcp_server.server import build_server
    from mcp_server.transport import GracefulClock, HttpServer, http_server

    state = bl.sandbox_state(WEBHOOK_SCALE, initial_credits=10**6, seed=18)
    clock = GracefulClock(state.clock)
    async with anyio.create_task_group() as tg:
        recorder = bl.Recorder(create_sandbox_app(state, spawn=tg), state)
        port = bl.free_port()
        sandbox = bl._Uvicorn(  # the bench's own quiet uvicorn
            uvicorn.Config(
                recorder,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="off",
                date_header=False,
            )
        )
        tg.start_soon(sandbox.serve)
        root = f"http://127.0.0.1:{port}"
        extra = {"SEAMLESS_WEBHOOK_SECRET": WEBHOOK_SECRET} if webhooks else {}
        env = bl.server_env(
            root + "/seamless/api/client/v1",
            root + "/agentseo/api/v1",
            run.work / f"webhooks-{name}.sqlite3",
            JOBRELAY_MAX_WAIT_SECONDS="600",
            **extra,
        )
        if shared is not None:
            env["JOBRELAY_DB"], env["JOBRELAY_REDIS_URL"] = shared
        settings = load_settings(env)
        servers: list[HttpServer] = []
        for _ in range(1 if shared is None else 2):
            listening = anyio.Event()
            server_clock = clock if not servers else GracefulClock(state.clock)
            http = http_server(
                build_server(settings, clock=server_clock),
                server_clock,
                host="127.0.0.1",
                port=0,
                token=None,
                allowed_hosts=host_allowlist("127.0.0.1"),
                allowed_origins=origin_allowlist(),
                announce=functools.partial(_announced, listening),
                handle_signals=False,
            )
            tg.start_soon(http.serve)
            with anyio.fail_after(30):
                await listening.wait()
            servers.append(http)
        with anyio.fail_after(30):
            while not sandbox.started:  # noqa: ASYNC110  # uvicorn offers a flag only
                await anyio.sleep(0.005)
        url = f"http://127.0.0.1:{servers[0].port}"  # where Seamless delivers
        mcp_url = f"http://127.0.0.1:{servers[-1].port}/mcp"  # where the agent calls
        if webhooks:
            async with httpx.AsyncClient() as h:
                answer = await h.post(
                    root + "/_sandbox/webhooks",
                    json={
                        "url": url + "/webhooks/seamless",
                        "secret": WEBHOOK_SECRET,
                        "drop_rate": drop_rate,
                        "duplicate_rate": duplicate_rate,
                    },
                )
                answer.raise_for_status()
        try:
            async with (
                httpx2.AsyncClient(timeout=120.0) as client_http,
                Client(streamable_http_client(mcp_url, http_client=client_http)) as client,
            ):
                yield client, recorder, webhooks_of(state)
        finally:
            for http in servers:
                http.should_exit = True
            sandbox.should_exit = True


async def _webhook_jobs(
    run: Run,
    name: str,
    *,
    webhooks: bool,
    drop_rate: float = 0.0,
    duplicate_rate: float = 0.0,
    shared: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """`webhook_jobs` one-company research jobs, `webhook_workers` at a time, each started
    without waiting and then waited on (wait_for_job), as an agent does."""
    mode = run.mode
    latencies: list[float] = []
    states: list[str] = []
    totals: list[int] = []
    async with _webhook_world(
        run,
        name,
        webhooks=webhooks,
        drop_rate=drop_rate,
        duplicate_rate=duplicate_rate,
        shared=shared,
    ) as (client, recorder, sender):
        queue = list(range(mode.webhook_jobs))

        async def worker() -> None:
            while queue:
                n = queue.pop()
                started = bl.structured(
                    await client.call_tool(
                        "start_research",
                        {
                            "kind": "companies",
                            "companies": [{"name": f"Hook {name} {n}", "domain": f"h{n}.example"}],
                            "wait_seconds": 0,
                        },
                    )
                )
                request_id = started["items"][0]["request_id"]
                waited = bl.structured(
                    await client.call_tool(
                        "wait_for_job", {"job_id": started["job_id"], "wait_seconds": 600}
                    )
                )
                returned = time.perf_counter()
                states.append(str(waited.get("state")))
                sent = sender.sent_at.get(request_id)
                if sent is not None and waited.get("state") == "succeeded":
                    latencies.append(returned - sent)
                page = bl.structured(
                    await client.call_tool("get_job_result", {"job_id": started["job_id"]})
                )
                totals.append(int(page.get("total", 0)))

        with anyio.fail_after(600):
            async with anyio.create_task_group() as tg:
                for _ in range(mode.webhook_workers):
                    tg.start_soon(worker)
        polls = recorder.count("seamless", "poll")
        hooks = sender.stats()
    jobs = mode.webhook_jobs
    return {
        "jobs": jobs,
        "succeeded": sum(1 for s in states if s == "succeeded"),
        "poll_calls": polls,
        "poll_calls_per_job": bl.rnd(polls / jobs, 3),
        "duplicate_results": sum(max(0, t - 1) for t in totals),
        "delivery_to_return_ms_p50": bl.rnd(1000 * (bl.median(latencies) or 0), 1)
        if latencies
        else None,
        "delivery_to_return_ms_p95": bl.rnd(1000 * (bl.percentile(latencies, 95) or 0), 1)
        if latencies
        else None,
        "returns_measured": len(latencies),
        "deliveries": {k: hooks[k] for k in ("sent", "repeated", "dropped", "delivered", "failed")},
    }


async def section_webhooks(run: Run) -> None:
    off = await _webhook_jobs(run, "off", webhooks=False)
    on = await _webhook_jobs(run, "on", webhooks=True)
    dropped = await _webhook_jobs(run, "drop30", webhooks=True, drop_rate=0.3)
    repeated = await _webhook_jobs(run, "dup50", webhooks=True, duplicate_rate=0.5)
    two = await _webhook_two_replicas(run)
    run.data["webhooks"] = {
        "time_scale": WEBHOOK_SCALE,
        "webhooks_off": off,
        "webhooks_on": on,
        "drop_30": dropped,
        "duplicate_50": repeated,
        "two_replicas": two,
    }
    run.check_max(
        "webhooks",
        "delivery to wait_for_job return, p95",
        on["delivery_to_return_ms_p95"],
        full=100,
        quick=250,
        unit="ms",
        also=on["returns_measured"] > 0,
    )
    run.check_max(
        "webhooks",
        "poll calls per research job, webhooks on",
        on["poll_calls_per_job"],
        full=0.2,
        quick=0.5,
        also=on["succeeded"] == on["jobs"],
    )
    run.check(
        "webhooks",
        "poll calls per research job, on vs off",
        f"{on['poll_calls_per_job']} vs {off['poll_calls_per_job']}",
        target="comparison",
    )
    run.check(
        "webhooks",
        "30 % dropped: jobs finished (polls per job)",
        f"{dropped['succeeded']}/{dropped['jobs']} ({dropped['poll_calls_per_job']})",
        target="all",
        ok=dropped["succeeded"] == dropped["jobs"] and dropped["deliveries"]["dropped"] > 0,
    )
    run.check(
        "webhooks",
        "50 % repeated: duplicate results",
        repeated["duplicate_results"],
        target="0",
        ok=repeated["duplicate_results"] == 0
        and repeated["deliveries"]["repeated"] > 0
        and repeated["succeeded"] == repeated["jobs"],
    )
    if "skipped" in two:
        run.check(
            "webhooks",
            "2 replicas: skipped",
            two["skipped"],
            target="PostgreSQL and Redis",
            ok=None,
        )
    else:
        run.check_max(
            "webhooks",
            "2 replicas, deliveries to A, waits on B: poll calls per job",
            two["poll_calls_per_job"],
            full=0.2,
            quick=0.5,
            also=two["succeeded"] == two["jobs"],
        )


async def _webhook_two_replicas(run: Run) -> dict[str, Any]:
    """The "webhooks on" run on two replicas (one PostgreSQL schema, a private Redis): every
    delivery reaches replica A, every call replica B, which alone polls (issue 18's
    `PushShare`: A's arrivals slow B's polling)."""
    import _bench_replicas

    problem = _bench_replicas.services_problem()
    if problem is not None:
        return {"skipped": problem}
    with (
        _bench_replicas.postgres_schema() as db_url,
        _bench_replicas.private_redis(run.work) as redis_url,
    ):
        return await _webhook_jobs(run, "two", webhooks=True, shared=(db_url, redis_url))


async def section_replicas(run: Run) -> None:
    import _bench_replicas

    await _bench_replicas.section(
        run,
        start_and_wait_each=_start_and_wait_each,
        start_until_accepted=_start_until_accepted,
        research_figures=_research_figures,
    )


RUNNERS: dict[str, Callable[[Run], Awaitable[None]]] = {
    "rate": section_rate,
    "completion": section_completion,
    "polls": section_polls,
    "overhead": section_overhead,
    "telemetry": section_telemetry,
    "scale": section_scale,
    "tokens": section_tokens,
    "agent": section_agent,
    "agent_text": section_agent_text,
    "shared": section_shared,
    "burst": section_burst,
    "waits": _bench_waits.section_waits,
    "webhooks": section_webhooks,
    "replicas": section_replicas,
}


async def _main(args: argparse.Namespace) -> int:
    mode = QUICK if args.quick else FULL
    if args.rate_scale is not None:
        mode = Mode(**{**asdict(mode), "rate_scale": args.rate_scale})
    sections = SECTIONS if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = [s for s in sections if s not in RUNNERS]
    if unknown:
        print(
            f"bench: unknown section(s): {', '.join(unknown)}; known: {', '.join(SECTIONS)}",
            file=sys.stderr,
        )
        return 2
    started = datetime.now(UTC)
    machine = bl.machine_info()  # load average as the run starts: other work skews timings
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    crashed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="jobrelay-bench-") as tmp:
        run = Run(mode=mode, work=Path(tmp))
        for name in sections:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            s0 = time.monotonic()
            try:
                await RUNNERS[name](run)
            except Exception as exc:  # noqa: BLE001  # a crashed section is reported, others still run
                crashed[name] = f"{type(exc).__name__}: {exc}"[:500]
                run.check(name, "section crashed", crashed[name], target="runs", ok=False)
                import traceback

                traceback.print_exc()
            timings[name] = round(time.monotonic() - s0, 2)
    ok = all(c.ok is not False for c in run.checks)
    report = {
        "tool": "bench",
        "mode": mode.name,
        "ok": ok,
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - t0, 1),
        "machine": machine,
        "loadavg_at_end": bl.machine_info()["loadavg_1_5_15"],
        "settings": asdict(mode),
        "section_seconds": timings,
        "crashed": crashed,
        "checks": [c.as_dict() for c in run.checks],
        "sections": run.data,
    }
    bl.write_json(Path(args.json), report)
    print(bl.render_table(run.checks))
    print(
        f"\nmode {mode.name}; rate section at time scale {mode.rate_scale:g}x; "
        f"{report['duration_s']} s; JSON: {args.json}; "
        + ("all within thresholds" if ok else "MISSES above")
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small, fast smoke run (CI)")
    parser.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--json", default="bench-results.json", help="where to write the JSON")
    parser.add_argument(
        "--rate-scale", type=float, default=None, help="virtual time scale of the rate section"
    )
    args = parser.parse_args(argv)
    if args.rate_scale is not None and args.rate_scale <= 0:
        parser.error("--rate-scale must be positive")
    return anyio.run(_main, args)


if __name__ == "__main__":
    sys.exit(main())
