"""Bounded watching shared between waiters (DESIGN.md section 2.5).

- `PollCoalescer`: one poll loop per (tenant, Seamless endpoint). Every waiter registers the
  request ids it cares about; each round polls all outstanding ids together (one call per
  100), so 100 waits cost one upstream call per interval, not 100. When a round first sees
  the ids of a job end, it may sweep the ids of the jobs submitted with it at once, on the
  poll bucket's reserve (`sweep_plan`).
- What waiters share with other processes and replicas (`SharedPoll`, `ResultFeed`, the
  leases and the `Fanout`) is in `sharing.py`.
- `StreamHub`: one follower per AgentSEO job (SSE, or polling when there is no stream),
  shared by every waiter on that job; with a `Fanout` (Redis) and leases, by every replica's.
- With a `pushes.PushReconciler` (webhook deliveries, issue 18), a `PollCoalescer` polls the
  ids pushes stand in for only on a slow reconciliation cadence. A pushed item reaches the
  waiters through `deliver`, the path another replica's poll results take (`ResultFeed`).

Both run their loops in a long-lived task group owned by the server lifespan, never in the
tool call's scope: cancelling a wait never stops the loop other waiters rely on, and never
touches the upstream job. Loops stop by themselves when nobody is watching.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

from mcp_server import telemetry
from mcp_server._clock import Clock
from mcp_server.errors import DeadlineExceeded, JobRelayError, RetryBudgetExhausted
from mcp_server.limits import spend_reserve
from mcp_server.pushes import PushReconciler, due_ids
from mcp_server.sharing import RENEW_EVERY, Spawn, StreamSharing, keep_renewed

T = TypeVar("T")
log = logging.getLogger(__name__)
PROBE_INTERVAL = 10.0
"""While an upstream looks degraded (breaker open) or stalls, poll rounds continue this often
at most, as probes: the only calls made, never later than the breaker's announced instant."""
SWEEP_HORIZON = 5.0
"""Jobs started within this of a job seen ending count as submitted with it (a sweep's mates)."""
SWEEP_PAD = 0.5
"""A mate started after the job seen ending is swept this much after the instant the same
duration would end it: a start is the ledger's, taken before the POST reached the upstream."""


class Latest(Generic[T]):
    """The newest value of something many waiters watch; every publish wakes them all."""

    def __init__(self) -> None:
        self.value: T | None = None
        self.version = 0
        self._changed = anyio.Event()

    def publish(self, value: T) -> None:
        self.value = value
        self.version += 1
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def bump(self) -> None:
        """Wake waiters without a new value (e.g. the producer stopped)."""
        self.version += 1
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_newer(self, seen: int) -> None:
        if self.version == seen:
            await self._changed.wait()


async def wait_newer_until(latest: Latest[T], seen: int, clock: Clock, deadline: float) -> bool:
    """Wait for a publish newer than `seen` until `deadline` (clock time); False on timeout."""
    remaining = deadline - clock.monotonic()
    if remaining <= 0:
        return latest.version != seen
    with clock.move_on_after(remaining):
        await latest.wait_newer(seen)
        return True
    return latest.version != seen


# --------------------------------------------------------------------------------------------
# Seamless: coalesced polling


def sweep_plan(
    others: Sequence[str],
    starts: Mapping[str, float],
    seen: float,
    *,
    size: int,
    calls: int,
    horizon: float = SWEEP_HORIZON,
) -> list[tuple[list[str], float]]:
    """A sweep after a call saw ids of a job started at `seen` end: the `others` (watched,
    not known ended) whose jobs started within `horizon` of it, oldest first, in calls of
    `size` ids, at most `calls` of them. Each with its delay after that call: none for jobs
    started before `seen` (with the same duration they have ended too), else the difference
    in start plus `SWEEP_PAD`. Ids of unknown start are left to the regular rounds."""
    mates = sorted(
        (starts[i], i) for i in others if i in starts and abs(starts[i] - seen) <= horizon
    )
    plan: list[tuple[list[str], float]] = []
    for first in range(0, len(mates), max(1, size)):
        group = mates[first : first + size]
        later = group[-1][0] - seen
        plan.append(([i for _, i in group], later + SWEEP_PAD if later > 0 else 0.0))
    return plan[: max(0, calls)]


@dataclass
class PollRound:
    """What one poll round (or a direct poll) left behind for waiters."""

    number: int
    error: JobRelayError | None = None
    """The last round's failure, e.g. rate limited: waiters report it if they must return."""
    retry_after: float | None = None


class PollCoalescer(Generic[T]):
    """All outstanding request ids of one endpoint, polled together on one cadence.

    `poll(ids)` does one upstream call and returns the items it got, keyed by id; rounds and
    direct polls hand it at most `max_ids` ids at a time (None: all in one call).
    `interval(round_index)` is the poll cadence (2 s rising to 5 s for Seamless).
    `max_calls_per_round` caps the calls of one round (None: no cap); ids beyond it are
    polled in the next rounds, in turn. The cadence is each id's: a round starts
    `interval` after the previous round started (a round of paced calls longer than that is
    followed by the next at once), not after it ended.

    `foreign(own pending ids)` (a `SharedPoll.foreign`): the ids other processes ask this
    one's rounds to poll, asked at each tick of the cadence, even with nothing of its own due;
    they join the round's ids, before its chunks and call cap.

    `sweep_calls` (0: never): when a round's call first sees ids of a job end (issue 17, the
    scale check), the round polls the ids of the jobs started with it at once instead of in
    turn, at most that many calls, oldest first, under `limits.spend_reserve()`: the poll
    bucket keeps that reserve from the regular rounds (`BucketSpec.reserve`). Jobs submitted
    together tend to end together; one sweep per such batch (`started` tells the starts).

    A round of more than `max_ids` ids publishes after each call, not once at the end: the
    calls are paced by the rate limiter (about one a second for Seamless), so waiters fold
    and return a finished chunk while the next is still being fetched, and a round's
    finished records (~17 KB each decoded) are never all held at once.
    """

    def __init__(
        self,
        *,
        poll: Callable[[Sequence[str]], Awaitable[Mapping[str, T]]],
        is_terminal: Callable[[T], bool],
        interval: Callable[[int], float],
        clock: Clock,
        spawn: Spawn,
        fresh_interval: float = 2.0,
        max_ids: int | None = None,
        probe_interval: float = PROBE_INTERVAL,
        max_calls_per_round: int | None = None,
        round_poll: Callable[[Sequence[str]], Awaitable[Mapping[str, T]]] | None = None,
        push: PushReconciler | None = None,
        on_items: Callable[[Mapping[str, T]], Awaitable[None]] | None = None,
        on_idle: Callable[[], Awaitable[None]] | None = None,
        provider: str | None = None,
        sweep_calls: int = 0,
        foreign: Callable[[Sequence[str]], Awaitable[list[str]]] | None = None,
    ) -> None:
        if max_ids is not None and max_ids < 1:
            raise ValueError("max_ids must be at least 1")
        if max_calls_per_round is not None and max_calls_per_round < 1:
            raise ValueError("max_calls_per_round must be at least 1")
        self.provider = provider
        """The provider it polls for (the metrics' `jobrelay.provider` of its rounds)."""
        self._max_calls = max_calls_per_round
        self._sweep_calls = sweep_calls
        self._starts: dict[str, float] = {}
        """When each watched id's job started (`started`), for sweeps."""
        self._swept: float | None = None
        """The start of the job whose end set off the last sweep: its batch is not swept twice."""
        self._rotation = 0
        """Where the next capped round starts in the pending list, so every id gets its turn."""
        self._poll = poll
        self._round_poll = round_poll or poll
        """What rounds call: `poll`, or a `SharedPoll` around it; direct polls always `poll`."""
        self._on_items = on_items
        """Told every call's items (a `ResultFeed.share`: the other replicas' waiters)."""
        self._on_idle = on_idle
        """Called when the loop stops (nobody waits here): a `SharedPoll` lets its lease go."""
        self._foreign = foreign
        self._theirs: set[str] = set()
        """The ids of the round in progress that other processes asked for (`foreign`)."""
        self._max_ids = max_ids
        self._push = push
        """Set when pushed items may stand in for polls (webhooks): which ids are due."""
        self._is_terminal = is_terminal
        self._interval = interval
        self._clock = clock
        self._spawn = spawn
        self._fresh_interval = fresh_interval
        self._probe_interval = probe_interval
        self._interest: Counter[str] = Counter()
        self._latest: dict[str, T] = {}
        self.board: Latest[PollRound] = Latest()
        self._running = False
        self._kick = anyio.Event()
        self._last_round_at: float | None = None
        self.calls = 0
        """Upstream poll calls made (by rounds and direct polls), for benchmarks."""

    def latest(self, ids: Sequence[str]) -> dict[str, T]:
        return {i: self._latest[i] for i in ids if i in self._latest}

    def _keep(self, items: Mapping[str, T]) -> None:
        """Remember items only for ids someone watches. A finished research item carries the
        whole record (~17 KB), and the ledger is where it lives: once its waiters are gone
        (they fold it into the job first), keeping it would grow for the server's lifetime."""
        for i, item in items.items():
            if self._interest[i] > 0:
                self._latest[i] = item

    def deliver(self, items: Mapping[str, T]) -> bool:
        """Items learnt without polling (another replica's poll, a webhook), for this
        replica's waiters: kept for watched ids, and the waiters woken at once. True when
        someone here watches one of them (they fold it; else the ledger is where it lives)."""
        before = len(self._latest)
        watched = any(self._interest[i] > 0 for i in items)
        changed = any(self._interest[i] > 0 and self._latest.get(i) != v for i, v in items.items())
        self._keep(items)
        if changed or len(self._latest) != before:
            self.board.publish(PollRound(number=self.board.version + 1))
        return watched

    def _pending(self) -> list[str]:
        return [
            i
            for i, n in self._interest.items()
            if n > 0 and not (i in self._latest and self._is_terminal(self._latest[i]))
        ]

    def started(self, starts: Mapping[str, float]) -> None:
        """When each id's job started (monotonic): its expected push is timed from there, and
        a sweep finds the ids of the jobs started together (kept only while watched)."""
        for i, at in starts.items():
            if self._push is not None:
                self._push.started(i, at)
            if self._sweep_calls and self._interest[i] > 0:
                self._starts[i] = at

    def pushed(self, ids: Sequence[str]) -> None:
        """Pushes (webhook deliveries) arrived for `ids`, changing their items or not (a
        repeat): counted by the reconciler, so polling for this endpoint drops to its slow
        cadence while they arrive. The items themselves go through `deliver` (the caller
        publishes them on the results' one path, `sharing.ResultFeed.publish`)."""
        if self._push is not None:
            for i in ids:
                self._push.arrived(i)

    def expedite(self, ids: Sequence[str]) -> bool:
        """Poll `ids` at the next round the cadence floor allows (a push named them but is
        not trusted to stand in for the poll). False when nobody here watches them."""
        watched = [i for i in ids if self._interest[i] > 0]
        if not watched:
            return False
        if self._push is not None:
            self._push.expedite(watched)
        self._kick.set()
        return True

    def _chunks(self, ids: Sequence[str]) -> list[list[str]]:
        size = self._max_ids or max(1, len(ids))
        return [list(ids[start : start + size]) for start in range(0, len(ids), size)]

    async def poll_now(self, ids: Sequence[str]) -> dict[str, T]:
        """A direct poll of `ids` (get_job_status); results are shared with waiters. Ids
        that pushes stand in for and that are not due are answered from what is known."""
        found = self.latest(ids)
        ids = due_ids(self._push, ids)
        if not ids:
            return found
        try:
            for chunk in self._chunks(ids):
                items = await self._poll_chunk(chunk)
                found.update((i, items[i]) for i in chunk if i in items)
        finally:
            # Even a failed call may have left earlier chunks' items for the waiters; and it
            # counts as a round for the cadence floor of a kicked loop.
            self._publish()
        return found

    async def _poll_chunk(self, chunk: list[str], *, in_round: bool = False) -> Mapping[str, T]:
        """One upstream call; items are kept only for ids still watched (a waiter may have
        left during the call)."""
        self.calls += 1
        if self._push is not None:
            self._push.polled([i for i in chunk if i not in self._theirs])
        items = await (self._round_poll if in_round else self._poll)(chunk)
        self._keep(items)
        if self._on_items is not None and items:
            await self._on_items(items)
        return items

    @asynccontextmanager
    async def watch(self, ids: Sequence[str]) -> AsyncIterator[None]:
        """Register interest in `ids` for the duration of the block; start the loop if idle."""
        fresh = any(i not in self._latest for i in ids)
        self._interest.update(ids)
        try:
            if not self._running:
                self._running = True
                self._spawn(self._loop)
            elif fresh:
                self._kick.set()
            yield
        finally:
            self._interest.subtract(ids)
            for i in ids:
                if self._interest[i] <= 0:
                    self._interest.pop(i, None)  # pop: `ids` may name an id twice
                    self._latest.pop(i, None)
                    self._starts.pop(i, None)
                    if self._push is not None:
                        self._push.forget(i)

    async def _loop(self) -> None:
        index = 0
        try:
            while pending := self._pending():
                due = due_ids(self._push, pending)
                theirs = [] if self._foreign is None else await self._foreign(pending)
                self._theirs = set(theirs)
                extra_wait = 0.0
                waits = [] if self._foreign is None else [self._interval(index)]
                if due or theirs:
                    before = self.calls
                    began = self._clock.monotonic()
                    extra_wait = await self._round([*due, *theirs])
                    telemetry.poll_round(self.calls - before, self.provider)
                    # Each id's cadence: counted from the round's start, not its end.
                    took = self._clock.monotonic() - began
                    waits = [max(0.0, self._interval(index) - took)]
                    index += 1
                if self._push is not None and len(due) < len(pending):
                    # Pushes stand in for the rest: wake when the first of them is due.
                    polled = set(due)
                    first = min(self._push.due_at(i) for i in pending if i not in polled)
                    waits.append(max(0.0, first - self._clock.monotonic()))
                await self._pause(max(min(waits), extra_wait), floor=extra_wait)
        finally:
            self._running = False
            if self._on_idle is not None:
                with anyio.CancelScope(shield=True):
                    await self._on_idle()

    async def _round(self, pending: Sequence[str]) -> float:
        """Poll `pending` chunk by chunk, publishing after each call; the extra wait a failed
        call asks for (its Retry-After or reset), 0 when every call succeeded. A failure ends
        the round: the chunks before it are kept, the rest wait for the next round. The first
        call that sees ids of a new batch end sweeps that batch's other ids first (each
        planned call: its ids and, for a sweep's, the instant it is due)."""
        chunks = self._chunks(pending)
        if self._max_calls is not None and len(chunks) > self._max_calls:
            # The per-round call budget (issue 20.4): rounds run on the cadence, so no wait
            # costs more than `max_calls_per_round` calls per interval; the rest rotate in.
            start = self._rotation % len(chunks)
            chunks = (chunks[start:] + chunks[:start])[: self._max_calls]
            self._rotation = start + self._max_calls
        plan: list[tuple[list[str], float | None]] = [(c, None) for c in chunks]
        while plan:
            planned, due = plan.pop(0)
            # A waiter may have left; the ids other processes asked for are polled for them.
            chunk = [i for i in planned if self._interest[i] > 0 or i in self._theirs]
            if not chunk:
                continue
            try:
                if due is None:
                    items = await self._poll_chunk(chunk, in_round=True)
                else:
                    await self._clock.sleep(max(0.0, due - self._clock.monotonic()))
                    with spend_reserve():
                        await self._poll_chunk(chunk, in_round=True)
            except JobRelayError as exc:
                extra_wait = float(getattr(exc, "retry_after", None) or 0.0)
                if isinstance(exc, RetryBudgetExhausted | DeadlineExceeded):
                    # Advice for agents, not the upstream's own "not before": keep probing on
                    # the probe schedule, never later than the announced instant, so a job
                    # that finished meanwhile is seen (issue 20.6).
                    extra_wait = min(extra_wait, self._probe_interval)
                hints = getattr(exc, "hints", None)
                if hints is not None and hints.not_before is not None:
                    extra_wait = max(extra_wait, hints.not_before)
                self._publish(error=exc, retry_after=extra_wait)
                return extra_wait
            except Exception:  # e.g. a shared lease store that is locked or gone (issue 17)
                # Never the end of the loop (and of the server's task group): the next round,
                # after the cadence floor, tries again; waiters keep waiting meanwhile.
                log.warning("jobrelay: a poll round failed; retrying", exc_info=True)
                self._publish()
                return self._fresh_interval
            self._publish()
            if due is None and self._sweep_calls:
                ended = [
                    self._starts[i]
                    for i, v in items.items()
                    if self._is_terminal(v) and i in self._starts
                ]
                if ended and (self._swept is None or abs(max(ended) - self._swept) > SWEEP_HORIZON):
                    self._swept = seen = max(ended)
                    now = self._clock.monotonic()
                    sweep = sweep_plan(
                        due_ids(self._push, [i for i in self._pending() if i not in items]),
                        self._starts,
                        seen,
                        size=self._max_ids or len(self._starts),
                        calls=self._sweep_calls,
                    )
                    swept = {i for ids, _ in sweep for i in ids}
                    rest = [([i for i in ids if i not in swept], d) for ids, d in plan]
                    plan = [(ids, now + delay) for ids, delay in sweep] + rest
        return 0.0

    def _publish(self, *, error: JobRelayError | None = None, retry_after: float = 0.0) -> None:
        self._last_round_at = self._clock.monotonic()
        self.board.publish(
            PollRound(number=self.board.version + 1, error=error, retry_after=retry_after)
        )

    async def _pause(self, seconds: float, *, floor: float = 0.0) -> None:
        """Sleep until the next round; a new waiter with unseen ids shortens it to 2 s, but
        never below `floor`, the wait a failed call asked for (Retry-After, reset)."""
        with self._clock.move_on_after(seconds):
            await self._kick.wait()
            # Kicked: still keep the endpoint's cadence floor, so a burst of new waiters
            # never turns into a burst of calls.
            since = self._clock.monotonic() - (self._last_round_at or 0.0)
            await self._clock.sleep(max(0.0, max(self._fresh_interval, floor) - since))
        self._kick = anyio.Event()


# --------------------------------------------------------------------------------------------
# AgentSEO: one follower per job


@dataclass
class _Topic(Generic[T]):
    latest: Latest[T] = field(default_factory=Latest)
    subscribers: int = 0
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    error: JobRelayError | None = None
    finished: bool = False


class StreamHub(Generic[T]):
    """One upstream follower per job id, fanned out to every waiter on that job; with
    `sharing`, to every replica's waiters, one replica following upstream at a time."""

    def __init__(
        self,
        *,
        follow: Callable[[str], AsyncIterator[T]],
        is_terminal: Callable[[T], bool],
        spawn: Spawn,
        sharing: StreamSharing[T] | None = None,
    ) -> None:
        self._follow = follow
        self._is_terminal = is_terminal
        self._spawn = spawn
        self._sharing = sharing
        self._topics: dict[str, _Topic[T]] = {}
        self.followers_started = 0
        """Follower tasks started, for tests and benchmarks (one per job being watched)."""
        self.upstream_follows = 0
        """Upstream follows this replica ran (with `sharing`: only while holding the lease)."""

    @asynccontextmanager
    async def watch(self, job_id: str, initial: T | None = None) -> AsyncIterator[_Topic[T]]:
        topic = self._topics.get(job_id)
        if topic is None:
            topic = _Topic()
            if initial is not None:
                topic.latest.publish(initial)
            self._topics[job_id] = topic
            self.followers_started += 1
            self._spawn(lambda: self._run(job_id, topic))
        topic.subscribers += 1
        try:
            yield topic
        finally:
            topic.subscribers -= 1
            if topic.subscribers <= 0:
                topic.scope.cancel()
                if self._topics.get(job_id) is topic:
                    del self._topics[job_id]

    async def _run(self, job_id: str, topic: _Topic[T]) -> None:
        with topic.scope:
            try:
                if self._sharing is None:
                    await self._upstream(job_id, topic, None)
                else:
                    await self._shared(job_id, topic, self._sharing)
            except JobRelayError as exc:
                topic.error = exc
            finally:
                topic.finished = True
                # Wake waiters so they see `finished`/`error` without waiting out the clock.
                topic.latest.bump()
                if self._topics.get(job_id) is topic:
                    del self._topics[job_id]

    async def _upstream(
        self, job_id: str, topic: _Topic[T], send: Callable[[T], Awaitable[None]] | None
    ) -> None:
        self.upstream_follows += 1
        async for value in self._follow(job_id):
            topic.latest.publish(value)
            if send is not None:
                await send(value)
            if self._is_terminal(value):
                break

    async def _shared(self, job_id: str, topic: _Topic[T], sharing: StreamSharing[T]) -> None:
        """Follow upstream while holding the job's lease, else take the holder's values; try
        for the lease every `RENEW_EVERY` until the job ends (a holder that stops or dies).

        The holder also leaves the job's final value on the leases' board before it lets the
        lease go, and a replica reads the board before it follows: a final value still on its
        way through the fan-out when the lease changes hands is not fetched again upstream.
        """
        name = f"{sharing.name}:{job_id}"
        ended = anyio.Event()

        def take(value: T) -> None:
            topic.latest.publish(value)
            if self._is_terminal(value):
                ended.set()

        def received(message: str) -> None:
            try:
                value = sharing.decode(json.loads(message))
            except Exception:  # noqa: BLE001 - one bad message must not break the listener
                log.warning("jobrelay: ignored an unreadable %s message", sharing.name)
                return
            take(value)

        async def board() -> None:
            found = await sharing.leases.want(name, [job_id], sharing.ttl)
            if job_id in found and not ended.is_set():
                take(sharing.decode(found[job_id]))

        async def send(value: T) -> None:
            encoded = sharing.encode(value)
            await sharing.fanout.send(name, json.dumps(encoded))
            if self._is_terminal(value):
                await sharing.leases.publish(name, {job_id: (encoded, True)})

        unlisten = sharing.fanout.listen(name, received)
        try:
            while not ended.is_set():
                await board()
                if ended.is_set():
                    return
                if await sharing.leases.hold(name, sharing.ttl):
                    try:
                        await board()  # what a holder that just let go left there
                        if ended.is_set():
                            return
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(
                                lambda: keep_renewed(
                                    sharing.leases,
                                    name,
                                    sharing.ttl,
                                    sharing.clock,
                                    busy=lambda: True,
                                )
                            )
                            await self._upstream(job_id, topic, send)
                            tg.cancel_scope.cancel()
                    finally:
                        with anyio.CancelScope(shield=True):
                            try:
                                await sharing.leases.release(name)
                            except Exception:
                                log.warning("jobrelay: could not let %s go", name, exc_info=True)
                    return
                with sharing.clock.move_on_after(min(RENEW_EVERY, sharing.ttl / 4)):
                    await ended.wait()
        finally:
            unlisten()
