"""The job service: what each tool does, between the ledger, the clients and the watchers.

Tools (`tools.py`) stay thin: they parse arguments, call one method here and render the
outcome. Everything that decides money and durability lives here:

- a credit-spending POST is preceded by a ledger row (intent) and followed by its completion;
  an ambiguous failure leaves the row `unknown` and the agent is told not to resubmit;
- budget and rerun guardrails run before anything is sent;
- waits are bounded by the caller's `wait_seconds` and `JOBRELAY_MAX_WAIT_SECONDS`, and share
  upstream calls through `watch.PollCoalescer` / `watch.StreamHub`.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Concatenate, Literal, ParamSpec, TypeVar

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mcp_server import _bounds as B
from mcp_server import advice as advice_mod
from mcp_server import render
from mcp_server._bounds import cut_strings, fit_items
from mcp_server._clock import Clock
from mcp_server._duration import format_duration
from mcp_server.config import Settings
from mcp_server.errors import (
    AbsurdAnswer,
    BudgetExceeded,
    DeadlineExceeded,
    FilterProblem,
    InputProblem,
    JobRelayError,
    OutcomeUnknown,
    UnknownJob,
)
from mcp_server.ledger import JobRecord, Ledger, new_job_id
from mcp_server.models import Advice, ErrorCode, JobState, Progress, Provider
from mcp_server.projection import (
    available_fields,
    project_company,
    project_contact,
    project_seo_result,
    select_fields,
    unknown_fields,
)
from mcp_server.schemas import (
    CompanyTarget,
    ContactTarget,
    ItemStatus,
    JobOutput,
    JobSummary,
    Kind,
    ListOutput,
    ResultPage,
    StatusOutput,
)
from mcp_server.search_filters import search_body
from mcp_server.targets import target_keys
from mcp_server.upstream import DEADLINE_RETRY_AFTER, format_clock, retry_at
from mcp_server.upstream.agentseo import MAX_BATCH_TARGETS
from mcp_server.watch import PollCoalescer, StreamHub, wait_newer_until

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")

ProgressFn = Callable[[float, str | None], Awaitable[None]]
"""`(percent 0-100, message)`; the tool layer turns it into MCP progress notifications."""

_CALL_DEADLINE: ContextVar[float | None] = ContextVar("jobrelay_call_deadline", default=None)
"""The running tool call's deadline (clock.monotonic), set by `JobService._whole_call`."""

#: Warn in results when the org's research credits drop below this.
LOW_CREDITS_THRESHOLD = 25
#: A 0 from `X-PublicAPI-Credits` refuses research locally for this long at most; after it,
#: the next start_research asks Seamless again (its answer, a 422 or a 202, corrects it).
CREDITS_ZERO_TRUST_SECONDS = 300.0
#: A rerun within this many days is flagged before anything is spent.
RERUN_WINDOW_DAYS = 30
#: Research targets per start_research call (one handle covers all their requestIds).
MAX_TARGETS = 100
#: Per-target statuses shown inline; the rest are summarised.
MAX_ITEMS_SHOWN = 20
#: Finished jobs whose rendering is kept for repeated status checks and waits.
RENDER_CACHE_SIZE = 128
RESULT_READ = "result_read"
"""Snapshot key set once the agent was shown a finished job's results (wait or result)."""

SEAMLESS_STATES: Mapping[str, JobState] = {
    "queued": JobState.QUEUED,
    "researching": JobState.RUNNING,
    "done": JobState.SUCCEEDED,
    "missing": JobState.NOT_FOUND,
    "not found": JobState.NOT_FOUND,
    "error": JobState.FAILED,
    "no license or credits available": JobState.FAILED,
    "duplicate": JobState.DUPLICATE,
    "contact-already-researched": JobState.DUPLICATE,
}
"""Every documented contact/company poll status (UPSTREAMS.md 1), lower case."""
AGENTSEO_STATES: Mapping[str, JobState] = {
    "queued": JobState.QUEUED,
    "processing": JobState.RUNNING,
    "completed": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
}


_ADVISED = frozenset({JobState.FAILED, JobState.NOT_FOUND})
"""Terminal states whose result is advice rather than records."""


def seamless_state(raw: str | None) -> JobState:
    """Unknown statuses are treated as still running: keep watching, boundedly (the docs say
    more may be added); `_unrecognised` makes the result say so."""
    return SEAMLESS_STATES.get(" ".join((raw or "").lower().split()), JobState.RUNNING)


def _unrecognised(items: Sequence[Mapping[str, Any]]) -> str | None:
    """The first poll status of a research job that no documentation names, if any."""
    for item in items:
        raw = str(item.get("raw_status") or "")
        if raw and " ".join(raw.lower().split()) not in SEAMLESS_STATES:
            return raw
    return None


def agentseo_state(raw: str | None) -> JobState:
    return AGENTSEO_STATES.get((raw or "").lower(), JobState.RUNNING)


def aggregate_state(states: Sequence[JobState]) -> JobState:
    """One state for a research job from its per-target states."""
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


# ---- per-workflow parameter validation (AgentSEO) -------------------------------------------


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


_Keyword = Annotated[str, Field(min_length=1, max_length=B.MAX_QUERY_CHARS)]
_Place = Annotated[str | None, Field(max_length=B.MAX_NAME_CHARS)]
_Code = Annotated[int | None, Field(ge=0, le=10**9)]


class SerpParams(_Params):
    keyword: _Keyword
    location: _Place = None
    location_code: _Code = None
    device: Literal["desktop", "mobile"] | None = None


class KeywordParams(_Params):
    keywords: list[_Keyword] = Field(min_length=1, max_length=B.MAX_KEYWORDS)
    location: _Place = None
    location_code: _Code = None


class LocalAuditParams(_Params):
    domain: Annotated[str | None, Field(max_length=B.MAX_DOMAIN_CHARS)] = None
    business_name: _Place = None
    location: _Place = None
    location_code: _Code = None
    language: str | None = Field(None, min_length=2, max_length=10)


class LocalAuditBatchParams(_Params):
    targets: list[LocalAuditParams] = Field(min_length=1, max_length=MAX_BATCH_TARGETS)


WORKFLOW_PARAMS: Mapping[str, type[_Params]] = {
    "serp_analysis": SerpParams,
    "keyword_metrics": KeywordParams,
    "local_audit": LocalAuditParams,
    "local_audit_batch": LocalAuditBatchParams,
}


def validate_workflow_params(workflow: str, params: Mapping[str, Any]) -> dict[str, Any]:
    model = WORKFLOW_PARAMS.get(workflow)
    if model is None:
        allowed = ", ".join(WORKFLOW_PARAMS)
        raise InputProblem(
            f"Unknown workflow {B.echo(workflow)}; allowed: {allowed}.", field="workflow"
        )
    size = len(B.compact_json(params))
    if size > B.MAX_PARAMS_CHARS:
        raise InputProblem(
            f"params is {size:,} characters of JSON; at most {B.MAX_PARAMS_CHARS:,} are accepted.",
            field="params",
            next_step="Call start_seo_job again with fewer or shorter params (split big batches).",
        )
    try:
        parsed = model.model_validate(dict(params))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(["params", *(str(p) for p in first["loc"])])
        raise InputProblem(
            f"Invalid params for {workflow}: {_pydantic_problems(exc, model)}.",
            field=where,
            next_step=(
                f"Call start_seo_job again without {where}."
                if first["type"] == "extra_forbidden"
                else None
            ),
        ) from None
    audits: list[tuple[str, LocalAuditParams]] = []
    if isinstance(parsed, LocalAuditParams):
        audits = [("params", parsed)]
    elif isinstance(parsed, LocalAuditBatchParams):
        audits = [(f"params.targets.{i}", t) for i, t in enumerate(parsed.targets)]
    for where, audit in audits:
        # UPSTREAMS.md: a local audit is "domain or business name + location"; checked here so
        # the agent learns it before anything is sent.
        if not (audit.domain or audit.business_name):
            raise InputProblem(
                f"{workflow} needs {where}.domain or {where}.business_name.",
                field=f"{where}.domain",
            )
        if audit.domain and audit.business_name:
            raise InputProblem(
                f"{workflow} takes {where}.domain or {where}.business_name, not both: AgentSEO "
                "reads one of them, in its `domain` field.",
                field=f"{where}.business_name",
            )
        if not audit.location:
            # AgentSEO requires `location`; `location_code` only wins over it when both are set.
            raise InputProblem(
                f"{workflow} needs {where}.location (e.g. 'Austin, TX'); location_code may be "
                "added, not used instead.",
                field=f"{where}.location",
            )
    clean = parsed.model_dump(exclude_none=True)
    if isinstance(parsed, LocalAuditParams):
        return _audit_wire(clean)
    if isinstance(parsed, LocalAuditBatchParams):
        return {"targets": [_audit_wire(t) for t in clean["targets"]]}
    return clean


def _audit_wire(audit: dict[str, Any]) -> dict[str, Any]:
    """A local audit as AgentSEO publishes it: the business name goes in `domain`."""
    name = audit.pop("business_name", None)
    if name is not None:
        audit["domain"] = name
    return audit


def _pydantic_problems(exc: ValidationError, model: type[_Params]) -> str:
    """`params.keyword is required; params.colour is not a known field (known: ...)`."""
    parts = []
    known = ", ".join(sorted(model.model_fields))
    for err in exc.errors():
        where = ".".join(["params", *(str(p) for p in err["loc"])])
        if err["type"] == "missing":
            parts.append(f"{where} is required")
        elif err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
            parts.append(f"{where} is not a known field (known: {known})")
        else:
            msg = err["msg"]
            parts.append(f"{where}: {msg[0].lower() + msg[1:]}")
    return "; ".join(parts)


def research_targets(
    kind: Kind,
    search_result_ids: Sequence[str],
    contacts: Sequence[ContactTarget],
    companies: Sequence[CompanyTarget],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Validate research targets before anything is spent; return descriptors and labels."""
    if kind == "contacts" and companies:
        raise InputProblem(
            "companies=[...] goes with kind='companies'; for people use contacts=[...].",
            field="companies",
        )
    if kind == "companies" and contacts:
        raise InputProblem(
            "contacts=[...] goes with kind='contacts'; for companies use companies=[...].",
            field="contacts",
        )
    descriptors: list[dict[str, Any]] = []
    labels: list[str] = [f"searchResultId {s}" for s in search_result_ids]
    for c in contacts:
        d = c.model_dump(exclude_none=True)
        urls = c.linkedin_url or c.sales_nav_url or c.recruiter_url
        if not (urls or c.email or (c.name and (c.company or c.domain))):
            raise InputProblem(
                "Each contact needs linkedin_url, sales_nav_url, recruiter_url, email, or "
                "name plus company/domain "
                f"to be identifiable; got {d or 'an empty object'}.",
                field="contacts",
            )
        descriptors.append(d)
        labels.append(_contact_label(c))
    for co in companies:
        d = co.model_dump(exclude_none=True)
        if not (co.domain or co.name):
            raise InputProblem("Each company needs a domain or a name.", field="companies")
        descriptors.append(d)
        labels.append(co.domain or co.name or "company")
    requested = len(labels)
    if requested == 0:
        raise InputProblem(
            "Give search_result_ids (from search_prospects) or contacts/companies to research.",
            field="search_result_ids",
        )
    if requested > MAX_TARGETS:
        raise InputProblem(
            f"At most {MAX_TARGETS} targets per call; got {requested}. Split the list.",
            field="search_result_ids",
        )
    return descriptors, labels


# ---- outcomes ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a service call produced: the structured output and the sentence(s) for the agent.

    `failed` marks a tool failure (isError); a job that failed upstream is not one.
    """

    output: BaseModel
    text: str
    failed: bool = False


@dataclass
class Caller:
    """Who is calling: which keys and tenant fingerprints apply (per request over HTTP)."""

    tenants: Mapping[Provider, str]
    sandbox: Mapping[Provider, bool]

    def tenant(self, provider: Provider) -> str:
        return self.tenants[provider]


class Clients:
    """What the service needs from the runtime: per-caller clients and watchers."""

    def seamless(self, caller: Caller) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def agentseo(self, caller: Caller) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def coalescer(self, caller: Caller, kind: Kind) -> PollCoalescer[Any]:  # pragma: no cover
        raise NotImplementedError

    def hub(self, caller: Caller) -> StreamHub[Any]:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class _SharedFold:
    """One open job's latest folded record, shared by every `wait_for_job` on it.

    Without it each waiter folded each poll round (or the final SSE envelopes) into its own
    copy of the job: one ledger write and one decoded copy of the whole row per waiter, so
    memory grew with waiters x targets (BENCHMARKS.md, scale). With it, the first waiter to
    see a round folds and writes it once; the others take its record.
    """

    lock: anyio.Lock = field(default_factory=anyio.Lock)
    users: int = 0
    version: int = -1
    """The coalescer board version the record reflects (Seamless); -1 before any fold."""
    rec: JobRecord | None = None

    def fresher(self, rec: JobRecord) -> JobRecord:
        """The newer of a waiter's record and the shared one (a status call may have written
        the job since the shared record was folded); the shared one on a tie."""
        if self.rec is None or rec.updated_at > self.rec.updated_at:
            return rec
        return self.rec


def _one_deadline(
    method: Callable[Concatenate[JobService, _P], Awaitable[_R]],
) -> Callable[Concatenate[JobService, _P], Awaitable[_R]]:
    """Run a tool's service method under one deadline for all its upstream calls."""

    async def run(self: JobService, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._whole_call():
            return await method(self, *args, **kwargs)

    run.__name__, run.__doc__ = method.__name__, method.__doc__
    return run


@dataclass
class JobService:
    settings: Settings
    ledger: Ledger
    clock: Clock
    clients: Clients
    low_credits_threshold: int = LOW_CREDITS_THRESHOLD
    _folds: dict[str, _SharedFold] = field(default_factory=dict, init=False, repr=False)
    _rendered: OrderedDict[str, tuple[datetime, Outcome]] = field(
        default_factory=OrderedDict, init=False, repr=False
    )
    _marked_read: set[str] = field(default_factory=set, init=False, repr=False)

    # ---- helpers ------------------------------------------------------------------------
    def _now(self) -> float:
        return self.clock.time()

    def _utcnow(self) -> datetime:
        return datetime.fromtimestamp(self._now(), tz=UTC)

    def _deadline(self, wait_seconds: float) -> float:
        return self.clock.monotonic() + max(0.0, min(wait_seconds, self.settings.max_wait_seconds))

    def _call_deadline(self) -> float:
        """The tool call's one deadline (`JOBRELAY_MAX_WAIT_SECONDS` from its start): every
        upstream call of one tool call shares it, retries and sequential calls included."""
        fixed = _CALL_DEADLINE.get()
        if fixed is not None:
            return fixed
        return self.clock.monotonic() + self.settings.max_wait_seconds

    @contextmanager
    def _whole_call(self) -> Iterator[None]:
        """Start the tool call's clock, unless an outer service call already did."""
        if _CALL_DEADLINE.get() is not None:
            yield
            return
        token = _CALL_DEADLINE.set(self.clock.monotonic() + self.settings.max_wait_seconds)
        try:
            yield
        finally:
            _CALL_DEADLINE.reset(token)

    async def _poll_within(self, co: PollCoalescer[Any], ids: Sequence[str]) -> dict[str, Any]:
        """A direct poll cut at the call's deadline (its own client deadline may be later)."""
        deadline = self._call_deadline()
        remaining = deadline - self.clock.monotonic()
        if remaining > 0:
            with self.clock.move_on_after(remaining):
                return await co.poll_now(ids)
        raise DeadlineExceeded(
            "Seamless GET /research/poll: no answer within the call's time limit "
            "(JOBRELAY_MAX_WAIT_SECONDS, all attempts together)",
            provider="seamless",
            operation="pollResearch",
            method="GET",
            path="/research/poll",
            retry_after=DEADLINE_RETRY_AFTER,
        )

    def failure(self, error: JobRelayError, *, tool: str, job_id: str | None = None) -> Outcome:
        adv = advice_mod.advise_error(error, now=self._now(), tool=tool)
        return self._advice_failure(adv, job_id=job_id)

    def _advice_failure(self, adv: Advice, *, job_id: str | None = None) -> Outcome:
        text = advice_mod.render_text(adv)
        if job_id:
            text = f"Job {job_id}: {text}"
        return Outcome(JobOutput(job_id=job_id, error=adv.as_error()), text, failed=True)

    def _low_credit_warning(self, credits: int | None) -> list[str]:
        if credits is not None and credits < self.low_credits_threshold:
            return [
                f"Only {credits} Seamless research credits left for the organisation; "
                "each researched target uses one."
            ]
        return []

    def _credits_refusal(self, client: Any) -> Outcome | None:
        """Refuse research locally only on fresh evidence of 0 credits (issue 20.2).

        The evidence is the last plausible `X-PublicAPI-Credits` (implausible values never get
        here): any newer Seamless answer replaces it, and after `CREDITS_ZERO_TRUST_SECONDS`
        the research call is sent anyway, so Seamless itself answers (a 422 spends nothing).
        The text says which answer said 0, and when.
        """
        seen = getattr(client, "credits_seen", None)
        if seen is None or seen.value != 0:
            return None
        age = max(0.0, self.clock.monotonic() - seen.mono)
        if age >= CREDITS_ZERO_TRUST_SECONDS:
            return None
        wait = math.ceil(CREDITS_ZERO_TRUST_SECONDS - age)
        at = retry_at(self._now(), wait)
        said = format_clock(datetime.fromtimestamp(seen.at, tz=UTC))
        adv = Advice(
            code=ErrorCode.CREDITS_EXHAUSTED,
            provider="seamless",
            title="Seamless research credits exhausted",
            what_happened=(
                f"Not sent, nothing spent: Seamless's answer to {seen.source} at {said} "
                f"({math.floor(age)} s ago, HTTP {seen.status}) said the organisation has 0 "
                "research credits (X-PublicAPI-Credits: 0)."
            ),
            retryable=True,
            retry_after_seconds=wait,
            retry_at=at,
            next_step=(
                "Tell the user to add Seamless research credits. Any newer Seamless answer "
                "replaces this number (search_prospects is free); without one, start_research "
                f"asks Seamless again after {format_clock(at)} (in {wait} s)."
            ),
            do_not="Do not call start_research in a loop: it is refused locally until then.",
        )
        return self._advice_failure(adv)

    # ---- search -----------------------------------------------------------------------------
    @_one_deadline
    async def search(
        self,
        caller: Caller,
        *,
        kind: Kind,
        query: str | None,
        filters: Mapping[str, Any],
        limit: int,
        next_token: str | None,
    ) -> Any:
        """Returns the client's search page; the tool renders it."""
        try:
            body = search_body(kind, query, filters)
        except FilterProblem as exc:
            raise InputProblem(exc.message, field=exc.field, provider="seamless") from None
        client = self.clients.seamless(caller)
        return await client.search(
            kind,
            body,
            limit=limit,
            next_token=next_token,
            deadline=self._call_deadline(),
        )

    # ---- start research ------------------------------------------------------------------
    @_one_deadline
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
        deadline = self._deadline(wait_seconds)  # the whole call, submit included
        descriptors, labels = research_targets(kind, search_result_ids, contacts, companies)
        if job_change and not contacts:
            raise InputProblem(
                "job_change applies to contacts=[...] descriptors (Seamless isJobChange); "
                "leave it out for search_result_ids and companies.",
                field="job_change",
            )
        requested = len(labels)

        tenant = caller.tenant("seamless")
        keys = target_keys(
            kind,
            contacts=[c.model_dump(exclude_none=True) for c in contacts],
            companies=[c.model_dump(exclude_none=True) for c in companies],
            search_result_ids=list(search_result_ids),
        )
        now_dt = self._utcnow()

        client = self.clients.seamless(caller)
        refusal = self._credits_refusal(client)
        if refusal is not None:
            return refusal

        warnings: list[str] = []
        if keys:
            earlier = await self.ledger.recent_targets(
                keys, tenant=tenant, within_days=RERUN_WINDOW_DAYS, now=now_dt
            )
            jobs = ", ".join(sorted(set(earlier.values())))
            if earlier and not allow_rerun:
                interrupted = await self._only_interrupted(earlier, tenant=tenant)
                if not (interrupted and kind == "contacts"):
                    return self._rerun_refusal(earlier, sandbox=caller.sandbox["seamless"])
                # DESIGN 2.1: Seamless deduplicates contact research, so one resubmit of a
                # submit whose outcome is unknown is safe, with deduplication left on.
                warnings.append(
                    f"Resubmitted {len(earlier)} target(s) of {jobs}, whose submit outcome is "
                    "unknown: if that submit did arrive, Seamless answers duplicate at no cost."
                )
            elif earlier:
                warnings.append(
                    f"Re-researching {len(earlier)} target(s) already researched in the last "
                    f"{RERUN_WINDOW_DAYS} days, in {jobs} (allow_rerun=true): fresh research "
                    "spends credits."
                )

        params: dict[str, Any] = {
            "kind": kind,
            "search_result_ids": list(search_result_ids),
            "targets": descriptors,
            "labels": labels,
        }
        # Intent row, POST and its completion run shielded from the tool call's cancellation
        # (bounded by the call deadline): a client giving up mid-submit must not leave a paid
        # job without its requestIds in the ledger.
        with anyio.CancelScope(shield=True):
            submitted = await self._submit_research(
                caller,
                client,
                kind=kind,
                params=params,
                keys=keys,
                requested=requested,
                search_result_ids=search_result_ids,
                contacts=contacts,
                companies=companies,
                skip_dedup=skip_dedup_check,
                job_change=job_change,
            )
        if isinstance(submitted, Outcome):
            return submitted
        record, credits, part_warnings = submitted
        warnings.extend(part_warnings)
        warnings.extend(self._low_credit_warning(credits))
        return await self._after_submit(
            caller,
            record.job_id,
            wait_seconds=wait_seconds,
            deadline=deadline,
            progress=progress,
            warnings=warnings,
        )

    async def _submit_research(
        self,
        caller: Caller,
        client: Any,
        *,
        kind: Kind,
        params: dict[str, Any],
        keys: list[str],
        requested: int,
        search_result_ids: Sequence[str],
        contacts: Sequence[ContactTarget],
        companies: Sequence[CompanyTarget],
        skip_dedup: bool,
        job_change: bool,
    ) -> Outcome | tuple[JobRecord, int | None, list[str]]:
        """Intent, POST, completion: the ledger row ends with the requestIds, `unknown`
        (ambiguous failure) or `failed` (provably rejected); an Outcome is a tool failure.

        Seamless takes `searchResultIds` or `contacts` in one contact-research POST, never
        both (UPSTREAMS.md 1). Given both, the ids go first under the job's own row and the
        descriptors in a second POST with an intent row of its own (`params.part_of` names
        the job): both rows are written before the first POST, so a restart between the two
        finds the second `submitting` (outcome unknown, never re-sent). Once accepted, its
        requestIds join the job's and the part row is closed as merged.
        """
        tool = "start_research"
        tenant = caller.tenant("seamless")
        labels: list[str] = params["labels"]
        ids = list(search_result_ids)
        split = kind == "contacts" and bool(ids) and bool(contacts)
        first_n = len(ids) if split else requested
        sandbox = caller.sandbox["seamless"]
        part: JobRecord | None = None
        try:
            # Budget check and intent row in one transaction: concurrent starts can't overshoot.
            record = await self.ledger.record_intent(
                JobRecord.new(
                    job_id=new_job_id("seamless"),
                    provider="seamless",
                    operation=f"research_{kind}",
                    tenant=tenant,
                    sandbox=sandbox,
                    params=params,
                    targets=keys,
                    credits_requested=first_n,
                ),
                budget=self.settings.credit_budget,
            )
        except BudgetExceeded as exc:
            return self.failure(exc, tool=tool)
        if split:
            try:
                part = await self.ledger.record_intent(
                    JobRecord.new(
                        job_id=new_job_id("seamless"),
                        provider="seamless",
                        operation=f"research_{kind}",
                        tenant=tenant,
                        sandbox=sandbox,
                        params={
                            "kind": kind,
                            "part_of": record.job_id,
                            "targets": params["targets"],
                            "labels": labels[len(ids) :],
                        },
                        credits_requested=requested - first_n,
                    ),
                    budget=self.settings.credit_budget,
                )
            except BudgetExceeded as exc:
                await self.ledger.fail_submit(
                    record.job_id, error=self._error_dict(exc, tool), processed="no"
                )
                return self.failure(exc, tool=tool)
        try:
            accepted = await client.research(
                kind,
                search_result_ids=ids,
                contacts=[] if split else [_seamless_contact(c) for c in contacts],
                companies=[_seamless_company(c) for c in companies],
                is_job_change=job_change and not split and bool(contacts),
                skip_dedup=skip_dedup,
                deadline=self._call_deadline(),
            )
        except JobRelayError as exc:
            if part is not None:  # never sent: the first part failed
                await self.ledger.fail_submit(
                    part.job_id, error=self._error_dict(exc, tool), processed="no"
                )
            return await self._submit_failed(record.job_id, exc, tool=tool)

        request_ids = list(accepted.request_ids)
        credits = accepted.credits
        items = _items(request_ids, labels)
        snapshot: dict[str, Any] = {"kind": kind, "items": items}
        await self.ledger.complete_submit(
            record.job_id,
            upstream_ids=request_ids,
            state=JobState.RUNNING,
            raw_status="researching",
            snapshot=snapshot,
            credits_seen=credits,
        )
        warnings: list[str] = []
        if part is not None:
            try:
                more = await client.research(
                    kind,
                    contacts=[_seamless_contact(c) for c in contacts],
                    is_job_change=job_change,
                    skip_dedup=skip_dedup,
                    deadline=self._call_deadline(),
                )
            except JobRelayError as exc:
                await self._submit_failed(part.job_id, exc, tool=tool)
                adv = advice_mod.advise_error(exc, now=self._now(), tool=tool)
                unknown = isinstance(exc, OutcomeUnknown)
                fate = (
                    f"may or may not have been accepted (ledger row {part.job_id}); check "
                    "list_jobs before sending them again"
                    if unknown
                    else "were not researched"
                )
                warnings.append(
                    f"The {len(contacts)} contact descriptor(s), sent in a second request, "
                    f"{fate}: {adv.what_happened}"
                )
            else:
                credits = more.credits if more.credits is not None else credits
                all_ids = request_ids + list(more.request_ids)
                snapshot["items"] = _items(all_ids, labels)
                await self.ledger.complete_submit(
                    record.job_id,
                    upstream_ids=all_ids,
                    state=JobState.RUNNING,
                    raw_status="researching",
                    snapshot=snapshot,
                    credits_seen=credits,
                )
                await self.ledger.update(
                    part.job_id,
                    state=JobState.SUCCEEDED,
                    raw_status=f"merged into {record.job_id}",
                    snapshot={"merged_into": record.job_id, "request_ids": list(more.request_ids)},
                )
        return record, credits, warnings

    async def _submit_failed(self, job_id: str, exc: JobRelayError, *, tool: str) -> Outcome:
        """Close the intent row of a submit that failed. An ambiguous failure may have been
        processed (never replayed): the agent gets the job id to check; a refused one not."""
        unknown = isinstance(exc, OutcomeUnknown)
        await self.ledger.fail_submit(
            job_id, error=self._error_dict(exc, tool), processed="maybe" if unknown else "no"
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
        job = await self._get(caller, job_id)
        return self._render(job, warnings=warnings, started=True)

    async def _only_interrupted(self, earlier: Mapping[str, str], *, tenant: str) -> bool:
        """True when every earlier job is a submit whose outcome is unknown and that has no
        upstream id: nothing is known to have been researched."""
        for job_id in set(earlier.values()):
            rec = await self.ledger.get(job_id, tenant=tenant)
            if rec is None or rec.state is not JobState.UNKNOWN or rec.upstream_ids:
                return False
        return True

    def _rerun_refusal(self, earlier: Mapping[str, str], *, sandbox: bool) -> Outcome:
        jobs = sorted(set(earlier.values()))
        first = jobs[0]
        targets = ", ".join(sorted(k.split(":", 1)[-1] for k in earlier)[:3])
        adv = Advice(
            code=None,
            provider="seamless",
            title="Already researched",
            what_happened=(
                f"Not started: {len(earlier)} target(s) ({targets}) were researched in the last "
                f"{RERUN_WINDOW_DAYS} days, in job(s) {', '.join(jobs[:5])}"
                f"{f' and {len(jobs) - 5} more' if len(jobs) > 5 else ''}. Nothing was spent. "
                "Fresh research of them needs allow_rerun=true and pays again."
            ),
            retryable=False,
            next_step=f'Read the earlier results with get_job_result(job_id="{first}").',
            do_not="Do not resubmit without allow_rerun: the same targets are refused again.",
        )
        out = JobOutput(advice=adv, sandbox=sandbox)
        return Outcome(out, advice_mod.render_text(adv))

    def _error_dict(self, exc: JobRelayError, tool: str) -> dict[str, Any]:
        adv = advice_mod.advise_error(exc, now=self._now(), tool=tool)
        return adv.model_dump(mode="json")

    # ---- start SEO --------------------------------------------------------------------------
    @_one_deadline
    async def start_seo(
        self,
        caller: Caller,
        *,
        workflow: str,
        params: Mapping[str, Any],
        wait_seconds: float,
        progress: ProgressFn | None,
    ) -> Outcome:
        deadline = self._deadline(wait_seconds)  # the whole call, submit included
        clean = validate_workflow_params(workflow, params)
        # Shielded like research (see there): a cancelled call still records the job it paid for.
        with anyio.CancelScope(shield=True):
            submitted = await self._submit_seo(caller, workflow, clean)
        if isinstance(submitted, Outcome):
            return submitted
        record, state = submitted
        return await self._after_submit(
            caller,
            record.job_id,
            wait_seconds=0 if state.terminal else wait_seconds,
            deadline=deadline,
            progress=progress,
        )

    async def _submit_seo(
        self, caller: Caller, workflow: str, clean: dict[str, Any]
    ) -> Outcome | tuple[JobRecord, JobState]:
        tool = "start_seo_job"
        tenant = caller.tenant("agentseo")
        record = await self.ledger.record_intent(
            JobRecord.new(
                job_id=new_job_id("agentseo"),
                provider="agentseo",
                operation=f"seo:{workflow}",
                tenant=tenant,
                sandbox=caller.sandbox["agentseo"],
                params={"workflow": workflow, "params": clean},
                targets=[],
                credits_requested=0,
            )
        )
        client = self.clients.agentseo(caller)
        try:
            started = await client.start(workflow, clean, deadline=self._call_deadline())
        except JobRelayError as exc:
            return await self._submit_failed(record.job_id, exc, tool=tool)
        envelopes = started if isinstance(started, list) else [started]
        upstream_ids = [_env_id(e) for e in envelopes]
        first = envelopes[0]
        state = agentseo_state(_env_status(first)) if len(envelopes) == 1 else JobState.QUEUED
        await self.ledger.complete_submit(
            record.job_id,
            upstream_ids=upstream_ids,
            state=state,
            raw_status=_env_status(first),
            snapshot={"envelopes": [_env_dump(e) for e in envelopes]},
        )
        if state.terminal:
            await self._finish_seo(record.job_id, envelopes)
        return record, state

    async def _finish_seo(self, job_id: str, envelopes: Sequence[Any]) -> JobRecord:
        states = [agentseo_state(_env_status(e)) for e in envelopes]
        state = states[0] if len(states) == 1 else aggregate_state(states)
        results = [{"job_id": _env_id(e), "result": _env_result(e)} for e in envelopes]
        error = None
        failed = [e for e in envelopes if agentseo_state(_env_status(e)) is JobState.FAILED]
        if failed:
            error = _env_error(failed[0])
        return await self.ledger.update(
            job_id,
            state=state,
            raw_status=_env_status(envelopes[0]) if len(envelopes) == 1 else state.value,
            # ended_at (clock time) anchors a failed job's retry_after_seconds: "retry after
            # 30 s" means 30 s after it failed, not after whenever someone looks.
            snapshot={"envelopes": [_env_dump(e) for e in envelopes], "ended_at": self._now()},
            result={"results": results},
            error=error,
        )

    # ---- lookups ----------------------------------------------------------------------------
    async def _get(self, caller: Caller, job_id: str) -> JobRecord:
        """A handle or a raw upstream id, scoped to the caller's tenant for that provider."""
        job_id = job_id.strip()
        providers: list[Provider]
        if job_id.startswith("sea_"):
            providers = ["seamless"]
        elif job_id.startswith("seo_"):
            providers = ["agentseo"]
        else:
            providers = ["seamless", "agentseo"]
        for provider in providers:
            tenant = caller.tenant(provider)
            rec = await self.ledger.get(job_id, tenant=tenant)
            if rec is None:
                rec = await self.ledger.find_by_upstream_id(job_id, tenant=tenant)
            if rec is not None:
                return rec
        raise UnknownJob(f"No job {job_id!r} in this ledger (for this API key).", job_id=job_id)

    async def describe(self, caller: Caller, job_id: str) -> Outcome:
        """The job as the ledger last saw it (no upstream call): for resources and lists."""
        return self._render(await self._get(caller, job_id))

    # ---- status -----------------------------------------------------------------------------
    @_one_deadline
    async def status(self, caller: Caller, job_ids: Sequence[str]) -> Outcome:
        """Every job's state now, in the order asked, each job once (an id repeated, or a
        handle and its upstream id, is answered once); never result payloads. One poll call
        per Seamless endpoint for all open research jobs of the batch, one GET per open
        AgentSEO job."""
        found: dict[str, JobRecord] = {}
        unknown: dict[str, Advice] = {}
        for jid in dict.fromkeys(job_ids):
            try:
                found[jid] = await self._get(caller, jid)
            except UnknownJob as exc:
                unknown[jid] = advice_mod.advise_error(exc, now=self._now(), tool="get_job_status")
        records = list({r.job_id: r for r in found.values()}.values())
        fresh, problems = await self._refresh_batch(caller, records)
        single = len(found) + len(unknown) == 1 or (len(records) == 1 and not unknown)
        outputs: list[JobOutput] = []
        seen: set[str] = set()
        texts: list[str] = []
        for jid in dict.fromkeys(job_ids):
            if jid in unknown:
                adv = unknown[jid]
                outputs.append(JobOutput(job_id=jid, error=adv.as_error()))
                texts.append(advice_mod.render_text(adv))
                continue
            rec = fresh.get(found[jid].job_id, found[jid])
            if rec.job_id in seen:
                continue
            seen.add(rec.job_id)
            problem = problems.get(rec.job_id)
            why = (
                advice_mod.advise_error(problem, now=self._now(), tool="get_job_status")
                if problem is not None
                else None
            )
            out = self._job_output(rec, with_results=False)
            if why is not None and not rec.state.terminal:
                out.advice = why
                if why.retry_after_seconds:
                    out.next_check_after_seconds = why.retry_after_seconds
            texts.append(_status_one_text(rec, out, problem=why, now=self._now()))
            outputs.append(out if single else _lean_status(out))
        nexts = [o.next_check_after_seconds for o in outputs if o.next_check_after_seconds]
        status_out = StatusOutput(
            jobs=outputs,
            next_check_after_seconds=min(nexts) if nexts else None,
            sandbox=any(caller.sandbox.values()),
        )
        all_unknown = all(o.error is not None for o in outputs)
        if all_unknown:
            status_out.error = outputs[0].error
        text = texts[0] if len(outputs) == 1 else _status_text(outputs, now=self._now())
        return Outcome(status_out, text, failed=all_unknown)

    async def _refresh_batch(
        self, caller: Caller, records: Sequence[JobRecord]
    ) -> tuple[dict[str, JobRecord], dict[str, JobRelayError]]:
        """Fresh records of the open jobs among `records` (shared poll calls), and why any
        could not be checked."""
        by_kind: dict[Kind, list[JobRecord]] = {}
        for rec in records:
            if rec.provider == "seamless" and not rec.state.terminal and rec.upstream_ids:
                by_kind.setdefault(_research_kind(rec), []).append(rec)
        fresh: dict[str, JobRecord] = {}
        problems: dict[str, JobRelayError] = {}
        for kind, recs in by_kind.items():
            ids = [i for r in recs for i in _open_request_ids(r)]
            co = self.clients.coalescer(caller, kind)
            try:
                latest = await self._poll_within(co, ids)
            except JobRelayError as exc:
                for r in recs:
                    problems[r.job_id] = exc
                continue
            for r in recs:
                fresh[r.job_id] = await self._apply_seamless(r, latest)
        for rec in records:
            if rec.provider == "agentseo" and not rec.state.terminal and rec.upstream_ids:
                try:
                    fresh[rec.job_id] = await self._refresh_seo(caller, rec)
                except JobRelayError as exc:
                    problems[rec.job_id] = exc
        return fresh, problems

    async def _refresh_seo(self, caller: Caller, rec: JobRecord) -> JobRecord:
        client = self.clients.agentseo(caller)
        envelopes = [
            await client.get_job(uid, deadline=self._call_deadline()) for uid in rec.upstream_ids
        ]
        return await self._store_seo(rec, envelopes)

    async def _store_seo(self, rec: JobRecord, envelopes: Sequence[Any]) -> JobRecord:
        states = [agentseo_state(_env_status(e)) for e in envelopes]
        if all(s.terminal for s in states):
            return await self._finish_seo(rec.job_id, envelopes)
        env = envelopes[0]
        return await self.ledger.update(
            rec.job_id,
            state=states[0] if len(states) == 1 else aggregate_state(states),
            raw_status=_env_status(env),
            snapshot={"envelopes": [_env_dump(e) for e in envelopes]},
        )

    async def _apply_seamless(self, rec: JobRecord, latest: Mapping[str, Any]) -> JobRecord:
        """Fold poll items into the job's snapshot; store records once everything is final."""
        snapshot = dict(rec.snapshot or {})
        items = [dict(i) for i in snapshot.get("items", [])]
        records: dict[str, Any] = dict((rec.result or {}).get("records") or {})
        changed = False
        for item in items:
            polled = latest.get(item["request_id"])
            if polled is None:
                continue
            raw = _poll_status(polled)
            if raw != item.get("raw_status"):
                item["raw_status"] = raw
                changed = True
            message = _poll_message(polled)
            if message:
                item["message"] = message
            extra = _get(polled, "additional_data", "additionalData")
            if isinstance(extra, Mapping) and extra and item.get("additional_data") != extra:
                item["additional_data"] = dict(extra)  # kept in the ledger, never dropped
                changed = True
            record = _poll_record(polled)
            if record is not None and item["request_id"] not in records:
                records[item["request_id"]] = record
                changed = True
        if not changed:
            return rec
        states = [seamless_state(i.get("raw_status")) for i in items]
        state = aggregate_state(states)
        snapshot["items"] = items
        return await self.ledger.update(
            rec.job_id,
            state=state,
            raw_status=_seamless_raw_summary(items),
            snapshot=snapshot,
            result={"records": records} if records else None,
        )

    # ---- wait -------------------------------------------------------------------------------
    @_one_deadline
    async def wait(
        self,
        caller: Caller,
        job_id: str,
        *,
        wait_seconds: float,
        progress: ProgressFn | None,
        warnings: Sequence[str] = (),
        deadline: float | None = None,
    ) -> Outcome:
        """Follow a job until it ends or the wait is over: `min(wait_seconds,
        JOBRELAY_MAX_WAIT_SECONDS)` from now, or `deadline` (clock.monotonic) when the caller
        already started the clock (a start_* call that waits)."""
        if deadline is None:
            deadline = self._deadline(wait_seconds)
        rec = await self._get(caller, job_id)
        if rec.state.terminal or not rec.upstream_ids:
            outcome = self._render(rec, warnings=warnings)
            await self._mark_read(rec)
            return outcome
        if self.clock.monotonic() >= deadline:
            # No time left to follow anything (wait_seconds=0, or a slow submit): one look.
            rec, problem = await self._refresh(caller, rec)
        else:
            async with self._shared_fold(rec.job_id) as fold:
                # Hold the job's shared record, not this call's own decoded copy: a research
                # job's row (params, per-target items) is ~100 KB, kept for the whole wait.
                rec = fold.rec = fold.fresher(rec)
                if rec.provider == "seamless":
                    rec, problem = await self._wait_seamless(caller, rec, fold, deadline, progress)
                else:
                    rec, problem = await self._wait_seo(caller, rec, fold, deadline, progress)
        if problem is not None and not rec.state.terminal:
            adv = advice_mod.advise_error(problem, now=self._now(), tool="wait_for_job")
            return self._render(rec, warnings=warnings, problem=adv)
        outcome = self._render(rec, warnings=warnings)
        await self._mark_read(rec)
        return outcome

    async def _mark_read(self, rec: JobRecord) -> None:
        """Note in the ledger that the agent was shown this finished job's results, so
        `list_jobs` can point at paid work nobody read yet. Only terminal rows are marked:
        their snapshot no longer changes, so no newer snapshot is overwritten."""
        if rec.state not in (JobState.SUCCEEDED, JobState.DUPLICATE):
            return
        snapshot = rec.snapshot or {}
        if snapshot.get(RESULT_READ) or rec.job_id in self._marked_read:
            return
        self._marked_read.add(rec.job_id)
        await self.ledger.update(
            rec.job_id,
            state=rec.state,
            raw_status=rec.raw_status,
            snapshot={**snapshot, RESULT_READ: True},
        )

    async def _refresh(
        self, caller: Caller, rec: JobRecord
    ) -> tuple[JobRecord, JobRelayError | None]:
        """One status check of an open job, as get_job_status does it (shared poll call)."""
        try:
            if rec.provider == "seamless":
                co = self.clients.coalescer(caller, _research_kind(rec))
                latest = await self._poll_within(co, _open_request_ids(rec))
                return await self._apply_seamless(rec, latest), None
            return await self._refresh_seo(caller, rec), None
        except JobRelayError as exc:
            return rec, exc

    @asynccontextmanager
    async def _shared_fold(self, job_id: str) -> AsyncIterator[_SharedFold]:
        """The job's `_SharedFold` while at least one waiter uses it."""
        fold = self._folds.get(job_id)
        if fold is None:
            fold = self._folds[job_id] = _SharedFold()
        fold.users += 1
        try:
            yield fold
        finally:
            fold.users -= 1
            if fold.users == 0 and self._folds.get(job_id) is fold:
                del self._folds[job_id]

    async def _fold_seamless_round(
        self, fold: _SharedFold, rec: JobRecord, latest: Mapping[str, Any], version: int
    ) -> JobRecord:
        """Fold poll round `version` into the job once, whichever waiter gets here first."""
        async with fold.lock:
            if fold.rec is not None and fold.version >= version:
                return fold.fresher(rec)
            fold.rec = await self._apply_seamless(fold.fresher(rec), latest)
            fold.version = version
            return fold.rec

    async def _wait_seamless(
        self,
        caller: Caller,
        rec: JobRecord,
        fold: _SharedFold,
        deadline: float,
        progress: ProgressFn | None,
    ) -> tuple[JobRecord, JobRelayError | None]:
        co = self.clients.coalescer(caller, _research_kind(rec))
        ids = _open_request_ids(rec)
        problem: JobRelayError | None = None
        last_pct: float | None = None
        async with co.watch(ids):
            while True:
                seen = co.board.version
                rec = await self._fold_seamless_round(fold, rec, co.latest(ids), seen)
                items = (rec.snapshot or {}).get("items", [])
                done = sum(1 for i in items if seamless_state(i.get("raw_status")).terminal)
                pct = 100.0 * done / max(1, len(items))
                if progress is not None and pct != last_pct:
                    last_pct = pct
                    await progress(pct, f"{done} of {len(items)} targets finished")
                if rec.state.terminal:
                    return rec, None
                round_ = co.board.value
                problem = round_.error if round_ is not None else None
                if not await wait_newer_until(co.board, seen, self.clock, deadline):
                    return rec, problem

    async def _wait_seo(
        self,
        caller: Caller,
        rec: JobRecord,
        fold: _SharedFold,
        deadline: float,
        progress: ProgressFn | None,
    ) -> tuple[JobRecord, JobRelayError | None]:
        """Follow the job's stream (shared through the hub) until it ends or the deadline.

        A batch is followed one open job at a time: its jobs run in parallel upstream, so
        once the first ends the others are usually done too and their streams answer at once.
        """
        hub = self.clients.hub(caller)
        envelopes = {_env_id(e): e for e in (await self._current_envelopes(caller, rec))}
        ids = list(rec.upstream_ids)

        def done(uid: str) -> bool:
            return uid in envelopes and agentseo_state(_env_status(envelopes[uid])).terminal

        async def report() -> None:
            if progress is None:
                return
            if len(ids) == 1:
                env = envelopes[ids[0]]
                pct = 100.0 if done(ids[0]) else (_env_percent(env) or 0.0)
                await progress(pct, _env_progress_text(env))
                return
            pcts = [
                100.0 if done(u) else (_env_percent(envelopes[u]) if u in envelopes else 0.0)
                for u in ids
            ]
            finished = sum(1 for u in ids if done(u))
            await progress(
                sum(p or 0.0 for p in pcts) / len(ids), f"{finished} of {len(ids)} jobs finished"
            )

        problem: JobRelayError | None = None
        for uid in ids:
            if done(uid):
                continue
            async with hub.watch(uid, initial=envelopes.get(uid)) as topic:
                while True:
                    seen = topic.latest.version
                    env = topic.latest.value
                    if env is not None:
                        envelopes[uid] = env
                        await report()
                        if done(uid):
                            break
                    if topic.finished and topic.error is not None:
                        problem = topic.error
                        break
                    if not await wait_newer_until(topic.latest, seen, self.clock, deadline):
                        break
            if problem is not None or not done(uid):
                break
        ordered = [envelopes[u] for u in ids if u in envelopes]
        if len(ordered) == len(ids):
            async with fold.lock:
                if fold.rec is not None and fold.rec.state.terminal:
                    rec = fold.rec  # another waiter stored the same final envelopes
                else:
                    rec = await self._store_seo(rec, ordered)
                    if rec.state.terminal:
                        fold.rec = rec
        return rec, problem

    async def _current_envelopes(self, caller: Caller, rec: JobRecord) -> list[Any]:
        """Last known envelopes from the ledger snapshot (as client models)."""
        client = self.clients.agentseo(caller)
        raw = (rec.snapshot or {}).get("envelopes") or []
        parse = getattr(client, "parse_envelope", None)
        out: list[Any] = []
        for env in raw:
            out.append(parse(env) if parse is not None else env)
        if not out:
            out = [
                await client.get_job(uid, deadline=self._call_deadline())
                for uid in rec.upstream_ids
            ]
        return out

    # ---- results ----------------------------------------------------------------------------
    async def result(
        self,
        caller: Caller,
        job_id: str,
        *,
        fields: Sequence[str] | None,
        offset: int,
        limit: int,
    ) -> Outcome:
        rec = await self._get(caller, job_id)
        sandbox = rec.sandbox
        if rec.state is JobState.UNKNOWN:  # the outcome-unknown advice, not "wait"
            adv = self._job_advice(rec)
            page = ResultPage(job_id=rec.job_id, state=rec.state, advice=adv, sandbox=sandbox)
            return Outcome(page, f"Job {rec.job_id} has no results. {advice_mod.render_text(adv)}")
        if not rec.state.terminal:
            text = (
                f"Job {rec.job_id} has no result yet (state {rec.state.value}). "
                f'Next: wait_for_job(job_id="{rec.job_id}").'
            )
            return Outcome(ResultPage(job_id=rec.job_id, state=rec.state, sandbox=sandbox), text)
        records = _result_records(rec)
        total = len(records)
        window = records[offset : offset + limit]
        asked_more = bool(fields) or limit > B.DEFAULT_LIMIT_RESULT
        budget = B.item_budget(B.MAX_ANSWER_TOKENS if asked_more else B.DEFAULT_ANSWER_TOKENS)
        items, lines = _page_items(rec, window, fields=fields, start=offset + 1, budget=budget)
        missing = unknown_fields(window, list(fields)) if fields else []
        cut = len(items) < len(window)
        next_offset = offset + len(items) if offset + len(items) < total else None
        advice = self._job_advice(rec) if total == 0 and rec.state in _ADVISED else None
        page = ResultPage(
            job_id=rec.job_id,
            state=rec.state,
            items=items,
            offset=offset,
            total=total,
            next_offset=next_offset,
            fields_available=available_fields(window) if missing else None,
            advice=advice,
            sandbox=sandbox,
        )
        text = _page_text(
            rec, page, lines, missing=missing, cut=cut, fields=fields, limit=limit, advice=advice
        )
        if items:
            await self._mark_read(rec)
        return Outcome(page, text)

    # ---- list -------------------------------------------------------------------------------
    async def list_jobs(
        self,
        caller: Caller,
        *,
        provider: Provider | None,
        state: JobState | None,
        since_hours: float | None,
        limit: int,
    ) -> Outcome:
        rows: list[JobRecord] = []
        providers: list[Provider] = [provider] if provider else ["seamless", "agentseo"]
        for p in providers:
            rows.extend(
                r
                for r in await self.ledger.list(
                    tenant=caller.tenant(p),
                    provider=p,
                    state=state,
                    since_hours=since_hours,
                    limit=limit,
                )
            )
        # A second contact-research POST merged into its job is that job, not another one.
        rows = [r for r in rows if not (r.params.get("part_of") and r.state.terminal)]
        rows.sort(key=lambda r: r.created_at, reverse=True)
        rows = rows[:limit]
        summaries = [
            JobSummary(
                job_id=r.job_id,
                provider=r.provider,
                operation=r.operation,
                state=r.state,
                raw_status=r.raw_status,
                targets=len(r.upstream_ids) or r.credits_requested,
                created_at=r.created_at,
                result_read=_was_read(r) if r.state.terminal else None,
                advice=_list_advice(r),
            )
            for r in rows
        ]
        out = ListOutput(jobs=summaries, sandbox=any(caller.sandbox.values()))
        return Outcome(out, _list_text(rows, now=self._utcnow()))

    # ---- rendering --------------------------------------------------------------------------
    def _job_output(
        self, rec: JobRecord, *, warnings: Sequence[str] = (), with_results: bool = True
    ) -> JobOutput:
        snapshot = rec.snapshot or {}
        out = JobOutput(
            job_id=rec.job_id,
            provider=rec.provider,
            operation=rec.operation,
            state=rec.state,
            raw_status=rec.raw_status,
            sandbox=rec.sandbox,
            warnings=list(warnings) or None,
            credits_remaining=rec.credits_seen if rec.provider == "seamless" else None,
        )
        if rec.provider == "seamless":
            items = snapshot.get("items", [])
            out.items = [
                ItemStatus(
                    request_id=i["request_id"],
                    target=i.get("target"),
                    state=seamless_state(i.get("raw_status")),
                    raw_status=i.get("raw_status") or "unknown",
                )
                for i in items[:MAX_ITEMS_SHOWN]
            ]
            done = sum(1 for i in items if seamless_state(i.get("raw_status")).terminal)
            if items:
                out.progress = Progress(
                    percent=round(100.0 * done / len(items), 1),
                    message=f"{done} of {len(items)} targets finished",
                )
            if not rec.state.terminal and rec.upstream_ids:
                out.next_check_after_seconds = 5.0
        else:
            envs = snapshot.get("envelopes") or []
            if envs:
                env = envs[0]
                prog = env.get("progress") or {}
                out.progress = Progress(
                    percent=_clamp_pct(prog.get("percent")),
                    phase=env.get("phase"),
                    message=env.get("message"),
                    eta_seconds=_nonneg(prog.get("eta_seconds")),
                )
                if not rec.state.terminal:
                    hint = _nonneg(env.get("retry_after_seconds"))
                    out.next_check_after_seconds = hint if hint else 2.0
        if rec.state.terminal:
            records = _result_records(rec)
            out.results_total = len(records)
            if with_results:
                out.results, _ = _page_items(
                    rec,
                    records[: B.DEFAULT_LIMIT_RESULT],
                    fields=None,
                    start=1,
                    budget=B.item_budget(B.DEFAULT_ANSWER_TOKENS),
                )
        if rec.state in (JobState.FAILED, JobState.NOT_FOUND, JobState.DUPLICATE, JobState.UNKNOWN):
            out.advice = self._job_advice(rec)
        elif (
            rec.provider == "seamless"
            and not rec.state.terminal
            and _unrecognised(snapshot.get("items", [])) is not None
        ):
            out.advice = self._job_advice(rec)  # "unrecognised upstream status X"
        return out

    def _job_advice(self, rec: JobRecord) -> Advice:
        if rec.state is JobState.UNKNOWN:
            if rec.error:
                try:
                    return Advice.model_validate(rec.error)
                except ValidationError:
                    pass
            return _interrupted_submit_advice(rec)
        if rec.provider == "agentseo":
            snapshot = rec.snapshot or {}
            envs = snapshot.get("envelopes") or [{}]
            env = next(
                (e for e in envs if agentseo_state(e.get("status")) is JobState.FAILED), envs[0]
            )
            retry_after = _nonneg(env.get("retry_after_seconds"))
            ended = _nonneg(snapshot.get("ended_at"))
            if retry_after is not None and ended is not None:
                retry_after = max(0.0, ended + retry_after - self._now())
            return advice_mod.advise_job(
                "agentseo",
                rec.raw_status or "unknown",
                error=env.get("error") or rec.error,
                retry_after=retry_after,
                now=self._now(),
                job_id=rec.job_id,
            )
        items = (rec.snapshot or {}).get("items", [])
        unknown = _unrecognised(items) if not rec.state.terminal else None
        # The raw status of a target in the job's state: each documented status has its own
        # advice (`not found`, `contact-already-researched`, `No license or credits ...`).
        raw = unknown or next(
            (
                str(i["raw_status"])
                for i in items
                if i.get("raw_status") and seamless_state(i.get("raw_status")) is rec.state
            ),
            {
                JobState.FAILED: "error",
                JobState.NOT_FOUND: "missing",
                JobState.DUPLICATE: "duplicate",
            }.get(rec.state, rec.raw_status or "unknown"),
        )
        # The poll item's message, for the statuses added after the first wave (the older
        # rows' wording stands alone).
        message = next(
            (str(i["message"]) for i in items if i.get("raw_status") == raw and i.get("message")),
            None,
        )
        if raw.lower() in ("error", "missing", "duplicate", "done", "researching"):
            message = None
        return advice_mod.advise_job(
            "seamless", raw, now=self._now(), job_id=rec.job_id, message=message
        )

    def _render(
        self,
        rec: JobRecord,
        *,
        warnings: Sequence[str] = (),
        started: bool = False,
        problem: Advice | None = None,
    ) -> Outcome:
        """The job as a result. `problem`: why the latest check of a still-open job failed
        (e.g. the poll was rate limited); it replaces the usual next step.

        A succeeded job renders the same until its row changes, so its plain rendering is
        kept (`RENDER_CACHE_SIZE` jobs) and handed out again while the row's `updated_at` is
        the same: a status check of a finished job, or the many waiters of one job, skip
        merging and projecting its records each time. Every ledger write sets `updated_at`
        (microseconds, writes serialised), and only the small rendering is kept, not the
        record (a 100-target job decodes to about 1 MB). Outcomes are never mutated after
        this point.
        """
        cacheable = (
            rec.state is JobState.SUCCEEDED and not warnings and not started and problem is None
        )
        if cacheable:
            hit = self._rendered.get(rec.job_id)
            if hit is not None and hit[0] == rec.updated_at:
                self._rendered.move_to_end(rec.job_id)
                return hit[1]
        out = self._job_output(rec, warnings=warnings)
        if problem is not None and not rec.state.terminal:
            out.advice = problem
            if problem.retry_after_seconds:
                out.next_check_after_seconds = problem.retry_after_seconds
        outcome = Outcome(
            out, _job_text(rec, out, started=started, problem=problem, now=self._now())
        )
        if cacheable:
            self._rendered[rec.job_id] = (rec.updated_at, outcome)
            self._rendered.move_to_end(rec.job_id)
            while len(self._rendered) > RENDER_CACHE_SIZE:
                self._rendered.popitem(last=False)
        return outcome


# ---- small pure helpers -----------------------------------------------------------------------


def _interrupted_submit_advice(rec: JobRecord) -> Advice:
    """A row left `submitting` by a process that stopped between the ledger write and the
    API's answer: the POST may or may not have been processed."""
    name = "Seamless" if rec.provider == "seamless" else "AgentSEO"
    dedupe = (  # UPSTREAMS.md: `duplicate` is a contact research status only
        " Seamless deduplicates contact research, so one careful resubmit (allow_rerun=false) "
        "returns 'duplicate' at no cost if it did arrive."
        if rec.operation == "research_contacts"
        else ""
    )
    return Advice(
        code=ErrorCode.OUTCOME_UNKNOWN,
        provider=rec.provider,
        title="Submit outcome unknown",
        what_happened=(
            f"jobrelay stopped while submitting {rec.job_id} to {name}; the request may or may "
            f"not have been accepted, and no upstream id was recorded.{dedupe}"
        ),
        retryable=False,
        next_step=(
            "Check list_jobs for a later job with the same targets before starting it again."
        ),
        do_not="Do not resubmit in a loop: each accepted submit can spend credits.",
    )


def _clamp_pct(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(max(0.0, min(100.0, value)))
    return None


def _nonneg(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _contact_label(c: ContactTarget) -> str:
    if c.name and (c.company or c.domain):
        return f"{c.name} @ {c.company or c.domain}"
    return c.linkedin_url or c.sales_nav_url or c.recruiter_url or c.email or c.name or "contact"


def _seamless_contact(c: ContactTarget) -> dict[str, Any]:
    out = {
        "contactName": c.name,
        "companyName": c.company,
        "domain": c.domain,
        "title": c.title,
        "email": c.email,
        "liProfileUrl": c.linkedin_url,
        "liSalesNavUrl": c.sales_nav_url,
        "liRecruiterUrl": c.recruiter_url,
    }
    return {k: v for k, v in out.items() if v}


def _seamless_company(c: CompanyTarget) -> dict[str, Any]:
    out = {"companyName": c.name, "domain": c.domain}
    return {k: v for k, v in out.items() if v}


def _items(request_ids: Sequence[str], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per-target rows of a fresh research job: request ids in target order."""
    return [
        {
            "request_id": rid,
            "target": labels[i] if i < len(labels) else None,
            "raw_status": "researching",
        }
        for i, rid in enumerate(request_ids)
    ]


def _research_kind(rec: JobRecord) -> Kind:
    """What a Seamless job researches, as its snapshot records it (contacts by default)."""
    return "companies" if (rec.snapshot or {}).get("kind") == "companies" else "contacts"


def _open_request_ids(rec: JobRecord) -> list[str]:
    """The job's research ids still open: at most `MAX_TARGETS` (one per target), so a wait or
    status check of one job costs at most one poll call per round, whatever a row holds."""
    items = (rec.snapshot or {}).get("items", [])
    if not items:
        return list(rec.upstream_ids)[:MAX_TARGETS]
    open_ids = [i["request_id"] for i in items if not seamless_state(i.get("raw_status")).terminal]
    return open_ids[:MAX_TARGETS]


def _seamless_raw_summary(items: Sequence[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for i in items:
        raw = str(i.get("raw_status") or "unknown")
        counts[raw] = counts.get(raw, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def _get(obj: Any, *names: str) -> Any:
    for name in names:
        if isinstance(obj, Mapping):
            if name in obj:
                return obj[name]
        elif hasattr(obj, name):
            return getattr(obj, name)
    return None


def _poll_status(item: Any) -> str:
    return str(_get(item, "status") or "researching")


def _poll_message(item: Any) -> str | None:
    msg = _get(item, "message")
    return str(msg) if msg else None


def _poll_record(item: Any) -> dict[str, Any] | None:
    rec = _get(item, "record", "contact", "company")
    if isinstance(rec, BaseModel):
        return rec.model_dump(mode="json", by_alias=True)
    if isinstance(rec, dict):
        return rec  # as decoded from the poll response; nothing mutates it, so no copy
    return dict(rec) if isinstance(rec, Mapping) else None


def _env_id(env: Any) -> str:
    return str(_get(env, "job_id", "jobId") or "")


def _env_status(env: Any) -> str:
    return str(_get(env, "status") or "unknown")


def _env_phase(env: Any) -> str | None:
    phase = _get(env, "phase")
    return str(phase) if phase else None


def _env_percent(env: Any) -> float | None:
    return _clamp_pct(_get(_get(env, "progress"), "percent"))


def _env_result(env: Any) -> Any:
    result = _get(env, "result")
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json", by_alias=True)
    return result


def _env_error(env: Any) -> dict[str, Any] | None:
    err = _get(env, "error")
    if isinstance(err, BaseModel):
        return err.model_dump(mode="json", by_alias=True)
    return dict(err) if isinstance(err, Mapping) else None


def _env_dump(env: Any) -> dict[str, Any]:
    if isinstance(env, BaseModel):
        return env.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dict(env) if isinstance(env, Mapping) else {}


def _env_progress_text(env: Any) -> str:
    phase = _env_phase(env)
    msg = _get(env, "message")
    eta = _nonneg(_get(_get(env, "progress"), "eta_seconds"))
    parts = [p for p in (phase, str(msg) if msg else None) if p]
    text = ": ".join(parts) if parts else _env_status(env)
    if eta:
        text += f" (about {format_duration(eta)} left)"
    return text


def _result_records(rec: JobRecord) -> list[dict[str, Any]]:
    result = rec.result or {}
    if rec.provider == "seamless":
        records = result.get("records") or {}
        out = []
        for item in (rec.snapshot or {}).get("items", []):
            r = records.get(item["request_id"])
            if isinstance(r, Mapping):
                out.append({"request_id": item["request_id"], **dict(r)})
        return out
    out = []
    for entry in result.get("results") or []:
        r = entry.get("result")
        if isinstance(r, Mapping):
            out.append({"job_id": entry.get("job_id"), **dict(r)})
    return out


def _item_key(record: Mapping[str, Any]) -> dict[str, Any]:
    key = "request_id" if "request_id" in record else "job_id"
    return {key: record.get(key)}


def _default_projection(rec: JobRecord, record: Mapping[str, Any]) -> dict[str, Any]:
    if rec.provider == "seamless":
        contacts = _research_kind(rec) == "contacts"
        projected = project_contact(record) if contacts else project_company(record)
        return {"request_id": record.get("request_id"), **projected}
    body = {k: v for k, v in record.items() if k != "job_id"}
    return {"job_id": record.get("job_id"), **project_seo_result(body)}


def _list_advice(rec: JobRecord) -> str | None:
    if rec.state is JobState.UNKNOWN:
        return (
            "Outcome unknown: the request may have been accepted. Check with "
            f'get_job_status(job_ids=["{rec.job_id}"]) before resubmitting.'
            if rec.upstream_ids
            else "Outcome unknown: the submit may or may not have reached the API. "
            "Do not resubmit blindly; compare with the provider's dashboard or results."
        )
    if not rec.state.terminal:
        return f'Still running: wait_for_job(job_id="{rec.job_id}").'
    return None


def _was_read(rec: JobRecord) -> bool:
    return bool((rec.snapshot or {}).get(RESULT_READ))


def _what(rec: JobRecord) -> str:
    if rec.provider == "seamless":
        return "Research"
    return f"SEO {rec.operation.removeprefix('seo:')}"


def _page_items(
    rec: JobRecord,
    window: Sequence[Mapping[str, Any]],
    *,
    fields: Sequence[str] | None,
    start: int,
    budget: int,
) -> tuple[list[dict[str, Any]], list[str]]:
    """One page of results for both blocks: structured items and their text lines, cut at
    the same item boundary so each block fits `budget` tokens (`_bounds.item_budget`).
    Oversized string fields are truncated with a marker, so a record is never unshowable."""
    if fields:
        items = [dict(select_fields(r, fields), **_item_key(r)) for r in window]
    else:
        items = [_default_projection(rec, r) for r in window]
    items, _ = fit_items([cut_strings(i) for i in items], budget)
    line: Callable[[Mapping[str, Any]], str | list[str]]
    sources: Sequence[Mapping[str, Any]] = items
    if fields:
        line = render.fields_line
    elif rec.provider == "agentseo":
        sources = [cut_strings(dict(r)) for r in window[: len(items)]]
        line = render.seo_lines
    elif _research_kind(rec) == "contacts":
        line = render.contact_line
    else:
        line = render.company_line
    lines, shown = render.numbered(sources, line, start=start, budget_tokens=budget)
    return items[:shown], lines


def _status_one_text(rec: JobRecord, out: JobOutput, *, problem: Advice | None, now: float) -> str:
    """One job's status, no results: state, progress, counts, when to look again."""
    jid = rec.job_id
    lead = f"{_what(rec)} job {jid}"
    nothing_back = rec.state is JobState.DUPLICATE and not out.results_total
    if rec.state in (JobState.SUCCEEDED, JobState.DUPLICATE) and not nothing_back:
        total = out.results_total or 0
        return (
            f"{lead} {rec.state.value}: {total} result(s). "
            f'Next: get_job_result(job_id="{jid}") to read them.'
        )
    if rec.state.terminal or rec.state is JobState.UNKNOWN:
        adv = out.advice or None
        if adv is not None:
            text = advice_mod.render_text(adv)
            return text if jid in text else f"{lead}: {text}"
        return f'{lead} ended {rec.state.value}. Next: get_job_result(job_id="{jid}").'
    return _running_text(rec, out, problem=problem, now=now, lead=lead)


def _running_text(
    rec: JobRecord, out: JobOutput, *, problem: Advice | None, now: float, lead: str
) -> str:
    jid = rec.job_id
    pct = out.progress.percent if out.progress else None
    msg = out.progress.message if out.progress and out.progress.message else None
    where = f" ({pct:.0f}%{', ' + msg if msg else ''})" if pct is not None else ""
    if problem is not None:
        return (
            f"{lead} is still {rec.state.value}{where}, but checking it failed: "
            f"{problem.what_happened} Next: {problem.next_step}"
            + (f" {problem.do_not}" if problem.do_not else "")
        )
    after = out.next_check_after_seconds
    update = f"; next update expected {advice_mod.wait_phrase(after, now)}" if after else ""
    return (
        f"{lead} is still {rec.state.value}{where}{update}. "
        f'Next: wait_for_job(job_id="{jid}"). Do not start it again: that pays twice.'
    )


def _job_text(
    rec: JobRecord, out: JobOutput, *, started: bool, problem: Advice | None = None, now: float
) -> str:
    """What happened, the results' rows when finished, and exactly one `Next:`."""
    jid = rec.job_id
    lead = f"{_what(rec)} job {jid}"
    nothing_back = rec.state is JobState.DUPLICATE and not out.results_total
    if rec.state in (JobState.SUCCEEDED, JobState.DUPLICATE) and not nothing_back:
        total = out.results_total or 0
        records = _result_records(rec)[: len(out.results or [])]
        shown_items, lines = _page_items(
            rec, records, fields=None, start=1, budget=B.item_budget(B.DEFAULT_ANSWER_TOKENS)
        )
        shown = len(shown_items)
        if rec.state is JobState.DUPLICATE:
            note = " (already researched: existing records, no credit spent)"
        elif rec.raw_status and "," in rec.raw_status:
            note = f" ({rec.raw_status})"
        else:
            note = ""
        head = f"{lead} finished{note}: {total} result(s)"
        head += f", {shown} shown:" if lines else "."
        body = [head, *lines]
        if _has_placeholder(out.results):
            body.append(_PLACEHOLDER_NOTE.format(jid=jid))
        if total > shown:
            body.append(
                f'Next: get_job_result(job_id="{jid}", offset={shown}) for results '
                f"{shown + 1}-{min(total, shown + B.DEFAULT_LIMIT_RESULT)}."
            )
        else:
            body.append(_fields_hint(rec) + " Next: use these results; nothing more to fetch.")
        text = "\n".join(body)
    elif rec.state.terminal or rec.state is JobState.UNKNOWN:
        adv = out.advice
        if adv is not None:
            text = advice_mod.render_text(adv)
            if jid not in text:
                text = f"{lead}: {text}"
        else:  # pragma: no cover - _job_output always advises these states
            text = f"{lead} ended {rec.state.value}. Next: list_jobs to review it."
    elif started and problem is None:
        n = len(rec.upstream_ids)
        detail = f" for {n} target(s)" if rec.provider == "seamless" else ""
        credits = (
            f"; {out.credits_remaining} research credits left"
            if out.credits_remaining is not None
            else ""
        )
        text = (
            f"{lead} started{detail} ({rec.state.value}{credits}). "
            f'Next: wait_for_job(job_id="{jid}"). Do not start it again: that pays twice.'
        )
    else:
        text = _running_text(rec, out, problem=problem, now=now, lead=lead)
    if out.warnings:
        text += "\nNote: " + " ".join(out.warnings)
    return text


_PLACEHOLDER_NOTE = (
    '"<N more>", "<N items>" and "<N fields>" in the compact results mark entries left out; '
    'get_job_result(job_id="{jid}", fields=["<name>"]) returns them in full.'
)


def _has_placeholder(items: Sequence[Mapping[str, Any]] | None) -> bool:
    return bool(items) and '"<' in B.compact_json(items)


def _fields_hint(rec: JobRecord) -> str:
    where = "seamless" if rec.provider == "seamless" else "agentseo"
    return (
        f'Other fields: get_job_result(job_id="{rec.job_id}", fields=[...]); names at '
        f"jobrelay://fields/{where}."
    )


def _lean_status(out: JobOutput) -> JobOutput:
    """A job inside a many-job status answer: state, progress, counts, next check."""
    progress = (
        Progress(percent=out.progress.percent)
        if out.progress
        and out.progress.percent is not None
        and out.state
        and not out.state.terminal
        else None
    )
    return JobOutput(
        job_id=out.job_id,
        operation=out.operation,
        state=out.state,
        progress=progress,
        results_total=out.results_total,
        next_check_after_seconds=out.next_check_after_seconds,
        next_step=out.advice.next_step if out.advice is not None else None,
        error=out.error,
    )


def _status_text(outputs: Sequence[JobOutput], *, now: float) -> str:
    """A batch: counts per state, one short line per job, then the one job to act on."""
    counts: dict[str, int] = {}
    for o in outputs:
        key = o.state.value if o.state is not None else "unknown id"
        counts[key] = counts.get(key, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    rows = []
    for o in outputs:
        if o.state is None:
            rows.append(f"{B.echo(o.job_id or '', 40)}: unknown id")
            continue
        extra = f", {o.results_total} result(s)" if o.results_total is not None else ""
        pct = (
            f", {o.progress.percent:.0f}%"
            if o.progress and o.progress.percent is not None and not o.state.terminal
            else ""
        )
        failed = ", check failed" if o.next_step and not o.state.terminal else ""
        rows.append(f"{o.job_id}: {o.operation} {o.state.value}{pct}{extra}{failed}")
    lines, _ = render.numbered(
        [{"row": r} for r in rows],
        lambda r: str(r["row"]),
        budget_tokens=B.item_budget(B.DEFAULT_ANSWER_TOKENS),
    )
    more = len(rows) - len(lines)
    lead = "\n".join([f"{len(outputs)} jobs: {summary}.", *lines])
    if more > 0:
        lead += f"\n({more} more in structuredContent.jobs)"
    open_jobs = [o for o in outputs if o.state is not None and not o.state.terminal]
    running = [o for o in open_jobs if o.state is not JobState.UNKNOWN]
    unchecked = [o for o in running if o.next_step]
    if unchecked:
        # The latest check failed (a stall, a 429, a degraded upstream): the job's advice in
        # short says when to look again (seconds and UTC time).
        return f"{lead}\n{len(unchecked)} could not be checked now. Next: {unchecked[0].next_step}"
    if running:
        soonest = min((o.next_check_after_seconds or 0 for o in running), default=0)
        when = f" (next update expected {advice_mod.wait_phrase(soonest, now)})" if soonest else ""
        return f'{lead}\nNext: wait_for_job(job_id="{running[0].job_id}"){when}.'
    if open_jobs:
        return (
            f'{lead}\nNext: get_job_status(job_ids=["{open_jobs[0].job_id}"]) for its advice '
            "(outcome unknown) before resubmitting anything."
        )
    done = [o for o in outputs if o.state in (JobState.SUCCEEDED, JobState.DUPLICATE)]
    if done:
        return f'{lead}\nNext: get_job_result(job_id="{done[0].job_id}").'
    ended = [o for o in outputs if o.state is not None]
    if ended:
        return f'{lead}\nNext: get_job_status(job_ids=["{ended[0].job_id}"]) for its advice.'
    return f"{lead}\nNext: list_jobs to find the right job ids."


def _page_text(
    rec: JobRecord,
    page: ResultPage,
    lines: Sequence[str],
    *,
    missing: Sequence[str],
    cut: bool,
    fields: Sequence[str] | None,
    limit: int,
    advice: Advice | None,
) -> str:
    jid = rec.job_id
    shown = len(page.items)
    extra = ""
    if fields:
        extra += ", fields=" + B.compact_json(list(fields))
    if limit != B.DEFAULT_LIMIT_RESULT:
        extra += f", limit={limit}"
    if page.total == 0:
        if advice is not None:
            return f"Job {jid} has no results. {advice_mod.render_text(advice)}"
        return (
            f"Job {jid} ended {rec.state.value} with no results. "
            "Next: start a new job if you still need the data."
        )
    if shown == 0:
        last = max(0, (page.total - 1) // limit * limit)
        return (
            f"Job {jid} has {page.total} result(s); offset {page.offset} is past the end. "
            f'Next: get_job_result(job_id="{jid}", offset={last}{extra}) for the last page.'
        )
    head = f"Job {jid}: results {page.offset + 1}-{page.offset + shown} of {page.total}"
    if cut:
        head += " (page cut to fit the size limit)"
    body = [head + ":", *lines]
    if missing:
        body.append(
            "Unknown fields: "
            + ", ".join(m if len(m) <= 40 else B.echo(m, 40) for m in missing[:10])
            + f"; fields_available (and jobrelay://fields/{rec.provider}) lists the names."
        )
    if _has_placeholder(page.items) and not fields:
        body.append(_PLACEHOLDER_NOTE.format(jid=jid))
    if page.next_offset is not None:
        body.append(f'Next: get_job_result(job_id="{jid}", offset={page.next_offset}{extra}).')
    elif fields:
        body.append("Next: use these results; nothing more to fetch.")
    else:
        body.append(_fields_hint(rec) + " Next: use these results; nothing more to fetch.")
    return "\n".join(body)


def _list_priority(rec: JobRecord) -> int:
    """Which job the agent most likely needs: lower first. Paid research before SEO; within
    each, unfinished before unread results; outcome-unknown submits before SEO work."""
    paid = rec.provider == "seamless"
    unread = rec.state in (JobState.SUCCEEDED, JobState.DUPLICATE) and not _was_read(rec)
    running = not rec.state.terminal and rec.state is not JobState.UNKNOWN
    if running and paid:
        return 0
    if unread and paid:
        return 1
    if rec.state is JobState.UNKNOWN:
        return 2
    if running:
        return 3
    if unread:
        return 4
    return 9


def _list_line(rec: JobRecord, now: datetime) -> str:
    parts = [rec.job_id, rec.operation.replace("seo:", "seo "), rec.state.value]
    if rec.provider == "seamless":
        parts.append(f"{len(rec.upstream_ids) or rec.credits_requested} target(s)")
    if rec.state in (JobState.SUCCEEDED, JobState.DUPLICATE):
        parts.append("results read" if _was_read(rec) else "results NOT read yet")
    parts.append(render.ago((now - rec.created_at).total_seconds()))
    return " | ".join(parts)


def _list_text(rows: Sequence[JobRecord], *, now: datetime) -> str:
    if not rows:
        return "No jobs in the ledger match. Next: start one with start_research or start_seo_job."
    lines, _ = render.numbered(
        [{"r": i} for i in range(len(rows))],
        lambda d: _list_line(rows[int(d["r"])], now),
        budget_tokens=B.item_budget(B.DEFAULT_ANSWER_TOKENS),
    )
    body = [f"{len(rows)} job(s), newest first:", *lines]
    if len(lines) < len(rows):
        body.append(f"({len(rows) - len(lines)} more in structuredContent.jobs)")
    best = min(rows, key=_list_priority)  # min keeps the newest among equals
    rank = _list_priority(best)
    jid = best.job_id
    if rank in (0, 3):
        nxt = f'wait_for_job(job_id="{jid}") (still {best.state.value}).'
    elif rank in (1, 4):
        nxt = f'get_job_result(job_id="{jid}") (finished, results not read yet).'
    elif rank == 2:
        nxt = (
            f'get_job_status(job_ids=["{jid}"]) (submit outcome unknown) before resubmitting '
            "anything."
        )
    else:
        finished = [r for r in rows if r.state in (JobState.SUCCEEDED, JobState.DUPLICATE)]
        paid = [r for r in finished if r.provider == "seamless"]
        if paid or finished:
            again = (paid or finished)[0]
            nxt = f'get_job_result(job_id="{again.job_id}") to read its results again.'
        else:
            nxt = f'get_job_status(job_ids=["{rows[0].job_id}"]) for its advice.'
    body.append(f"Next: {nxt}")
    return "\n".join(body)
