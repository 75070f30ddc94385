"""The one sender of upstream requests: `UpstreamHTTP.send`.

Both API clients (`seamless.py`, `agentseo.py`) send through it, so these rules hold
everywhere:

- every request takes a token from the local limiter first (never sent without one);
- every response, success or not, feeds its rate-limit hints back into the limiter
  (`_feedback`);
- every failure becomes one class of `mcp_server.errors`, never a bare httpx/JSON exception
  (`_failures`, `_replies`);
- retries follow `_backoff.decide` and a credit-spending POST is replayed only when it was
  provably not processed (`RequestNotSent`, or `RateLimited` with a wait that fits) (`_retry`);
- bodies are read with a size cap, and the API key never appears in a message or excerpt.

The client itself is built by `_client.build_client`; `_sse` follows event streams through the
same sender's parts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr

from mcp_server import telemetry
from mcp_server._clock import Clock
from mcp_server.errors import TokenError
from mcp_server.limits import Limiter
from mcp_server.models import Provider
from mcp_server.upstream._backoff import BackoffPolicy, RetryBudget
from mcp_server.upstream._client import (
    DEFAULT_TIMEOUT,
    MAX_BODY_BYTES,
    REQUEST_POOL_LIMITS,
    Call,
    build_client,
)
from mcp_server.upstream._failures import Failures
from mcp_server.upstream._feedback import CreditsSeen, Feedback
from mcp_server.upstream._oauth import RefreshingAuth
from mcp_server.upstream._replies import Reader, Reply
from mcp_server.upstream._retry import Retrier

__all__ = ["UpstreamHTTP"]

T = TypeVar("T")


@dataclass(slots=True)
class _Progress:
    """How far one attempt got: whether the request may have left (decides replay safety)."""

    sent: bool = False


class UpstreamHTTP:
    """One upstream's sender: the `httpx.AsyncClient`, its limiter buckets and retry budget.

    `deadline` arguments are absolute `clock.monotonic()` seconds; `None` means
    `default_wait` seconds from now. Use as an async context manager (it owns the client).
    Its parts, shared with the SSE follower: `failures` (typed errors), `feedback` (hints to
    the limiter, credits seen), `reader` (bodies), `retrier` (the retry loop and budget).
    """

    def __init__(
        self,
        provider: Provider,
        base_url: str,
        api_key: SecretStr | str,
        *,
        clock: Clock,
        limiter: Limiter,
        policy: BackoffPolicy,
        budget: RetryBudget,
        tenant: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_body_bytes: int = MAX_BODY_BYTES,
        default_wait: float = 45.0,
        limits: httpx.Limits = REQUEST_POOL_LIMITS,
        auth: httpx.Auth | None = None,
    ) -> None:
        key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self.auth = auth
        """OAuth instead of the key header (`_oauth.BearerAuth` / `RefreshingAuth`), or None."""
        self.provider: Provider = provider
        self.base_url = base_url.rstrip("/")
        self.tenant = tenant
        self.clock = clock
        self.limiter = limiter
        self.policy = policy
        self.budget = budget
        self.failures = Failures(provider, key, auth)
        self.feedback = Feedback(self.failures, limiter, clock, tenant)
        self.reader = Reader(self.failures, self.feedback, max_body_bytes)
        self.retrier = Retrier(self.failures, clock, policy, budget)
        self._default_wait = default_wait
        self.client = build_client(
            provider,
            self.base_url,
            key,
            transport=transport,
            timeout=timeout,
            limits=limits,
            auth=auth,
        )

    def __repr__(self) -> str:
        return f"UpstreamHTTP({self.provider!r}, {self.base_url!r}, tenant={self.tenant!r})"

    async def __aenter__(self) -> UpstreamHTTP:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

    @property
    def credits_seen(self) -> CreditsSeen | None:
        """The last plausible `X-PublicAPI-Credits` (Seamless), with where and when."""
        return self.feedback.credits_seen

    @property
    def credits(self) -> int | None:
        """Last plausible `X-PublicAPI-Credits` seen on any response (Seamless), else None."""
        seen = self.feedback.credits_seen
        return None if seen is None else seen.value

    # helpers shared with the SSE follower ------------------------------------------------------
    def deadline(self, deadline: float | None) -> float:
        """`deadline`, or the default wait from now."""
        return self.clock.monotonic() + self._default_wait if deadline is None else deadline

    def url(self, path: str) -> httpx.URL:
        """Absolute URL of `path` (relative to the base URL, or an absolute same-origin URL)."""
        if path.startswith(("http://", "https://")):
            return httpx.URL(path)
        return httpx.URL(self.base_url + "/" + path.lstrip("/"))

    # the request/response path ---------------------------------------------------------------
    async def send(
        self, call: Call, parse: Callable[[Any], T], *, deadline: float | None = None
    ) -> Reply[T]:
        """Send `call` with limiter, retries and classification; return `parse(json)`.

        `parse` raises `ShapeError` (or `ValueError`/`TypeError`/pydantic's
        `ValidationError`) for a 2xx body of the wrong shape: that is a `MalformedResponse`,
        retried like any other for reads and never replayed for PAID calls.

        Raises: `LocalRateLimited` (nothing sent), a `BadResponse` or `NoResponse` subclass
        (with `.attempts`), `OutcomeUnknown` (PAID call that may have been processed),
        `RetryBudgetExhausted` (a retry was due but the upstream looks degraded).
        """
        cut = self.deadline(deadline)

        def attempt(number: int) -> Awaitable[Reply[T]]:
            return self._attempt_within(call, parse, cut, number)

        return await self.retrier.run(call, attempt, deadline=cut)

    async def _attempt_within(
        self, call: Call, parse: Callable[[Any], T], deadline: float, attempt: int
    ) -> Reply[T]:
        """One attempt, cut at `deadline`: the whole call, retries included, ends by then
        (issue 20.1: a stalled upstream used to cost two 30 s read timeouts, 61 s)."""
        progress = _Progress()
        remaining = deadline - self.clock.monotonic()
        if remaining > 0:
            with self.clock.move_on_after(remaining):
                return await self._attempt(call, parse, deadline, attempt, progress)
        raise self.failures.out_of_time(call, attempt, sent=progress.sent)

    async def _attempt(
        self,
        call: Call,
        parse: Callable[[Any], T],
        deadline: float,
        attempt: int,
        progress: _Progress,
    ) -> Reply[T]:
        bucket = self.feedback.bucket(call)
        waited = await self.limiter.acquire(bucket, cost=1.0, deadline=deadline)
        telemetry.limiter_waited(self.provider, bucket.bucket, waited)
        refreshing = self.auth if isinstance(self.auth, RefreshingAuth) else None
        if refreshing is not None:
            await self._token(call, refreshing.ensure)
        request = self.client.build_request(
            call.method,
            self.url(call.path),
            params=dict(call.params) if call.params else None,
            json=call.json_body,
            headers=dict(call.headers) if call.headers else None,
        )
        progress.sent = True
        try:
            with telemetry.upstream_call(self.provider, call.method, call.template) as traced:
                response = await self._send_signed(call, request, refreshing)
                traced.answered(response.status_code)
        except httpx.PoolTimeout as exc:
            raise self.failures.pool_busy(call) from exc
        except httpx.TransportError as exc:
            raise self.failures.no_response(call, exc) from exc
        return await self.reader.reply(call, response, parse, attempt)

    async def _send_signed(
        self, call: Call, request: httpx.Request, refreshing: RefreshingAuth | None
    ) -> httpx.Response:
        """Send; with OAuth refresh, a 401 (not processed) refreshes once and sends again."""
        response = await self.client.send(request, stream=True)
        if response.status_code == 401 and refreshing is not None:
            used = refreshing.token
            await response.aclose()
            await self._token(call, lambda c: refreshing.refresh(c, used))
            response = await self.client.send(request, stream=True)
        return response

    async def _token(
        self, call: Call, step: Callable[[httpx.AsyncClient], Awaitable[None]]
    ) -> None:
        """Run an OAuth token step before `call` is sent; its failures say so and are never
        the call's own (the call was not sent: safe to replay)."""
        try:
            await step(self.client)
        except TokenError as exc:
            raise self.failures.token_failed(call, exc) from None
        except httpx.TransportError as exc:
            raise self.failures.token_failed(call, exc) from exc
