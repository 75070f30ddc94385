"""The one protocol every job provider implements, and the vocabulary it shares with the core.

A provider is an async-job API jobrelay can start and follow (Seamless.ai research, AgentSEO
workflows, or one a deployment registers). It comes in two parts:

- `JobProvider`, the static description: its name, handle prefix, which tool and workflows it
  serves, the settings it reads, and its job semantics over a ledger row (what the row means
  to the agent: per-target items, progress, results, projection, advice). No I/O.
- `Connection`, what `JobProvider.connect` returns once per server runtime: the wire clients
  and watchers per tenant, and the I/O of a job (submit, status, follow). It writes the
  ledger only through the `JobContext` the core hands it.

The core (`jobs/`, `server.py`, `tools.py`) reaches providers only through
`providers.registry`; a provider never imports the MCP layer (tests/test_architecture.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import anyio
import httpx
from pydantic import BaseModel, SecretStr

from mcp_server._clock import Clock
from mcp_server.advice.table import ProviderAdvice
from mcp_server.config import ProviderSettings, Settings
from mcp_server.errors import JobRelayError
from mcp_server.json_types import JSON, JSONObject
from mcp_server.ledger import JobRecord, Ledger
from mcp_server.limits import Limiter, RateLimits
from mcp_server.models import Advice, JobState, Progress
from mcp_server.schemas import CompanyTarget, ContactTarget, ItemStatus
from mcp_server.sharing import Fanout, Leases
from mcp_server.upstream import BackoffPolicy, RetryBudget, SearchPage

__all__ = [
    "ByNameSettings",
    "Caller",
    "Connection",
    "JobContext",
    "JobKind",
    "JobProvider",
    "JobView",
    "LineFn",
    "Outcome",
    "ProgressFn",
    "ProviderEnv",
    "ResearchConnection",
    "ResearchRequest",
    "SeoConnection",
    "SharedFold",
    "Spawn",
    "Started",
    "aggregate_state",
]

JobKind = Literal["research", "seo"]
"""Which start tool a provider serves: `start_research` or `start_seo_job` (DESIGN.md)."""

ProgressFn = Callable[[float, str | None], Awaitable[None]]
"""`(percent 0-100, message)`; the tool layer turns it into MCP progress notifications."""

LineFn = Callable[[Mapping[str, JSON]], "str | list[str]"]
"""One result record as numbered text line(s) (see `render.numbered`)."""

Spawn = Callable[[Callable[[], Awaitable[None]]], None]
"""Start a background task in the server's long-lived task group."""


@dataclass
class Outcome:
    """What a service call produced: the structured output and the sentence(s) for the agent.

    `failed` marks a tool failure (isError); a job that failed upstream is not one.
    """

    output: BaseModel
    text: str
    failed: bool = False
    dumped: dict[str, JSON] | None = field(default=None, compare=False, repr=False)
    """`output` as the tool result's structured content, made once (`tools.to_result`) and
    shared by every call answered with this outcome (a cached rendering: the many waiters
    of one job). Nothing mutates it after."""


@dataclass
class Caller:
    """Who is calling: which keys and tenant fingerprints apply (per request over HTTP)."""

    tenants: Mapping[str, str]
    sandbox: Mapping[str, bool]

    def tenant(self, provider: str) -> str:
        return self.tenants[provider]


@dataclass(frozen=True)
class ProviderEnv:
    """What the runtime hands a provider to build its wire clients and watchers."""

    settings: Settings
    clock: Clock
    limiter: Limiter
    policy: BackoffPolicy
    budget: RetryBudget
    spawn: Spawn
    base_url: str
    sandboxed: bool
    key_for: Callable[[str], SecretStr]
    """The API key behind a tenant fingerprint (never stored by the provider beyond a client)."""
    transport: httpx.AsyncBaseTransport | None = None
    """An `httpx.AsyncBaseTransport` for tests (in-process apps), else None."""
    leases: Leases | None = None
    """Poll leases shared with the other processes of this ledger (issue 17.1), else None."""
    fanout: Fanout | None = None
    """Results and stream events sent to the other replicas' waiters (Redis), else None."""


@dataclass
class JobView:
    """The provider's reading of a ledger row, for the job's structured output."""

    items: list[ItemStatus] | None = None
    progress: Progress | None = None
    next_check_after_seconds: float | None = None
    credits_remaining: int | None = None
    unrecognised_status: str | None = None
    """The first of `items`' upstream statuses that no documentation names, if any: a many-job
    status row shows it instead of a state (issue 12.3)."""


@dataclass
class Started:
    """A submit the upstream accepted: what `complete_submit` records, and the final update
    when the answer already was terminal (`final`, keyword arguments of `Ledger.update`)."""

    upstream_ids: list[str]
    state: JobState
    raw_status: str
    snapshot: JSONObject
    final: JSONObject | None = None


@dataclass
class SharedFold:
    """One open job's latest folded record, shared by every `wait_for_job` on it.

    Without it each waiter folded each poll round (or the final SSE envelopes) into its own
    copy of the job: one ledger write and one decoded copy of the whole row per waiter, so
    memory grew with waiters x targets (BENCHMARKS.md, scale). With it, the first waiter to
    see a round folds and writes it once; the others take its record.
    """

    lock: anyio.Lock = field(default_factory=anyio.Lock)
    users: int = 0
    version: int = -1
    """The watcher's board version the record reflects; -1 before any fold."""
    rec: JobRecord | None = None

    def fresher(self, rec: JobRecord) -> JobRecord:
        """The newer of a waiter's record and the shared one (a status call may have written
        the job since the shared record was folded); the shared one on a tie."""
        if self.rec is None or rec.updated_at > self.rec.updated_at:
            return rec
        return self.rec


class JobContext(Protocol):
    """What the core lends a connection for one tool call: the ledger, time, the call's one
    deadline, and the shared submit plumbing (intent rows, failure advice, following)."""

    @property
    def ledger(self) -> Ledger: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def clock(self) -> Clock: ...

    def now(self) -> float:
        """Wall-clock seconds (the injected clock)."""
        ...

    def call_deadline(self) -> float:
        """The tool call's one deadline (clock.monotonic) for every upstream call it makes."""
        ...

    def deadline(self, wait_seconds: float) -> float:
        """`min(wait_seconds, JOBRELAY_MAX_WAIT_SECONDS)` from now (clock.monotonic)."""
        ...

    def failure(self, error: JobRelayError, *, tool: str, job_id: str | None = None) -> Outcome:
        """A tool failure explained by the advice catalogue."""
        ...

    def advice_failure(self, adv: Advice, *, job_id: str | None = None) -> Outcome: ...

    def advise(self, error: JobRelayError, *, tool: str) -> Advice: ...

    def error_dict(self, exc: JobRelayError, tool: str) -> JSONObject: ...

    async def submit_failed(self, job_id: str, exc: JobRelayError, *, tool: str) -> Outcome:
        """Close the intent row of a submit that failed (unknown or rejected)."""
        ...

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
        """Follow a job just started for what is left of the call, or return its handle."""
        ...


@runtime_checkable
class Connection(Protocol):
    """A provider's I/O for one server runtime: clients and watchers per tenant."""

    async def refresh(
        self, ctx: JobContext, caller: Caller, records: Sequence[JobRecord]
    ) -> tuple[dict[str, JobRecord], dict[str, JobRelayError]]:
        """Fresh rows of the open jobs among `records` (sharing calls where the API allows),
        and why any could not be checked. Rows not returned are unchanged."""
        ...

    async def follow(
        self,
        ctx: JobContext,
        caller: Caller,
        rec: JobRecord,
        *,
        fold: SharedFold,
        deadline: float,
        progress: ProgressFn | None,
    ) -> tuple[JobRecord, JobRelayError | None]:
        """Follow an open job until it ends or `deadline`; folds through `fold` so many
        waiters write each round once. Returns the row and why following stopped early."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    """How an API pushes finished results to a receiver (issue 18), declared by its provider
    (`JobProvider.webhook`, optional): the HTTP transport serves `path` when `secret` is set."""

    path: str
    """Where the receiver listens, e.g. `/webhooks/seamless`."""
    secret_env: str
    """The variable holding the shared secret (named in texts)."""
    secret_header: str
    """The request header that carries the secret (lower case)."""
    id_field: str
    """The body's field naming the upstream id the result answers."""
    secret: Callable[[Settings], SecretStr | None]
    setting_hint: str
    """Where a person finds the secret the API sends, in the provider's words: the 401 says
    "Send the <secret_header> header with <setting_hint>, equal to this server's
    <secret_env>." (UPSTREAMS.md, Webhooks)."""
    id_example: str
    """What `id_field` holds, named as the provider does, for the 400 that finds none."""
    finished_field: str | None = None
    """The body's field saying when the upstream finished the job (ISO 8601), the start of
    the delivery lag metric; None when its deliveries carry no such time."""


def webhook_of(provider: object) -> WebhookSpec | None:
    """`provider`'s `WebhookSpec`, or None when it declares none."""
    spec = getattr(provider, "webhook", None)
    return spec if isinstance(spec, WebhookSpec) else None


PushOutcome = Literal["applied", "repeated", "forwarded", "unknown"]
"""What a pushed result (a webhook delivery) did: stored and published, changed nothing (a
repeat, or the item had ended already), made the job's own poll run early (a job of a tenant
the push is not trusted for), or matched no job watched here."""


@runtime_checkable
class PushConnection(Connection, Protocol):
    """A connection that also takes results pushed by its API (webhooks, issue 18)."""

    async def receive_push(
        self,
        ctx: JobContext,
        caller: Caller,
        rec: JobRecord,
        upstream_id: str,
        payload: Mapping[str, object],
    ) -> tuple[JobRecord, PushOutcome]:
        """Fold one pushed result of `rec`'s `upstream_id` into the job exactly as a poll
        result would be, and publish it to the job's waiters. A repeat changes nothing."""
        ...

    def push_hint(self, upstream_id: str) -> bool:
        """A push named `upstream_id` but is not trusted for its job's tenant: have whoever
        watches it here poll it early with that tenant's own key. False if nobody does."""
        ...


@runtime_checkable
class SeoConnection(Connection, Protocol):
    """A connection that starts workflow jobs (`start_seo_job`)."""

    async def start(
        self, ctx: JobContext, caller: Caller, workflow: str, params: JSONObject
    ) -> Started:
        """Send the (validated) job; raise the `errors.py` class that says what happened."""
        ...


@dataclass(frozen=True)
class ResearchRequest:
    """A validated `start_research` call (targets already checked by the core's schema)."""

    kind: Literal["contacts", "companies"]
    search_result_ids: Sequence[str]
    contacts: Sequence[ContactTarget]
    companies: Sequence[CompanyTarget]
    allow_rerun: bool
    job_change: bool
    skip_dedup_check: bool


@runtime_checkable
class ResearchConnection(Connection, Protocol):
    """A connection that searches and researches (`search_prospects`, `start_research`)."""

    async def search(
        self,
        ctx: JobContext,
        caller: Caller,
        *,
        kind: Literal["contacts", "companies"],
        query: str | None,
        filters: Mapping[str, JSON],
        limit: int,
        next_token: str | None,
    ) -> SearchPage: ...

    async def start_research(
        self,
        ctx: JobContext,
        caller: Caller,
        request: ResearchRequest,
        *,
        wait_seconds: float,
        progress: ProgressFn | None,
    ) -> Outcome: ...


class JobReader(Protocol):
    """A provider's reading of one of its ledger rows (no I/O): the job's view, its advice,
    its records and their projection, the words texts use for it (`JobProvider.reader`)."""

    def view(self, rec: JobRecord) -> JobView: ...

    def needs_advice(self, rec: JobRecord) -> bool:
        """An open job whose row still calls for advice (e.g. an unrecognised status)."""
        ...

    def job_advice(self, rec: JobRecord, *, now: float) -> Advice:
        """Advice for a job that ended failed/not found/duplicate, or looks odd while open."""
        ...

    def result_records(self, rec: JobRecord) -> list[JSONObject]:
        """A finished job's records in order, each with its key (`request_id`/`job_id`)."""
        ...

    def project(self, rec: JobRecord, record: Mapping[str, JSON]) -> JSONObject:
        """The compact default projection of one record (`get_job_result` without fields)."""
        ...

    def lines(
        self,
        rec: JobRecord,
        projected: Sequence[Mapping[str, JSON]],
        window: Sequence[Mapping[str, JSON]],
    ) -> tuple[Sequence[Mapping[str, JSON]], LineFn]:
        """What a page's text block numbers (the projected items, or the raw records of the
        same window) and how each becomes line(s)."""
        ...

    def what(self, rec: JobRecord) -> str:
        """The job's noun in texts: `Research`, `SEO serp_analysis`."""
        ...

    def resubmit_note(self, rec: JobRecord) -> str:
        """For a submit whose outcome is unknown: why one careful resubmit is safe, if it
        is (a sentence with a leading space), else ``""``."""
        ...


class ByNameSettings:
    """`JobProvider`'s settings accessors as a provider answers them by its `name` (its key,
    base URL and sandbox use as `load_settings` read them through its `ProviderSettings`)."""

    name: str

    def api_key(self, settings: Settings) -> SecretStr | None:
        return settings.api_key(self.name)

    def base_url(self, settings: Settings) -> str:
        return settings.base_url(self.name)

    def sandboxed(self, settings: Settings) -> bool:
        return settings.uses_sandbox(self.name)

    def sandbox_reason(self, settings: Settings) -> str | None:
        return settings.sandbox_reason(self.name)


class JobProvider(Protocol):
    """A job provider's static description and job semantics (no I/O)."""

    name: str
    """Ledger `provider` column, tenant key, `jobrelay://fields/<name>`; lower case."""
    title: str
    """How texts name the API, e.g. `Seamless`."""
    service_name: str
    """How logs name the service, e.g. `Seamless.ai`."""
    id_prefix: str
    """Job handle prefix, e.g. `sea_`; 2-4 lower-case letters and `_`, unique."""
    kind: JobKind
    workflows: tuple[str, ...]
    """Workflow names `start_seo_job` routes here (kind `seo`); empty for research."""
    paid_per_target: bool
    """Each target costs a credit: credits shown, paid work listed first, target counts."""
    key_header: str
    """The HTTP request header that carries a caller's own API key for this provider, e.g.
    `X-Seamless-Api-Key` (public: DESIGN.md; used for that request only, never stored)."""
    task_poll_ms: tuple[int, int]
    """`pollIntervalMs` bounds (low, high) for an MCP task on one of its jobs: the API's own
    cadence; the job's `next_check_after_seconds` is clamped into them."""
    advice: ProviderAdvice | None
    """Its advice table (rows, routes, vote clues, body readers), registered with it by
    `register_provider`; None when it has none."""
    rate_limits: RateLimits
    """Its rate-limit buckets: which bucket each request draws from and where each starts
    (`limits.RateLimits`), registered with it so the limiter builds them from this."""
    settings: ProviderSettings
    """What its settings mean (key variable, account credential, base URL, its own variables:
    `config.ProviderSettings`, its `ProviderModel`), registered with it so `load_settings`
    reads them."""
    fields_description: str
    """How resources/list describes `jobrelay://fields/<name>` (one sentence)."""
    reader: JobReader
    """Its reading of a ledger row (view, advice, records, projection, texts): `JobReader`."""

    def result_fields(self) -> Mapping[str, Sequence[str]]:
        """Field names `get_job_result(fields=[...])` accepts, grouped (per record kind or
        workflow): `jobrelay://fields/<name>`."""
        ...

    # ---- settings -------------------------------------------------------------------------
    def api_key(self, settings: Settings) -> SecretStr | None: ...

    def base_url(self, settings: Settings) -> str: ...

    def sandboxed(self, settings: Settings) -> bool:
        """Whether the embedded sandbox serves this provider (no key configured)."""
        ...

    def sandbox_reason(self, settings: Settings) -> str | None:
        """Why the embedded sandbox serves it (`no SEAMLESS_API_KEY`), for the log."""
        ...

    def sandbox_url(self, root: str) -> str:
        """Its base URL on the embedded sandbox served at `root` (when `sandboxed`)."""
        ...

    def connect(self, env: ProviderEnv) -> Connection: ...

    # ---- job semantics --------------------------------------------------------------------
    def validate(self, workflow: str, params: Mapping[str, JSON]) -> JSONObject:
        """The workflow's params as sent, or `InputProblem` naming what to fix."""
        ...


def aggregate_state(states: Sequence[JobState]) -> JobState:
    """One state for a job of several upstream jobs or targets."""
    if not states:
        return JobState.UNKNOWN
    if any(not s.terminal for s in states):
        return JobState.RUNNING
    kinds = set(states)
    if kinds == {JobState.DUPLICATE}:
        return JobState.DUPLICATE
    if kinds & {JobState.SUCCEEDED, JobState.DUPLICATE}:
        return JobState.SUCCEEDED
    if kinds == {JobState.NOT_FOUND}:
        return JobState.NOT_FOUND
    return JobState.FAILED
