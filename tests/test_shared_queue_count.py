"""A shared bucket counts each caller of its own process once (issue 17 item 5).

`SharedWindowLimiter.acquire` predicts a caller's wait behind the callers its process has
queued. A queued caller whose take committed while the next caller's peek waited for the
store used to be counted twice, in the stored window and in the queue: the window's last free
slot was refused with a wait of a whole window, and `bench.py --only shared` finished one
window late (1.062-1.067 x N/rate) in about one run of three.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

from mcp_server._clock import FakeClock
from mcp_server.errors import LocalRateLimited
from mcp_server.limits import SqliteLimiter
from mcp_server.limits._window import WindowState
from mcp_server.limits.base import BucketKey
from tests.conftest import TEST_EPOCH

pytestmark = pytest.mark.anyio

RESEARCH = BucketKey("seamless", "k_aaaaaaaaaaaa", "POST /contacts/research")


class _TakeProbe(SqliteLimiter):
    """Can hold one take inside its transaction (the store's lock held, as a take in flight
    holds it) until another caller of the process waits for that lock: the moment the shared
    bench hit by chance."""

    def __init__(self, path: Path, clock: FakeClock) -> None:
        super().__init__(path, clock, max_inline_wait=20.0)
        self.hold_next_take = False
        self.taking = anyio.Event()
        self.resume = threading.Event()

    def _store(self, conn: sqlite3.Connection, key: BucketKey, state: WindowState) -> None:
        super()._store(conn, key, state)
        if self.hold_next_take:  # in the worker thread, inside the take's transaction
            self.hold_next_take = False
            anyio.from_thread.run_sync(self.taking.set)
            self.resume.wait(10)

    def waiting_for_store(self) -> int:
        """Callers of this process waiting for the store's lock (a peek or a take)."""
        return int(self._db._lock.statistics().tasks_waiting)


async def test_the_last_two_free_slots_go_to_two_callers_of_one_process(tmp_path: Path) -> None:
    clock = FakeClock(start=TEST_EPOCH)
    limiter = _TakeProbe(tmp_path / "jobs.sqlite3", clock)
    waited: dict[str, float] = {}
    refused: list[float] = []

    async def send(name: str) -> None:
        try:
            waited[name] = await limiter.acquire(RESEARCH)
        except LocalRateLimited as exc:
            refused.append(exc.retry_after)

    try:
        with anyio.fail_after(10):
            for _ in range(58):  # the window holds 58 sends: two slots left
                await limiter.acquire(RESEARCH)
            limiter.hold_next_take = True
            async with anyio.create_task_group() as tg:
                tg.start_soon(send, "first")
                await limiter.taking.wait()  # queued, its take in its transaction
                tg.start_soon(send, "second")
                while limiter.waiting_for_store() == 0:  # the second counted the queue
                    await anyio.lowlevel.checkpoint()
                limiter.resume.set()
    finally:
        await limiter.aclose()

    assert refused == []  # before the fix: [62.5], the second caller refused a free slot
    assert waited == {"first": 0.0, "second": 0.0}
    assert clock.slept == []
