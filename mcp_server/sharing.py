"""What waiters share with other processes and replicas (issue 17): leases, the fan-out.

- `Leases`: named expiring leases plus a board of wanted and published items (in the SQLite
  ledger file, `limits.sqlite`, or in Redis, `limits.redis`). Short (`LEASE_TTL`) and renewed
  by their holder every `RENEW_EVERY` (`keep_renewed`), so a holder killed with -9 hands its
  work over within seconds.
- `SharedPoll`: the poll a `watch.PollCoalescer`'s rounds make when several processes share
  one ledger: one process at a time holds the endpoint's lease and polls upstream for
  everyone; the others ask it for their ids and read what it publishes.
- `Fanout`: messages to the other replicas' watchers by topic (Redis pub/sub, `bus.py`).
- `ResultFeed`: the one path poll results take to waiters: this replica's coalescer at once,
  the other replicas' through the `Fanout`. Poll rounds publish into it; so does anything else
  that learns a result (a webhook delivery, issue 18).
- `StreamSharing`: what a `watch.StreamHub` needs to follow each AgentSEO job on one replica
  for all of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from mcp_server._clock import Clock
from mcp_server.json_types import JSON

T = TypeVar("T")
log = logging.getLogger(__name__)
Spawn = Callable[[Callable[[], Awaitable[None]]], None]


class Leases(Protocol):
    """Named expiring leases plus a board of wanted and published items (`limits.sqlite`)."""

    async def hold(self, name: str, ttl: float) -> bool: ...
    async def release(self, name: str) -> None: ...
    async def want(self, name: str, item_ids: list[str], ttl: float) -> dict[str, JSON]: ...
    async def wanted(self, name: str) -> list[str]: ...
    async def publish(self, name: str, items: dict[str, tuple[JSON, bool]]) -> None: ...


LEASE_TTL = 4.0
"""How long a lease lasts without renewal. Its holder renews it every `RENEW_EVERY` while it
works, so a holder killed with -9 hands its polls and streams over within about 4 s (issue
17.3); a holder that exits cleanly lets them go at once."""
RENEW_EVERY = 1.0
"""How often a holder renews its leases (a quarter of `LEASE_TTL`: three renewals may be late
or lost before another process takes over)."""
IDLE_AFTER = 30.0
"""A `SharedPoll` holder not asked to poll for this long stops renewing and lets its lease go
(a safety net: its coalescer lets it go as soon as its loop stops)."""
WISH_TTL = 12.0
"""How long a process's ask for its ids stands on the leases' board (`SharedPoll` without the
lease): two of its slowest rounds on the normal cadence (5 s x 1.2), so the holder's rounds see
every ask between two of them; a process whose waiters left costs the holder at most this
much more polling of their ids."""


class Fanout(Protocol):
    """Messages to the other replicas' watchers, by topic (`bus.RedisSubscriptionBus`).

    `send` reaches the `listen`ers of every other replica, never this one's (which were told
    directly); delivery is best effort (pub/sub, no replay): the leases' board and a takeover
    cover what is lost.
    """

    async def send(self, topic: str, message: str) -> None: ...
    def listen(self, topic: str, listener: Callable[[str], None]) -> Callable[[], None]: ...


async def keep_renewed(
    leases: Leases, name: str, ttl: float, clock: Clock, *, busy: Callable[[], bool]
) -> None:
    """Renew lease `name` every `RENEW_EVERY` while `busy()` and the lease is still ours."""
    while True:
        await clock.sleep(min(RENEW_EVERY, ttl / 4))
        if not busy():
            return
        try:
            if not await leases.hold(name, ttl):
                return
        except Exception:
            log.warning("jobrelay: could not renew the lease %s", name, exc_info=True)
            return


class SharedPoll(Generic[T]):
    """One poller per endpoint among processes (issue 17.1); a `PollCoalescer`'s `round_poll`.

    A process without the lease registers its ids on the board (for `WISH_TTL`) and returns
    what was published for them, calling nothing upstream. The lease holder's coalescer asks
    `foreign` at each tick of its cadence, whether or not anything of its own is due, and its
    rounds poll the others' ids with its own, in chunks and in turn under its per-round call
    cap, the longest-asked first: every process's ids are polled on the normal cadence however
    many the holder has of its own (issue 17: one poller, fair to all). Each call also fills
    the room left in it with asked ids not in the round, and publishes the items of every
    asked id it got. The holder lets the lease go when the ids of its own in a call are all
    finished, or when its coalescer stops (`idle`), so a process still waiting takes over at
    its next round. With `clock` and `spawn` the holder renews the lease every `RENEW_EVERY`
    while its coalescer runs, so the lease can be short (`LEASE_TTL`) and a killed holder's
    polls move on within seconds.
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
        clock: Clock | None = None,
        spawn: Spawn | None = None,
    ) -> None:
        self._name = name
        self._poll = poll
        self._leases = leases
        self._encode = encode
        self._decode = decode
        self._is_terminal = is_terminal
        self._max_ids = max_ids
        self._ttl = ttl
        self._clock = clock
        self._spawn = spawn
        self._holding = False
        self._asked: dict[str, None] = {}
        """The ids the others ask for, in the order this holder first saw each ask."""
        self._handed: set[str] = set()
        """The asked ids `foreign` last handed the coalescer (not ours)."""
        self._renewer = False
        self._last_call = 0.0
        self.upstream_calls = 0
        self.board_reads = 0

    async def __call__(self, ids: Sequence[str]) -> Mapping[str, T]:
        if self._clock is not None:
            self._last_call = self._clock.monotonic()
        self._holding = await self._leases.hold(self._name, self._ttl)
        if not self._holding:
            self.board_reads += 1
            found = await self._leases.want(self._name, list(ids), max(self._ttl, WISH_TTL))
            return {i: self._decode(payload) for i, payload in found.items()}
        self._keep_renewed()
        asked = self._oldest_first(await self._leases.wanted(self._name))
        mine = set(ids)
        others = [i for i in asked if i not in mine and i not in self._handed]  # not twice
        if self._max_ids is not None:
            others = others[: max(0, self._max_ids - len(ids))]
        self.upstream_calls += 1
        items = await self._poll([*ids, *others])
        published = {
            i: (self._encode(item), self._is_terminal(item))
            for i, item in items.items()
            if i in self._asked  # asked by another process, ours or not
        }
        if published:
            await self._leases.publish(self._name, published)
        own = [i for i in ids if i not in self._handed]
        if own and all(i in items and self._is_terminal(items[i]) for i in own):
            await self.idle()
        return items

    async def foreign(self, mine: Collection[str]) -> list[str]:
        """While this process holds the lease: the ids the others ask for that `mine` (its
        coalescer's own) lacks, the longest-asked first, for its rounds to poll with its own
        (the lease renewed: its coalescer still runs). Else, or when the store fails, none,
        and nothing is asked of the store."""
        self._handed = set()
        if not self._holding:
            return []
        if self._clock is not None:
            self._last_call = self._clock.monotonic()
        try:
            self._holding = await self._leases.hold(self._name, self._ttl)
            if not self._holding:
                return []
            self._keep_renewed()
            asked = self._oldest_first(await self._leases.wanted(self._name))
        except Exception:
            log.warning("jobrelay: could not read the asks for %s", self._name, exc_info=True)
            return []
        self._handed = {i for i in asked if i not in mine}
        return [i for i in asked if i in self._handed]

    def _oldest_first(self, wanted: Sequence[str]) -> list[str]:
        """`wanted` (the board's asks, still standing) in the order they were first seen."""
        standing = set(wanted)
        self._asked = {i: None for i in self._asked if i in standing}
        self._asked.update(dict.fromkeys(wanted))
        return list(self._asked)

    async def idle(self) -> None:
        """Nothing of ours left to poll: let the lease go (the others take over at once)."""
        if self._holding:
            self._holding = False
            try:
                await self._leases.release(self._name)
            except Exception:
                log.warning("jobrelay: could not let the lease %s go", self._name, exc_info=True)

    def _busy(self) -> bool:
        clock = self._clock
        return (
            self._holding and clock is not None and clock.monotonic() - self._last_call < IDLE_AFTER
        )

    def _keep_renewed(self) -> None:
        if self._renewer or self._clock is None or self._spawn is None:
            return
        self._renewer = True
        clock = self._clock

        async def renew() -> None:
            try:
                await keep_renewed(self._leases, self._name, self._ttl, clock, busy=self._busy)
            finally:
                self._renewer = False

        self._spawn(renew)


# --------------------------------------------------------------------------------------------
# Results shared between replicas


class ResultFeed(Generic[T]):
    """The one path results take to waiters, on this replica and, through `fanout`, on the
    others (issue 17.2). Named seam: whatever learns an item's state publishes it here.

    - `publish(items)`: this replica's waiters at once (`deliver`), then the others'.
      A webhook delivery (issue 18) is published here, exactly as a poll result.
    - `share(items)`: the others' only (the `PollCoalescer`'s `on_items`: its own waiters
      already have them). Only items that changed since this feed last sent them travel.
    - the others' messages on `topic` are decoded and handed to `deliver`.
    """

    def __init__(
        self,
        *,
        topic: str,
        deliver: Callable[[Mapping[str, T]], object],
        encode: Callable[[T], JSON],
        decode: Callable[[JSON], T],
        fanout: Fanout | None,
        memo: int = 10_000,
    ) -> None:
        self.topic = topic
        self._deliver = deliver
        self._encode = encode
        self._decode = decode
        self._fanout = fanout
        self._memo_size = memo
        self._sent: dict[str, str] = {}
        self._unlisten = None if fanout is None else fanout.listen(topic, self._received)

    async def publish(self, items: Mapping[str, T]) -> None:
        self._deliver(items)
        await self.share(items)

    async def share(self, items: Mapping[str, T]) -> None:
        if self._fanout is None:
            return
        changed: dict[str, JSON] = {}
        for item_id, item in items.items():
            encoded = self._encode(item)
            fingerprint = json.dumps(encoded, sort_keys=True, separators=(",", ":"))
            if self._sent.get(item_id) != fingerprint:
                changed[item_id] = encoded
                self._sent.pop(item_id, None)
                self._sent[item_id] = fingerprint
        while len(self._sent) > self._memo_size:
            del self._sent[next(iter(self._sent))]
        if changed:
            await self._fanout.send(self.topic, json.dumps(changed, separators=(",", ":")))

    def _received(self, message: str) -> None:
        try:
            raw = json.loads(message)
            items = {str(i): self._decode(v) for i, v in raw.items()}
        except Exception:  # noqa: BLE001 - one bad message must not break the listener
            log.warning("jobrelay: ignored an unreadable %s message", self.topic)
            return
        self._deliver(items)

    def close(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None


@dataclass
class StreamSharing(Generic[T]):
    """What a `StreamHub` needs to share its followers with other replicas (issue 17.1): one
    replica holds a job's lease and follows it upstream, sending each value on the job's
    topic; the others listen, and take the lease over when its holder stops or dies."""

    fanout: Fanout
    leases: Leases
    clock: Clock
    encode: Callable[[T], JSON]
    decode: Callable[[JSON], T]
    name: str
    """Prefix of the per-job lease and topic names (one per tenant: `{name}:{job id}`)."""
    ttl: float = LEASE_TTL
