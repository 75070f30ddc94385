"""The one place that builds upstream HTTP clients, sends requests and classifies failures.

Both API clients (`seamless.py`, `agentseo.py`) send through `UpstreamHTTP.send`, so these
rules hold everywhere:

- every request takes a token from the local limiter first (never sent without one);
- every response, success or not, feeds its rate-limit hints back into the limiter;
- every failure becomes one class of `mcp_server.errors`, never a bare httpx/JSON exception;
- retries follow `_backoff.decide` and a credit-spending POST is replayed only when it was
  provably not processed (`RequestNotSent`, or `RateLimited` with a wait that fits);
- bodies are read with a size cap, and the API key never appears in a message or excerpt.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import ssl
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from html import unescape
from typing import Any, Final, Generic, NoReturn, TypeVar

import anyio
import httpx
import pydantic
from pydantic import SecretStr

from mcp_server import __version__
from mcp_server._clock import Clock
from mcp_server.errors import (
    AuthenticationFailed,
    BadResponse,
    Conflict,
    CreditsExhausted,
    DeadlineExceeded,
    InvalidRequest,
    JobRelayError,
    LicenseMissing,
    LocalBusy,
    LocalRateLimited,
    MalformedResponse,
    NotFoundError,
    OutcomeUnknown,
    PermissionDenied,
    RateLimited,
    RequestNotSent,
    ResponseLost,
    RetryBudgetExhausted,
    ServerError,
    ShapeError,
    TokenError,
    UpstreamError,
)
from mcp_server.limits import BucketKey, Limiter, bucket_key
from mcp_server.models import ErrorCode, Provider
from mcp_server.redact import redact
from mcp_server.upstream._backoff import (
    BackoffPolicy,
    RequestKind,
    RetryBudget,
    StopReason,
    decide,
)
from mcp_server.upstream._bodies import error_fields, scalar_text
from mcp_server.upstream._headers import RateLimitHints, parse_hints
from mcp_server.upstream._oauth import BearerAuth, RefreshingAuth

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_BODY_BYTES",
    "POOL_BUSY_RETRY_SECONDS",
    "REQUEST_POOL_LIMITS",
    "SSE_TIMEOUT",
    "USER_AGENT",
    "Call",
    "CreditsSeen",
    "InvalidArguments",
    "Reply",
    "ShapeError",
    "UpstreamHTTP",
    "build_client",
    "same_origin",
]

USER_AGENT: Final = f"jobrelay/{__version__}"
#: Request/response calls: fail fast on connect, allow slow upstream reads.
DEFAULT_TIMEOUT: Final = httpx.Timeout(connect=5.0, read=30.0, write=10.0, pool=5.0)
#: SSE: the read timeout must exceed the ~15 s keep-alive interval (RETRY_POLICY C.2).
SSE_TIMEOUT: Final = httpx.Timeout(10.0, read=60.0)
#: Connections of one request client (one per provider and key). Event streams never use it:
#: they have their own client and cap (`agentseo.MAX_CONCURRENT_STREAMS`).
REQUEST_POOL_LIMITS: Final = httpx.Limits(max_connections=100, max_keepalive_connections=20)
#: Larger bodies are refused: the biggest documented page is well under 1 MiB.
MAX_BODY_BYTES: Final = 8 * 1024 * 1024
#: After a call ran out of its deadline (the upstream stalled), when to look again, seconds.
DEADLINE_RETRY_AFTER: Final = 30.0
POOL_BUSY_RETRY_SECONDS: Final = 5.0
"""When to try again after a local pool timeout (the pool timeout itself is 5 s)."""
_EXCERPT_CHARS: Final = 200
_MESSAGE_CHARS: Final = 300
_MIN_SECRET: Final = 4
"""Shorter "keys" (sandbox placeholders) are not redacted: it would garble every message."""

_AUTH_HEADER: Final[Mapping[Provider, str]] = {"seamless": "Token", "agentseo": "x-api-key"}
_DISPLAY: Final[Mapping[Provider, str]] = {"seamless": "Seamless", "agentseo": "AgentSEO"}
_REQUEST_ID_HEADERS: Final = ("x-request-id", "request-id", "x-amzn-requestid", "cf-ray")

T = TypeVar("T")
log = logging.getLogger(__name__)


class InvalidArguments(JobRelayError, ValueError):
    """Arguments rejected locally before anything was sent (e.g. an unknown workflow name)."""

    code = ErrorCode.INVALID_INPUT

    def __init__(
        self, message: str, *, provider: Provider, argument: str, allowed: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, provider=provider)
        self.argument = argument
        self.allowed = allowed


# --------------------------------------------------------------------------------------------
# client construction


class _ApiKeyAuth(httpx.Auth):
    """Adds the key per request, so it is not in the client's default headers or any repr."""

    def __init__(self, header: str, key: SecretStr) -> None:
        self._header = header
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header] = self._key.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return f"_ApiKeyAuth({self._header!r}, '**********')"


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One CA bundle for every upstream client. httpx would load it into a new context per
    client (0.1-0.2 s and about 1 MB each), and there is a client per provider and API key.
    Built as httpx builds its default (certifi, `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured)."""
    return httpx.create_ssl_context()


def build_client(
    provider: Provider,
    base_url: str,
    api_key: SecretStr | str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    limits: httpx.Limits = REQUEST_POOL_LIMITS,
    auth: httpx.Auth | None = None,
) -> httpx.AsyncClient:
    """The only constructor of upstream `httpx.AsyncClient`s: auth, UA, timeouts, no redirects.

    `auth` replaces the API key header (Seamless OAuth, `_oauth`)."""
    key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
    return httpx.AsyncClient(
        verify=_ssl_context(),
        base_url=base_url.rstrip("/"),
        auth=auth or _ApiKeyAuth(_AUTH_HEADER[provider], key),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        timeout=timeout,
        transport=transport,
        limits=limits,
        follow_redirects=False,
    )


def same_origin(url: str, base_url: str) -> bool:
    """True when `url` (absolute, or a path) resolves to `base_url`'s scheme, host and port.

    Upstream-supplied `poll_url`/`events_url` are followed only then, so a hostile or broken
    envelope cannot send our API key to another host.
    """
    try:
        base = httpx.URL(base_url)
        target = base.join(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return False
    return (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)


# --------------------------------------------------------------------------------------------
# body parsing and sanitising

_TAG_BLOCK = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>?")
_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _sanitise(text: str, secrets: tuple[str, ...], limit: int) -> str:
    """One short line with secrets, markup and control characters removed."""
    text = redact(text, secrets, marker="***", min_length=_MIN_SECRET)
    text = _CONTROL.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _strip_html(text: str) -> str:
    return unescape(_TAG.sub(" ", _TAG_BLOCK.sub(" ", text)))


def _looks_like_html(content_type: str, text: str) -> bool:
    return "html" in content_type.lower() or text.lstrip()[:1] == "<"


@dataclass(frozen=True, slots=True)
class _ErrorBody:
    api_code: str | None = None
    message: str | None = None
    request_id: str | None = None
    details: dict[str, Any] | None = None
    excerpt: str = ""


def _decode_json(raw: bytes) -> Any:
    """JSON or `ValueError`; bytes are decoded leniently so a stray byte is not a crash."""
    return json.loads(raw.decode("utf-8", errors="replace"))


def _parse_error_body(raw: bytes, content_type: str, secrets: tuple[str, ...]) -> _ErrorBody:
    """Read either documented error shape, or none; never raises.

    Seamless: `{"message"}` (401, 500), `{"code", "msg", "data"}` (422, `data` kept as
    `details`), `{"code", "message"}` (429).
    AgentSEO: `{"error": {"code", "message", "details", "request_id"}}`.
    Anything else (HTML error pages, truncated JSON, wrong types) yields just an excerpt.
    """
    text = raw[:65536].decode("utf-8", errors="replace")
    try:
        data = _decode_json(raw) if raw.strip() else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        shown = _strip_html(text) if _looks_like_html(content_type, text) else text
        return _ErrorBody(excerpt=_sanitise(shown, secrets, _EXCERPT_CHARS))
    fields = error_fields(data)
    code = scalar_text(fields.code)
    message = scalar_text(fields.message)
    request_id = scalar_text(fields.request_id)
    details_raw = fields.details
    if details_raw is None and isinstance(fields.data, dict):
        details_raw = fields.data  # Seamless 422: {productCategory, additionalCreditsNeeded}
    details = details_raw if isinstance(details_raw, dict) else None
    return _ErrorBody(
        api_code=_sanitise(code, secrets, 80) if code else None,
        message=_sanitise(message, secrets, _MESSAGE_CHARS) if message else None,
        request_id=_sanitise(request_id, secrets, 120) if request_id else None,
        details=details,
        excerpt=_sanitise(text, secrets, _EXCERPT_CHARS),
    )


def _norm_code(code: str | None) -> str:
    return (code or "").replace("_", "").replace("-", "").lower()


def _error_class(status: int, api_code: str | None) -> type[BadResponse]:
    """The status decides; the body's code refines only where the docs say it does (422)."""
    code = _norm_code(api_code)
    if status == 422:
        if code in {"insufficientcredits", "creditsexhausted"}:
            return CreditsExhausted
        if code == "missinglicense":
            return LicenseMissing
        if code == "insufficientscope":
            return PermissionDenied
        return InvalidRequest
    by_status: dict[int, type[BadResponse]] = {
        400: InvalidRequest,
        401: AuthenticationFailed,
        402: CreditsExhausted,
        403: PermissionDenied,
        404: NotFoundError,
        409: Conflict,
        410: NotFoundError,
        429: RateLimited,
        408: ServerError,  # the server gave up waiting for us: transient, maybe processed
    }
    if status in by_status:
        return by_status[status]
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return InvalidRequest
    return MalformedResponse  # 1xx/3xx (we never follow redirects) or an unexpected 2xx


# --------------------------------------------------------------------------------------------
# requests and replies


@dataclass(frozen=True, slots=True)
class Call:
    """One upstream operation as sent: names it, routes it to a bucket, says how to retry it."""

    operation: str
    """Upstream operation name, e.g. `researchContacts` (for messages and logs)."""
    method: str
    path: str
    """Concrete path below the base URL, e.g. `/jobs/abc123`."""
    template: str
    """Path template for buckets and messages, e.g. `/jobs/{id}`."""
    kind: RequestKind
    params: Mapping[str, str] | None = None
    json_body: Any = None
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Reply(Generic[T]):
    """A successful (2xx) reply, its parsed value and what it said about rate limits."""

    value: T
    status: int
    hints: RateLimitHints
    headers: httpx.Headers
    attempts: int
    request_id: str | None = None


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


class _TooLarge(Exception):
    """The body passed the size cap."""


@dataclass(slots=True)
class _Progress:
    """How far one attempt got: whether the request may have left (decides replay safety)."""

    sent: bool = False


def _no_response_class(exc: httpx.TransportError) -> type[RequestNotSent | ResponseLost]:
    """Connect-phase failures provably sent nothing; anything later may have been processed.

    `WriteTimeout`/`WriteError` count as lost: part of the body may have reached the server.
    """
    not_sent = (
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.PoolTimeout,
        httpx.ProxyError,
        httpx.UnsupportedProtocol,
    )
    if isinstance(exc, not_sent):
        return RequestNotSent
    return ResponseLost


class UpstreamHTTP:
    """One upstream's sender: the `httpx.AsyncClient`, its limiter buckets and retry budget.

    `deadline` arguments are absolute `clock.monotonic()` seconds; `None` means
    `default_wait` seconds from now. Use as an async context manager (it owns the client).
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
        self.credits_seen: CreditsSeen | None = None
        """The last plausible `X-PublicAPI-Credits` (Seamless), with where and when."""
        self.last_hints: RateLimitHints | None = None
        self._logged: dict[tuple[str, str, str], float] = {}
        self._key_secret = (key.get_secret_value(),)
        self._max_body = max_body_bytes
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

    @property
    def _secrets(self) -> tuple[str, ...]:
        """Everything to hide from messages: the key, and OAuth secrets and tokens."""
        if isinstance(self.auth, BearerAuth | RefreshingAuth):
            return self._key_secret + self.auth.secrets()
        return self._key_secret

    def __repr__(self) -> str:
        return f"UpstreamHTTP({self.provider!r}, {self.base_url!r}, tenant={self.tenant!r})"

    async def __aenter__(self) -> UpstreamHTTP:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.client.aclose()

    @property
    def credits(self) -> int | None:
        """Last plausible `X-PublicAPI-Credits` seen on any response (Seamless), else None."""
        return None if self.credits_seen is None else self.credits_seen.value

    # helpers shared with the SSE follower ------------------------------------------------------
    def deadline(self, deadline: float | None) -> float:
        """`deadline`, or the default wait from now."""
        return self.clock.monotonic() + self._default_wait if deadline is None else deadline

    def bucket(self, call: Call) -> BucketKey:
        return bucket_key(self.provider, self.tenant, call.method, call.template)

    def url(self, path: str) -> httpx.URL:
        """Absolute URL of `path` (relative to the base URL, or an absolute same-origin URL)."""
        if path.startswith(("http://", "https://")):
            return httpx.URL(path)
        return httpx.URL(self.base_url + "/" + path.lstrip("/"))

    def sanitise(self, text: str, limit: int = _MESSAGE_CHARS) -> str:
        return _sanitise(text, self._secrets, limit)

    def _where(self, call: Call) -> str:
        return f"{_DISPLAY[self.provider]} {call.method} {call.template}"

    def pool_busy(self, call: Call) -> LocalBusy:
        """A local `PoolTimeout`: every connection of our own pool stayed busy. Nothing was
        sent, so this is never an upstream failure (not counted by the retry budget)."""
        return LocalBusy(
            f"{self._where(call)}: every connection of jobrelay's own pool stayed busy; "
            "the request was not sent",
            provider=self.provider,
            bucket=f"{call.method} {call.template}",
            retry_after=POOL_BUSY_RETRY_SECONDS,
        )

    def no_response(self, call: Call, exc: httpx.TransportError) -> RequestNotSent | ResponseLost:
        """The typed error for a transport failure (its text never includes headers)."""
        cls = _no_response_class(exc)
        what = (
            "could not connect; the request was not sent"
            if cls is RequestNotSent
            else "the connection failed after the request was sent; it may have been processed"
        )
        detail = self.sanitise(str(exc), 120)
        suffix = f" ({type(exc).__name__}: {detail})" if detail else f" ({type(exc).__name__})"
        return cls(
            f"{self._where(call)}: {what}{suffix}",
            provider=self.provider,
            operation=call.operation,
            method=call.method,
            path=call.template,
        )

    def _request_id(self, headers: httpx.Headers, body_id: str | None) -> str | None:
        if body_id:
            return body_id
        for name in _REQUEST_ID_HEADERS:
            value = headers.get(name)
            if value:
                return self.sanitise(value, 120)
        return None

    async def observe(self, call: Call, response: httpx.Response, body: object) -> RateLimitHints:
        """Feed one response's hints to the limiter; remember credits. Every response."""
        hints = parse_hints(
            self.provider, response.status_code, response.headers, body, now=self.clock.time()
        )
        self.last_hints = hints
        if hints.anomaly:
            self._log_anomaly(call, hints.anomaly)
        if hints.credits is not None:
            self.credits_seen = CreditsSeen(
                hints.credits, f"{call.method} {call.template}", response.status_code, self.clock
            )
        await self.limiter.observe(self.bucket(call), response.status_code, hints)
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
        log.warning("%s: header hint ignored: %s", self._where(call), self.sanitise(anomaly))

    def bad_response(
        self,
        call: Call,
        response: httpx.Response,
        raw: bytes,
        hints: RateLimitHints,
        *,
        reason: str | None = None,
    ) -> BadResponse:
        """The typed error for a non-2xx response, or a 2xx one we cannot use (`reason`)."""
        status = response.status_code
        ctype = response.headers.get("content-type", "")
        parsed = _parse_error_body(raw, ctype, self._secrets)
        cls = MalformedResponse if reason is not None else _error_class(status, parsed.api_code)
        text = reason or parsed.message or (response.reason_phrase or "").strip() or "no detail"
        code = f" {parsed.api_code}" if parsed.api_code else ""
        return cls(
            f"{self._where(call)}: HTTP {status}{code}: {self.sanitise(text)}",
            provider=self.provider,
            operation=call.operation,
            method=call.method,
            path=call.template,
            status=status,
            api_code=parsed.api_code,
            request_id=self._request_id(response.headers, parsed.request_id),
            hints=hints,
            body_excerpt=parsed.excerpt,
            details=parsed.details,
        )

    async def read_capped(self, response: httpx.Response, cap: int | None = None) -> bytes:
        """The (decoded) body, refusing more than `cap` bytes (`_TooLarge`)."""
        cap = self._max_body if cap is None else cap
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _TooLarge
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > cap:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

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
            raise AuthenticationFailed(
                f"{self._where(call)}: not sent: {exc}",
                provider=self.provider,
                operation=call.operation,
                method=call.method,
                path=call.template,
                status=exc.status or 401,
                api_code="oauthRefreshFailed",
            ) from None
        except httpx.TransportError as exc:
            detail = self.sanitise(str(exc), 120)
            raise RequestNotSent(
                f"{self._where(call)}: could not get an OAuth access token, the request was "
                f"not sent ({type(exc).__name__}{': ' + detail if detail else ''})",
                provider=self.provider,
                operation=call.operation,
                method=call.method,
                path=call.template,
            ) from exc

    async def error_from(self, call: Call, response: httpx.Response) -> BadResponse:
        """Read (at most 64 KiB of) a failed streamed response and classify it."""
        try:
            raw = await self.read_capped(response, 65_536)
        except (_TooLarge, httpx.HTTPError):
            raw = b""
        body = _safe_json(raw)
        hints = await self.observe(call, response, None if body is _INVALID else body)
        return self.bad_response(call, response, raw, hints)

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
        deadline = self.deadline(deadline)
        attempt = 0
        last: UpstreamError | None = None
        while True:
            attempt += 1
            try:
                reply = await self._attempt_within(call, parse, deadline, attempt)
            except LocalRateLimited as exc:
                if last is None:
                    raise
                # A retry found no slot in time: the upstream's own answer says more.
                raise last from exc
            except UpstreamError as err:
                err.attempts = attempt
                err.paid = call.kind is RequestKind.PAID
                self.budget.record(err, self.clock.monotonic())
                decision = decide(
                    call.kind,
                    err,
                    attempt,
                    policy=self.policy,
                    budget=self.budget,
                    now=self.clock.monotonic(),
                    deadline=deadline,
                )
                if decision.retry and decision.delay is not None:
                    last = err
                    await self.clock.sleep(decision.delay)
                    continue
                self._give_up(call, err, decision.reason)
            else:
                self.budget.record(None, self.clock.monotonic())
                return reply

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
        what = "no answer" if progress.sent else "no time left to send the request"
        cls = DeadlineExceeded if progress.sent else _NotSentInTime
        raise cls(
            f"{self._where(call)}: {what} within the call's time limit "
            "(JOBRELAY_MAX_WAIT_SECONDS, all attempts together)",
            provider=self.provider,
            operation=call.operation,
            method=call.method,
            path=call.template,
            attempts=attempt,
            retry_after=DEADLINE_RETRY_AFTER,
        )

    def _give_up(self, call: Call, err: UpstreamError, reason: StopReason | None) -> NoReturn:
        if reason is StopReason.UNSAFE_TO_REPLAY:
            raise OutcomeUnknown(
                f"{self._where(call)}: outcome unknown, the request may have been processed "
                f"and was not resubmitted (cause: {err.message})",
                provider=self.provider,
                cause=err,
            ) from err
        if reason is StopReason.BUDGET_EXHAUSTED:
            now = self.clock.monotonic()
            until, until_epoch = self.budget.trip(
                now, self.clock.time(), self.policy.budget_retry_after
            )
            raise RetryBudgetExhausted(
                f"{_DISPLAY[self.provider]} looks degraded (many recent failures); not retrying "
                f"automatically (last: {err.message})",
                provider=self.provider,
                cause=err,
                retry_after=max(0.0, until - now),
                until=until_epoch,
            ) from err
        raise err

    async def _attempt(
        self,
        call: Call,
        parse: Callable[[Any], T],
        deadline: float,
        attempt: int,
        progress: _Progress,
    ) -> Reply[T]:
        await self.limiter.acquire(self.bucket(call), cost=1.0, deadline=deadline)
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
            response = await self._send_signed(call, request, refreshing)
        except httpx.PoolTimeout as exc:
            raise self.pool_busy(call) from exc
        except httpx.TransportError as exc:
            raise self.no_response(call, exc) from exc
        try:
            ok = 200 <= response.status_code < 300
            try:
                raw = await self.read_capped(response, None if ok else 65_536)
            except _TooLarge:
                if not ok:
                    raw = b""
                else:
                    hints = await self.observe(call, response, None)
                    raise self.bad_response(
                        call,
                        response,
                        b"",
                        hints,
                        reason=f"response body larger than {self._max_body // (1024 * 1024)} MiB",
                    ) from None
            except httpx.DecodingError:
                raw = b""
                if ok:
                    hints = await self.observe(call, response, None)
                    raise self.bad_response(
                        call, response, b"", hints, reason="undecodable content encoding"
                    ) from None
            except httpx.TransportError as exc:
                raise self.no_response(call, exc) from exc
        finally:
            with anyio.CancelScope(shield=True):  # a deadline cut still closes the stream
                await response.aclose()
        body = _safe_json(raw)
        hints = await self.observe(call, response, None if body is _INVALID else body)
        if not ok:
            raise self.bad_response(call, response, raw, hints)
        if raw.strip() and body is _INVALID:
            raise self.bad_response(call, response, raw, hints, reason="invalid JSON")
        try:
            value = parse(None if body is _INVALID else body)
        except (ShapeError, ValueError, TypeError, KeyError, pydantic.ValidationError) as exc:
            reason = f"unexpected response shape: {_shape_reason(exc)}"
            raise self.bad_response(call, response, raw, hints, reason=reason) from None
        return Reply(
            value=value,
            status=response.status_code,
            hints=hints,
            headers=response.headers,
            attempts=attempt,
            request_id=self._request_id(response.headers, None),
        )


class _NotSentInTime(RequestNotSent):
    """The deadline passed before the request left: provably not processed."""

    local_cut = True

    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


_INVALID: Final = object()


def _safe_json(raw: bytes) -> Any:
    """Decoded JSON, or `_INVALID` (empty or unparseable bodies)."""
    if not raw.strip():
        return _INVALID
    try:
        return _decode_json(raw)
    except (ValueError, RecursionError):
        return _INVALID


def _shape_reason(exc: Exception) -> str:
    if isinstance(exc, pydantic.ValidationError):
        errors = exc.errors()
        if not errors:
            return "invalid"
        loc = ".".join(str(p) for p in errors[0]["loc"])
        return f"{loc or 'body'}: {errors[0]['msg']}"
    return str(exc) or type(exc).__name__
