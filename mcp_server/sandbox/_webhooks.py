"""The simulated Seamless webhooks (DESIGN.md section 5): deliveries of finished research.

`POST /_sandbox/webhooks` with `{"url": str | null, "secret": str, "duplicate_rate": float,
"drop_rate": float}` (every key but `url` optional) turns them on (`url` null: off, and
nothing still scheduled is sent). Then each research target that will end `done` (not a
`duplicate`: its record's `apiResearchId` is the original's) is delivered when it finishes,
in virtual time: `POST url` with `x-seamless-webhook-secret: secret` and the bare record as
the body (`contact-researched` / `company-researched`; UPSTREAMS.md, Webhooks). Whether a
delivery is dropped or sent twice is drawn when the research is queued, from an RNG seeded by
`faults.seed`, so a run is the same under the same seed. Nothing is retried (the docs promise
no retries). `/_sandbox/stats` counts under `webhooks`: `sent` (deliveries posted, repeats
excluded), `repeated` (second copies posted), `dropped` (never posted), `delivered` and
`failed` (posts answered 2xx, and the others); each delivery's real send time is kept by
request id for benchmarks (`sent_at`).

Deliveries run in a task group the app's host lends (`attach`): the embedded sandbox lends
the jobrelay server's, a standalone sandbox its own app lifespan's. Without one, turning
deliveries on is refused (409).
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.abc
import httpx

from mcp_server.sandbox._state import SandboxState

Event = Literal["contact-researched", "company-researched"]
SECRET_HEADER = "x-seamless-webhook-secret"  # noqa: S105  # a header name
SEND_TIMEOUT_SECONDS = 5.0
_MAX_SENT_AT = 10_000
_RNG_SALT = 0x3EB400C


@dataclass
class WebhookConfig:
    url: str | None = None
    secret: str = ""
    duplicate_rate: float = 0.0
    drop_rate: float = 0.0


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    request_id: str = field(compare=False)
    event: Event = field(compare=False)
    record: Callable[[], dict[str, Any]] = field(compare=False)
    copies: int = field(compare=False)
    """0 (dropped), 1, or 2 (repeated)."""
    generation: int = field(compare=False)


@dataclass
class WebhookSender:
    """Schedules and posts the deliveries of one sandbox instance."""

    _state: weakref.ref[SandboxState]
    config: WebhookConfig = field(default_factory=WebhookConfig)
    sent: int = 0
    repeated: int = 0
    dropped: int = 0
    failed: int = 0
    delivered: int = 0
    sent_at: dict[str, float] = field(default_factory=dict)
    """Real `time.perf_counter()` at each delivery's first post, by request id."""
    _queue: list[_Delivery] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _rng: random.Random = field(default_factory=random.Random)
    _group: anyio.abc.TaskGroup | None = None
    _running: bool = False
    _changed: anyio.Event | None = None
    _generation: int = 0

    def __post_init__(self) -> None:
        self._rng.seed(self.state.faults.seed ^ _RNG_SALT)

    @property
    def state(self) -> SandboxState:
        state = self._state()
        if state is None:  # pragma: no cover - the sender goes with its state
            raise RuntimeError("the sandbox state is gone")
        return state

    # ---- control --------------------------------------------------------------------------
    def attach(self, group: anyio.abc.TaskGroup | None) -> None:
        """Lend (or take back, with None) the task group deliveries run in."""
        self._group = group
        self._running = False

    def configure(self, data: Mapping[str, object]) -> tuple[int, dict[str, Any]]:
        """Apply a `POST /_sandbox/webhooks` body; `(status, answer)`."""
        allowed = {"url", "secret", "duplicate_rate", "drop_rate"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            return 400, {
                "error": f"unknown key(s): {', '.join(unknown)}",
                "allowed": sorted(allowed),
            }
        if "url" not in data:
            return 400, {"error": "url is required: an http(s) URL, or null to stop deliveries"}
        url = data["url"]
        if url is not None and (
            not isinstance(url, str) or not url.startswith(("http://", "https://"))
        ):
            return 400, {"error": "url must be an http:// or https:// URL, or null"}
        secret = data.get("secret", "")
        if not isinstance(secret, str) or (url is not None and not secret):
            return 400, {"error": "secret must be a non-empty string (the dashboard's secret)"}
        rates: dict[str, float] = {}
        for name in ("duplicate_rate", "drop_rate"):
            value = data.get(name, 0.0)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                return 400, {"error": f"{name} must be a number between 0 and 1"}
            rates[name] = float(value)
        if url is not None and self._group is None:
            return 409, {
                "error": "this sandbox cannot deliver: it runs without a task group (serve it "
                "with uvicorn and its lifespan, or embedded in jobrelay)"
            }
        self.config = WebhookConfig(
            url=url,
            secret=secret,
            duplicate_rate=rates["duplicate_rate"],
            drop_rate=rates["drop_rate"],
        )
        if url is None:
            self._generation += 1  # what is still scheduled is never sent
            self._queue.clear()
            self._wake()
        return 200, self.public()

    def reset(self) -> None:
        self.config = WebhookConfig()
        self.sent = self.repeated = self.dropped = self.failed = self.delivered = 0
        self.sent_at.clear()
        self._queue.clear()
        self._generation += 1
        self._rng.seed(self.state.faults.seed ^ _RNG_SALT)
        self._wake()

    def public(self) -> dict[str, Any]:
        """The settings as an answer: never the secret itself."""
        c = self.config
        return {
            "url": c.url,
            "secret": "set" if c.secret else None,
            "duplicate_rate": c.duplicate_rate,
            "drop_rate": c.drop_rate,
        }

    def stats(self) -> dict[str, Any]:
        return {
            **self.public(),
            "sent": self.sent,
            "repeated": self.repeated,
            "dropped": self.dropped,
            "failed": self.failed,
            "delivered": self.delivered,
            "scheduled": len(self._queue),
        }

    # ---- scheduling -----------------------------------------------------------------------
    def finished_at(
        self,
        kind: Literal["contact", "company"],
        request_id: str,
        due: float,
        record: Callable[[], dict[str, Any]],
    ) -> None:
        """A research target will end `done` at virtual time `due` with `record()`."""
        c = self.config
        if c.url is None or self._group is None:
            return
        roll = self._rng.random()
        copies = 0 if roll < c.drop_rate else 2 if self._rng.random() < c.duplicate_rate else 1
        event: Event = "contact-researched" if kind == "contact" else "company-researched"
        heapq.heappush(
            self._queue,
            _Delivery(due, next(self._seq), request_id, event, record, copies, self._generation),
        )
        self._wake()
        if not self._running:
            self._running = True
            self._group.start_soon(self._run)

    def _wake(self) -> None:
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def _run(self) -> None:
        """Post deliveries as they fall due; ends when none is left (started again later)."""
        try:
            async with httpx.AsyncClient(timeout=SEND_TIMEOUT_SECONDS) as client:
                while self._queue:
                    wait = self._queue[0].due - self.state.now()
                    if wait > 0:
                        changed = self._changed = self._changed or anyio.Event()
                        with self.state.clock.move_on_after(wait):
                            await changed.wait()
                        continue
                    delivery = heapq.heappop(self._queue)
                    if delivery.generation == self._generation:
                        await self._deliver(client, delivery)
        finally:
            self._running = False

    async def _deliver(self, client: httpx.AsyncClient, delivery: _Delivery) -> None:
        c = self.config
        if delivery.copies == 0 or c.url is None:
            self.dropped += 1
            return
        body = delivery.record()
        headers = {SECRET_HEADER: c.secret, "x-seamless-event": delivery.event}
        for copy in range(delivery.copies):
            if copy == 0:
                self.sent += 1
                if len(self.sent_at) >= _MAX_SENT_AT:
                    self.sent_at.pop(next(iter(self.sent_at)))
                self.sent_at[delivery.request_id] = time.perf_counter()
            else:
                self.repeated += 1
            try:
                answer = await client.post(c.url, json=body, headers=headers)
            except httpx.HTTPError:
                self.failed += 1
                continue
            if answer.is_success:
                self.delivered += 1
            else:
                self.failed += 1


_SENDERS: dict[int, WebhookSender] = {}


def webhooks_of(state: SandboxState) -> WebhookSender:
    """The one sender of a sandbox instance (dropped with its state)."""
    sender = _SENDERS.get(id(state))
    if sender is None or sender._state() is not state:
        sender = _SENDERS[id(state)] = WebhookSender(weakref.ref(state))
        weakref.finalize(state, _SENDERS.pop, id(state), None)
    return sender
