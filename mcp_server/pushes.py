"""Pushed items (webhook deliveries, issue 18) standing in for polls.

`PushReconciler`: while pushes keep arriving, a `watch.PollCoalescer` polls their ids only on a
slow reconciliation cadence (a push can be lost: no retries are promised), and on the normal one
again for an id whose expected completion passed without a push. The pushed items themselves
take the results' one path (`sharing.ResultFeed.publish`: this replica's waiters at once, the
other replicas' through the fan-out); the reconciler only decides which ids are due a poll.

`PushShare`: what each reconciler learns from a push, told to the other replicas' (a small
message on the `sharing.Fanout`, Redis), so a replica that receives no deliveries itself (behind
a load balancer, the one holding the poll lease may receive none) still polls slowly while they
arrive elsewhere. An arrival is shared only where its item is (the fan-out), never through the
ledger alone: a replica that cannot get the pushed item must keep polling for it.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from mcp_server._clock import Clock
from mcp_server.sharing import Fanout

log = logging.getLogger(__name__)

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
        """Pushed items received by this replica (benchmarks, metrics)."""
        self.relayed = 0
        """Pushes other replicas received and told this one of (`PushShare`)."""

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

    def arrived(self, item_id: str, *, took: float | None = None, relayed: bool = False) -> None:
        """A push for `item_id` arrived: pushes are active, and its duration is learnt (`took`,
        its submit-to-push seconds when known, else from its start here). `relayed`: another
        replica received it (`PushShare`)."""
        now = self._clock.monotonic()
        start = self._started.get(item_id)
        if took is None and start is not None:
            took = now - start
        if took is not None:
            self._durations.append(max(0.0, took))
        self._last_push = now
        if relayed:
            self.relayed += 1
        else:
            self.pushes += 1
        self.forget(item_id)

    def forget(self, item_id: str) -> None:
        self._started.pop(item_id, None)
        self._polled.pop(item_id, None)


def due_ids(push: PushReconciler | None, ids: Sequence[str]) -> list[str]:
    """The ids to poll now: all of them, unless pushes stand in for some."""
    return list(ids) if push is None else push.due(ids)


# --------------------------------------------------------------------------------------------
# Arrivals shared between replicas

MAX_SHARED_IDS = 1_000
"""Ids per `PushShare` message at most (a delivery names one; a larger message is refused)."""
MAX_ID_LENGTH = 200
MAX_TOOK_SECONDS = 7 * 86_400.0


@dataclass(frozen=True)
class PushMessage:
    """One `PushShare` message, read: pushes `arrived` for `endpoint`'s ids (each with its
    submit-to-push seconds, None when unknown), or `hinted` ids (pushes not trusted to stand in
    for a poll: whoever watches them polls them early with its own key)."""

    endpoint: str | None = None
    arrived: dict[str, float | None] = field(default_factory=dict)
    hinted: list[str] = field(default_factory=list)

    def encode(self) -> str:
        body: dict[str, object] = {"v": 1}
        if self.arrived:
            body["endpoint"] = self.endpoint
            body["arrived"] = self.arrived
        if self.hinted:
            body["hinted"] = self.hinted
        return json.dumps(body, separators=(",", ":"))


class UnreadablePush(ValueError):
    """A `PushShare` message that does not read (`read_push_message`)."""


def _an_id(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        raise UnreadablePush("not an item id")
    return value


def _took(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnreadablePush("not a duration")
    took = float(value)
    if not 0.0 <= took <= MAX_TOOK_SECONDS:  # NaN fails both comparisons
        raise UnreadablePush("duration out of range")
    return took


def read_push_message(message: str, endpoints: Collection[str]) -> PushMessage:
    """`message` read strictly (`UnreadablePush` when anything in it is unexpected): another
    replica's, through Redis, so checked before it changes any reconciler."""
    try:
        raw = json.loads(message)
    except (ValueError, RecursionError) as exc:
        raise UnreadablePush("not JSON") from exc
    if not isinstance(raw, dict) or raw.get("v") != 1:
        raise UnreadablePush("not a version 1 message")
    arrived_raw = raw.get("arrived", {})
    hinted_raw = raw.get("hinted", [])
    if not isinstance(arrived_raw, dict) or not isinstance(hinted_raw, list):
        raise UnreadablePush("unexpected shape")
    if len(arrived_raw) + len(hinted_raw) > MAX_SHARED_IDS:
        raise UnreadablePush("too many ids")
    endpoint = raw.get("endpoint")
    if arrived_raw and (not isinstance(endpoint, str) or endpoint not in endpoints):
        raise UnreadablePush("unknown endpoint")
    arrived = {_an_id(i): _took(t) for i, t in arrived_raw.items()}
    hinted = [_an_id(i) for i in hinted_raw]
    return PushMessage(endpoint if arrived else None, arrived, hinted)


class PushShare:
    """Push arrivals and hints told to the other replicas, and theirs applied here (one per
    tenant whose pushes are trusted, on `topic`).

    `on_arrived(endpoint, {id: took})` applies arrivals another replica received (its
    reconciler for `endpoint` learns them exactly as its own, `relayed`); `on_hinted(ids)`
    expedites the ids' polls wherever they are watched here. A message that does not read
    (`read_push_message`), or that fails to apply, is logged and ignored: the listener goes on
    with the next one.
    """

    def __init__(
        self,
        *,
        topic: str,
        fanout: Fanout,
        endpoints: Collection[str],
        on_arrived: Callable[[str, Mapping[str, float | None]], object],
        on_hinted: Callable[[list[str]], object],
    ) -> None:
        self.topic = topic
        self._fanout = fanout
        self._endpoints = frozenset(endpoints)
        self._on_arrived = on_arrived
        self._on_hinted = on_hinted
        self.ignored = 0
        """Messages that did not read (tests, logs)."""
        self._unlisten: Callable[[], None] | None = fanout.listen(topic, self._received)

    async def arrived(self, endpoint: str, took: Mapping[str, float | None]) -> None:
        """Pushes this replica received and trusted for `endpoint`'s ids."""
        if took:
            await self._fanout.send(self.topic, PushMessage(endpoint, dict(took)).encode())

    async def hinted(self, ids: Sequence[str]) -> None:
        """Pushes this replica received but does not trust to stand in for a poll."""
        if ids:
            await self._fanout.send(self.topic, PushMessage(hinted=list(ids)).encode())

    def _received(self, message: str) -> None:
        try:
            read = read_push_message(message, self._endpoints)
        except UnreadablePush as exc:
            self.ignored += 1
            log.warning("jobrelay: ignored an unreadable %s message (%s)", self.topic, exc)
            return
        try:
            if read.endpoint is not None and read.arrived:
                self._on_arrived(read.endpoint, read.arrived)
            if read.hinted:
                self._on_hinted(read.hinted)
        except Exception:  # one bad message must not break the listener
            self.ignored += 1
            log.warning("jobrelay: could not apply a %s message", self.topic, exc_info=True)

    def close(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
