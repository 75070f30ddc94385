"""What every upstream response says about waiting, fed back to the limiter.

Every response, success or not, goes through `Feedback.observe`: its rate-limit hints reach the
limiter's bucket for the call, the last plausible `X-PublicAPI-Credits` is remembered with where
and when it was seen, and a discarded hint is logged (sanitised, at most once a minute per note).
"""

from __future__ import annotations

import logging
import math

import httpx

from mcp_server import telemetry
from mcp_server._clock import Clock
from mcp_server.limits import BucketKey, Limiter, bucket_key
from mcp_server.upstream._client import Call
from mcp_server.upstream._failures import Failures
from mcp_server.upstream._headers import RateLimitHints, parse_hints

__all__ = ["CreditsSeen", "Feedback"]

#: The sender's logger, under the name it always had (log filters may name it).
log = logging.getLogger("mcp_server.upstream._http")


class CreditsSeen:
    """One `X-PublicAPI-Credits` reading: the value, which answer said it, and when
    (`at` epoch and `mono` monotonic seconds on the client's clock)."""

    __slots__ = ("at", "mono", "source", "status", "value")

    def __init__(self, value: int, source: str, status: int, clock: Clock) -> None:
        self.value = value
        self.source = source
        """`METHOD /path/template` of the answer, e.g. `POST /contacts/research`."""
        self.status = status
        self.at = clock.time()
        self.mono = clock.monotonic()


class Feedback:
    """One upstream's hint feedback: the limiter buckets of `tenant`, and what was last seen."""

    def __init__(self, failures: Failures, limiter: Limiter, clock: Clock, tenant: str) -> None:
        self._failures = failures
        self.limiter = limiter
        self.clock = clock
        self.tenant = tenant
        self.credits_seen: CreditsSeen | None = None
        """The last plausible `X-PublicAPI-Credits` (Seamless), with where and when."""
        self.last_hints: RateLimitHints | None = None
        self._logged: dict[tuple[str, str, str], float] = {}

    def bucket(self, call: Call) -> BucketKey:
        return bucket_key(self._failures.provider, self.tenant, call.method, call.template)

    async def observe(self, call: Call, response: httpx.Response, body: object) -> RateLimitHints:
        """Feed one response's hints to the limiter; remember credits. Every response."""
        hints = parse_hints(
            self._failures.provider,
            response.status_code,
            response.headers,
            body,
            now=self.clock.time(),
        )
        self.last_hints = hints
        bucket = self.bucket(call)
        telemetry.hints_seen(
            bucket.provider,
            bucket.bucket,
            remaining=hints.remaining,
            limit=hints.limit,
            credits=hints.credits,
        )
        if hints.anomaly:
            self._log_anomaly(call, hints.anomaly)
        if hints.credits is not None:
            self.credits_seen = CreditsSeen(
                hints.credits, f"{call.method} {call.template}", response.status_code, self.clock
            )
        await self.limiter.observe(bucket, response.status_code, hints)
        return hints

    def _log_anomaly(self, call: Call, anomaly: str) -> None:
        """Log a discarded hint (e.g. an implausible credits header), sanitised; the same
        note on the same endpoint at most once a minute, so a lying upstream cannot flood
        the log."""
        key = (call.method, call.template, anomaly)
        now = self.clock.monotonic()
        if self._logged.get(key, -math.inf) > now - 60.0:
            return
        if len(self._logged) > 256:
            self._logged.clear()
        self._logged[key] = now
        log.warning(
            "%s: header hint ignored: %s",
            self._failures.where(call),
            self._failures.sanitise(anomaly),
            extra={"provider": self._failures.provider},
        )
