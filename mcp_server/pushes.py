"""Pushed items (webhook deliveries, issue 18) standing in for polls.

`PushReconciler`: while pushes keep arriving, a `watch.PollCoalescer` polls their ids only on a
slow reconciliation cadence (a push can be lost: no retries are promised), and on the normal one
again for an id whose expected completion passed without a push. The pushed items themselves
take the results' one path (`sharing.ResultFeed.publish`: this replica's waiters at once, the
other replicas' through the fan-out); the reconciler only decides which ids are due a poll.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from mcp_server._clock import Clock

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


def due_ids(push: PushReconciler | None, ids: Sequence[str]) -> list[str]:
    """The ids to poll now: all of them, unless pushes stand in for some."""
    return list(ids) if push is None else push.due(ids)
