"""Rate-limit and retry hints parsed from upstream responses (UPSTREAMS.md section 3).

`parse_hints` is pure and total: whatever a server (or an agent pasting headers into
`explain_error`) sends, it returns a `RateLimitHints` and never raises. Values it cannot trust
are dropped and explained in `anomaly`, so callers fall back to computed backoff instead of
telling an agent "retry after 1792152901 s" (RETRY_POLICY.md section A).

How a reset value is read (RETRY_POLICY.md section B):

- a provider's documented format wins (Seamless `X-RateLimit-Reset` is epoch seconds);
- otherwise by shape: letters, `-` or `:` mean a date (HTTP-date or ISO-8601); a number
  >= 1e12 is epoch milliseconds, >= 1e9 epoch seconds, anything smaller delta seconds;
- epoch values are turned into a wait against the response's `Date` header when it has one
  (this cancels clock skew between us and the server), else against the local `now`.

Sanity rules: a negative wait is 0, but at least 1 s when the response was a 429 or said
`remaining: 0`; a wait above one day is a misparse and is dropped. `Retry-After`,
`retry-after-ms` and the envelope's `retry_after_seconds` all mean "not before", so the max
of those is kept; they take precedence over the reset headers (`RateLimitHints.not_before`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum

from mcp_server.errors import RateLimitHints
from mcp_server.upstream._bodies import error_fields

__all__ = [
    "MAX_WAIT",
    "RateLimitHints",
    "format_clock",
    "parse_hints",
    "retry_at",
]

MAX_WAIT = 86_400.0
"""A computed wait above one day is a misparse (an epoch read as a delta, a bad date)."""

_BLOCKED_FLOOR = 1.0
"""Minimum wait when the server said we are out of requests (429 or `remaining: 0`)."""

_MAX_COUNT = 1_000_000_000
"""Limits, remaining counts and credits above this are garbage, not data."""

_MAX_VALUE_LEN = 512
"""Longer header values are not worth parsing: no legitimate hint is that long."""

_EPOCH_MS = 1e12
_EPOCH_S = 1e9

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_LOOKS_LIKE_DATE = re.compile(r"[A-Za-z:-]")


class _Fmt(Enum):
    """How to read one header's time value."""

    RETRY_AFTER = "retry-after"  # delta seconds or HTTP-date; numbers are never epochs (RFC 9110)
    DELTA_MS = "delta-ms"  # retry-after-ms
    EPOCH_S = "epoch-s"  # documented epoch seconds (Seamless X-RateLimit-Reset)
    AUTO = "auto"  # by shape: date, epoch ms, epoch s, else delta s


#: Per-provider declared formats (RETRY_POLICY.md section B.1). Anything else is AUTO.
_DECLARED: dict[tuple[str, str], _Fmt] = {
    ("seamless", "x-ratelimit-reset"): _Fmt.EPOCH_S,
}

#: Header families in the order they are consulted, per provider: the provider's documented
#: family first, so a stray header of the other family never overrides it.
_FAMILIES: dict[str | None, tuple[str, ...]] = {
    "seamless": ("x-ratelimit-", "ratelimit-"),
    "agentseo": ("ratelimit-", "x-ratelimit-"),
    None: ("ratelimit-", "x-ratelimit-"),
}


class _Notes:
    """Collects anomalies; a hint that is dropped always says why."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.passed = False
        """A reset or retry time that lies in the past was seen (any amount)."""

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)

    def joined(self) -> str | None:
        return "; ".join(self.items) if self.items else None


def _short(value: str) -> str:
    return ascii(value[:40] + ("..." if len(value) > 40 else ""))


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A lower-cased copy; duplicates (any casing) are comma-joined like HTTP does.

    `httpx.Headers.items()` already merges repeated fields; a plain dict may hold the same
    name in several casings.
    """
    out: dict[str, str] = {}
    try:
        items: Iterable[tuple[object, object]] = list(headers.items())
    except (AttributeError, TypeError, ValueError):
        return out
    for key, value in items:
        name = _text(key).strip().lower()
        text = _text(value)
        out[name] = f"{out[name]}, {text}" if name in out else text
    return out


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    return str(value)


def _number(text: str) -> float | None:
    """A finite plain decimal (ASCII digits only, no exponent), or None."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _parts(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _count_values(raw: str, name: str, notes: _Notes) -> list[tuple[float, dict[str, str]]]:
    """Numbers in a (possibly comma-joined) header, each with its `;k=v` parameters."""
    if len(raw) > _MAX_VALUE_LEN:
        notes.add(f"{name} too long, ignored")
        return []
    out: list[tuple[float, dict[str, str]]] = []
    for part in _parts(raw):
        head, params = _params(part)
        value = _number(head)
        if value is None:
            notes.add(f"{name} {_short(part)} is not a number, ignored")
            continue
        out.append((value, params))
    return out


def _params(item: str) -> tuple[str, dict[str, str]]:
    """Split `head;k=v;k2=v2` (quotes around values removed)."""
    head, *rest = item.split(";")
    params: dict[str, str] = {}
    for param in rest:
        key, _, value = param.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return head.strip(), params


def _count(value: float, name: str, notes: _Notes, *, positive: bool = False) -> int | None:
    """An integer count from a number: negatives clamp to 0 (or drop, for a limit)."""
    if value > _MAX_COUNT:
        notes.add(f"{name} {value:.0f} is implausibly large, ignored")
        return None
    count = math.floor(value)
    if positive and count <= 0:
        notes.add(f"{name} {value:g} is not a positive limit, ignored")
        return None
    return max(0, count)


def _credits(value: float, notes: _Notes) -> int | None:
    """A plausible credit count, else None (issue 20.2): a negative, fractional or absurdly
    large value is a broken header, not "0 credits left", and must not lock out research."""
    if value < 0 or value != math.floor(value) or value > _MAX_COUNT:
        notes.add(f"X-PublicAPI-Credits {value:g} is not a plausible credit count, ignored")
        return None
    return int(value)


def _epoch(value: datetime) -> float | None:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        stamp = value.timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    return stamp if math.isfinite(stamp) else None


def _date(text: str) -> float | None:
    """Epoch seconds of an HTTP-date or ISO-8601 instant, or None."""
    if not text.isascii() or len(text) > 64:
        return None
    try:
        return _epoch(parsedate_to_datetime(text))
    except (ValueError, TypeError, IndexError, OverflowError):
        pass
    try:
        return _epoch(datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")))
    except (ValueError, TypeError, OverflowError):
        return None


def _server_date(raw: str) -> float | None:
    """The response's `Date`; a duplicated field (`d1, d2`) counts once, by its first copy."""
    raw = raw.strip()
    whole = _date(raw)
    if whole is not None:
        return whole
    parts = _parts(raw)
    return _date(", ".join(parts[:2])) if len(parts) >= 2 else None


def _window(text: str) -> float | None:
    value = _number(text)
    return value if value is not None and 0 < value <= MAX_WAIT else None


def _one_wait(text: str, fmt: _Fmt, ref: float, name: str, notes: _Notes) -> float | None:
    """Raw wait in seconds for one value (may be negative or huge; sanitised later)."""
    head, _ = _params(text)
    value = _number(head)
    if value is None:
        if fmt is _Fmt.DELTA_MS or not _LOOKS_LIKE_DATE.search(head):
            return None
        instant = _date(head)
        return None if instant is None else instant - ref
    if fmt is _Fmt.RETRY_AFTER:
        return value
    if fmt is _Fmt.DELTA_MS:
        return value / 1000.0
    if value >= _EPOCH_MS:
        return value / 1000.0 - ref
    if value >= _EPOCH_S:
        return value - ref
    if fmt is _Fmt.EPOCH_S:
        # Documented as epoch seconds, but no epoch of this century is this small: the
        # server changed its format. A delta is the only reading that can still help.
        notes.add(f"{name} {value:g} is not an epoch as documented; read as delta seconds")
    return value


def _waits(raw: str, fmt: _Fmt, ref: float, name: str, notes: _Notes) -> list[float]:
    """Every wait in a header value, tolerating comma-joined duplicates and HTTP-dates
    (which contain a comma themselves)."""
    raw = raw.strip()
    if not raw:
        return []
    if len(raw) > _MAX_VALUE_LEN:
        notes.add(f"{name} too long, ignored")
        return []
    whole = _one_wait(raw, fmt, ref, name, notes)
    if whole is not None:
        return [whole]
    parts = _parts(raw)
    out: list[float] = []
    i = 0
    while i < len(parts):
        wait = _one_wait(parts[i], fmt, ref, name, notes)
        if wait is None and i + 1 < len(parts):
            joined = _one_wait(f"{parts[i]}, {parts[i + 1]}", fmt, ref, name, notes)
            if joined is not None:
                out.append(joined)
                i += 2
                continue
        if wait is None:
            notes.add(f"{name} {_short(parts[i])} is not a time, ignored")
        else:
            out.append(wait)
        i += 1
    return out


def _sane(waits: Iterable[float], name: str, notes: _Notes) -> float | None:
    """The max of the plausible waits, negatives as 0; above a day is a misparse."""
    kept: list[float] = []
    for wait in waits:
        if wait > MAX_WAIT:
            notes.add(f"{name} means a wait of {wait:.0f} s (over a day): misparse, ignored")
            continue
        if wait < 0:
            notes.passed = True
        if wait < -MAX_WAIT:
            notes.add(f"{name} lies {-wait:.0f} s in the past (over a day): misparse, ignored")
            continue
        kept.append(max(0.0, wait))
    return max(kept) if kept else None


def _split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes (structured-field lists)."""
    out: list[str] = []
    buf: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(char)
    out.append("".join(buf))
    return [part.strip() for part in out if part.strip()]


def _sf_items(raw: str) -> list[tuple[str, dict[str, str]]]:
    """Items of an IETF structured `RateLimit`/`RateLimit-Policy` field.

    Newer drafts: `"name";r=50;t=30` (list of items with params). Older drafts:
    `limit=100, remaining=50, reset=30` (a dictionary) or `100;w=60`. Dictionary members are
    merged into one unnamed item.
    """
    if len(raw) > _MAX_VALUE_LEN:
        return []
    items: list[tuple[str, dict[str, str]]] = []
    merged: dict[str, str] = {}
    for member in _split_top(raw, ","):
        tokens = _split_top(member, ";")
        if not tokens:
            continue
        head = tokens[0]
        params: dict[str, str] = {}
        for token in tokens[1:]:
            key, _, value = token.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        if "=" in head and not head.startswith('"'):
            key, _, value = head.partition("=")
            merged[key.strip().lower()] = value.strip().strip('"')
            merged.update(params)
        else:
            items.append((head.strip('"'), params))
    if merged:
        items.append(("", merged))
    return items


def _sf_param(params: Mapping[str, str], *names: str) -> float | None:
    for name in names:
        if name in params:
            return _number(params[name])
    return None


@dataclass(slots=True)
class _Family:
    """Limit/remaining/reset read from one header family."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None
    window: float | None = None


def _read_family(
    headers: Mapping[str, str],
    prefix: str,
    provider: str | None,
    ref: float,
    notes: _Notes,
) -> _Family:
    fam = _Family()
    name = f"{prefix}limit"
    if name in headers:
        values = _count_values(headers[name], name, notes)
        if values:
            low, params = min(values, key=lambda pair: pair[0])
            fam.limit = _count(low, name, notes, positive=True)
            fam.window = _window(params.get("w", ""))
    name = f"{prefix}remaining"
    if name in headers:
        values = _count_values(headers[name], name, notes)
        if values:
            fam.remaining = _count(min(v for v, _ in values), name, notes)
    name = f"{prefix}reset"
    if name in headers:
        fmt = _DECLARED.get((provider, name), _Fmt.AUTO) if provider else _Fmt.AUTO
        fam.reset = _sane(_waits(headers[name], fmt, ref, name, notes), name, notes)
    return fam


def _read_structured(headers: Mapping[str, str], ref: float, notes: _Notes) -> _Family:
    """The IETF structured `RateLimit` (+ `RateLimit-Policy`) form."""
    fam = _Family()
    chosen = ""
    if "ratelimit" in headers:
        best: tuple[float, str, dict[str, str]] | None = None
        for item_name, params in _sf_items(headers["ratelimit"]):
            remaining = _sf_param(params, "r", "remaining")
            key = remaining if remaining is not None else math.inf
            if best is None or key < best[0]:
                best = (key, item_name, params)
        if best is not None:
            _, chosen, params = best
            remaining = _sf_param(params, "r", "remaining")
            if remaining is not None:
                fam.remaining = _count(remaining, "RateLimit r", notes)
            limit = _sf_param(params, "q", "limit")
            if limit is not None:
                fam.limit = _count(limit, "RateLimit q", notes, positive=True)
            if "t" in params or "reset" in params:
                raw = params.get("t", params.get("reset", ""))
                fam.reset = _sane(
                    _waits(raw, _Fmt.AUTO, ref, "RateLimit t", notes), "RateLimit t", notes
                )
    if "ratelimit-policy" in headers:
        policies = _sf_items(headers["ratelimit-policy"])
        match = next((p for n, p in policies if n == chosen), None)
        if match is None and policies:
            head, params = policies[0]
            match = dict(params)
            if _number(head) is not None:
                match.setdefault("q", head)
        if match is not None:
            quota = _sf_param(match, "q", "limit")
            if quota is not None and fam.limit is None:
                fam.limit = _count(quota, "RateLimit-Policy q", notes, positive=True)
            fam.window = _window(match.get("w", match.get("window", "")))
    return fam


def _body_retry_after(body: object) -> object:
    """`retry_after_seconds` at the top of a dict body or inside its `error` object."""
    if isinstance(body, bytes | bytearray | str) and len(body) <= 65_536:
        try:
            body = json.loads(body)
        except (ValueError, RecursionError):
            return None
    if not isinstance(body, Mapping):
        return None
    return error_fields(body).retry_after


def _body_wait(body: object, notes: _Notes) -> float | None:
    value = _body_retry_after(body)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        # Beyond 1e15 the float conversion (and even str()) can fail; no wait is that long.
        if abs(value) < 10**15:
            return float(value)
        notes.add("body retry_after_seconds is an implausibly large integer, ignored")
        return None
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str) and len(value) <= 64:
        number = _number(value)
        if number is not None:
            return number
        notes.add(f"body retry_after_seconds {_short(value)} is not a number, ignored")
        return None
    notes.add(f"body retry_after_seconds of type {type(value).__name__} ignored")
    return None


def parse_hints(
    provider: str | None,
    status: int,
    headers: Mapping[str, str],
    body: object = None,
    *,
    now: float,
) -> RateLimitHints:
    """Read every rate-limit and retry hint of one response. Never raises.

    `now` is the local (possibly virtual) epoch time at which the response arrived; it is the
    reference for dates and epochs only when the response has no usable `Date` header.
    `headers` may be `httpx.Headers` or any mapping in any casing. `body` is the decoded JSON
    (or its text); only `retry_after_seconds` is read from it.
    """
    notes = _Notes()
    hdrs = _lower_headers(headers)

    ref = now
    if "date" in hdrs:
        server_now = _server_date(hdrs["date"])
        if server_now is None:
            notes.add(f"Date {_short(hdrs['date'])} unreadable; local time used")
        else:
            ref = server_now

    retry_hints: list[float | None] = []
    for name, fmt in (("retry-after-ms", _Fmt.DELTA_MS), ("retry-after", _Fmt.RETRY_AFTER)):
        if name in hdrs:
            retry_hints.append(_sane(_waits(hdrs[name], fmt, ref, name, notes), name, notes))
    body_wait = _body_wait(body, notes)
    if body_wait is not None:
        retry_hints.append(_sane([body_wait], "retry_after_seconds", notes))
    retry_after = max((h for h in retry_hints if h is not None), default=None)

    order = _FAMILIES.get(provider, _FAMILIES[None])
    families = [_read_family(hdrs, prefix, provider, ref, notes) for prefix in order]
    families.insert(1, _read_structured(hdrs, ref, notes))
    limit = next((f.limit for f in families if f.limit is not None), None)
    remaining = next((f.remaining for f in families if f.remaining is not None), None)
    reset_after = next((f.reset for f in families if f.reset is not None), None)
    window = next((f.window for f in families if f.window is not None), None)

    credits: int | None = None
    if "x-publicapi-credits" in hdrs:
        values = _count_values(hdrs["x-publicapi-credits"], "X-PublicAPI-Credits", notes)
        if values:
            credits = _credits(min(v for v, _ in values), notes)

    if status == 429 or remaining == 0:
        if reset_after is not None:
            reset_after = max(reset_after, _BLOCKED_FLOOR)
        if retry_after is not None:
            retry_after = max(retry_after, _BLOCKED_FLOOR)

    return RateLimitHints(
        limit=limit,
        remaining=remaining,
        reset_after=reset_after,
        retry_after=retry_after,
        window=window,
        credits=credits,
        anomaly=notes.joined(),
        status=status,
        passed=notes.passed,
    )


_MAX_DELAY = 10 * 366 * MAX_WAIT


def retry_at(now: float, delay: float) -> datetime:
    """The absolute UTC instant `delay` seconds after epoch `now`, rounded up to the second.

    Rounded up so an agent told "at 10:15:42Z" never comes back a fraction too early.
    """
    if not math.isfinite(delay):
        delay = _MAX_DELAY if delay > 0 else 0.0
    delay = min(max(0.0, delay), _MAX_DELAY)
    return datetime.fromtimestamp(math.ceil(now + delay), tz=UTC)


def format_clock(instant: datetime) -> str:
    """`10:15:42Z`: the short form agent-facing texts use for a UTC instant."""
    return instant.astimezone(UTC).strftime("%H:%M:%SZ")
