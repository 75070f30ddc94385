"""jobrelay chaos soak: start/wait cycles under injected upstream faults and server kills.

    python tools/chaos.py --quick            # CI smoke: a few cycles, two kills, < 1 minute
    python tools/chaos.py                    # the full soak behind BENCHMARKS.md
    python tools/chaos.py --cycles 190 --seconds 900 --seed 7  # <= ~190 (list pages: 100)
    python tools/chaos.py --quick --scenarios-only   # just the fault scenarios (~10 s)

Fault scenarios (`tools/_scenarios.py`, issue 20) run first in every mode: jobrelay
in-process against a stalling, lying fake upstream on loopback (stalls, implausible credits
headers, a 202 with 100,000 ids, a 30 % 5xx rate with the breaker open), each checking a
promise (deadline held, research not locked out, absurd answers refused, finished work
reported within the announced time). `--scenarios a,b` picks some, `--scenarios none` skips
them.

Topology (loopback only): an external `jobrelay sandbox` subprocess (its counters survive
server restarts), and `python -m mcp_server serve` over stdio driven by `mcp.Client`, with one
ledger file kept across restarts. Each cycle picks a fault profile (5xx, latency, SSE drops,
malformed JSON, a mix, or none), starts one research or SEO job and waits for it briefly;
planned cycles SIGKILL the server in the middle of the start or the wait, then restart it.
The driver behaves like a careful agent: it never resubmits a start (jobrelay's advice says
to check list_jobs/get_job_status instead), so every duplicate the sandbox sees was jobrelay's.

Reported (targets all 0):
  lost_jobs               job ids returned to the client that list_jobs does not show later
  duplicate_paid_posts    credit-spending POSTs the sandbox received twice (same body)
  bad_results             tool results with a traceback, no structure, or an error without
                          a known code and next step; JSON-RPC errors not caused by a kill
  stuck_without_advice    jobs still non-terminal at the end whose status gives no advice

Every loop is bounded by `--cycles` and `--seconds`; processes are always cleaned up. Exit
status 0 when all four are 0, 1 otherwise, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _benchlib as bl  # tools/ is not a package; see _benchlib's docstring
import _scenarios
import anyio
import anyio.abc
from mcp import Client

from mcp_server.models import JobState

PROFILES: dict[str, dict[str, Any]] = {
    "none": {},
    "5xx": {"error_rate": 0.3},
    "latency": {"latency_ms": 300},
    "sse_drops": {"sse_drop_after_events": 2},
    "malformed": {"malformed_rate": 0.3},
    "mixed": {
        "error_rate": 0.15,
        "malformed_rate": 0.15,
        "latency_ms": 120,
        "sse_drop_after_events": 3,
    },
}
CLEAR = {"error_rate": 0.0, "latency_ms": 0.0, "sse_drop_after_events": None, "malformed_rate": 0.0}
CALL_TIMEOUT = 90.0
"""No single tool call may take longer (jobrelay caps its own waits at 45 s)."""
STATES = tuple(JobState)


@dataclass
class Tally:
    cycles: int = 0
    kills: int = 0
    restarts: int = 0
    calls: int = 0
    error_results: dict[str, int] = field(default_factory=dict)
    bad_results: list[str] = field(default_factory=list)
    killed_calls: int = 0
    returned_ids: dict[str, str] = field(default_factory=dict)
    """job id -> the tool that returned it."""
    missing_after_restart: list[str] = field(default_factory=list)
    profiles: dict[str, int] = field(default_factory=dict)


class Server:
    """One `python -m mcp_server serve` over stdio, owned by its own task.

    The MCP client runs a task group; when the server process dies that group is cancelled.
    Keeping the client in a task of its own (fed through a channel) confines that
    cancellation to the session, so the soak loop only sees "the call did not return".
    """

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self._requests: Any = None
        self.pid: int | None = None
        self.killed = False

    async def open(self, tg: anyio.abc.TaskGroup) -> None:
        import os

        before = set(bl.children_of(os.getpid(), "mcp_server serve"))
        send, receive = anyio.create_memory_object_stream[tuple[str, dict[str, Any], Any]](0)
        ready = anyio.Event()
        self.killed = False
        tg.start_soon(self._serve, receive, ready, before)
        with anyio.fail_after(60):
            await ready.wait()
        if self.pid is None:
            raise RuntimeError("jobrelay serve did not start")
        self._requests = send

    async def _serve(self, requests: Any, ready: anyio.Event, before: set[int]) -> None:
        import os

        try:
            async with Client(bl.stdio_params(self._env)) as client, requests:
                found = [
                    p for p in bl.children_of(os.getpid(), "mcp_server serve") if p not in before
                ]
                self.pid = found[0] if found else None
                ready.set()
                async for tool, args, reply in requests:
                    async with reply:
                        try:
                            with anyio.fail_after(CALL_TIMEOUT):
                                result = await client.call_tool(tool, args)
                        except Exception as exc:  # noqa: BLE001  # reported to the caller
                            await reply.send(("failed", f"{type(exc).__name__}: {exc}"))
                        else:
                            await reply.send(("ok", result))
        except Exception:  # noqa: BLE001, S110  # the transport of a killed server fails: expected
            pass
        finally:
            ready.set()

    async def request(self, tool: str, args: dict[str, Any]) -> tuple[str, Any]:
        """("ok", result), ("failed", why) or ("gone", None) when the session died meanwhile."""
        reply_send, reply_receive = anyio.create_memory_object_stream[tuple[str, Any]](1)
        try:
            await self._requests.send((tool, args, reply_send))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            reply_send.close()
            reply_receive.close()
            return "gone", None
        async with reply_receive:
            try:
                return await reply_receive.receive()
            except anyio.EndOfStream:
                return "gone", None

    def kill(self) -> bool:
        if self.pid is not None and bl.kill_pid(self.pid, signal.SIGKILL):
            self.killed = True
        return self.killed

    async def close(self) -> None:
        if self._requests is not None:
            await self._requests.aclose()
            self._requests = None
        if self.pid is not None:
            with anyio.move_on_after(10):
                while bl.alive(self.pid):  # noqa: ASYNC110  # no event for another process's exit
                    await anyio.sleep(0.02)
            bl.kill_pid(self.pid, signal.SIGKILL)  # never leave a server behind
        self.pid = None


async def _call(
    server: Server, tally: Tally, tool: str, args: dict[str, Any], *, kill_after: float | None
) -> tuple[Any, bool]:
    """One tool call, optionally with a SIGKILL `kill_after` seconds into it.

    Returns (result or None, killed). A failure of the call itself counts as a bad result
    unless the server was killed meanwhile.
    """
    killed = False
    tally.calls += 1
    async with anyio.create_task_group() as tg:
        if kill_after is not None:

            async def killer() -> None:
                nonlocal killed
                await anyio.sleep(kill_after)
                killed = server.kill()

            tg.start_soon(killer)
        status, value = await server.request(tool, args)
        tg.cancel_scope.cancel()
    result = value if status == "ok" else None
    if result is not None:
        problems = bl.result_problems(result)
        if problems:
            tally.bad_results.append(f"{tool}: {', '.join(problems)}: {bl.text_of(result)[:160]}")
        err = bl.error_of(result)
        if err is not None:
            code = str(err.get("code"))
            tally.error_results[code] = tally.error_results.get(code, 0) + 1
    elif killed or server.killed:
        tally.killed_calls += 1
    else:
        tally.bad_results.append(f"{tool}: {status}: {value}"[:300])
    return result, killed


async def _listed_ids(server: Server, tally: Tally) -> set[str]:
    """Every job id list_jobs shows, enumerated per provider and state (100 per page)."""
    found: set[str] = set()
    for provider in ("seamless", "agentseo"):
        for state in STATES:
            result, _ = await _call(
                server,
                tally,
                "list_jobs",
                {"provider": provider, "state": state, "limit": 100},
                kill_after=None,
            )
            jobs = bl.structured(result).get("jobs", []) if result is not None else []
            if len(jobs) >= 100:
                # list_jobs pages have no cursor: a fuller page would hide jobs from the census
                # and count them as lost. 150 cycles leave ~75 per provider.
                raise RuntimeError(
                    f"more than 99 {provider} jobs are {state}: run fewer --cycles per soak"
                )
            found.update(str(job.get("job_id")) for job in jobs)
    return found


async def _restart(server: Server, tally: Tally, tg: anyio.abc.TaskGroup) -> None:
    await server.close()
    await server.open(tg)
    tally.restarts += 1
    listed = await _listed_ids(server, tally)
    tally.missing_after_restart += [j for j in tally.returned_ids if j not in listed]


async def _cycles(
    *,
    args: argparse.Namespace,
    rng: random.Random,
    tally: Tally,
    sandbox: bl.ExternalSandbox,
    server: Server,
    tg: anyio.abc.TaskGroup,
    started: float,
) -> dict[str, Any]:
    """The bounded soak, then the settle phase and the final census."""
    kill_every = max(2, args.kill_every)
    next_kill = rng.randint(2, kill_every)
    sandbox.faults(initial_credits=10**6)
    await server.open(tg)
    run_tag = f"{args.seed}"
    while tally.cycles < args.cycles and time.monotonic() - started < args.seconds:
        cycle = tally.cycles
        tally.cycles += 1
        profile = rng.choice(list(PROFILES))
        tally.profiles[profile] = tally.profiles.get(profile, 0) + 1
        sandbox.faults(**{**CLEAR, **PROFILES[profile]})
        kill_now = cycle + 1 == next_kill
        kill_in_start = kill_now and rng.random() < 0.5
        if rng.random() < 0.5:
            n = rng.randint(1, 3)
            contacts = [
                {"name": f"Chaos Person{run_tag}x{cycle}x{i}", "company": f"Soakworks {cycle}"}
                for i in range(n)
            ]
            tool = "start_research"
            start_args: dict[str, Any] = {"kind": "contacts", "contacts": contacts}
        else:
            tool = "start_seo_job"
            start_args = {
                "workflow": "serp_analysis",
                "params": {"keyword": f"chaos kw {run_tag} {cycle}"},
            }
        result, killed = await _call(
            server,
            tally,
            tool,
            start_args,
            kill_after=rng.uniform(0.02, 0.3) if kill_in_start else None,
        )
        job_id = bl.structured(result).get("job_id") if result is not None else None
        if job_id:
            tally.returned_ids[str(job_id)] = tool
        if not killed and job_id and bl.error_of(result) is None:
            wait = float(rng.choice([0.5, 1.0, 3.0]))
            kill_after = rng.uniform(0.1, wait) if kill_now and not kill_in_start else None
            _, killed = await _call(
                server,
                tally,
                "wait_for_job",
                {"job_id": job_id, "wait_seconds": wait},
                kill_after=kill_after,
            )
        if kill_now:
            if not killed:
                killed = server.kill()  # the call ended first: kill between calls instead
            tally.kills += killed
            next_kill = cycle + 1 + rng.randint(2, kill_every)
            await _restart(server, tally, tg)
    # settle: no faults, a fresh server, every job driven to an end (bounded)
    sandbox.faults(**CLEAR)
    await _restart(server, tally, tg)
    listed = await _listed_ids(server, tally)
    for job_id in sorted(listed):
        for _ in range(3):
            result, _ = await _call(
                server,
                tally,
                "wait_for_job",
                {"job_id": job_id, "wait_seconds": 10},
                kill_after=None,
            )
            state = bl.structured(result).get("state") if result is not None else None
            if state in bl.TERMINAL or state == "unknown" or bl.error_of(result) is not None:
                break
    stuck: list[str] = []
    states: dict[str, int] = {}
    ids = sorted(await _listed_ids(server, tally))
    for chunk in range(0, len(ids), 100):
        result, _ = await _call(
            server, tally, "get_job_status", {"job_ids": ids[chunk : chunk + 100]}, kill_after=None
        )
        answer = bl.structured(result) if result is not None else {}
        steps = answer.get("next_steps") or []
        for job in answer.get("jobs", []):
            state = str(job.get("state"))
            states[state] = states.get(state, 0) + 1
            if state in bl.TERMINAL:
                continue
            ref = job.get("next_step_ref")
            has_advice = (
                bool(job.get("advice"))
                # a many-job status says each distinct step once, in `next_steps`
                or (isinstance(ref, int) and 0 <= ref < len(steps) and bool(steps[ref]))
                or bool((job.get("error") or {}).get("next_step"))
            )
            if not has_advice:
                stuck.append(f"{job.get('job_id')} ({state})")
    lost = sorted(j for j in tally.returned_ids if j not in set(ids))
    stats = sandbox.stats()
    return {"ledger_jobs": len(ids), "states": states, "stuck": stuck, "lost": lost, "stats": stats}


async def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)  # noqa: S311  # a reproducible soak, not a secret
    tally = Tally()
    sandbox = bl.ExternalSandbox(seed=args.seed, job_seconds=args.job_seconds)
    sandbox.start()
    env = bl.server_env(
        sandbox.seamless_url,
        sandbox.agentseo_url,
        work / "chaos.sqlite3",
        JOBRELAY_MAX_WAIT_SECONDS="20",
    )
    server = Server(env)
    started = time.monotonic()
    final: dict[str, Any] = {}
    try:
        async with anyio.create_task_group() as tg:
            try:
                final = await _cycles(
                    args=args,
                    rng=rng,
                    tally=tally,
                    sandbox=sandbox,
                    server=server,
                    tg=tg,
                    started=started,
                )
            finally:
                with anyio.CancelScope(shield=True):
                    await server.close()
    finally:
        if server.pid is not None:
            bl.kill_pid(server.pid)
        sandbox.stop()
    stats = final.get("stats", {})
    return {
        "cycles": tally.cycles,
        "seconds": round(time.monotonic() - started, 1),
        "kills": tally.kills,
        "restarts": tally.restarts,
        "tool_calls": tally.calls,
        "calls_cut_by_kill": tally.killed_calls,
        "profiles": tally.profiles,
        "error_results_by_code": tally.error_results,
        "jobs_returned_to_client": len(tally.returned_ids),
        "ledger_jobs": final.get("ledger_jobs"),
        "final_states": final.get("states"),
        "paid_posts": stats.get("paid_posts"),
        "upstream_responses": stats.get("responses"),
        "lost_jobs": len(final.get("lost", [])),
        "lost_job_ids": final.get("lost", []),
        "missing_from_list_after_a_restart": sorted(set(tally.missing_after_restart)),
        "duplicate_paid_posts": stats.get("duplicate_paid_posts"),
        "bad_results": len(tally.bad_results),
        "bad_result_samples": tally.bad_results[:10],
        "stuck_without_advice": len(final.get("stuck", [])),
        "stuck_samples": final.get("stuck", [])[:10],
    }


#: Where the JSON goes without --json: the system's temporary directory, never the working
#: tree (a run from the repository root used to leave chaos-results.json there).
DEFAULT_JSON = Path(tempfile.gettempdir()) / "jobrelay-chaos-results.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: few cycles, two kills")
    parser.add_argument("--cycles", type=int, help="start/wait cycles (default 150; quick 10)")
    parser.add_argument(
        "--seconds", type=float, help="time limit in seconds (default 600; quick 45)"
    )
    parser.add_argument(
        "--kill-every", type=int, help="a kill every 2..N cycles (default 8; quick 4)"
    )
    parser.add_argument("--job-seconds", type=float, default=1.5, help="sandbox job duration")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--json",
        default=str(DEFAULT_JSON),
        help=f"where to write the JSON (default {DEFAULT_JSON}, outside the repository)",
    )
    parser.add_argument(
        "--scenarios",
        default="all",
        help="fault scenarios to run first: all (default), none, or names separated by commas",
    )
    parser.add_argument(
        "--scenarios-only", action="store_true", help="run the fault scenarios, not the soak"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.cycles = args.cycles or (10 if args.quick else 150)
    args.seconds = args.seconds or (45.0 if args.quick else 600.0)
    args.kill_every = args.kill_every or (4 if args.quick else 8)
    if args.cycles < 1 or args.seconds <= 0:
        parser.error("--cycles and --seconds must be positive")
    names: list[str] | None = None
    if args.scenarios not in ("all", "none"):
        names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
        known = {sc.name for sc in _scenarios.SCENARIOS}
        if not set(names) <= known:
            parser.error(
                f"--scenarios: unknown {sorted(set(names) - known)}; known {sorted(known)}"
            )
    if args.scenarios == "none" and args.scenarios_only:
        parser.error("--scenarios none with --scenarios-only leaves nothing to run")
    # The scenarios' lies are logged as warnings by design; the table reports what matters.
    logging.getLogger("mcp_server.upstream").setLevel(logging.ERROR)
    started = datetime.now(UTC)
    scenarios: dict[str, Any] | None = None
    if args.scenarios != "none":
        scenarios = anyio.run(lambda: _scenarios.run_scenarios(names))
    if args.scenarios_only:
        return _report_scenarios_only(args, started, scenarios)
    with tempfile.TemporaryDirectory(prefix="jobrelay-chaos-") as tmp:
        result = anyio.run(soak, args, Path(tmp))
    ok = all(
        result[k] == 0
        for k in ("lost_jobs", "duplicate_paid_posts", "bad_results", "stuck_without_advice")
    ) and (scenarios is None or scenarios["ok"])
    report = {
        "tool": "chaos",
        "mode": "quick" if args.quick else "full",
        "ok": ok,
        "started_at": started.isoformat(timespec="seconds"),
        "machine": bl.machine_info(),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "result": result,
        "scenarios": scenarios,
    }
    bl.write_json(Path(args.json), report)
    print(f"chaos: results written to {args.json}", file=sys.stderr)
    checks = [
        bl.Check(
            "chaos",
            "cycles / kills / restarts",
            f"{result['cycles']} / {result['kills']} / {result['restarts']}",
            "bounded",
            None,
        ),
        bl.Check(
            "chaos",
            "tool calls (cut by a kill)",
            f"{result['tool_calls']} ({result['calls_cut_by_kill']})",
            "info",
            None,
        ),
        bl.Check(
            "chaos",
            "jobs returned / in ledger",
            f"{result['jobs_returned_to_client']} / {result['ledger_jobs']}",
            "info",
            None,
        ),
        bl.Check("chaos", "lost jobs", result["lost_jobs"], "0", result["lost_jobs"] == 0),
        bl.Check(
            "chaos",
            "duplicate credit-spending POSTs",
            result["duplicate_paid_posts"],
            "0",
            result["duplicate_paid_posts"] == 0,
        ),
        bl.Check(
            "chaos",
            "traceback / unparseable results",
            result["bad_results"],
            "0",
            result["bad_results"] == 0,
        ),
        bl.Check(
            "chaos",
            "non-terminal jobs without advice",
            result["stuck_without_advice"],
            "0",
            result["stuck_without_advice"] == 0,
        ),
    ]
    if scenarios is not None:
        checks += _scenarios.checks(scenarios)
    print(bl.render_table(checks))
    print(f"\n{result['seconds']} s; final states {result['final_states']}; JSON: {args.json}")
    if scenarios is not None:
        print(f"fault scenarios: {scenarios['seconds']} s (time scale {scenarios['time_scale']})")
    return 0 if ok else 1


def _report_scenarios_only(
    args: argparse.Namespace, started: datetime, scenarios: dict[str, Any] | None
) -> int:
    assert scenarios is not None  # main() refuses --scenarios none here
    report = {
        "tool": "chaos",
        "mode": "scenarios",
        "ok": scenarios["ok"],
        "started_at": started.isoformat(timespec="seconds"),
        "machine": bl.machine_info(),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "scenarios": scenarios,
    }
    bl.write_json(Path(args.json), report)
    print(bl.render_table(_scenarios.checks(scenarios)))
    print(f"\n{scenarios['seconds']} s (time scale {scenarios['time_scale']}); JSON: {args.json}")
    return 0 if scenarios["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
