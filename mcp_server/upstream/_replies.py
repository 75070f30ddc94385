"""Reading an upstream response: the body under a size cap, then a `Reply` or a typed error.

A 2xx body is decoded and handed to the caller's `parse`; a body too large, undecodable, not
JSON or of the wrong shape is a `MalformedResponse`; any other status is classified by
`Failures.bad_response`. Every response's hints reach the limiter first (`Feedback.observe`),
and the stream is closed even when a deadline cuts the read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import anyio
import httpx
import pydantic

from mcp_server.errors import BadResponse, ShapeError
from mcp_server.upstream._bodies import decode_json
from mcp_server.upstream._client import Call
from mcp_server.upstream._failures import Failures
from mcp_server.upstream._feedback import Feedback
from mcp_server.upstream._headers import RateLimitHints

__all__ = ["ERROR_BODY_BYTES", "Reader", "Reply"]

T = TypeVar("T")

ERROR_BODY_BYTES: Final = 65_536
"""How much of an error body is read: enough for any documented error, never a whole page."""


@dataclass(frozen=True, slots=True)
class Reply(Generic[T]):
    """A successful (2xx) reply, its parsed value and what it said about rate limits."""

    value: T
    status: int
    hints: RateLimitHints
    headers: httpx.Headers
    attempts: int
    request_id: str | None = None


class _TooLarge(Exception):
    """The body passed the size cap."""


_INVALID: Final = object()


def _safe_json(raw: bytes) -> Any:
    """Decoded JSON, or `_INVALID` (empty or unparseable bodies)."""
    if not raw.strip():
        return _INVALID
    try:
        return decode_json(raw)
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


class Reader:
    """Reads one upstream's responses into replies or typed errors."""

    def __init__(self, failures: Failures, feedback: Feedback, max_body_bytes: int) -> None:
        self._failures = failures
        self._feedback = feedback
        self._max_body = max_body_bytes

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

    async def error_from(self, call: Call, response: httpx.Response) -> BadResponse:
        """Read (at most 64 KiB of) a failed streamed response and classify it."""
        try:
            raw = await self.read_capped(response, ERROR_BODY_BYTES)
        except (_TooLarge, httpx.HTTPError):
            raw = b""
        body = _safe_json(raw)
        hints = await self._feedback.observe(call, response, None if body is _INVALID else body)
        return self._failures.bad_response(call, response, raw, hints)

    async def reply(
        self, call: Call, response: httpx.Response, parse: Callable[[Any], T], attempt: int
    ) -> Reply[T]:
        """`parse(json)` of a 2xx `response` (closed here), else its typed error."""
        ok = 200 <= response.status_code < 300
        raw = await self._read(call, response, ok)
        body = _safe_json(raw)
        hints = await self._feedback.observe(call, response, None if body is _INVALID else body)
        failures = self._failures
        if not ok:
            raise failures.bad_response(call, response, raw, hints)
        if raw.strip() and body is _INVALID:
            raise failures.bad_response(call, response, raw, hints, reason="invalid JSON")
        try:
            value = parse(None if body is _INVALID else body)
        except (ShapeError, ValueError, TypeError, KeyError, pydantic.ValidationError) as exc:
            reason = f"unexpected response shape: {_shape_reason(exc)}"
            raise failures.bad_response(call, response, raw, hints, reason=reason) from None
        return Reply(
            value=value,
            status=response.status_code,
            hints=hints,
            headers=response.headers,
            attempts=attempt,
            request_id=failures.request_id(response.headers, None),
        )

    async def _read(self, call: Call, response: httpx.Response, ok: bool) -> bytes:
        """The body (an error's capped at 64 KiB, and dropped when unreadable), then close."""
        failures = self._failures
        try:
            try:
                return await self.read_capped(response, None if ok else ERROR_BODY_BYTES)
            except _TooLarge:
                if not ok:
                    return b""
                hints = await self._feedback.observe(call, response, None)
                raise failures.bad_response(
                    call,
                    response,
                    b"",
                    hints,
                    reason=f"response body larger than {self._max_body // (1024 * 1024)} MiB",
                ) from None
            except httpx.DecodingError:
                if ok:
                    hints = await self._feedback.observe(call, response, None)
                    raise failures.bad_response(
                        call, response, b"", hints, reason="undecodable content encoding"
                    ) from None
                return b""
            except httpx.TransportError as exc:
                raise failures.no_response(call, exc) from exc
        finally:
            with anyio.CancelScope(shield=True):  # a deadline cut still closes the stream
                await response.aclose()
