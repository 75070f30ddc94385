"""The `replicas` section of tools/bench.py (issue 17.5): three `jobrelay serve` HTTP replicas
on one PostgreSQL ledger and one Redis, behind a client that alternates between them.

Phase 1: one org key, N research targets started and waited on through the replicas in turn:
upstream 429s, combined makespan against N/rate, peak requests per endpoint in any 60 s.
Phase 2: research and SEO jobs started, every wait in flight, then one replica killed with
SIGKILL: its waits fail over to the others (what a load balancer does), which take its poll
and stream leases over; lost jobs, duplicate paid POSTs (the sandbox's own count) and how
long after the kill the last of them finished.

Real time (the replicas run on the system clock); the sandbox runs in the bench process on
loopback, recording every request. Redis is a private `redis-server` on an ephemeral port (no
key or channel shared with anything else on the machine); PostgreSQL a fresh schema in the
test database (`JOBRELAY_TEST_POSTGRES_URL`), dropped afterwards. Without either the section
is skipped with the reason (and the test suite fails that skip when CI requires services).
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import _benchlib as bl
import anyio
import anyio.abc
import httpx
from mcp import Client

POSTGRES_URL = os.environ.get(
    "JOBRELAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REPLICAS = 3
MAX_LAG_S = 10.0
"""A killed holder's lease lapses within 4 s (`watch.LEASE_TTL`) and a Seamless poll round
comes every 2-5 s: a wait it held ends at most about this long after its job ended."""


@dataclass(frozen=True)
class Plan:
    targets_per_replica: int
    job_seconds: float
    kill_jobs: int
    """Research and SEO jobs (each) in flight when a replica is killed."""
    kill_job_seconds: float
    kill_after: float
    """Seconds after the waits start that one replica is killed."""
    wait_seconds: float


FULL_PLAN = Plan(40, 6.0, 6, 20.0, 5.0, 45.0)
QUICK_PLAN = Plan(3, 0.5, 2, 8.0, 2.0, 20.0)


def services_problem() -> str | None:
    """Why the section cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (the section runs a private Redis)"
    parts = urlsplit(POSTGRES_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 2):
            pass
    except OSError as exc:
        return f"PostgreSQL is not reachable at {parts.hostname}:{parts.port or 5432} ({exc})"
    return None


@contextlib.contextmanager
def private_redis(work: Path) -> Any:
    port = bl.free_port()
    binary = shutil.which("redis-server") or "redis-server"
    proc = subprocess.Popen(  # noqa: S603  # a fixed binary with fixed arguments
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(work),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the private redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def postgres_schema() -> Any:
    import psycopg

    schema = f"jobrelay_bench_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class RoundRobin:
    """A client that sends each tool call to the next live replica, as a round-robin load
    balancer would; a call that fails on a replica (killed: connection lost, or no answer in
    time) marks it dead and goes to the next one. Starts never fail over (a start whose
    outcome is unknown must not be sent twice); waits and reads do."""

    def __init__(self, clients: list[Client], timeout: float) -> None:
        self.clients = clients
        self.timeout = timeout
        self.dead: set[int] = set()
        self.failovers = 0
        self.calls = [0] * len(clients)
        self._next = 0

    async def call_tool(self, name: str, args: dict[str, Any]) -> Any:
        retry = not name.startswith("start_")
        last: BaseException | None = None
        for _ in range(len(self.clients)):
            index = self._next % len(self.clients)
            self._next += 1
            if index in self.dead:
                continue
            try:
                with anyio.fail_after(self.timeout):
                    self.calls[index] += 1
                    return await self.clients[index].call_tool(name, args)
            except Exception as exc:  # a dead replica: any failure of the call
                last = exc
                self.dead.add(index)
                self.failovers += 1
                if not retry:
                    raise
        raise RuntimeError(f"no live replica answered {name}") from last


async def _hold_client(
    url: str, close: anyio.Event, *, task_status: anyio.abc.TaskStatus[Client]
) -> None:
    """One MCP session to a replica over Streamable HTTP, open until `close`; a replica that
    dies ends it with an error, which is expected here and dropped."""
    with contextlib.suppress(Exception):
        async with Client(url) as client:
            task_status.started(client)
            await close.wait()


@asynccontextmanager
async def replicas(
    sb: bl.LoopbackSandbox, work: Path, db_url: str, redis_url: str, *, call_timeout: float
) -> AsyncIterator[tuple[list[Any], RoundRobin]]:
    procs: list[Any] = []
    ports = [bl.free_port() for _ in range(REPLICAS)]
    env = bl.server_env(
        sb.seamless_url, sb.agentseo_url, work / "unused.sqlite3", JOBRELAY_REDIS_URL=redis_url
    )
    env["JOBRELAY_DB"] = db_url
    close = anyio.Event()
    try:
        for i, port in enumerate(ports):
            serve = ["serve", "--transport", "http", "--host", "127.0.0.1", "--port", str(port)]
            procs.append(bl.start_jobrelay(serve, env, work / f"replica-{i}.log"))
        with anyio.fail_after(120):  # a loaded machine can take a while to import and bind
            for proc, port in zip(procs, ports, strict=True):
                while True:
                    if proc.poll() is not None:
                        log = (work / f"replica-{procs.index(proc)}.log").read_text()[-2000:]
                        raise RuntimeError(f"a replica exited {proc.returncode}: {log}")
                    try:
                        async with httpx.AsyncClient() as probe:
                            health = await probe.get(
                                f"http://127.0.0.1:{port}/healthz", timeout=2.0
                            )
                        if health.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.1)
        async with anyio.create_task_group() as tg:
            clients = [
                await tg.start(_hold_client, f"http://127.0.0.1:{port}/mcp", close)
                for port in ports
            ]
            yield procs, RoundRobin(clients, timeout=call_timeout)
            close.set()
    finally:
        close.set()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _kill_mid_wait(
    rr: RoundRobin,
    procs: list[Any],
    sb: bl.LoopbackSandbox,
    plan: Plan,
    start_until_accepted: Callable[..., Awaitable[str | None]],
) -> dict[str, Any]:
    """Start research and SEO jobs, wait on all of them through the replicas in turn, kill
    one replica while the waits run; every job must still finish, nothing paid twice."""
    sb.state.faults.job_seconds = plan.kill_job_seconds
    jobs: list[str] = []
    start_stats = {"client_errors": 0, "gave_up": 0}
    ends: dict[str, float] = {}
    """When each job ends upstream (real time): its start answered + the sandbox's duration."""
    for i in range(plan.kill_jobs):
        contact = {"name": f"Failover Person{i:03d}", "company": f"Failover Co {i:03d}"}
        research = {"kind": "contacts", "contacts": [contact], "wait_seconds": 0}
        seo = {"workflow": "serp_analysis", "params": {"keyword": f"failover {i}"}}
        for tool, args in (
            ("start_research", research),
            ("start_seo_job", {**seo, "wait_seconds": 0}),
        ):
            # A refusal (the window the first phase used up) says when: wait and start again.
            job_id = await start_until_accepted(rr, tool, args, sb.clock, start_stats)
            if job_id is None:
                raise RuntimeError(f"{tool} was not accepted: {start_stats}")
            jobs.append(job_id)
            ends[job_id] = time.monotonic() + plan.kill_job_seconds
    finished: dict[str, float] = {}
    errors: list[str] = []
    victim = 0

    async def wait_until_done(job_id: str) -> None:
        for _ in range(20):
            try:
                result = await rr.call_tool(
                    "wait_for_job", {"job_id": job_id, "wait_seconds": plan.wait_seconds}
                )
            except Exception as exc:  # noqa: BLE001  # every replica gone: reported
                errors.append(f"{job_id}: {exc!r}"[:200])
                return
            state = bl.structured(result).get("state")
            if state in bl.TERMINAL:
                finished[job_id] = time.monotonic()
                return
            if bl.error_of(result) is not None:
                errors.append(f"{job_id}: {bl.text_of(result)[:150]}")
                return

    killed_at = 0.0
    async with anyio.create_task_group() as tg:
        for job_id in jobs:
            tg.start_soon(wait_until_done, job_id)
        await anyio.sleep(plan.kill_after)
        killed_at = time.monotonic()
        bl.kill_pid(procs[victim].pid, signal.SIGKILL)
    stats = sb.state.stats()
    ended = [finished[j] for j in jobs if j in finished]
    return {
        "jobs": len(jobs),
        "jobs_finished": len(ended),
        "lost_jobs": len(jobs) - len(ended),
        "errors": errors[:5],
        "killed_replica_exited": procs[victim].poll() is not None,
        "failovers": rr.failovers,
        "duplicate_paid_posts": int(stats["duplicate_paid_posts"]),
        "paid_posts": int(stats["paid_posts"]),
        "job_seconds": plan.kill_job_seconds,
        "killed_after_s": plan.kill_after,
        "last_finished_after_kill_s": bl.rnd(max(ended) - killed_at) if ended else None,
        "worst_lag_after_job_end_s": bl.rnd(max(finished[j] - ends[j] for j in finished))
        if finished
        else None,
        "starts_refused_then_accepted": start_stats["client_errors"],
        "upstream_429": sb.recorder.status_count(429),
    }


async def section(
    run: Any,
    *,
    start_and_wait_each: Callable[..., Coroutine[Any, Any, None]],
    start_until_accepted: Callable[..., Awaitable[str | None]],
    research_figures: Callable[..., dict[str, Any]],
) -> None:
    problem = services_problem()
    if problem is not None:
        run.data["replicas"] = {"skipped": problem}
        run.check("replicas", "skipped", problem, target="PostgreSQL and Redis", ok=None)
        return
    plan = QUICK_PLAN if run.mode.loose else FULL_PLAN
    n = REPLICAS * plan.targets_per_replica
    state = bl.sandbox_state(1.0, job_seconds=plan.job_seconds, initial_credits=10**6)
    stats = {"client_errors": 0, "gave_up": 0}
    done: dict[str, float] = {}
    with private_redis(run.work) as redis_url, postgres_schema() as db_url:
        async with (
            bl.loopback_sandbox(state) as sb,
            AsyncExitStack() as stack,
        ):
            procs, rr = await stack.enter_async_context(
                replicas(sb, run.work, db_url, redis_url, call_timeout=plan.wait_seconds + 15)
            )

            def args_for(group: int) -> Callable[[int], dict[str, Any]]:
                def research_args(i: int) -> dict[str, Any]:
                    contact = {"name": f"Replica G{group} Person{i:04d}", "company": "Replicaco"}
                    return {"kind": "contacts", "contacts": [contact]}

                return research_args

            t0 = time.monotonic()
            # One group of drivers per replica's worth of targets (as `shared` runs one per
            # process); every group's calls go round-robin over all three replicas.
            async with anyio.create_task_group() as tg:
                for group in range(REPLICAS):
                    tg.start_soon(
                        functools.partial(
                            start_and_wait_each,
                            rr,
                            "start_research",
                            args_for(group),
                            n=plan.targets_per_replica,
                            clock=sb.clock,
                            stats=stats,
                            done=done,
                        )
                    )
            throughput = {
                "replicas": REPLICAS,
                **research_figures(sb.recorder, n, stats, done),
                "calls_per_replica": list(rr.calls),
                "wall_s": bl.rnd(time.monotonic() - t0),
            }
            failover = await _kill_mid_wait(rr, procs, sb, plan, start_until_accepted)
    run.data["replicas"] = {"throughput": throughput, "kill": failover}
    _report(run, throughput, failover, n)


def _report(run: Any, part: dict[str, Any], kill: dict[str, Any], n: int) -> None:
    name = f"{REPLICAS} HTTP replicas, PostgreSQL + Redis, round-robin, {n} targets"
    run.check_clean("replicas", name, part)
    run.check_max(
        "replicas",
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
        run.check("replicas", f"{name}: {metric}", value, target="<= 60", ok=value <= 60)
    kname = f"kill -9 one of {REPLICAS} replicas mid-wait ({kill['jobs']} jobs)"
    run.check(
        "replicas", f"{kname}: lost jobs", kill["lost_jobs"], target="0", ok=kill["lost_jobs"] == 0
    )
    run.check(
        "replicas",
        f"{kname}: duplicate paid POSTs (sandbox count)",
        kill["duplicate_paid_posts"],
        target="0",
        ok=kill["duplicate_paid_posts"] == 0 and kill["killed_replica_exited"],
    )
    run.check(
        "replicas",
        f"{kname}: upstream 429s",
        kill["upstream_429"],
        target="0",
        ok=kill["upstream_429"] == 0,
    )
    run.check(
        "replicas",
        f"{kname}: last wait finished on the others, s after the kill",
        kill["last_finished_after_kill_s"],
        target=f"jobs end ~{kill['job_seconds'] - kill['killed_after_s']:g} s after",
        ok=kill["last_finished_after_kill_s"] is not None,
        unit="s",
    )
    run.check_max(
        "replicas",
        f"{kname}: slowest wait's return after its job ended upstream",
        kill["worst_lag_after_job_end_s"],
        full=MAX_LAG_S,
        quick=MAX_LAG_S,
        unit="s",
    )
