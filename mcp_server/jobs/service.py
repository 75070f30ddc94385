"""`JobService`: the facade the tools call, one method per use case.

Tools (`tools.py`) stay thin: they parse arguments, call one method here and render the
outcome. The use cases live beside it (`submit`, `following`, `results`, `listing`), the
words in `render`, the shared plumbing in `context`; providers are reached only through
`providers.registry` and each provider's `Connection`.

Waits are bounded by the caller's `wait_seconds` and `JOBRELAY_MAX_WAIT_SECONDS`, and share
upstream calls through each provider's watchers (`watch.PollCoalescer` / `watch.StreamHub`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field

from mcp_server._clock import Clock
from mcp_server.config import Settings
from mcp_server.errors import JobRelayError
from mcp_server.jobs import listing, results, submit
from mcp_server.jobs.context import ServiceContext, one_deadline
from mcp_server.jobs.following import Follower
from mcp_server.jobs.render import Renderer
from mcp_server.json_types import JSON
from mcp_server.ledger import JobRecord, Ledger
from mcp_server.models import Advice, JobState
from mcp_server.providers import (
    Caller,
    Connection,
    Outcome,
    ProgressFn,
    PushOutcome,
    ResearchRequest,
)
from mcp_server.providers.registry import ProviderRegistry, default_registry
from mcp_server.schemas import CompanyTarget, ContactTarget, Kind
from mcp_server.upstream import SearchPage


@dataclass
class JobService:
    settings: Settings
    ledger: Ledger
    clock: Clock
    connections: Mapping[str, Connection] = field(default_factory=dict)
    providers: ProviderRegistry = field(default_factory=default_registry)
    ctx: ServiceContext = field(init=False, repr=False)
    renderer: Renderer = field(init=False, repr=False)
    follower: Follower = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.ctx = ServiceContext(
            settings=self.settings,
            ledger=self.ledger,
            clock=self.clock,
            connections=self.connections,
            providers=self.providers,
        )
        self.renderer = Renderer(self.providers, self.clock.time)
        self.follower = Follower(self.ctx, self.renderer)
        self.ctx.follow_started = self._after_submit

    def failure(self, error: JobRelayError, *, tool: str, job_id: str | None = None) -> Outcome:
        return self.ctx.failure(error, tool=tool, job_id=job_id)

    @one_deadline
    async def search(
        self,
        caller: Caller,
        *,
        kind: Kind,
        query: str | None,
        filters: Mapping[str, JSON],
        limit: int,
        next_token: str | None,
    ) -> SearchPage:
        """Returns the research provider's search page; the tool renders it."""
        return await submit.research_connection(self.ctx).search(
            self.ctx,
            caller,
            kind=kind,
            query=query,
            filters=filters,
            limit=limit,
            next_token=next_token,
        )

    @one_deadline
    async def start_research(
        self,
        caller: Caller,
        *,
        kind: Kind,
        search_result_ids: Sequence[str],
        contacts: Sequence[ContactTarget],
        companies: Sequence[CompanyTarget],
        allow_rerun: bool,
        wait_seconds: float,
        progress: ProgressFn | None,
        job_change: bool = False,
        skip_dedup_check: bool = False,
    ) -> Outcome:
        request = ResearchRequest(
            kind=kind,
            search_result_ids=search_result_ids,
            contacts=contacts,
            companies=companies,
            allow_rerun=allow_rerun,
            job_change=job_change,
            skip_dedup_check=skip_dedup_check,
        )
        return await submit.start_research(
            self.ctx, caller, request, wait_seconds=wait_seconds, progress=progress
        )

    @one_deadline
    async def start_seo(
        self,
        caller: Caller,
        *,
        workflow: str,
        params: Mapping[str, JSON],
        wait_seconds: float,
        progress: ProgressFn | None,
    ) -> Outcome:
        return await submit.start_seo(
            self.ctx,
            caller,
            workflow=workflow,
            params=params,
            wait_seconds=wait_seconds,
            progress=progress,
        )

    async def _after_submit(
        self,
        caller: Caller,
        job_id: str,
        *,
        wait_seconds: float,
        deadline: float,
        progress: ProgressFn | None,
        warnings: Sequence[str] = (),
    ) -> Outcome:
        """A job just started: followed for what is left of the call's deadline, or its handle.
        A submit that used up the wait (e.g. sat out a 429 reset) returns the fresh handle
        rather than polling a job the API accepted a moment ago."""
        if wait_seconds > 0 and self.clock.monotonic() < deadline:
            return await self.wait(
                caller,
                job_id,
                wait_seconds=wait_seconds,
                progress=progress,
                warnings=warnings,
                deadline=deadline,
            )
        job = await self.follower.get(caller, job_id)
        return self.renderer.render(job, warnings=warnings, started=True)

    async def describe(self, caller: Caller, job_id: str) -> Outcome:
        """The job as the ledger last saw it (no upstream call): for resources and lists."""
        return self.renderer.render(await self.follower.get(caller, job_id))

    @one_deadline
    async def status(self, caller: Caller, job_ids: Sequence[str]) -> Outcome:
        """Every job's state now, in the order asked, each job once (an id repeated, or a
        handle and its upstream id, is answered once); never result payloads. Open jobs are
        checked through their provider's connection, which shares calls where it can (one
        poll call per Seamless endpoint for all open research jobs of the batch)."""
        return await self.follower.status(caller, job_ids)

    @one_deadline
    def wait(
        self,
        caller: Caller,
        job_id: str,
        *,
        wait_seconds: float,
        progress: ProgressFn | None,
        warnings: Sequence[str] = (),
        deadline: float | None = None,
    ) -> Awaitable[Outcome]:
        """Follow a job until it ends or the wait is over: `min(wait_seconds,
        JOBRELAY_MAX_WAIT_SECONDS)` from now, or `deadline` (clock.monotonic) when the caller
        already started the clock (a start_* call that waits). Not a coroutine of its own: the
        follower's is awaited directly, one frame less held per open wait."""
        return self.follower.wait(
            caller,
            job_id,
            wait_seconds=wait_seconds,
            progress=progress,
            warnings=warnings,
            deadline=deadline,
        )

    async def receive_push(
        self, caller: Caller, provider: str, upstream_id: str, payload: Mapping[str, object]
    ) -> PushOutcome:
        """A result `provider` pushed (a webhook delivery), trusted for `caller`'s tenant only:
        folded into the job like a poll result and published to its waiters."""
        return await self.follower.receive_push(caller, provider, upstream_id, payload)

    async def result(
        self,
        caller: Caller,
        job_id: str,
        *,
        fields: Sequence[str] | None,
        offset: int,
        limit: int,
    ) -> Outcome:
        return await results.result_page(
            self.follower, self.renderer, caller, job_id, fields=fields, offset=offset, limit=limit
        )

    async def list_jobs(
        self,
        caller: Caller,
        *,
        provider: str | None,
        state: JobState | None,
        since_hours: float | None,
        limit: int,
    ) -> Outcome:
        return await listing.list_jobs(
            self.ctx, caller, provider=provider, state=state, since_hours=since_hours, limit=limit
        )

    # ---- rendering (kept for callers that render a row they hold) --------------------------
    def _render(
        self,
        rec: JobRecord,
        *,
        warnings: Sequence[str] = (),
        started: bool = False,
        problem: Advice | None = None,
    ) -> Outcome:
        return self.renderer.render(rec, warnings=warnings, started=started, problem=problem)
