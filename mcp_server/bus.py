"""The MCP SDK's `SubscriptionBus` over Redis pub/sub: notifications reach clients on any replica.

A client listening (`subscriptions/listen`) on replica A must hear about a change published on
replica B. With `JOBRELAY_REDIS_URL` set the server is built with `RedisSubscriptionBus`:

- `publish` delivers to this replica's listeners at once (through the SDK's own
  `InMemorySubscriptionBus`), then sends the event, tagged with this replica's random origin
  id, to one Redis channel.
- `run` (started in the server's task group) subscribes to that channel and delivers every event
  from another origin to this replica's listeners; its own come back too and are skipped, so
  nothing is delivered twice.

Events are cues without payloads (the SDK's contract: fire-and-forget, no replay), so a Redis
outage loses cross-replica cues only: `publish` logs and carries on, `run` reconnects with a
capped backoff on the injected clock, and clients re-fetch as they do after any dropped stream.

The same channel carries two more kinds of message, each tagged with a topic (issue 17):

- `tasks` (`RedisTaskEvents`, the `mcptasks.TaskEventBus` on Redis): "this MCP task changed",
  a task id only; a listen stream on any replica then reads the task from the shared ledger,
  so `notifications/tasks` reach a listener on replica B for a job followed on replica A.
- the watchers' topics (`send`/`listen`, the `sharing.Fanout`): poll results and stream events
  one replica got from upstream, for the waiters on the others (`sharing.ResultFeed`,
  `watch.StreamHub`).

One subscription per replica serves all three; a message from this replica's own origin is
skipped (it was delivered here at once).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import anyio
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    SubscriptionBus,
    ToolsListChanged,
)

from mcp_server._clock import Clock, SystemClock
from mcp_server.mcptasks import InMemoryTaskEventBus

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "DEFAULT_CHANNEL",
    "TASKS_TOPIC",
    "RedisSubscriptionBus",
    "RedisTaskEvents",
    "event_from_json",
    "event_to_json",
]

_log = logging.getLogger(__name__)

DEFAULT_CHANNEL: Final = "jobrelay:events"
TASKS_TOPIC: Final = "mcp-tasks"
_TOPIC_MARK: Final = "T "
"""Starts a topic message (`T {origin} {topic}` then a newline and the message); the SDK's
events are JSON objects."""
_RECONNECT_MAX: Final = 30.0

_KINDS: Final[dict[type[Any], str]] = {
    ToolsListChanged: "tools_list_changed",
    PromptsListChanged: "prompts_list_changed",
    ResourcesListChanged: "resources_list_changed",
    ResourceUpdated: "resource_updated",
}


def event_to_json(event: ServerEvent, origin: str) -> str:
    body: dict[str, str] = {"origin": origin, "kind": _KINDS[type(event)]}
    if isinstance(event, ResourceUpdated):
        body["uri"] = event.uri
    return json.dumps(body, separators=(",", ":"))


def event_from_json(text: str | bytes) -> tuple[str, ServerEvent] | None:
    """(origin, event), or None for a message that is not one of ours."""
    try:
        body = json.loads(text)
        origin, kind = str(body["origin"]), body["kind"]
    except (ValueError, KeyError, TypeError):
        return None
    match kind:
        case "tools_list_changed":
            return origin, ToolsListChanged()
        case "prompts_list_changed":
            return origin, PromptsListChanged()
        case "resources_list_changed":
            return origin, ResourcesListChanged()
        case "resource_updated" if isinstance(body.get("uri"), str):
            return origin, ResourceUpdated(uri=body["uri"])
    return None


class RedisSubscriptionBus:
    """A `SubscriptionBus` shared by every replica on one Redis channel (see the module doc)."""

    def __init__(
        self, redis: Redis, *, channel: str | None = None, clock: Clock | None = None
    ) -> None:
        self._redis = redis
        self._channel = DEFAULT_CHANNEL if channel is None else channel
        self._clock = clock or SystemClock()
        self._local = InMemorySubscriptionBus()
        self.origin = secrets.token_hex(8)
        self._topics: dict[str, dict[object, Callable[[str], None]]] = {}
        self.sent = 0
        """Topic messages sent to Redis (benchmarks: what the fan-out costs)."""

    async def publish(self, event: ServerEvent) -> None:
        await self._local.publish(event)
        try:
            await self._redis.publish(self._channel, event_to_json(event, self.origin))
        except Exception as exc:  # noqa: BLE001 - a lost cue must never fail the publisher
            _log.warning("jobrelay: could not share a notification through Redis: %s", exc)

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        return self._local.subscribe(listener)

    # ---- topics: `sharing.Fanout` and the task events ------------------------------------
    async def send(self, topic: str, message: str) -> None:
        """`message` to the `topic` listeners of every other replica (not this one's)."""
        # A header line, then the message: a replica reads the header alone to skip its own
        # echo and topics nobody here listens to (a poll round's items can be large).
        body = f"{_TOPIC_MARK}{self.origin} {topic}\n{message}"
        try:
            await self._redis.publish(self._channel, body)
            self.sent += 1
        except Exception as exc:  # noqa: BLE001 - the others catch up from the shared state
            _log.warning("jobrelay: could not share %s through Redis: %s", topic, exc)

    def listen(self, topic: str, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call `listener` (synchronous, must not block) with each message another replica
        sends on `topic`; returns its unsubscribe."""
        token = object()
        self._topics.setdefault(topic, {})[token] = listener

        def unsubscribe() -> None:
            listeners = self._topics.get(topic)
            if listeners is not None:
                listeners.pop(token, None)
                if not listeners:
                    self._topics.pop(topic, None)

        return unsubscribe

    def _deliver(self, topic: str, message: str) -> None:
        for listener in list(self._topics.get(topic, {}).values()):
            try:
                listener(message)
            except Exception:  # noqa: BLE001 - fan-out boundary: one listener must not starve the rest
                _log.exception("jobrelay: a %s listener raised; continuing", topic)

    async def _received(self, data: str | bytes) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        if text.startswith(_TOPIC_MARK):
            header, _, message = text.partition("\n")
            origin, _, topic = header[len(_TOPIC_MARK) :].partition(" ")
            if origin != self.origin and topic in self._topics:
                self._deliver(topic, message)
            return
        decoded = event_from_json(text)
        if decoded is not None and decoded[0] != self.origin:
            await self._local.publish(decoded[1])

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Deliver other replicas' events here until cancelled; `task_status.started()` once
        the channel is subscribed (events published before that are not seen: no replay)."""
        delay = 0.5
        started = False
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                if not started:
                    started = True
                    task_status.started()
                delay = 0.5
                async for message in pubsub.listen():
                    await self._received(message.get("data", b""))
            except Exception as exc:  # noqa: BLE001 - reconnect whatever broke the stream
                _log.warning("jobrelay: Redis notifications interrupted (%s); reconnecting", exc)
            finally:
                with anyio.CancelScope(shield=True):
                    await pubsub.aclose()
            if not started:
                started = True
                task_status.started()  # serve anyway; cues resume when Redis is back
            await self._clock.sleep(delay)
            delay = min(_RECONNECT_MAX, delay * 2)

    async def aclose(self) -> None:
        await self._redis.aclose()


class RedisTaskEvents:
    """The `mcptasks.TaskEventBus` on the replicas' Redis channel: "task X changed" reaches the
    listen streams of every replica (each then reads the task from the shared ledger)."""

    def __init__(self, bus: RedisSubscriptionBus) -> None:
        self._bus = bus
        self._local = InMemoryTaskEventBus()
        bus.listen(TASKS_TOPIC, self._local.deliver)

    async def publish(self, task_id: str) -> None:
        await self._local.publish(task_id)
        await self._bus.send(TASKS_TOPIC, task_id)

    def subscribe(self, listener: Callable[[str], None]) -> Callable[[], None]:
        return self._local.subscribe(listener)


if TYPE_CHECKING:
    from mcp_server.mcptasks import TaskEventBus
    from mcp_server.sharing import Fanout

    def _conforms(bus: RedisSubscriptionBus) -> SubscriptionBus:
        return bus  # mypy proves RedisSubscriptionBus satisfies the SDK's protocol

    def _fans_out(bus: RedisSubscriptionBus) -> Fanout:
        return bus  # and the watchers' fan-out

    def _task_events(events: RedisTaskEvents) -> TaskEventBus:
        return events  # and RedisTaskEvents the tasks engine's bus
