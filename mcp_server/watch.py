"""Bounded watching shared between waiters (DESIGN.md section 2.5).

- `PollCoalescer`: one poll loop per (tenant, Seamless endpoint). Every waiter registers the
  request ids it cares about; each round polls all outstanding ids together (one call per
  100), so 100 waits cost one upstream call per interval, not 100.
- `SharedPoll`: the poll a `PollCoalescer`'s rounds make when several processes share one
  ledger (issue 17.1): one process at a time holds the endpoint's lease and polls upstream for
  everyone; the others ask it for their ids and read what it publishes.
- `StreamHub`: one follower per AgentSEO job (SSE, or polling when there is no stream),
  shared by every waiter on that job.
- `PushReconciler`: while pushed items (webhook deliveries, issue 18) keep arriving, a
  `PollCoalescer` polls their ids only on a slow reconciliation cadence, and on the normal
  one again for an id whose expected completion passed without a push. A pushed item goes
  through `PollCoalescer.push`, the same keep-and-publish path a poll round's items take.

Both run their loops in a long-lived task group owned by the server lifespan, never in the
tool call's scope: cancelling a wait never stops the loop other waiters rely on, and never
touches the upstream job. Loops stop by themselves when nobody is watching.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import anyio

from mcp_server import telemetry
from mcp_server._clock import Clock
from mcp_server.errors import DeadlineExceeded, JobRelayError, RetryBudgetExhausted
from mcp_server.json_types import JSON

T = TypeVar("T")
PROBE_INTERVAL = 10.0
"""While an upstream looks degraded (breaker open) or stalls, poll rounds continue this often
at most, as probes: the only calls made, never later than the breaker's announced instant."""
Spawn = Callable[[Callable[[], Awaitable[None]]], None]


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
    polled in the next rounds, in turn.

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
    ) -> None:
        if max_ids is not None and max_ids < 1:
            raise ValueError("max_ids must be at least 1")
        if max_calls_per_round is not None and max_calls_per_round < 1:
            raise ValueError("max_calls_per_round must be at least 1")
        self._max_calls = max_calls_per_round
        self._rotation = 0
        """Where the next capped round starts in the pending list, so every id gets its turn."""
        self._poll = poll
        self._round_poll = round_poll or poll
        """What rounds call: `poll`, or a `SharedPoll` around it; direct polls always `poll`."""
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

    def _pending(self) -> list[str]:
        return [
            i
            for i, n in self._interest.items()
            if n > 0 and not (i in self._latest and self._is_terminal(self._latest[i]))
        ]

    def started(self, starts: Mapping[str, float]) -> None:
        """When each id's job started (monotonic): its expected push is timed from there."""
        if self._push is not None:
            for i, at in starts.items():
                self._push.started(i, at)

    def offer(self, items: Mapping[str, T]) -> bool:
        """Items that arrived without a call of ours: kept and published exactly like a poll
        round's, so every waiter on them wakes and folds them. True when someone here
        watches one of them (the waiters then fold it; else the caller stores it)."""
        watched = any(self._interest[i] > 0 for i in items)
        self._keep(items)
        self._publish(polled=False)
        return watched

    def push(self, items: Mapping[str, T], *, seen: Sequence[str] = ()) -> bool:
        """Pushed items (webhook deliveries): `offer`ed, and counted by the reconciler, so
        polling for this endpoint drops to its slow cadence while pushes arrive. `seen`: ids
        whose push changed nothing (a repeat, or an item already known); counted only."""
        if self._push is not None:
            for i in [*items, *seen]:
                self._push.arrived(i)
        return self.offer(items) if items else False

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
        ids = _due(self._push, ids)
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
            self._push.polled(chunk)
        items = await (self._round_poll if in_round else self._poll)(chunk)
        self._keep(items)
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
                    if self._push is not None:
                        self._push.forget(i)

    async def _loop(self) -> None:
        index = 0
        try:
            while pending := self._pending():
                due = _due(self._push, pending)
                extra_wait = 0.0
                waits = []
                if due:
                    before = self.calls
                    extra_wait = await self._round(due)
                    telemetry.poll_round(self.calls - before)
                    waits.append(self._interval(index))
                    index += 1
                if self._push is not None and len(due) < len(pending):
                    # Pushes stand in for the rest: wake when the first of them is due.
                    polled = set(due)
                    first = min(self._push.due_at(i) for i in pending if i not in polled)
                    waits.append(max(0.0, first - self._clock.monotonic()))
                await self._pause(max(min(waits), extra_wait), floor=extra_wait)
        finally:
            self._running = False

    async def _round(self, pending: Sequence[str]) -> float:
        """Poll `pending` chunk by chunk, publishing after each call; the extra wait a failed
        call asks for (its Retry-After or reset), 0 when every call succeeded. A failure ends
        the round: the chunks before it are kept, the rest wait for the next round."""
        chunks = self._chunks(pending)
        if self._max_calls is not None and len(chunks) > self._max_calls:
            # The per-round call budget (issue 20.4): rounds run on the cadence, so no wait
            # costs more than `max_calls_per_round` calls per interval; the rest rotate in.
            start = self._rotation % len(chunks)
            chunks = (chunks[start:] + chunks[:start])[: self._max_calls]
            self._rotation = start + self._max_calls
        for planned in chunks:
            chunk = [i for i in planned if self._interest[i] > 0]  # a waiter may have left
            if not chunk:
                continue
            try:
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
            self._publish()
        return 0.0

    def _publish(
        self, *, error: JobRelayError | None = None, retry_after: float = 0.0, polled: bool = True
    ) -> None:
        if polled:  # the cadence floor counts upstream calls, not offered items
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
# Pushed items (webhooks) standing in for polls

SLOW_POLL_INTERVAL = 60.0
"""While pushes arrive, an id whose expected completion has not passed is polled this often at
most: a reconciliation poll, since a push can be lost (no retries are promised)."""
PUSH_ACTIVE_SECONDS = 600.0
"""Pushes count as arriving for this long after the last one; then polling is normal again."""
EXPECTED_FACTOR = 1.5
EXPECTED_MARGIN = 10.0
MAX_EXPECTED_SECONDS = 600.0
_MAX_TRACKED = 20_000


class PushReconciler:
    """When to poll an id that a push is expected to complete (one per coalescer).

    Inactive (every id due, the normal cadence) until a push arrives, and again once none has
    arrived for `active_for`. While active, an id is due when its expected completion has
    passed (its start plus `factor` x the longest start-to-push time of the recent pushes,
    plus `margin`, at most `max_expected`) or `slow_interval` after its last poll (or start).
    All instants are the clock's monotonic seconds.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        slow_interval: float = SLOW_POLL_INTERVAL,
        active_for: float = PUSH_ACTIVE_SECONDS,
        factor: float = EXPECTED_FACTOR,
        margin: float = EXPECTED_MARGIN,
        max_expected: float = MAX_EXPECTED_SECONDS,
    ) -> None:
        self._clock = clock
        self._slow = slow_interval
        self._active_for = active_for
        self._factor = factor
        self._margin = margin
        self._max_expected = max_expected
        self._started: dict[str, float] = {}
        self._polled: dict[str, float] = {}
        self._durations: deque[float] = deque(maxlen=32)
        self._last_push: float | None = None
        self.pushes = 0
        """Pushed items seen (benchmarks, metrics)."""

    def active(self) -> bool:
        last = self._last_push
        return last is not None and self._clock.monotonic() - last <= self._active_for

    def started(self, item_id: str, at: float) -> None:
        """`item_id`'s job started at `at` (monotonic); the first report counts."""
        if item_id not in self._started:
            if len(self._started) >= _MAX_TRACKED:
                self._started.pop(next(iter(self._started)))
            self._started[item_id] = at

    def expected_seconds(self) -> float:
        """How long after its start an id's push is expected at the latest."""
        longest = max(self._durations, default=0.0)
        return min(self._max_expected, self._factor * longest + self._margin)

    def due_at(self, item_id: str) -> float:
        """When `item_id` should next be polled (-inf: now, whatever the cadence)."""
        if not self.active():
            return -math.inf
        self.started(item_id, self._clock.monotonic())  # unknown start: timed from now
        start = self._started[item_id]
        expected = start + self.expected_seconds()
        return min(expected, self._polled.get(item_id, start) + self._slow)

    def due(self, ids: Sequence[str]) -> list[str]:
        now = self._clock.monotonic()
        return [i for i in ids if self.due_at(i) <= now]

    def polled(self, ids: Sequence[str]) -> None:
        now = self._clock.monotonic()
        for i in ids:
            self._polled[i] = now
        while len(self._polled) > _MAX_TRACKED:
            self._polled.pop(next(iter(self._polled)))

    def expedite(self, ids: Sequence[str]) -> None:
        """Make `ids` due now (a push hinted at them without standing in for a poll)."""
        for i in ids:
            self._polled[i] = -math.inf

    def arrived(self, item_id: str) -> None:
        """A push for `item_id` arrived: pushes are active, and its duration is learnt."""
        now = self._clock.monotonic()
        start = self._started.get(item_id)
        if start is not None:
            self._durations.append(max(0.0, now - start))
        self._last_push = now
        self.pushes += 1
        self.forget(item_id)

    def forget(self, item_id: str) -> None:
        self._started.pop(item_id, None)
        self._polled.pop(item_id, None)


def _due(push: PushReconciler | None, ids: Sequence[str]) -> list[str]:
    """The ids to poll now: all of them, unless pushes stand in for some."""
    return list(ids) if push is None else push.due(ids)


class Leases(Protocol):
    """Named expiring leases plus a board of wanted and published items (`limits.sqlite`)."""

    async def hold(self, name: str, ttl: float) -> bool: ...
    async def release(self, name: str) -> None: ...
    async def want(self, name: str, item_ids: list[str], ttl: float) -> dict[str, JSON]: ...
    async def wanted(self, name: str) -> list[str]: ...
    async def publish(self, name: str, items: dict[str, tuple[JSON, bool]]) -> None: ...


LEASE_TTL = 15.0
"""How long a poll lease lasts without renewal: three rounds at the slowest Seamless cadence
(5 s). A holder that dies is replaced by the first process to poll after that."""


class SharedPoll(Generic[T]):
    """One poller per endpoint among processes (issue 17.1); a `PollCoalescer`'s `round_poll`.

    The lease holder polls its own ids plus those the others asked for (up to `max_ids` per
    call) and publishes the others' items; a process without the lease registers its ids and
    returns what was published for them, calling nothing upstream. The holder lets the lease go
    when its own ids are all finished, so a process still waiting takes over at its next round
    instead of after `ttl`.
    """

    def __init__(
        self,
        *,
        name: str,
        poll: Callable[[Sequence[str]], Awaitable[Mapping[str, T]]],
        leases: Leases,
        encode: Callable[[T], JSON],
        decode: Callable[[JSON], T],
        is_terminal: Callable[[T], bool],
        max_ids: int | None = None,
        ttl: float = LEASE_TTL,
    ) -> None:
        self._name = name
        self._poll = poll
        self._leases = leases
        self._encode = encode
        self._decode = decode
        self._is_terminal = is_terminal
        self._max_ids = max_ids
        self._ttl = ttl
        self.upstream_calls = 0
        self.board_reads = 0

    async def __call__(self, ids: Sequence[str]) -> Mapping[str, T]:
        if not await self._leases.hold(self._name, self._ttl):
            self.board_reads += 1
            found = await self._leases.want(self._name, list(ids), self._ttl)
            return {i: self._decode(payload) for i, payload in found.items()}
        mine = set(ids)
        others = [i for i in await self._leases.wanted(self._name) if i not in mine]
        if self._max_ids is not None:
            others = others[: max(0, self._max_ids - len(ids))]
        self.upstream_calls += 1
        items = await self._poll([*ids, *others])
        published = {
            i: (self._encode(items[i]), self._is_terminal(items[i])) for i in others if i in items
        }
        if published:
            await self._leases.publish(self._name, published)
        if all(i in items and self._is_terminal(items[i]) for i in ids):
            await self._leases.release(self._name)
        return items


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
    """One upstream follower per job id, fanned out to every waiter on that job."""

    def __init__(
        self,
        *,
        follow: Callable[[str], AsyncIterator[T]],
        is_terminal: Callable[[T], bool],
        spawn: Spawn,
    ) -> None:
        self._follow = follow
        self._is_terminal = is_terminal
        self._spawn = spawn
        self._topics: dict[str, _Topic[T]] = {}
        self.followers_started = 0
        """Follower tasks started, for tests and benchmarks (one per job being watched)."""

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
                async for value in self._follow(job_id):
                    topic.latest.publish(value)
                    if self._is_terminal(value):
                        break
            except JobRelayError as exc:
                topic.error = exc
            finally:
                topic.finished = True
                # Wake waiters so they see `finished`/`error` without waiting out the clock.
                topic.latest.bump()
                if self._topics.get(job_id) is topic:
                    del self._topics[job_id]
