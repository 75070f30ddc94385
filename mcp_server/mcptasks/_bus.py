"""Fan-out of "this task changed" from whoever saved it to every open listen stream.

Events carry only a task id: a stream that receives one reads the task from the store and
sends what `tasks/get` would answer at that moment, so a bus shared between replicas (Redis
pub/sub, say) needs no payload format and never carries results. The shape mirrors the SDK's
`SubscriptionBus`, whose event type is closed over the core notifications and cannot carry
task ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import anyio.lowlevel

log = logging.getLogger(__name__)

TaskListener = Callable[[str], None]


class TaskEventBus(Protocol):
    async def publish(self, task_id: str) -> None:
        """Tell every subscribed listener (on every replica) that `task_id` changed."""
        ...

    def subscribe(self, listener: TaskListener) -> Callable[[], None]:
        """Register `listener` (synchronous, must not block) and return its unsubscribe."""
        ...


class InMemoryTaskEventBus:
    """The in-process `TaskEventBus`."""

    def __init__(self) -> None:
        self._listeners: dict[object, TaskListener] = {}

    async def publish(self, task_id: str) -> None:
        self.deliver(task_id)
        await anyio.lowlevel.checkpoint()

    def deliver(self, task_id: str) -> None:
        """Tell this process's listeners (what `publish` does, without yielding): for a bus
        that relays other processes' events here."""
        for listener in list(self._listeners.values()):
            try:
                listener(task_id)
            except Exception:  # fan-out boundary: one broken stream must not starve the rest
                log.exception("task listener raised; continuing")

    def subscribe(self, listener: TaskListener) -> Callable[[], None]:
        token = object()
        self._listeners[token] = listener

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe
