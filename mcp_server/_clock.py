"""Time, injectable. Every wait in jobrelay goes through a `Clock` so tests can scale or fake it.

- `SystemClock`: real time.
- `ScaledClock(scale)`: virtual time runs `scale` times faster than real time. The sandbox and
  the clients share one instance in tests, so a 60 s rate window or a 20 s job takes 60 ms or
  20 ms at scale 1000 while every header (Date, reset epochs, ETAs) stays self-consistent.
- `FakeClock`: time moves only when someone sleeps; `sleep` advances it instantly. This is
  the "no sleeps in tests" switch for pure policy tests (backoff, limiter).
"""

from __future__ import annotations

import time as _time
from typing import Protocol

import anyio
import anyio.lowlevel


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a monotonic scale (virtual seconds for scaled clocks)."""
        ...

    def time(self) -> float:
        """Epoch seconds (virtual for scaled clocks)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of this clock's time."""
        ...

    def move_on_after(self, seconds: float) -> anyio.CancelScope:
        """A cancel scope that expires after `seconds` of this clock's time."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return _time.monotonic()

    def time(self) -> float:
        return _time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    def move_on_after(self, seconds: float) -> anyio.CancelScope:
        return anyio.move_on_after(max(0.0, seconds))


def is_system_time(clock: Clock) -> bool:
    """Whether `clock` tells the system's time, looking through wrappers that keep the clock
    they wrap in `inner` (the HTTP transport's `GracefulClock`): the one time base that other
    processes on the host share, so state stamped with it can be shared between them."""
    seen = 0
    while not isinstance(clock, SystemClock) and seen < 8:
        inner = getattr(clock, "inner", None)
        if inner is None:
            return False
        clock, seen = inner, seen + 1
    return isinstance(clock, SystemClock)


class ScaledClock:
    """Virtual time that runs `scale` times faster than real time, anchored at creation."""

    def __init__(self, scale: float = 1.0, *, epoch: float | None = None) -> None:
        if scale <= 0:
            raise ValueError("time scale must be positive")
        self.scale = scale
        self._real_anchor = _time.monotonic()
        self._mono_anchor = 0.0
        self._epoch_anchor = _time.time() if epoch is None else epoch

    def _since_anchor(self) -> float:
        return (_time.monotonic() - self._real_anchor) * self.scale

    def monotonic(self) -> float:
        return self._mono_anchor + self._since_anchor()

    def time(self) -> float:
        return self._epoch_anchor + self._since_anchor()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds) / self.scale)

    def move_on_after(self, seconds: float) -> anyio.CancelScope:
        return anyio.move_on_after(max(0.0, seconds) / self.scale)

    def advance(self, seconds: float) -> None:
        """Jump virtual time forward by exactly `seconds` (tests: no real wait, no overshoot)."""
        step = max(0.0, seconds)
        self._mono_anchor += step
        self._epoch_anchor += step

    def rescale(self, scale: float) -> None:
        """Change speed without a jump in virtual time."""
        if scale <= 0:
            raise ValueError("time scale must be positive")
        elapsed = self._since_anchor()
        self._mono_anchor += elapsed
        self._epoch_anchor += elapsed
        self._real_anchor = _time.monotonic()
        self.scale = scale


class FakeClock:
    """Time stands still until something sleeps; `sleep` jumps forward at once."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self._now = 0.0
        self._epoch = start
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._epoch + self._now

    def advance(self, seconds: float) -> None:
        self._now += max(0.0, seconds)

    def move_on_after(self, seconds: float) -> anyio.CancelScope:
        """Fake time never passes by itself: the scope ends only by the awaited event."""
        del seconds
        return anyio.CancelScope()

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)
        await (
            anyio.lowlevel.checkpoint()
        )  # still a checkpoint: other tasks run, cancellation is seen
