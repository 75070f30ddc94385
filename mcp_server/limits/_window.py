"""The bucket arithmetic every `Limiter` backend shares: a sliding window of recent sends.

A bucket remembers when it sent (`sent`, as `[time, count]` pairs) and what the server last
said (`remaining` with its reset, a block after a 429 or `remaining: 0`). It admits a send when

- fewer than `limit` sends fall in the last `span = window / safety` seconds (62.5 s for a
  60 s window at the default 0.96), so an idle window is spent at once (issue 17.7: 60 research
  POSTs go out together instead of pacing at 0.96/s from the first request);
- the server's last `remaining`, less what was sent since, is above zero, while that number is
  fresh (until the reset it announced; one window when it announced none);
- the bucket is not blocked;
- for a paced bucket (`paced_burst` set: a poll endpoint), the send fits a token bucket of
  `paced_burst` sends at once refilled at `limit / span` (GCRA: `paced_at` is the theoretical
  time of the next send). A poller's early rounds would otherwise spend the whole window at
  once and leave nothing for the rounds that matter, e.g. when jobs finish 40 s in. A paced
  bucket may also hold `reserve` tokens on top of that burst which only an urgent send
  (`limits.base.spend_reserve()`) takes: regular sends never spend them, so a poller's sweep
  when jobs end finds them there (the window's count applies to both alike).

Why no window of the server's ever holds more than `limit` of our sends, whatever its
alignment (fixed or sliding): any interval of length `window` lies inside one of length
`span`, which never holds more than `limit`. The `span - window` slack (2.5 s) absorbs network
jitter bunching arrivals; long runs send `limit` per `span`, i.e. `safety` (96 %) of the limit.
Other consumers of an org quota are seen through `remaining` and 429s, as before.

Times are seconds on one clock per backend: the in-process limiter uses its clock's
`monotonic()`, a cross-process one (SQLite, Redis) wall time every process shares. The state
is plain data (`to_json`/`from_json`) so a shared backend stores it between transactions and
runs exactly this code on it; nothing here waits or locks.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

import anyio

from mcp_server import telemetry
from mcp_server._clock import Clock
from mcp_server.config import Settings, load_settings
from mcp_server.errors import LocalRateLimited, not_before
from mcp_server.limits.base import (
    SAFETY,
    BucketKey,
    BucketSnapshot,
    BucketSpec,
    default_spec,
    spending_reserve,
)
from mcp_server.upstream import DEFAULT_POLICY, RateLimitHints, hint_jitter

__all__ = [
    "QUANTUM",
    "LimiterOptions",
    "SharedWindowLimiter",
    "WindowLimiter",
    "WindowState",
    "refusal",
    "snapshot_of",
    "sort_key",
    "too_long",
]

_log = logging.getLogger("mcp_server.limits")
_EPS = 1e-9
_PACE_EPS = 1e-6
"""A paced slot this close to now is now: wall-clock floats near 1.8e9 s resolve 2.4e-7 s."""
QUANTUM = 0.25
"""Sends less than this apart share one `[time, count]` entry stamped with the later time, so
a 10,000/min bucket keeps at most span/QUANTUM entries; the later stamp only ever expires
entries late (never early), so the merge can only make the window stricter."""


@dataclass(slots=True)
class WindowState:
    """One bucket's state; see the module docstring. Mutated only by its methods."""

    limit: int
    window: float
    safety: float
    sent: list[list[float]] = field(default_factory=list)
    """`[time, count]`, oldest first; entries older than `span` are dropped on the way."""
    blocked_until: float = -math.inf
    server_remaining: int | None = None
    server_fresh_until: float = -math.inf
    sent_since_seen: int = 0
    reset_at: float | None = None
    paced_burst: int | None = None
    """None: bursts up to what the window has left; a number: see the module docstring."""
    paced_at: float = -math.inf
    """A paced bucket's theoretical time of its next send (GCRA); -inf when idle."""
    reserve: int = 0
    """A paced bucket's tokens beyond `paced_burst` that only urgent sends take."""

    @classmethod
    def seeded(cls, spec: BucketSpec, safety: float) -> WindowState:
        return cls(
            limit=spec.limit,
            window=spec.window,
            safety=safety,
            paced_burst=spec.paced_burst,
            reserve=spec.reserve,
        )

    @property
    def span(self) -> float:
        """The interval in which at most `limit` sends are admitted (window / safety)."""
        return self.window / self.safety

    # --- admission ---------------------------------------------------------------------------

    def _prune(self, now: float) -> None:
        horizon = now - self.span
        drop = 0
        while drop < len(self.sent) and self.sent[drop][0] <= horizon + _EPS:
            drop += 1
        if drop:
            del self.sent[:drop]

    def _in_window(self) -> int:
        return int(sum(n for _, n in self.sent))

    def _own_slot(self, now: float, k: int) -> float:
        """When the window frees the k-th next slot (0-based) if nothing else intervenes."""
        free = self.limit - self._in_window()
        if k < free:
            return now
        index = k - free
        for at, n in self.sent:
            if index < n:
                return at + self.span
            index -= int(n)
        # Beyond every recorded send: that slot reuses one taken `span` earlier by a send
        # still to come (queued ahead of us).
        return self._own_slot(now, k - self.limit) + self.span

    def _paced_slot(self, now: float, k: int, urgent: bool = False) -> float:
        """When a paced bucket admits the k-th next send (0-based); `now` when not paced. An
        urgent send may also take the `reserve`."""
        if self.paced_burst is None:
            return now
        step = self.span / self.limit
        tolerance = (max(1, self.paced_burst) - 1 + (self.reserve if urgent else 0)) * step
        at = max(self.paced_at, now) + k * step - tolerance
        return at if at > now + _PACE_EPS else now

    def _server_free(self, now: float) -> int | None:
        if self.server_remaining is None or now >= self.server_fresh_until:
            return None
        return self.server_remaining - self.sent_since_seen

    def wait(self, now: float, ahead: int = 0, need: int = 1, *, urgent: bool = False) -> float:
        """Seconds until `need` slots are free for a caller with `ahead` slots queued before it
        (`urgent`: a send that may take a paced bucket's reserve)."""
        self._prune(now)
        k = ahead + max(1, min(need, self.limit)) - 1
        paced = self._paced_slot(now, k, urgent)
        at = max(now, self.blocked_until, self._own_slot(now, k), paced)
        server_free = self._server_free(now)
        if server_free is not None and k >= server_free:
            at = max(at, self.server_fresh_until)
        return max(0.0, at - now)

    def record(self, now: float, count: int = 1) -> None:
        """`count` sends at `now` (the caller checked `wait(...) == 0` first)."""
        self._prune(now)
        if self.sent and now - self.sent[-1][0] < QUANTUM:
            last = self.sent[-1]
            last[0] = max(last[0], now)
            last[1] += count
        else:
            self.sent.append([now, float(count)])
        self.sent_since_seen += count
        if self.paced_burst is not None:
            self.paced_at = max(self.paced_at, now) + count * self.span / self.limit

    def remaining(self, now: float) -> int:
        """Sends the window (and the server) has left, paced or not."""
        if self.blocked_until > now:
            return 0
        self._prune(now)
        estimate = self.limit - self._in_window()
        server_free = self._server_free(now)
        if server_free is not None:
            estimate = min(estimate, server_free)
        return max(0, estimate)

    def sendable(self, now: float) -> int:
        """Sends that could go out at once: what the window has left, less a paced bucket's
        pace (a poll bucket with 60 left in its window sends 5 at once)."""
        left = self.remaining(now)
        if self.paced_burst is None:
            return left
        step = self.span / self.limit
        tolerance = (max(1, self.paced_burst) - 1) * step
        ahead = max(0.0, self.paced_at - now)
        return min(left, max(0, math.floor((tolerance - ahead + _PACE_EPS) / step) + 1))

    # --- corrections from responses -------------------------------------------------------

    def _block_wait(self, status: int, hints: RateLimitHints, max_hint: float) -> float | None:
        """How long the server told us to stop, per RETRY_POLICY.md B.4-B.5, or None."""
        found = not_before(
            hints,
            used_up=status == 429,
            retry_after_applies=status == 429,  # a 503's Retry-After is not about the window
            max_retry_after=max_hint,
            reset_floor=1.0,
        )
        if found is not None and found.source == "reset":
            reset = hints.reset_after or 0.0
            if reset > 2 * self.window:
                # Suspicious for a per-window limit: probably a misread reset. Block for one
                # window; if the server disagrees it will say so again with a fresh 429.
                _log.warning(
                    "reset of %.0f s on a %.0f s window looks wrong; blocking %.0f s",
                    reset,
                    self.window,
                    self.window,
                )
                return self.window
        return found.seconds if found is not None else None

    def observe(
        self,
        now: float,
        status: int,
        hints: RateLimitHints,
        *,
        max_hint: float,
        rng: random.Random | None = None,
    ) -> None:
        """Correct the state from one response: the server's numbers win over our estimate."""
        window = hints.window if hints.window is not None else self.window
        if hints.limit is not None and hints.limit > 0:
            self.limit = hints.limit
            self.window = window
        if hints.remaining is not None:
            self.server_remaining = hints.remaining
            self.sent_since_seen = 0
            fresh = hints.reset_after if hints.reset_after is not None else self.window
            self.server_fresh_until = now + fresh
        if hints.reset_after is not None:
            self.reset_at = now + hints.reset_after
        wait = self._block_wait(status, hints, max_hint)
        if wait is None and status == 429:
            wait = self.span / self.limit  # no usable hint: one slot's worth, then the window
        if wait is not None:
            self.blocked_until = max(self.blocked_until, now + hint_jitter(wait, rng))
            # The server's "not before" (Retry-After wins over the reset) also ends its
            # `remaining: 0`: past it, the window's own count decides.
            self.server_fresh_until = min(self.server_fresh_until, self.blocked_until)

    # --- storage -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "window": self.window,
            "safety": self.safety,
            "sent": self.sent,
            "blocked_until": _finite(self.blocked_until),
            "server_remaining": self.server_remaining,
            "server_fresh_until": _finite(self.server_fresh_until),
            "sent_since_seen": self.sent_since_seen,
            "reset_at": self.reset_at,
            "paced_burst": self.paced_burst,
            "paced_at": _finite(self.paced_at),
            "reserve": self.reserve,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WindowState:
        return cls(
            limit=int(data["limit"]),
            window=float(data["window"]),
            safety=float(data["safety"]),
            sent=[[float(t), float(n)] for t, n in data["sent"]],
            blocked_until=_infinite(data["blocked_until"]),
            server_remaining=data["server_remaining"],
            server_fresh_until=_infinite(data["server_fresh_until"]),
            sent_since_seen=int(data["sent_since_seen"]),
            reset_at=data["reset_at"],
            # absent in a state stored before pacing existed: not paced until re-seeded
            paced_burst=data.get("paced_burst"),
            paced_at=_infinite(data.get("paced_at")),
            reserve=int(data.get("reserve") or 0),
        )


def _finite(value: float) -> float | None:
    return None if value == -math.inf else value


def _infinite(value: float | None) -> float:
    return -math.inf if value is None else float(value)


# --- plumbing every backend shares ------------------------------------------------------


def refusal(key: BucketKey, wait: float) -> LocalRateLimited:
    """The error for a wait that does not fit (RETRY_POLICY.md C.6, local limiter row)."""
    telemetry.limiter_refused(key.provider, key.bucket)
    return LocalRateLimited(
        f"Local rate guard: {key.bucket} exhausted; next slot in {math.ceil(wait)}s.",
        provider=key.provider,
        bucket=key.bucket,
        retry_after=wait,
    )


def too_long(
    wait: float, started: float, now: float, deadline: float | None, max_inline_wait: float
) -> bool:
    """Whether waiting `wait` more seconds breaks the inline-wait cap or the deadline."""
    if (now - started) + wait > max_inline_wait + _EPS:
        return True
    return deadline is not None and now + wait > deadline + _EPS


def snapshot_of(key: BucketKey, state: WindowState, now: float) -> BucketSnapshot:
    reset_in = None
    if state.reset_at is not None and state.reset_at > now:
        reset_in = state.reset_at - now
    wait = state.wait(now)  # prunes the window first
    used = state._in_window()  # the state's own module
    remaining = state.remaining(now)
    return BucketSnapshot(
        provider=key.provider,
        key_fingerprint=key.key_fingerprint,
        bucket=key.bucket,
        limit=state.limit,
        window=state.window,
        remaining=remaining,
        tokens=float(state.sendable(now)),
        blocked_for=max(0.0, state.blocked_until - now),
        reset_in=reset_in,
        used=used,
        wait=wait,
    )


def sort_key(key: BucketKey) -> tuple[str, str, str]:
    return (key.provider, key.key_fingerprint, key.bucket)


class LimiterOptions(TypedDict, total=False):
    """What every backend accepts besides its clock (and its store)."""

    settings: Settings | None
    safety: float
    max_inline_wait: float
    max_hint: float
    spec_for: Callable[[BucketKey], BucketSpec] | None
    rng: random.Random | None


class WindowLimiter:
    """The settings every backend shares: how buckets are seeded, when a wait is refused.

    A bucket starts as its provider's registered `RateLimits` says for `settings` (the
    defaults when None); `spec_for` overrides the starting limits per bucket.
    `rng` jitters the end of a block so clients told the same reset do not stampede.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        settings: Settings | None = None,
        safety: float = SAFETY,
        max_inline_wait: float = DEFAULT_POLICY.max_inline_wait,
        max_hint: float = DEFAULT_POLICY.max_hint,
        spec_for: Callable[[BucketKey], BucketSpec] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 < safety <= 1.0:
            raise ValueError("safety must be in (0, 1]")
        self._clock = clock
        # None: every setting at its default (not read from the environment)
        self._settings = settings if settings is not None else load_settings({})
        self._safety = safety
        self._max_inline_wait = max_inline_wait
        self._max_hint = max_hint
        self._spec_for = spec_for
        self._rng = rng

    def _seed(self, key: BucketKey) -> WindowState:
        """A new bucket's state, before any response has corrected it."""
        spec = self._spec_for(key) if self._spec_for else default_spec(key, self._settings)
        return WindowState.seeded(spec, self._safety)

    def _restore(self, key: BucketKey, stored: str | bytes) -> WindowState:
        """A stored bucket's state, paced (and reserved) as its spec says now (a state stored
        by an older version, or under another spec, carries no say in that)."""
        state = WindowState.from_json(json.loads(stored))
        seed = self._seed(key)
        state.paced_burst = seed.paced_burst
        state.reserve = seed.reserve
        return state

    def _observe(self, state: WindowState, now: float, status: int, hints: RateLimitHints) -> None:
        state.observe(now, status, hints, max_hint=self._max_hint, rng=self._rng)

    def _check_wait(
        self, key: BucketKey, wait: float, started: float, now: float, deadline: float | None
    ) -> None:
        """Raise `LocalRateLimited` when `wait` more seconds break the cap or the deadline."""
        if too_long(wait, started, now, deadline, self._max_inline_wait):
            raise refusal(key, wait)


class _Queue:
    """This process's queue for one shared bucket (the state itself lives in the store)."""

    def __init__(self) -> None:
        self.queued = 0
        self.lock = anyio.Lock()


class SharedWindowLimiter(WindowLimiter):
    """`acquire` for a backend whose state lives in a store other processes share (SQLite,
    Redis): it predicts the wait (`_peek`, counting this process's queue ahead) and refuses
    what does not fit, then takes the slots in one atomic step (`_try_take`) or sleeps the
    predicted time outside it and tries again (another process may have taken the slot).
    Within one process callers queue first come, first served behind a per-bucket lock."""

    def __init__(self, clock: Clock, **options: Unpack[LimiterOptions]) -> None:
        super().__init__(clock, **options)
        self._queues: dict[BucketKey, _Queue] = {}

    async def _peek(self, key: BucketKey, ahead: int, need: int, urgent: bool) -> float:
        """The predicted wait for `need` slots behind `ahead` queued ones; changes nothing.
        `urgent`: the send may take a paced bucket's reserve (`spend_reserve()`)."""
        raise NotImplementedError

    async def _try_take(self, key: BucketKey, need: int, urgent: bool) -> float:
        """Take `need` slots if free now (0.0), else the predicted wait; atomically."""
        raise NotImplementedError

    async def acquire(
        self, key: BucketKey, *, cost: float = 1.0, deadline: float | None = None
    ) -> float:
        """Take `cost` slots from the shared bucket; return the seconds waited."""
        if not (math.isfinite(cost) and cost > 0):
            raise ValueError("cost must be a positive number")
        need = math.ceil(cost - _EPS)
        queue = self._queues.setdefault(key, _Queue())
        urgent = spending_reserve()
        started = self._clock.monotonic()
        wait = await _predict(self, key, queue, need, urgent)
        self._check_wait(key, wait, started, self._clock.monotonic(), deadline)
        queue.queued += need
        try:
            async with queue.lock:
                while (wait := await self._try_take(key, need, urgent)) > _EPS:
                    now = self._clock.monotonic()
                    self._check_wait(key, wait, started, now, deadline)
                    await self._clock.sleep(wait)
        finally:
            queue.queued -= need
        return self._clock.monotonic() - started


async def _predict(
    limiter: SharedWindowLimiter, key: BucketKey, queue: _Queue, need: int, urgent: bool
) -> float:
    """`_peek` behind this process's queue, counting each queued caller once: a caller
    whose take committed while the peek waited for the store is in the stored window and
    left the queue, so the peek, which counted it in both, is repeated with the smaller
    queue (the double count refused the window's last free slot with a wait of a whole
    window: the shared bench's intermittent one-window miss)."""
    while True:
        ahead = queue.queued
        wait = await limiter._peek(key, ahead, need, urgent)
        if wait <= _EPS or queue.queued >= ahead:
            return wait
