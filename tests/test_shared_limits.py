"""Processes sharing one SQLite ledger share its rate buckets and poll leases (issue 17.1)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process

from mcp_server._clock import FakeClock, ScaledClock, SystemClock
from mcp_server.config import Settings
from mcp_server.limits import (
    InMemoryLimiter,
    SqliteLeases,
    SqliteLimiter,
    make_leases,
    make_limiter,
)
from mcp_server.limits._window import WindowState
from mcp_server.limits.base import WINDOW, BucketKey
from mcp_server.limits.sqlite import holder_alive
from mcp_server.sharing import LEASE_TTL, SharedPoll
from mcp_server.transport import GracefulClock
from tests.conftest import TEST_EPOCH, TEST_SCALE, NewLeases, most_in_any

pytestmark = pytest.mark.anyio

RESEARCH = BucketKey("seamless", "k_aaaaaaaaaaaa", "POST /contacts/research")


async def _three_limiters_send_150(
    make: Callable[[FakeClock], InMemoryLimiter | SqliteLimiter],
    monkeypatch: pytest.MonkeyPatch,
) -> list[float]:
    """When the limiters booked each of 150 acquires, in seconds from the start: the time each
    take was stamped in the bucket, not when `acquire` returned. The fake clock is shared and
    jumps at once when any task sleeps, so a task whose take committed at 0 can resume after
    another "process" moved the clock a window ahead; stamping its return counted it in the
    next window (61 in one window, now and then under load) although the store booked it at 0."""
    clock = FakeClock()  # one clock for the three "processes"
    limiters = [make(clock) for _ in range(3)]
    booked: list[float] = []
    record = WindowState.record

    def booking(state: WindowState, now: float, count: int = 1) -> None:
        booked.extend([now] * count)
        record(state, now, count)

    monkeypatch.setattr(WindowState, "record", booking)
    returned: list[float] = []

    async def one(lim: InMemoryLimiter | SqliteLimiter) -> None:
        await lim.acquire(RESEARCH)
        returned.append(clock.monotonic())

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(150):
                tg.start_soon(one, limiters[i % 3])
    for lim in limiters:
        if isinstance(lim, SqliteLimiter):
            await lim.aclose()
    monkeypatch.setattr(WindowState, "record", record)
    # A shared limiter stamps wall time (clock.time()), the in-process one monotonic time.
    epoch = clock.time() - clock.monotonic() if isinstance(limiters[0], SqliteLimiter) else 0.0
    start = [t - epoch for t in booked]
    assert len(returned) == len(start) == 150
    assert all(b <= r + 1e-6 for b, r in zip(sorted(start), sorted(returned), strict=True))
    return start


async def test_three_limiters_on_one_file_never_exceed_the_window_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jobs.sqlite3"
    shared = await _three_limiters_send_150(
        lambda clock: SqliteLimiter(path, clock, max_inline_wait=1e9), monkeypatch
    )
    assert most_in_any(shared, WINDOW) == 60  # the idle window spent at once, never more
    assert sorted(shared)[:60] == [0.0] * 60
    # The contrast that makes the test able to fail: three in-process limiters book 150 at once.
    alone = await _three_limiters_send_150(InMemoryLimiter, monkeypatch)
    assert most_in_any(alone, WINDOW) == 150


async def test_a_response_seen_by_one_process_corrects_the_others(tmp_path: Path) -> None:
    from mcp_server.upstream import RateLimitHints

    clock = FakeClock()
    path = tmp_path / "jobs.sqlite3"
    a = SqliteLimiter(path, clock, max_inline_wait=100.0)
    b = SqliteLimiter(path, clock, max_inline_wait=100.0)
    try:
        with anyio.fail_after(10):
            await a.observe(RESEARCH, 429, RateLimitHints(remaining=0, reset_after=30.0, credits=7))
            assert 30.0 <= await b.acquire(RESEARCH) <= 31.0  # the reset, jittered by <= 1 s
            assert await b.credits("seamless", RESEARCH.key_fingerprint) == 7
            (snap,) = await b.snapshot()
            assert snap.remaining == 59
    finally:
        await a.aclose()
        await b.aclose()


_WORKER = """
import sys, time, json, anyio
from mcp_server._clock import SystemClock
from mcp_server.limits import SqliteLimiter
from mcp_server.limits.base import BucketKey, BucketSpec

async def main() -> None:
    key = BucketKey("seamless", "k_aaaaaaaaaaaa", "POST /contacts/research")
    lim = SqliteLimiter(sys.argv[1], SystemClock(), max_inline_wait=60.0,
                        spec_for=lambda _k: BucketSpec(8, 1.0))
    print("ready", flush=True)
    sys.stdin.readline()
    sent = []
    async def one() -> None:
        await lim.acquire(key)
        sent.append(time.time())
    async with anyio.create_task_group() as tg:
        for _ in range(int(sys.argv[2])):
            tg.start_soon(one)
    await lim.aclose()
    print(json.dumps(sent), flush=True)

anyio.run(main)
"""


async def _line(process: Process) -> str:
    assert process.stdout is not None
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = await process.stdout.receive(1)
        except anyio.EndOfStream:
            assert process.stderr is not None
            err = b""
            with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError):
                while True:
                    err += await process.stderr.receive()
            msg = f"worker ended early; stderr:\n{err.decode(errors='replace')}"
            raise AssertionError(msg) from None
        data += chunk
    return data.decode().strip()


async def test_real_processes_sharing_one_file_share_the_window(tmp_path: Path) -> None:
    """Three OS processes, 8 sends each, a bucket of 8 per second: at most 8 in any window."""
    path = tmp_path / "jobs.sqlite3"
    with anyio.fail_after(60):
        processes = [
            await anyio.open_process([sys.executable, "-c", _WORKER, str(path), "8"])
            for _ in range(3)
        ]
        try:
            for p in processes:
                assert await _line(p) == "ready"
            for p in processes:  # start together, so without sharing they would overlap
                assert p.stdin is not None
                await p.stdin.send(b"go\n")
            sent = [t for p in processes for t in json.loads(await _line(p))]
            for p in processes:
                assert await p.wait() == 0
        finally:
            for p in processes:
                if p.returncode is None:
                    p.kill()
                await p.aclose()  # pipes closed here, not left to the garbage collector
    assert len(sent) == 24
    # 0.9 s rather than 1.0: the time is read after `acquire` returns, a few ms late.
    assert most_in_any(sent, 0.9) <= 8
    assert max(sent) - min(sent) >= 2 * 1.0  # 24 sends of a shared 8/s need two more windows


# --- leases -----------------------------------------------------------------------------------


async def test_a_lease_is_taken_over_when_its_holder_stops_renewing(
    new_leases: NewLeases,
) -> None:
    clock = FakeClock()
    a = new_leases(clock, "a")
    b = new_leases(clock, "b")
    try:
        with anyio.fail_after(10):
            assert await a.hold("poll", ttl=10.0)
            assert not await b.hold("poll", ttl=10.0)
            clock.advance(5.0)
            assert await a.hold("poll", ttl=10.0)  # renewed: now good until 15
            clock.advance(9.0)
            assert not await b.hold("poll", ttl=10.0)
            clock.advance(2.0)  # a stopped renewing (died): expired at 15
            assert await b.hold("poll", ttl=10.0)
            assert not await a.hold("poll", ttl=10.0)
            await b.release("poll")
            assert await a.hold("poll", ttl=10.0)  # a release hands over at once
    finally:
        await a.aclose()
        await b.aclose()


class _Upstream:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[list[str]] = []
        self.done_at: dict[str, float] = {}

    async def poll(self, ids: Sequence[str]) -> Mapping[str, dict[str, str]]:
        self.calls.append(list(ids))
        now = self.clock.monotonic()
        return {
            i: {"id": i, "status": "done" if now >= self.done_at.get(i, 0.0) else "researching"}
            for i in ids
        }


def _shared(name: str, leases: Any, upstream: _Upstream) -> SharedPoll[dict[str, str]]:
    return SharedPoll(
        name=name,
        poll=upstream.poll,
        leases=leases,
        encode=lambda item: item,
        decode=dict,
        is_terminal=lambda item: item["status"] == "done",
        max_ids=100,
    )


async def test_a_killed_holders_lease_is_taken_over_at_once(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    path = tmp_path / "jobs.sqlite3"
    dead = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
    gone = f"{int(dead.stdout)}-deadbeef"  # a process that has exited: its pid is free
    assert holder_alive(f"{os.getpid()}-cafe") is True
    assert holder_alive(gone) is False
    a = SqliteLeases(path, clock, holder=gone)
    b = SqliteLeases(path, clock, holder="b")
    c = SqliteLeases(path, clock, holder="c")
    try:
        with anyio.fail_after(10):
            assert await a.hold("poll", ttl=15.0)
            assert await b.hold("poll", ttl=15.0)  # a's process is gone: no 15 s wait
            assert not await c.hold("poll", ttl=15.0)
    finally:
        await a.aclose()
        await b.aclose()
        await c.aclose()


async def test_a_closing_holder_lets_its_leases_go(new_leases: NewLeases) -> None:
    clock = FakeClock()
    a, b, c = new_leases(clock, "a"), new_leases(clock, "b"), new_leases(clock, "c")
    try:
        with anyio.fail_after(10):
            assert await a.hold("poll", ttl=15.0)
            assert await a.hold("other", ttl=15.0)
            assert not await b.hold("poll", ttl=15.0)
            await a.aclose()  # a clean exit: no 15 s wait for the others
            assert await b.hold("poll", ttl=15.0)
            assert await c.hold("other", ttl=15.0)
            assert not await c.hold("poll", ttl=15.0)  # b's now, and b is still open
    finally:
        await b.aclose()
        await c.aclose()


async def test_one_process_polls_for_all_and_the_others_read_what_it_publishes(
    new_leases: NewLeases,
) -> None:
    clock = FakeClock()
    up_a, up_b = _Upstream(clock), _Upstream(clock)
    up_a.done_at = up_b.done_at = {"r1": 10.0, "r2": 20.0}
    la, lb = new_leases(clock, "a"), new_leases(clock, "b")
    a, b = (
        _shared("seamless-poll:t:contacts", la, up_a),
        _shared("seamless-poll:t:contacts", lb, up_b),
    )
    try:
        with anyio.fail_after(10):
            assert (await a(["r1"]))["r1"]["status"] == "researching"  # a holds the lease
            assert await b(["r2"]) == {}  # b asks; nothing published yet; no upstream call
            await a(["r1"])  # a polls b's id too and publishes it
            assert up_a.calls[-1] == ["r1", "r2"]
            assert (await b(["r2"]))["r2"]["status"] == "researching"
            clock.advance(10.0)
            assert (await a(["r1"]))["r1"]["status"] == "done"  # a is done: lets the lease go
            clock.advance(10.0)
            assert (await b(["r2"]))["r2"]["status"] == "done"  # b took over and polled itself
            assert up_b.calls == [["r2"]]
            assert (a.upstream_calls, b.upstream_calls, b.board_reads) == (3, 1, 2)
    finally:
        await la.aclose()
        await lb.aclose()


async def test_a_dead_pollers_lease_passes_to_a_waiting_process(new_leases: NewLeases) -> None:
    clock = FakeClock()
    up_a, up_b = _Upstream(clock), _Upstream(clock)
    up_a.done_at = up_b.done_at = {"r1": 100.0, "r2": 100.0}
    la, lb = new_leases(clock, "a"), new_leases(clock, "b")
    a, b = _shared("p", la, up_a), _shared("p", lb, up_b)
    try:
        with anyio.fail_after(10):
            await a(["r1"])
            await b(["r2"])
            assert up_b.calls == []
            # a dies (never calls or renews again); b keeps asking until the lease expires.
            for _ in range(3):
                clock.advance(1.3)
                await b(["r2"])
            assert up_b.calls == []
            clock.advance(0.2)  # 4.1 s after a's last renewal: its lease (LEASE_TTL) expired
            assert LEASE_TTL == 4.0
            await b(["r2"])
            assert up_b.calls == [["r2"]]
    finally:
        await la.aclose()
        await lb.aclose()


async def test_a_live_holder_keeps_its_short_lease_and_a_killed_one_loses_it_in_seconds(
    new_leases: NewLeases,
) -> None:
    """Rounds 10 s apart (longer than the 4 s lease): the holder's renewals keep it; once the
    holder is killed (its tasks end, nothing released) the other process polls within about
    LEASE_TTL (issue 17.3)."""
    clock = ScaledClock(5.0, epoch=TEST_EPOCH)
    up_a, up_b = _Upstream(clock), _Upstream(clock)  # type: ignore[arg-type]
    up_a.done_at = up_b.done_at = {"r1": 1e12, "r2": 1e12}
    la, lb = new_leases(clock, "a"), new_leases(clock, "b")
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as b_tasks:
                b = SharedPoll(
                    name="p",
                    poll=up_b.poll,
                    leases=lb,
                    encode=lambda item: item,
                    decode=dict,
                    is_terminal=lambda item: item["status"] == "done",
                    clock=clock,
                    spawn=b_tasks.start_soon,
                )
                async with anyio.create_task_group() as a_tasks:  # process a
                    a = SharedPoll(
                        name="p",
                        poll=up_a.poll,
                        leases=la,
                        encode=lambda item: item,
                        decode=dict,
                        is_terminal=lambda item: item["status"] == "done",
                        clock=clock,
                        spawn=a_tasks.start_soon,
                    )
                    await a(["r1"])
                    for _ in range(2):
                        await clock.sleep(10.0)  # 2.5 leases without a round
                        await b(["r2"])  # a still holds it: b asks and reads, polls nothing
                        assert up_b.calls == []
                        await a(["r1"])
                    assert up_b.calls == []
                    killed_at = clock.monotonic()
                    a_tasks.cancel_scope.cancel()  # kill -9: renewals stop, nothing released
                while not up_b.calls:
                    await clock.sleep(0.25)
                    await b(["r2"])
                took = clock.monotonic() - killed_at
                b_tasks.cancel_scope.cancel()
    finally:
        await la.aclose()
        await lb.aclose()
    assert up_a.calls[-1] == ["r1", "r2"]  # a polled b's id while it held the lease
    assert LEASE_TTL - 1.0 <= took <= LEASE_TTL + 1.5, took


# --- chosen from the settings ------------------------------------------------------------------


async def test_a_file_ledger_on_the_system_clock_shares_buckets_and_leases(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    served = GracefulClock(SystemClock())  # what `jobrelay serve` runs on (stdio and HTTP)
    limiter = make_limiter(settings, clock=served)
    leases = make_leases(settings, clock=served)
    assert isinstance(limiter, SqliteLimiter)
    assert isinstance(leases, SqliteLeases)
    assert limiter.path == settings.db_path
    await limiter.aclose()
    await leases.aclose()


async def test_an_in_memory_database_or_a_test_clock_keeps_the_buckets_in_process(
    make_settings: Callable[..., Settings],
) -> None:
    scaled = ScaledClock(TEST_SCALE, epoch=TEST_EPOCH)
    assert isinstance(make_limiter(make_settings(), clock=scaled), InMemoryLimiter)
    assert make_leases(make_settings(), clock=scaled) is None
    memory = make_settings(JOBRELAY_DB=":memory:")
    assert isinstance(make_limiter(memory, clock=SystemClock()), InMemoryLimiter)
    assert make_leases(memory, clock=SystemClock()) is None
