"""Plumbing every use case shares: time, the tool call's one deadline, failures as advice,
the intent row's close on a failed submit. Implements `providers.JobContext`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from mcp_server import advice as advice_mod
from mcp_server._clock import Clock
from mcp_server.config import Settings
from mcp_server.errors import AbsurdAnswer, JobRelayError, OutcomeUnknown
from mcp_server.ledger import Ledger
from mcp_server.models import Advice, JobState
from mcp_server.providers import Caller, Connection, JobProvider, Outcome, ProgressFn
from mcp_server.providers.registry import ProviderRegistry, default_registry
from mcp_server.schemas import JobOutput

_P = ParamSpec("_P")
_R = TypeVar("_R")

_CALL_DEADLINE: ContextVar[float | None] = ContextVar("jobrelay_call_deadline", default=None)
"""The running tool call's deadline (clock.monotonic), set by `ServiceContext.start_call`."""


class AfterSubmit(Protocol):
    async def __call__(
        self,
        caller: Caller,
        job_id: str,
        *,
        wait_seconds: float,
        deadline: float,
        progress: ProgressFn | None,
        warnings: Sequence[str] = (),
    ) -> Outcome: ...


@dataclass
class ServiceContext:
    """What the use cases share: settings, ledger, clock, the providers and their I/O."""

    settings: Settings
    ledger: Ledger
    clock: Clock
    connections: Mapping[str, Connection]
    providers: ProviderRegistry = field(default_factory=default_registry)
    follow_started: AfterSubmit | None = None
    """Set by the service: how a job just started is followed (`wait`)."""

    def provider(self, name: str) -> JobProvider:
        return self.providers.get(name)

    def connection(self, name: str) -> Connection:
        return self.connections[name]

    def now(self) -> float:
        return self.clock.time()

    def utcnow(self) -> datetime:
        return datetime.fromtimestamp(self.now(), tz=UTC)

    def deadline(self, wait_seconds: float) -> float:
        return self.clock.monotonic() + max(0.0, min(wait_seconds, self.settings.max_wait_seconds))

    def call_deadline(self) -> float:
        """The tool call's one deadline (`JOBRELAY_MAX_WAIT_SECONDS` from its start): every
        upstream call of one tool call shares it, retries and sequential calls included."""
        fixed = _CALL_DEADLINE.get()
        if fixed is not None:
            return fixed
        return self.clock.monotonic() + self.settings.max_wait_seconds

    def start_call(self) -> Token[float | None] | None:
        """Start the tool call's clock, unless an outer service call already did (None then);
        the caller resets the token when the call ends (`one_deadline`)."""
        if _CALL_DEADLINE.get() is not None:
            return None
        return _CALL_DEADLINE.set(self.clock.monotonic() + self.settings.max_wait_seconds)

    def advise(self, error: JobRelayError, *, tool: str) -> Advice:
        return advice_mod.advise_error(error, now=self.now(), tool=tool)

    def failure(self, error: JobRelayError, *, tool: str, job_id: str | None = None) -> Outcome:
        adv = advice_mod.advise_error(error, now=self.now(), tool=tool, job_id=job_id)
        return self.advice_failure(adv, job_id=job_id)

    def advice_failure(self, adv: Advice, *, job_id: str | None = None) -> Outcome:
        text = advice_mod.render_text(adv)
        if job_id:
            text = f"Job {job_id}: {text}"
        return Outcome(JobOutput(job_id=job_id, error=adv.as_error()), text, failed=True)

    def error_dict(self, exc: JobRelayError, tool: str) -> dict[str, Any]:
        return self.advise(exc, tool=tool).model_dump(mode="json")

    async def submit_failed(self, job_id: str, exc: JobRelayError, *, tool: str) -> Outcome:
        """Close the intent row of a submit that failed. An ambiguous failure may have been
        processed (never replayed): the agent gets the job id to check; a refused one not."""
        unknown = isinstance(exc, OutcomeUnknown)
        await self.ledger.fail_submit(
            job_id, error=self.error_dict(exc, tool), processed="maybe" if unknown else "no"
        )
        absurd = exc.cause if isinstance(exc, OutcomeUnknown) else None
        if isinstance(absurd, AbsurdAnswer):
            # A protocol error: the ids are kept for inspection (bounded), never polled.
            await self.ledger.update(
                job_id,
                state=JobState.UNKNOWN,
                raw_status="protocol_error",
                snapshot={
                    "protocol_error": {
                        "message": absurd.message,
                        "ids_expected": absurd.expected,
                        "ids_received": absurd.count,
                        "ids_kept": absurd.sample,
                    }
                },
            )
        return self.failure(exc, tool=tool, job_id=job_id if unknown else None)

    async def after_submit(
        self,
        caller: Caller,
        job_id: str,
        *,
        wait_seconds: float,
        deadline: float,
        progress: ProgressFn | None,
        warnings: Sequence[str] = (),
    ) -> Outcome:
        if self.follow_started is None:  # pragma: no cover - JobService sets it
            raise RuntimeError("ServiceContext.follow_started is set by JobService")
        return await self.follow_started(
            caller,
            job_id,
            wait_seconds=wait_seconds,
            deadline=deadline,
            progress=progress,
            warnings=warnings,
        )


class _HasContext(Protocol):
    ctx: ServiceContext


_S = TypeVar("_S", bound=_HasContext)


def one_deadline(
    method: Callable[Concatenate[_S, _P], Awaitable[_R]],
) -> Callable[Concatenate[_S, _P], Awaitable[_R]]:
    """Run a tool's service method under one deadline for all its upstream calls."""

    # A plain try/finally, not a @contextmanager: a wait holds this frame for its whole length,
    # and a generator context manager is ~0.4 KB more per open wait (BENCHMARKS.md, scale).
    async def run(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        token = self.ctx.start_call()
        try:
            return await method(self, *args, **kwargs)
        finally:
            if token is not None:
                _CALL_DEADLINE.reset(token)

    run.__name__, run.__doc__ = method.__name__, method.__doc__
    return run
