"""Rate-limit and retry hints parsed from upstream responses (UPSTREAMS.md section 3).

Only the data shape lives here for now; the parsers are part of the upstream-clients work.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimitHints:
    """What one response said about waiting. All durations are seconds from the response."""

    limit: int | None = None
    """Requests allowed per window (`X-RateLimit-Limit`, `RateLimit-Limit`, `RateLimit-Policy`)."""
    remaining: int | None = None
    """Requests left in the current window."""
    reset_after: float | None = None
    """Seconds until the window resets, skew-corrected with the `Date` header; never negative."""
    retry_after: float | None = None
    """Max of `Retry-After`, `retry-after-ms` and the envelope's `retry_after_seconds`."""
    window: float | None = None
    """Window length in seconds, when the server states it (`RateLimit-Policy` `w=`)."""
    credits: int | None = None
    """Seamless `X-PublicAPI-Credits`: research credits left for the org."""
    anomaly: str | None = None
    """Why a hint was discarded (e.g. an epoch misread as a delta), for logs; never for agents."""

    @property
    def not_before(self) -> float | None:
        """The server's "do not retry before" floor in seconds, if it gave one."""
        if self.retry_after is not None:
            if self.reset_after is not None and self.remaining == 0:
                return max(self.retry_after, self.reset_after)
            return self.retry_after
        if self.reset_after is not None and self.remaining == 0:
            return self.reset_after
        return None
