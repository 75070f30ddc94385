"""The vocabulary every layer shares: providers, job states, error codes, advice, progress.

These are the shapes agents see (via the tools' output schemas) and the shapes the ledger
stores, so they live in one place and change only with a CHANGELOG entry.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from mcp_server.errors import ErrorCode  # lives with the exception tree; re-exported here

__all__ = [
    "TERMINAL_STATES",
    "Advice",
    "ErrorCode",
    "ErrorInfo",
    "JobState",
    "Progress",
    "Provider",
]

Provider: TypeAlias = str
"""A provider's name as registered (`providers.registry` checks it: lower case, unique, the
ledger's `provider` column); no provider is named here, so registering one edits nothing."""


class JobState(StrEnum):
    """Unified job state across both APIs; the raw upstream status is always kept beside it."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NOT_FOUND = "not_found"  # Seamless `missing`: no record found
    DUPLICATE = "duplicate"  # Seamless dedupe: existing result, no new credit
    UNKNOWN = "unknown"  # the submit's outcome is unknown (ambiguous failure after sending)

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.NOT_FOUND, JobState.DUPLICATE}
)


class Progress(BaseModel):
    """Where a running job is, as far as the upstream says."""

    model_config = ConfigDict(frozen=True)

    percent: float | None = Field(None, ge=0, le=100, description="0-100 when known.")
    phase: str | None = Field(None, description="Upstream phase name, e.g. waiting_upstream.")
    message: str | None = Field(None, description="Upstream's human-readable status line.")
    eta_seconds: float | None = Field(None, ge=0, description="Upstream's estimate, seconds.")


class ErrorInfo(BaseModel):
    """The structured `error` of a failing tool result (DESIGN.md section 1)."""

    code: ErrorCode
    http_status: int | None = Field(None, description="Upstream HTTP status, if any.")
    retryable: bool = Field(description="Whether calling again (after the wait) can succeed.")
    retry_after_seconds: float | None = Field(
        None, ge=0, description="Seconds to wait before retrying; null when retrying won't help."
    )
    retry_at: datetime | None = Field(None, description="UTC time at which a retry may succeed.")
    next_step: str = Field(description="The one thing to do next.")
    provider: str | None = None
    request_id: str | None = Field(None, description="Upstream request id, for support.")


class Advice(BaseModel):
    """Plain-language recovery advice for one failure, computed from its actual headers."""

    code: ErrorCode | None = Field(
        None, description="Error code when this is a failure; null for job-status advice."
    )
    provider: str | None = None
    title: str = Field(description="What happened, in a few words.")
    what_happened: str = Field(description="One or two sentences on what happened and why.")
    retryable: bool = Field(description="Whether retrying (after the wait) can help.")
    retry_after_seconds: float | None = Field(None, ge=0)
    retry_at: datetime | None = None
    next_step: str = Field(description="The one next step, often a specific tool call.")
    do_not: str | None = Field(None, description="What not to do, e.g. resubmit a paid job.")
    http_status: int | None = None
    request_id: str | None = None

    def as_error(self) -> ErrorInfo:
        """The `error` object of a failing tool result."""
        if self.code is None:
            raise ValueError("advice without an error code is not a tool error")
        return ErrorInfo(
            code=self.code,
            http_status=self.http_status,
            retryable=self.retryable,
            retry_after_seconds=self.retry_after_seconds,
            retry_at=self.retry_at,
            next_step=self.next_step,
            provider=self.provider,
            request_id=self.request_id,
        )
