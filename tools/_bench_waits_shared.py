"""Waits on a replica that does not follow the jobs (issue 17.6, the Redis part).

`python tools/_bench_waits_shared.py [--counts 100,1000]`: two `jobrelay serve` HTTP replicas
(A and B) on a fresh PostgreSQL schema and a private Redis (as the `replicas` section starts
them), an external sandbox (AgentSEO Pro, 30 s jobs). 50 SEO jobs are started on A and each is
waited on once there, so A holds every job's stream lease and follows it upstream; then N
concurrent `wait_for_job` calls on B (call i on job i mod 50), which only listens on the jobs'
Redis topics and tries for their leases. Measured: Redis commands per second (INFO
commandstats) with A's waits alone and while B's waits run, B's CPU and RSS per wait (as the
`waits` section measures them), and whether every wait on both replicas ended with its job.
Then, for comparison, the same N waits on one replica alone on the same backends.
One JSON line per N.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _bench_replicas as br
import _bench_waits as bw
import _benchlib as bl
import anyio
from mcp import Client

JOBS = 50
JOB_SECONDS = 30.0
ERRORS: list[str] = []
BASELINE_S = 3.0
"""Seconds of A's waits alone, before B's, to count A's own Redis commands per second."""


async def _redis_calls(url: str) -> tuple[float, dict[str, int]]:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
    return time.monotonic(), calls


def _rate(a: tuple[float, dict[str, int]], b: tuple[float, dict[str, int]]) -> dict[str, Any]:
    seconds = b[0] - a[0]
    by = {k: n - a[1].get(k, 0) for k, n in b[1].items()}
    by = {k: n for k, n in sorted(by.items(), key=lambda kv: -kv[1]) if n}
    total = sum(by.values())
    return {
        "seconds": round(seconds, 1),
        "commands": total,
        "per_s": round(total / seconds, 1),
        "by_command": by,
    }


async def _serve(env: dict[str, str], log: Path) -> tuple[Any, str]:
    port = bl.free_port()
    serve = ["serve", "--transport", "http", "--host", "127.0.0.1", "--port", str(port)]
    proc = bl.start_jobrelay(serve, env, log)
    await bw._ready(proc, f"http://127.0.0.1:{port}/healthz")
    return proc, f"http://127.0.0.1:{port}/mcp"


async def _wait(client: Client, job_id: str, tick: Callable[[], None] | None = None) -> bool:
    async def progress(progress: float, total: float | None, message: str | None) -> None:
        del progress, total, message
        if tick is not None:
            tick()

    result = await client.call_tool(
        "wait_for_job", {"job_id": job_id, "wait_seconds": 45}, progress_callback=progress
    )
    ok = bl.error_of(result) is None and bl.structured(result).get("state") in bl.TERMINAL
    if not ok and not ERRORS:
        ERRORS.append(bl.text_of(result)[:300])
    return ok


async def shared_waits(work: Path, n: int, db_url: str, redis_url: str) -> dict[str, Any]:
    sandbox = bl.ExternalSandbox(job_seconds=JOB_SECONDS)
    sandbox.start()
    procs: list[Any] = []
    try:
        sandbox.faults(agentseo_plan="pro", initial_credits=10**6)
        env = bl.server_env(
            sandbox.seamless_url,
            sandbox.agentseo_url,
            work / "unused.sqlite3",
            plan="pro",
            JOBRELAY_REDIS_URL=redis_url,
        )
        env["JOBRELAY_DB"] = db_url
        a, a_url = await _serve(env, work / f"shared-{n}-a.log")
        procs.append(a)
        b, b_url = await _serve(env, work / f"shared-{n}-b.log")
        procs.append(b)
        ids: list[str] = []
        a_ok = [0]
        marks: dict[str, Any] = {}
        async with Client(a_url) as on_a, anyio.create_task_group() as tg:
            for j in range(JOBS):
                args = {"workflow": "serp_analysis", "params": {"keyword": f"shared kw {j:04d}"}}
                started = await on_a.call_tool("start_seo_job", args)
                ids.append(str(bl.structured(started)["job_id"]))

            async def wait_on_a(job_id: str) -> None:
                if await _wait(on_a, job_id):
                    a_ok[0] += 1

            for job_id in ids:
                tg.start_soon(wait_on_a, job_id)
            await anyio.sleep(2.0)  # A takes every lease and opens its streams
            before = await _redis_calls(redis_url)
            await anyio.sleep(BASELINE_S)
            marks["a_alone"] = _rate(before, await _redis_calls(redis_url))

            async def setup(_client: Client) -> list[Any]:
                marks["start"] = await _redis_calls(redis_url)
                return list(ids)

            async def call(
                client: Client, i: int, plan: list[Any], tick: Callable[[], None]
            ) -> bool:
                return await _wait(client, plan[i % len(plan)], tick)

            out = await bw._measured_fan_out(b_url, b.pid, n, setup, call)
            marks["with_b"] = _rate(marks["start"], await _redis_calls(redis_url))
        out.pop("plan", None)
        out.pop("held_s", None)
        return {
            "b": out,
            "a_waits_finished": f"{a_ok[0]}/{JOBS}",
            "first_error": ERRORS[0] if ERRORS else None,
            "redis_a_alone": marks["a_alone"],
            "redis_with_b": marks["with_b"],
        }
    finally:
        for proc in procs:
            bw._stop(proc)
        sandbox.stop()


async def _main(counts: list[int], single: bool, work: Path) -> None:
    for n in counts:
        row: dict[str, Any] = {"n": n, "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
        with br.private_redis(work) as redis_url, br.postgres_schema() as db_url:
            row["two_replicas"] = await shared_waits(work, n, db_url, redis_url)
        if single:
            with br.private_redis(work) as redis_url, br.postgres_schema() as db_url:
                before = await _redis_calls(redis_url)
                one = await bw.jobrelay_waits(
                    work,
                    n,
                    jobs=JOBS,
                    job_seconds=JOB_SECONDS,
                    extra_env={"JOBRELAY_REDIS_URL": redis_url, "JOBRELAY_DB": db_url},
                )
                redis = _rate(before, await _redis_calls(redis_url))
                one.pop("plan", None)
                one.pop("held_s", None)
                row["one_replica"] = {**one, "redis_whole_run": redis}
        row["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1000", help="comma-separated N (default 1000)")
    parser.add_argument("--no-single", action="store_true", help="skip the one-replica run")
    args = parser.parse_args(argv)
    problem = br.services_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-shared-waits-") as tmp:
        anyio.run(_main, [int(c) for c in args.counts.split(",")], not args.no_single, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
