"""The `waits` section of tools/bench.py: the cost of waiting (issue 17.6).

N concurrent `wait_for_job` calls over Streamable HTTP on AgentSEO jobs followed by SSE,
against the SDK floor: a one-tool `MCPServer` on the same stack (uvicorn, the SDK's Streamable
HTTP app, SSE responses, no OpenTelemetry middleware) whose tool holds each call exactly as
long as the matching jobrelay wait held it and sends it the same number of progress
notifications, then returns. Measured in the server process only, from /proc: CPU time
(user + system) from the first call sent to the last answer, and the highest RSS sampled every
0.1 s above the RSS before the calls. Both servers run side by side in one run, at each N, so
the ratios share the machine's load.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import _benchlib as bl
import anyio
import httpx
from mcp import Client

FLOOR_SERVER = """
import sys, time

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("floor", version="0", log_level="WARNING")
server.middleware[:] = [
    m for m in server.middleware if type(m).__name__ != "OpenTelemetryMiddleware"
]


@server.tool()
async def hold(until: float, steps: int, ctx: Context) -> str:
    \"\"\"Send `steps` progress notifications spread until `until` (epoch seconds), then end.\"\"\"
    start = time.time()
    for k in range(steps):
        at = start + (until - start) * k / max(1, steps)
        await anyio.sleep(max(0.0, at - time.time()))
        await ctx.report_progress(100.0 * k / max(1, steps), 100, "working")
    await anyio.sleep(max(0.0, until - time.time()))
    return "done"


app = server.streamable_http_app(
    streamable_http_path="/mcp", json_response=False, stateless_http=False
)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, lifespan="on")
"""
"""The floor: the SDK's own cost of N held calls with their progress notifications."""

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def _ready(proc: subprocess.Popen[bytes], url: str) -> None:
    with anyio.fail_after(120):  # a loaded machine can take a while to import and bind
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}")
            try:
                async with httpx.AsyncClient() as probe:
                    await probe.get(url, timeout=1.0)
            except httpx.TransportError:
                await anyio.sleep(0.1)
            else:
                return


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _measured_fan_out(
    url: str,
    pid: int,
    n: int,
    setup: Callable[[Client], Awaitable[list[Any]]],
    call: Callable[[Client, int, list[Any], Callable[[], None]], Awaitable[bool]],
) -> dict[str, Any]:
    """`setup` once, then `call` n times at once; server CPU and RSS over the calls.
    `held_s`: the mean time a call was held, per plan slot (call i is slot i mod len)."""
    import httpx2  # the SDK's HTTP client
    from mcp.client.streamable_http import streamable_http_client

    limits = httpx2.Limits(max_connections=n + 50, max_keepalive_connections=100)
    progress = [0]

    def on_progress() -> None:
        progress[0] += 1

    async with (
        httpx2.AsyncClient(limits=limits, timeout=httpx2.Timeout(180.0)) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        plan = await setup(client)
        samples: list[int] = []
        rss0 = bl.proc_status_kb(pid, "VmRSS") or 0
        cpu0 = cpu_seconds(pid)
        t0 = time.monotonic()
        ok = [0]
        held: list[list[float]] = [[] for _ in plan]

        async def one(i: int) -> None:
            began = time.monotonic()
            if await call(client, i, plan, on_progress):
                ok[0] += 1
            held[i % len(plan)].append(time.monotonic() - began)

        async def sample() -> None:
            while True:
                value = bl.proc_status_kb(pid, "VmRSS")
                if value:
                    samples.append(value)
                await anyio.sleep(0.1)

        async with anyio.create_task_group() as outer:
            outer.start_soon(sample)
            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(one, i)
            outer.cancel_scope.cancel()
        cpu = cpu_seconds(pid) - cpu0
        wall = time.monotonic() - t0
    return {
        "waits": n,
        "finished": ok[0],
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_wait": round(1000 * cpu / n, 2),
        "kb_per_wait": round((max(samples, default=rss0) - rss0) / n, 1),
        "rss_before_mb": round(rss0 / 1024, 1),
        "progress_per_wait": round(progress[0] / n, 2),
        "wall_s": round(wall, 1),
        "plan": plan,
        "held_s": [round(sum(h) / len(h), 3) if h else 0.0 for h in held],
    }


async def jobrelay_waits(
    work: Path,
    n: int,
    *,
    jobs: int,
    job_seconds: float,
    plan: str = "pro",
    extra_env: dict[str, str] | None = None,
    server: Sequence[str] = (),
) -> dict[str, Any]:
    """`jobrelay serve --transport http` on an external sandbox: `jobs` SEO jobs, then n
    concurrent wait_for_job calls (call i on job i mod jobs) until every job has finished.
    `server`: another install's `jobrelay` command instead of this checkout's server."""
    sandbox = bl.ExternalSandbox(job_seconds=job_seconds)
    sandbox.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        sandbox.faults(agentseo_plan=plan, initial_credits=10**6)
        port = bl.free_port()
        env = bl.server_env(
            sandbox.seamless_url, sandbox.agentseo_url, work / f"waits-{n}.sqlite3", plan=plan
        )
        env.update(extra_env or {})
        serve = ["serve", "--transport", "http", "--host", "127.0.0.1", "--port", str(port)]
        proc = bl.start_jobrelay(serve, env, work / f"waits-{n}-server.log", command=server)
        await _ready(proc, f"http://127.0.0.1:{port}/healthz")
        errors: list[str] = []
        setup_s: list[float] = []

        async def setup(client: Client) -> list[Any]:
            ids: list[Any] = [None] * jobs
            began = time.monotonic()

            async def start(j: int) -> None:
                args = {"workflow": "serp_analysis", "params": {"keyword": f"wait kw {j:04d}"}}
                for _ in range(300):  # many jobs (--jobs): a refused start waits and tries again
                    result = await client.call_tool("start_seo_job", args)
                    if bl.error_of(result) is None:
                        ids[j] = str(bl.structured(result)["job_id"])
                        return
                    await anyio.sleep(1.0)
                raise RuntimeError(bl.text_of(result)[:300])

            async with anyio.create_task_group() as tg:
                for j in range(jobs):
                    tg.start_soon(start, j)
            setup_s.append(time.monotonic() - began)
            return ids

        async def call(client: Client, i: int, ids: list[Any], tick: Callable[[], None]) -> bool:
            async def progress(progress: float, total: float | None, message: str | None) -> None:
                del progress, total, message  # counted only
                tick()

            result = await client.call_tool(
                "wait_for_job",
                {"job_id": ids[i % len(ids)], "wait_seconds": 45},
                progress_callback=progress,
            )
            if bl.error_of(result) is not None:
                errors.append(bl.text_of(result)[:300])
            return bl.error_of(result) is None and bl.structured(result).get("state") in bl.TERMINAL

        out = await _measured_fan_out(f"http://127.0.0.1:{port}/mcp", proc.pid, n, setup, call)
        out["first_error"] = errors[0] if errors else None
        out["setup_s"] = round(setup_s[0], 1)
    finally:
        _stop(proc)
        sandbox.stop()
    return out


async def floor_waits(work: Path, n: int, held_s: list[float], steps: int) -> dict[str, Any]:
    """The floor server: n concurrent calls, call i held until `held_s[i mod len]` seconds
    after the calls begin (so calls on one "job" end together, when jobrelay's did), each sent
    `steps` progress notifications."""
    port = bl.free_port()
    proc = _start_floor(port, work / f"floor-{n}.log")
    try:
        await _ready(proc, f"http://127.0.0.1:{port}/")

        async def setup(_client: Client) -> list[Any]:
            now = time.time()
            return [now + h for h in held_s]

        async def call(client: Client, i: int, ends: list[Any], tick: Callable[[], None]) -> bool:
            async def progress(progress: float, total: float | None, message: str | None) -> None:
                del progress, total, message  # counted only
                tick()

            result = await client.call_tool(
                "hold", {"until": ends[i % len(ends)], "steps": steps}, progress_callback=progress
            )
            return not result.is_error

        out = await _measured_fan_out(f"http://127.0.0.1:{port}/mcp", proc.pid, n, setup, call)
    finally:
        _stop(proc)
    out["plan"] = len(out["plan"])
    return out


def _start_floor(port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(  # noqa: S603  # our interpreter, our script
            [sys.executable, "-c", FLOOR_SERVER, str(port)],
            cwd=str(bl.REPO),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def exponent(small: dict[str, Any], large: dict[str, Any]) -> float | None:
    """Growth of total CPU with the number of waits: log(cpu ratio) / log(n ratio)."""
    if small["cpu_s"] <= 0 or large["cpu_s"] <= 0 or small["waits"] == large["waits"]:
        return None
    return round(
        math.log(large["cpu_s"] / small["cpu_s"]) / math.log(large["waits"] / small["waits"]), 2
    )


# ---- the section ---------------------------------------------------------------------------

FULL_COUNTS = (100, 300, 1000)
QUICK_COUNTS = (10, 30)
JOBS = 50
"""SEO jobs waited on (call i on job i mod JOBS): every one followed by its own SSE stream
(below the client's 64-stream cap), so every wait is an SSE wait."""
FULL_JOB_SECONDS = 25.0
QUICK_JOB_SECONDS = 4.0


async def section_waits(run: Any) -> None:
    """Per N: jobrelay, then the floor holding each call as long and sending as many progress
    notifications; CPU ms and KB per wait, their ratios, and the growth exponent."""
    loose = run.mode.loose
    counts = QUICK_COUNTS if loose else FULL_COUNTS
    jobs = 5 if loose else JOBS
    job_seconds = QUICK_JOB_SECONDS if loose else FULL_JOB_SECONDS
    rows: list[dict[str, Any]] = []
    for n in counts:
        jr = await jobrelay_waits(run.work, n, jobs=jobs, job_seconds=job_seconds)
        fl = await floor_waits(run.work, n, jr["held_s"], round(jr["progress_per_wait"]))
        for part in (jr, fl):
            part.pop("plan", None)
            part.pop("held_s", None)
        rows.append({"n": n, "jobrelay": jr, "floor": fl})
    first, last = rows[0], rows[-1]
    out: dict[str, Any] = {
        "jobs": jobs,
        "job_seconds": job_seconds,
        "rows": rows,
        "exponent": exponent(first["jobrelay"], last["jobrelay"]),
        "floor_exponent": exponent(first["floor"], last["floor"]),
    }
    run.data["waits"] = out
    sec = "waits"
    n = last["n"]
    jr, fl = last["jobrelay"], last["floor"]
    for row in rows:
        a, b = row["jobrelay"], row["floor"]
        run.check(
            sec,
            f"{row['n']} waits: CPU ms per wait, jobrelay / floor",
            f"{a['cpu_ms_per_wait']} / {b['cpu_ms_per_wait']}; "
            f"KB {a['kb_per_wait']} / {b['kb_per_wait']}",
            target="info",
        )
    cpu_ratio = jr["cpu_ms_per_wait"] / fl["cpu_ms_per_wait"] if fl["cpu_ms_per_wait"] else None
    run.check_max(
        sec,
        f"{n} SSE waits: CPU per wait / the SDK floor's",
        bl.rnd(cpu_ratio, 2),
        full=3.0,
        quick=6.0,
        also=jr["finished"] == n and fl["finished"] == n,
    )
    run.check_max(
        sec,
        f"{n} SSE waits: growth exponent of CPU, {first['n']} -> {n}",
        out["exponent"],
        full=1.1,
        quick=2.0,
    )
    run.check_max(
        sec, f"{n} SSE waits: memory per wait", jr["kb_per_wait"], full=70, quick=400, unit="KB"
    )
    run.check(
        sec,
        f"{n} SSE waits: finished (jobrelay, floor)",
        f"{jr['finished']}, {fl['finished']}",
        target=f"{n}, {n}",
        ok=jr["finished"] == n and fl["finished"] == n,
    )


# ---- standalone: another commit's server, chosen counts ------------------------------------


async def _standalone(
    counts: list[int], server: list[str], work: Path, *, floor: bool, jobs: int, job_seconds: float
) -> None:
    import json

    for n in counts:
        load = [f"{x:.2f}" for x in os.getloadavg()]
        jr = await jobrelay_waits(work, n, jobs=jobs, job_seconds=job_seconds, server=server)
        row: dict[str, Any] = {"n": n, "load_before": " ".join(load), "jobrelay": jr}
        if floor:
            row["floor"] = await floor_waits(work, n, jr["held_s"], round(jr["progress_per_wait"]))
            f = row["floor"]["cpu_ms_per_wait"]
            row["ratio"] = round(jr["cpu_ms_per_wait"] / f, 2) if f else None
        for part in ("jobrelay", "floor"):
            if part in row:
                row[part].pop("plan", None)
                row[part].pop("held_s", None)
        row["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> int:
    """`python tools/_bench_waits.py [--server PATH/TO/jobrelay] [--counts 1000] [--no-floor]`:
    the section's full-mode points one by one, one JSON line per N, against this checkout's
    server or another install's (an older commit in its own venv), for before/after tables."""
    import argparse
    import functools
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--server", help="a `jobrelay` executable (default: this checkout)")
    parser.add_argument("--counts", default="1000", help="comma-separated N (default 1000)")
    parser.add_argument("--no-floor", action="store_true", help="skip the SDK floor")
    parser.add_argument("--jobs", type=int, default=JOBS, help=f"jobs waited on ({JOBS})")
    parser.add_argument("--job-seconds", type=float, default=FULL_JOB_SECONDS)
    parser.add_argument("--work", help="keep logs and ledgers here (default: a temporary dir)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-waits-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        server = [args.server] if args.server else []
        run = functools.partial(
            _standalone, floor=not args.no_floor, jobs=args.jobs, job_seconds=args.job_seconds
        )
        anyio.run(run, counts, server, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
