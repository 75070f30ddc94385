"""Latency of the agent's own calls while many AgentSEO jobs are followed (issue 14.13).

    python tools/follow_load.py                 # 300 followed jobs, 20 rounds
    python tools/follow_load.py --jobs 90       # below the old 100-connection pool
    PYTHONPATH=/path/to/other/checkout python tools/follow_load.py   # compare two versions

In-process jobrelay on its embedded sandbox (real loopback HTTP, so connection pools are
real; virtual time x10 so waits outlast the run, jobs never finish). Starts `--jobs` SEO jobs,
follows each with `wait_for_job`, then times `--rounds` rounds of `start_seo_job` plus
`get_job_status`, one after another. Prints p50/p95/max wall-clock per tool and how many
calls failed (by error code). Nothing leaves the machine. Figures: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from mcp_server._clock import ScaledClock
from mcp_server.config import load_settings
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.server import build_server

SCALE = 10.0
CALL_LIMIT_SECONDS = 60.0


def _seo(keyword: str) -> dict[str, Any]:
    return {"workflow": "serp_analysis", "params": {"keyword": keyword}}


def _code(result: Any) -> str | None:
    if not result.is_error:
        return None
    error = (result.structured_content or {}).get("error") or {}
    return str(error.get("code", "unknown"))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(jobs: int, rounds: int) -> dict[str, Any]:
    clock = ScaledClock(SCALE)
    state = SandboxState(
        clock=clock, faults=Faults(time_scale=SCALE, job_seconds=1e6, agentseo_plan="agency")
    )
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            {
                "JOBRELAY_DB": str(Path(tmp) / "jobs.db"),
                "AGENTSEO_PLAN": "agency",
                "JOBRELAY_MAX_WAIT_SECONDS": "300",
            }
        )
        server = build_server(settings, clock=clock, sandbox_state=state)
        timings: dict[str, list[float]] = {"start_seo_job": [], "get_job_status": []}
        failures: Counter[str] = Counter()
        async with Client(server) as client:
            ids = []
            for n in range(jobs):
                started = await client.call_tool("start_seo_job", _seo(f"kw {n}"))
                ids.append((started.structured_content or {})["job_id"])
            under_way = anyio.Event()
            count = 0

            async def follow(job_id: str) -> None:
                seen = False

                async def on_progress(
                    progress: float, total: float | None, message: str | None
                ) -> None:
                    del progress, total, message
                    nonlocal seen, count
                    if not seen:
                        seen = True
                        count += 1
                        if count == jobs:
                            under_way.set()

                await client.call_tool(
                    "wait_for_job",
                    {"job_id": job_id, "wait_seconds": 300},
                    progress_callback=on_progress,
                )

            async with anyio.create_task_group() as tg:
                for job_id in ids:
                    tg.start_soon(follow, job_id)
                with anyio.fail_after(120):
                    await under_way.wait()
                for n in range(rounds):
                    for tool, args in (
                        ("start_seo_job", _seo(f"new {n}")),
                        ("get_job_status", {"job_ids": [ids[n % len(ids)]]}),
                    ):
                        began = time.perf_counter()
                        with anyio.move_on_after(CALL_LIMIT_SECONDS) as scope:
                            result = await client.call_tool(tool, args)
                        timings[tool].append(time.perf_counter() - began)
                        code = "no_answer_in_60s" if scope.cancelled_caught else _code(result)
                        if code is not None:
                            failures[f"{tool}: {code}"] += 1
                tg.cancel_scope.cancel()
    return {"timings": timings, "failures": dict(failures)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.rounds < 1:
        parser.error("--jobs and --rounds must be at least 1")
    report = anyio.run(run, args.jobs, args.rounds)
    print(f"followed jobs: {args.jobs}, rounds: {args.rounds}")
    for tool, values in report["timings"].items():
        ms = [v * 1000 for v in values]
        print(
            f"{tool:15} p50 {statistics.median(ms):8.1f} ms  p95 {_pct(ms, 0.95):8.1f} ms  "
            f"max {max(ms):8.1f} ms  (n={len(ms)})"
        )
    print(f"failed calls: {report['failures'] or 'none'}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
