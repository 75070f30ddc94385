"""Following a Server-Sent Events stream across drops (RETRY_POLICY.md C.2 and C.6).

httpx-sse parses the stream but does not reconnect; this module adds what a follower needs:

- the status and content type are checked before iterating: a non-200 answer or a body that
  is not `text/event-stream` raises `StreamUnavailable`, and the caller polls instead;
- every connect and reconnect takes a token from the limiter (AgentSEO `control` budget);
- after a drop (a clean end of the body, a reset, a read timeout) it reconnects with
  `Last-Event-ID`, waiting `max(server retry:, capped backoff)`; the backoff restarts after
  any event, and at most `policy.sse_max_reconnects` reconnects happen per call, after which
  `StreamUnavailable` again means "poll instead";
- events already seen (an id not above the last one) are skipped, so a server that replays
  from an older id never yields an event twice; keep-alive artefacts (no data) are dropped;
- at the deadline it returns cleanly: the caller reports "still running", it is not an error.

Only the wait for the next event runs inside a cancel scope, never a `yield`, so consumers may
iterate it like any async generator. Close it with `contextlib.aclosing` when stopping early.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import httpx
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse

from mcp_server import telemetry
from mcp_server._clock import Clock
from mcp_server.errors import BadResponse, NoResponse, UpstreamError
from mcp_server.upstream._backoff import sse_reconnect_delay
from mcp_server.upstream._client import SSE_TIMEOUT, Call
from mcp_server.upstream._http import UpstreamHTTP

__all__ = ["SSEMessage", "StreamUnavailable", "follow_sse"]

_EVENT_STREAM = "text/event-stream"


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """One dispatched event that carried data."""

    id: str | None
    event: str
    data: str
    retry_ms: int | None = None


class StreamUnavailable(Exception):
    """No (more) stream here; poll instead. Internal to the upstream package."""

    def __init__(
        self, reason: str, *, cause: UpstreamError | None = None, last_event_id: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause
        self.last_event_id = last_event_id


def _seen(event_id: str, data: str, last_id: str | None, last_data: str | None) -> bool:
    """Whether this event was already delivered (a replay after a reconnect).

    Ids are monotonic integers: a lower id is old. An equal id is old only with equal data,
    because a parser keeps the last id for events that carry none (HTML SSE spec).
    """
    if last_id is None or not event_id:
        return False
    if event_id.isdigit() and last_id.isdigit() and int(event_id) < int(last_id):
        return True
    return event_id == last_id and data == last_data


@asynccontextmanager
async def _connect(
    http: UpstreamHTTP, call: Call, *, deadline: float, last_event_id: str | None
) -> AsyncIterator[EventSource]:
    """An open, checked event stream, or `StreamUnavailable` / `NoResponse`."""
    await http.limiter.acquire(http.feedback.bucket(call), cost=1.0, deadline=deadline)
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    try:
        async with aconnect_sse(
            http.client, "GET", str(http.url(call.path)), headers=headers, timeout=SSE_TIMEOUT
        ) as source:
            response = source.response
            if response.status_code != 200:
                error: BadResponse = await http.reader.error_from(call, response)
                http.budget.record(error)
                raise StreamUnavailable(
                    f"no event stream (HTTP {response.status_code})",
                    cause=error,
                    last_event_id=last_event_id,
                )
            await http.feedback.observe(call, response, None)
            ctype = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            if ctype != _EVENT_STREAM:
                shown = http.failures.sanitise(ctype, 60) or "missing"
                raise StreamUnavailable(
                    f"no event stream (content type {shown})",
                    last_event_id=last_event_id,
                )
            http.budget.record(None)
            yield source
    except httpx.PoolTimeout as exc:
        # Our own pool is full: local, not an upstream failure (the budget is not told).
        raise StreamUnavailable(
            "no free stream connection in jobrelay's own pool", last_event_id=last_event_id
        ) from exc
    except httpx.TransportError as exc:
        error_nr = http.failures.no_response(call, exc)
        http.budget.record(error_nr)
        raise error_nr from exc


_ENDED: Final = ServerSentEvent(event="__ended__")
"""Sentinel: the body ended (a drop, unless the consumer already stopped at the final event)."""


async def _next_event(
    events: AsyncIterator[ServerSentEvent], clock: Clock, deadline: float
) -> ServerSentEvent | None:
    """The next event, `_ENDED` at the end of the body, or None when the deadline passes.

    Only this wait runs in a cancel scope (never a `yield`), bounded by the clock's deadline.
    """
    remaining = deadline - clock.monotonic()
    if remaining <= 0:
        return None
    with clock.move_on_after(remaining):
        try:
            return await anext(events)
        except StopAsyncIteration:
            return _ENDED
    return None


async def follow_sse(
    http: UpstreamHTTP,
    call: Call,
    *,
    deadline: float,
    last_event_id: str | None = None,
    rng: random.Random | None = None,
) -> AsyncGenerator[SSEMessage, None]:
    """Events of `call`'s stream until the consumer stops, the deadline passes, or no stream.

    Raises `StreamUnavailable` (poll instead) when the endpoint does not stream or the
    reconnect allowance is used up; `LocalRateLimited` when the limiter has no slot in time.
    """
    clock = http.clock
    policy = http.policy
    last_id = last_event_id or None
    last_data: str | None = None
    server_retry: int | None = None
    reconnects = 0
    backoff_index = 0
    while True:
        if clock.monotonic() >= deadline:
            return
        drop: str
        try:
            async with _connect(http, call, deadline=deadline, last_event_id=last_id) as source:
                events = source.aiter_sse()
                try:
                    while True:
                        sse = await _next_event(events, clock, deadline)
                        if sse is None:
                            return  # the deadline passed while waiting
                        if sse is _ENDED:
                            drop = "stream ended before the final event"
                            break
                        if sse.retry is not None and sse.retry >= 0:
                            server_retry = sse.retry
                        if not sse.data or _seen(sse.id, sse.data, last_id, last_data):
                            continue
                        last_id, last_data = sse.id or last_id, sse.data
                        backoff_index = 0
                        yield SSEMessage(sse.id or None, sse.event, sse.data, sse.retry)
                except httpx.TransportError as exc:
                    lost = http.failures.no_response(call, exc)
                    http.budget.record(lost)
                    drop = lost.message
                finally:
                    await events.aclose()
        except NoResponse as err:
            drop = err.message
        if reconnects >= policy.sse_max_reconnects:
            raise StreamUnavailable(
                f"event stream dropped {reconnects + 1} times ({drop})", last_event_id=last_id
            )
        delay = sse_reconnect_delay(backoff_index, server_retry, rng, policy=policy)
        if clock.monotonic() + delay >= deadline:
            return
        await clock.sleep(delay)
        reconnects += 1
        telemetry.sse_reconnected(http.provider)
        backoff_index += 1
