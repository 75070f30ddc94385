"""Every failure of an upstream call as one typed error, worded the same way everywhere.

A response that is not the success we need (`bad_response`: the status decides the class, the
body's code refines it where the docs say so), a transport failure (`no_response`: sent or
provably not), our own busy pool, a deadline cut, an OAuth token step: each becomes one class
of `mcp_server.errors` naming the call as `<API> <METHOD> <template>`, with the API key and
OAuth secrets redacted and upstream text shortened to one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from html import unescape
from typing import Any, Final, TypedDict

import httpx
from pydantic import SecretStr

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
    MalformedResponse,
    NotFoundError,
    OutcomeUnknown,
    PermissionDenied,
    RateLimited,
    RequestNotSent,
    ResponseLost,
    RetryBudgetExhausted,
    ServerError,
    TokenError,
    UpstreamError,
)
from mcp_server.models import ErrorCode, Provider
from mcp_server.redact import redact
from mcp_server.upstream._bodies import decode_json, error_fields, scalar_text
from mcp_server.upstream._client import Call
from mcp_server.upstream._headers import RateLimitHints
from mcp_server.upstream._oauth import BearerAuth, RefreshingAuth

__all__ = ["DEADLINE_RETRY_AFTER", "POOL_BUSY_RETRY_SECONDS", "Failures", "InvalidArguments"]

#: After a call ran out of its deadline (the upstream stalled), when to look again, seconds.
DEADLINE_RETRY_AFTER: Final = 30.0
POOL_BUSY_RETRY_SECONDS: Final = 5.0
"""When to try again after a local pool timeout (the pool timeout itself is 5 s)."""
_EXCERPT_CHARS: Final = 200
_MESSAGE_CHARS: Final = 300
_MIN_SECRET: Final = 4
"""Shorter "keys" (sandbox placeholders) are not redacted: it would garble every message."""

_DISPLAY: Final[Mapping[Provider, str]] = {"seamless": "Seamless", "agentseo": "AgentSEO"}
_REQUEST_ID_HEADERS: Final = ("x-request-id", "request-id", "x-amzn-requestid", "cf-ray")


class InvalidArguments(JobRelayError, ValueError):
    """Arguments rejected locally before anything was sent (e.g. an unknown workflow name)."""

    code = ErrorCode.INVALID_INPUT

    def __init__(
        self, message: str, *, provider: Provider, argument: str, allowed: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, provider=provider)
        self.argument = argument
        self.allowed = allowed


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


def _parse_error_body(raw: bytes, content_type: str, secrets: tuple[str, ...]) -> _ErrorBody:
    """Read either documented error shape, or none; never raises.

    Seamless: `{"message"}` (401, 500), `{"code", "msg", "data"}` (422, `data` kept as
    `details`), `{"code", "message"}` (429).
    AgentSEO: `{"error": {"code", "message", "details", "request_id"}}`.
    Anything else (HTML error pages, truncated JSON, wrong types) yields just an excerpt.
    """
    text = raw[:65536].decode("utf-8", errors="replace")
    try:
        data = decode_json(raw) if raw.strip() else None
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


class _NotSentInTime(RequestNotSent):
    """The deadline passed before the request left: provably not processed."""

    local_cut = True

    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class _Sent(TypedDict):
    provider: Provider
    operation: str
    method: str
    path: str


class Failures:
    """The typed errors of one upstream's calls (`provider`), with its secrets redacted."""

    def __init__(self, provider: Provider, api_key: SecretStr, auth: httpx.Auth | None) -> None:
        self.provider: Provider = provider
        self.display = _DISPLAY[provider]
        """The API's name in messages, e.g. `Seamless`."""
        self._key_secret = (api_key.get_secret_value(),)
        self._auth = auth

    @property
    def secrets(self) -> tuple[str, ...]:
        """Everything to hide from messages: the key, and OAuth secrets and tokens."""
        if isinstance(self._auth, BearerAuth | RefreshingAuth):
            return self._key_secret + self._auth.secrets()
        return self._key_secret

    def sanitise(self, text: str, limit: int = _MESSAGE_CHARS) -> str:
        return _sanitise(text, self.secrets, limit)

    def where(self, call: Call) -> str:
        return f"{self.display} {call.method} {call.template}"

    def _sent_as(self, call: Call) -> _Sent:
        """The fields every `UpstreamError` carries about the call."""
        return _Sent(
            provider=self.provider,
            operation=call.operation,
            method=call.method,
            path=call.template,
        )

    def request_id(self, headers: httpx.Headers, body_id: str | None) -> str | None:
        if body_id:
            return body_id
        for name in _REQUEST_ID_HEADERS:
            value = headers.get(name)
            if value:
                return self.sanitise(value, 120)
        return None

    def pool_busy(self, call: Call) -> LocalBusy:
        """A local `PoolTimeout`: every connection of our own pool stayed busy. Nothing was
        sent, so this is never an upstream failure (not counted by the retry budget)."""
        return LocalBusy(
            f"{self.where(call)}: every connection of jobrelay's own pool stayed busy; "
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
            f"{self.where(call)}: {what}{suffix}",
            **self._sent_as(call),
        )

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
        parsed = _parse_error_body(raw, ctype, self.secrets)
        cls = MalformedResponse if reason is not None else _error_class(status, parsed.api_code)
        text = reason or parsed.message or (response.reason_phrase or "").strip() or "no detail"
        code = f" {parsed.api_code}" if parsed.api_code else ""
        return cls(
            f"{self.where(call)}: HTTP {status}{code}: {self.sanitise(text)}",
            **self._sent_as(call),
            status=status,
            api_code=parsed.api_code,
            request_id=self.request_id(response.headers, parsed.request_id),
            hints=hints,
            body_excerpt=parsed.excerpt,
            details=parsed.details,
        )

    def out_of_time(
        self, call: Call, attempt: int, *, sent: bool
    ) -> DeadlineExceeded | RequestNotSent:
        """The call's deadline cut this attempt: `DeadlineExceeded` once the request left
        (maybe processed), else a `RequestNotSent` (provably not)."""
        what = "no answer" if sent else "no time left to send the request"
        cls = DeadlineExceeded if sent else _NotSentInTime
        return cls(
            f"{self.where(call)}: {what} within the call's time limit "
            "(JOBRELAY_MAX_WAIT_SECONDS, all attempts together)",
            **self._sent_as(call),
            attempts=attempt,
            retry_after=DEADLINE_RETRY_AFTER,
        )

    def token_failed(
        self, call: Call, exc: TokenError | httpx.TransportError
    ) -> AuthenticationFailed | RequestNotSent:
        """An OAuth token step before `call` failed: never the call's own failure (the call
        was not sent: safe to replay)."""
        if isinstance(exc, TokenError):
            return AuthenticationFailed(
                f"{self.where(call)}: not sent: {exc}",
                **self._sent_as(call),
                status=exc.status or 401,
                api_code="oauthRefreshFailed",
            )
        detail = self.sanitise(str(exc), 120)
        return RequestNotSent(
            f"{self.where(call)}: could not get an OAuth access token, the request was "
            f"not sent ({type(exc).__name__}{': ' + detail if detail else ''})",
            **self._sent_as(call),
        )

    def outcome_unknown(self, call: Call, err: UpstreamError) -> OutcomeUnknown:
        """A PAID call failed in a way that may have been processed: not resubmitted."""
        return OutcomeUnknown(
            f"{self.where(call)}: outcome unknown, the request may have been processed "
            f"and was not resubmitted (cause: {err.message})",
            provider=self.provider,
            cause=err,
        )

    def degraded(
        self, err: UpstreamError, *, retry_after: float, until: float
    ) -> RetryBudgetExhausted:
        """A retry was due but the retry budget is spent: the upstream looks degraded."""
        return RetryBudgetExhausted(
            f"{self.display} looks degraded (many recent failures); not retrying "
            f"automatically (last: {err.message})",
            provider=self.provider,
            cause=err,
            retry_after=retry_after,
            until=until,
        )
