"""The job ledger's contract: the `Ledger` and `TaskLedger` protocols, the `JobRecord`, handles.

Backends implement `Ledger` (`sqlite.SqliteLedger`, `postgres.PostgresLedger`); the runtime holds
the protocol and `mcp_server.ledger.open_ledger` picks the backend from the settings. Why a
ledger and how the tool layer uses it: see `mcp_server.ledger` (the package docstring).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mcp_server.json_types import JSON, JSONObject
from mcp_server.models import Advice, ErrorInfo, JobState, Provider

__all__ = [
    "CREDIT_BUDGET_PROVIDERS",
    "JOB_ID_PREFIXES",
    "RAW_OUTCOME_UNKNOWN",
    "RAW_REJECTED",
    "RAW_SUBMITTING",
    "ErrorLike",
    "JobRecord",
    "JsonDict",
    "Ledger",
    "LedgerError",
    "LedgerProblem",
    "TaskLedger",
    "new_job_id",
    "next_utc_midnight",
    "params_fingerprint",
    "provider_for_job_id",
    "register_credit_budget",
    "register_job_id_prefix",
    "unregister_credit_budget",
    "unregister_job_id_prefix",
    "utc_day_start",
]

JsonDict = JSONObject
"""A JSON object whose shape the provider decides (params, snapshots, results, errors)."""
ErrorLike = ErrorInfo | Advice | Mapping[str, JSON]
"""What `fail_submit`/`update` accept as a job's error: the model, or its JSON dump."""

RAW_SUBMITTING: Final = "submitting"
"""`raw_status` of an intent row: written, the credit-spending POST not (yet) answered."""
RAW_REJECTED: Final = "rejected"
"""`raw_status` of a submit the upstream provably did not process: no credits spent."""
RAW_OUTCOME_UNKNOWN: Final = "outcome_unknown"
"""`raw_status` of a submit that failed ambiguously: it may have been processed (and paid)."""

JOB_ID_PREFIXES: Final[dict[str, str]] = {}
"""Handle prefix per provider name, as the providers registered them
(`providers.registry` calls `register_job_id_prefix`); the ledger knows no provider itself."""
CREDIT_BUDGET_PROVIDERS: Final[set[Provider]] = set()
"""The providers whose jobs' `credits_requested` the daily budget (JOBRELAY_CREDIT_BUDGET)
counts: those that declare they spend a credit per target (`JobProvider.paid_per_target`), as
the provider registry registered them (`register_credit_budget`)."""

_TENANT_PATTERN: Final = r"^(nokey|k_[0-9a-f]{12})$"  # config.key_fingerprint's output
_CREDENTIAL_KEYS: Final = frozenset(
    {"token", "api_key", "apikey", "x-api-key", "authorization", "password", "secret"}
)


# --------------------------------------------------------------------------------------------
# Errors

LedgerProblem = Literal[
    "corrupt", "not_a_ledger", "locked", "too_new", "unwritable", "migration_failed", "io", "closed"
]


class LedgerError(Exception):
    """The ledger cannot be used; `message` names it and what to do about it. `path` is the
    SQLite file, or the PostgreSQL URL with its password hidden."""

    def __init__(self, message: str, *, path: Path | str, problem: LedgerProblem) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.problem = problem


# --------------------------------------------------------------------------------------------
# Pure helpers: ids, fingerprints, UTC days


def register_job_id_prefix(provider: str, prefix: str) -> None:
    """Handles of `provider` start with `prefix` (called by the provider registry)."""
    JOB_ID_PREFIXES[provider] = prefix


def unregister_job_id_prefix(provider: str) -> None:
    JOB_ID_PREFIXES.pop(provider, None)


def register_credit_budget(provider: str) -> None:
    """Jobs of `provider` count against the daily credit budget (called by the registry)."""
    CREDIT_BUDGET_PROVIDERS.add(provider)


def unregister_credit_budget(provider: str) -> None:
    CREDIT_BUDGET_PROVIDERS.discard(provider)


def new_job_id(provider: str) -> str:
    """A fresh job handle: the provider's prefix (`sea_`, `seo_`, ...) + 16 hex digits."""
    try:
        return JOB_ID_PREFIXES[provider] + secrets.token_hex(8)
    except KeyError:
        raise LookupError(
            f"no job handle prefix registered for provider {provider!r} "
            "(providers register theirs through mcp_server.providers.registry)"
        ) from None


def provider_for_job_id(value: str) -> str | None:
    """The provider whose handle `value` looks like, or None (then it may be an upstream id)."""
    for provider, prefix in JOB_ID_PREFIXES.items():
        rest = value.removeprefix(prefix)
        if rest != value and len(rest) == 16 and all(c in "0123456789abcdef" for c in rest):
            return provider
    return None


def params_fingerprint(params: Mapping[str, JSON]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces): same request, same fingerprint."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def next_utc_midnight(now: datetime) -> datetime:
    """When the daily credit budget resets: the next 00:00 UTC after `now`."""
    return utc_day_start(now) + timedelta(days=1)


def utc_day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


# --------------------------------------------------------------------------------------------
# The record


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _has_credentials(value: object) -> str | None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if str(key).lower() in _CREDENTIAL_KEYS:
                return str(key)
            if found := _has_credentials(inner):
                return found
    elif isinstance(value, list):
        for inner in value:
            if found := _has_credentials(inner):
                return found
    return None


class JobRecord(BaseModel):
    """One job handle as the ledger stores it. Frozen: a copy, not a live row."""

    model_config = ConfigDict(frozen=True)

    job_id: str = Field(description="Our handle: the provider's prefix, e.g. `sea_...`.")
    provider: str = Field(pattern=r"^[a-z][a-z0-9]{1,19}$")
    operation: str = Field(
        min_length=1, description="e.g. research_contacts, research_companies, seo:serp_analysis."
    )
    tenant: str = Field(
        pattern=_TENANT_PATTERN,
        description="Fingerprint of the API key that started the job (never the key).",
    )
    sandbox: bool = Field(description="Whether the job ran against the embedded sandbox.")
    params: JsonDict = Field(description="The request as sent, without credentials.")
    targets: list[str] = Field(
        default_factory=list, description="Normalised target keys (`target_keys`)."
    )
    upstream_ids: list[str] = Field(
        default_factory=list,
        description="The upstream job ids (one per target where the API has one each).",
    )
    credits_requested: int = Field(0, ge=0, description="Research credits this job may spend.")
    credits_seen: int | None = Field(None, description="Last X-PublicAPI-Credits seen.")
    state: JobState = JobState.UNKNOWN
    raw_status: str | None = RAW_SUBMITTING
    snapshot: JsonDict | None = Field(None, description="Last status snapshot (per-item).")
    result: JsonDict | None = Field(None, description="The full result, once there is one.")
    error: JsonDict | None = Field(None, description="ErrorInfo/Advice dump for failures.")
    warnings: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=_utcnow, description="Set by record_intent.")
    updated_at: datetime = Field(default_factory=_utcnow, description="Set on every write.")
    finished_at: datetime | None = Field(None, description="Set when a terminal state is stored.")
    next_check_at: datetime | None = Field(None, description="When a status check is due.")

    @classmethod
    def new(
        cls,
        *,
        provider: str,
        operation: str,
        tenant: str,
        sandbox: bool,
        params: Mapping[str, JSON],
        targets: Sequence[str] = (),
        credits_requested: int = 0,
        warnings: Sequence[str] = (),
        job_id: str | None = None,
    ) -> JobRecord:
        """A record for `record_intent`, with a fresh handle unless `job_id` is given."""
        return cls(
            job_id=job_id or new_job_id(provider),
            provider=provider,
            operation=operation,
            tenant=tenant,
            sandbox=sandbox,
            params=dict(params),
            targets=list(targets),
            credits_requested=credits_requested,
            warnings=list(warnings),
        )

    @model_validator(mode="after")
    def _job_id_matches_provider(self) -> JobRecord:
        prefix = JOB_ID_PREFIXES.get(self.provider)
        if prefix is not None and not self.job_id.startswith(prefix):
            raise ValueError(
                f"job_id {self.job_id!r} must start with {prefix!r} for provider {self.provider}"
            )
        return self

    @field_validator("params")
    @classmethod
    def _no_credentials(cls, value: JsonDict) -> JsonDict:
        """A cheap guard for "never the key itself": the request as sent minus its headers."""
        if (key := _has_credentials(value)) is not None:
            raise ValueError(f"params must not carry credentials (found key {key!r})")
        return value

    @field_validator("targets", "upstream_ids", "warnings")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("created_at", "updated_at", "finished_at", "next_check_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError("must be timezone-aware")
        return value.astimezone(UTC)

    @property
    def params_fingerprint(self) -> str:
        """sha256 of the canonical JSON of `params` (derived, so it can never disagree)."""
        return params_fingerprint(self.params)


# --------------------------------------------------------------------------------------------
# The interface


class TaskLedger(Protocol):
    """The MCP task rows (issue 16) that ride on jobs, and the ledger's secrets: what
    `mcp_server.tasks` needs (its `LedgerTaskStore`). A `Ledger` carries one as `tasks`, in the
    same file or database as its jobs (same durability; a task row is written before the job's
    upstream POST)."""

    async def secret(self, name: str) -> bytes:
        """A random 32-byte secret kept in the ledger under `name`, made on first use: every
        process on this ledger gets the same one (task ids are an HMAC under it)."""
        ...

    async def create_task(
        self, task_id: str, *, job_id: str, data: JsonDict, expires_at: float | None
    ) -> JsonDict:
        """Insert a task row for `job_id`, durably (before the job's upstream POST). If
        `task_id` is stored already, return its stored data unchanged."""
        ...

    async def get_task(self, task_id: str) -> JsonDict | None:
        """The task's data, or None. Unscoped: the caller checks whose task it is."""
        ...

    async def save_task(self, task_id: str, data: JsonDict, *, terminal: bool) -> JsonDict | None:
        """Replace the task's data unless the stored row is terminal; what is stored after,
        or None when the task is unknown."""
        ...

    async def delete_expired_tasks(self, now: float) -> int:
        """Delete task rows whose `expires_at` (epoch seconds) is at or before `now`."""
        ...


class Ledger(Protocol):
    """What the tools need from a job ledger: `SqliteLedger` (a file) or `PostgresLedger`.

    Every read is scoped to a tenant (a key fingerprint): a foreign tenant's job reads as
    absent. Writes address a job by handle, which the caller got from a scoped read or from
    `record_intent`. Timestamps are the ledger's (its clock); `now=` on reads is for tests.
    The MCP task rows beside the jobs are `tasks` (a `TaskLedger`).
    """

    tasks: TaskLedger
    """The task rows and secrets kept in the same store as the jobs."""

    async def record_intent(self, record: JobRecord, *, budget: int | None = None) -> JobRecord:
        """Insert `record` as an intent (state `unknown`, raw status `submitting`), durably.

        With `budget`, refuse with `BudgetExceeded` (and insert nothing) when this job's
        provider counts against the budget (`CREDIT_BUDGET_PROVIDERS`) and its
        `credits_requested` would take today's spend above it. Returns what was stored.
        """
        ...

    async def complete_submit(
        self,
        job_id: str,
        *,
        upstream_ids: Sequence[str],
        state: JobState,
        raw_status: str | None,
        snapshot: JsonDict | None = None,
        result: JsonDict | None = None,
        credits_seen: int | None = None,
        next_check_at: datetime | None = None,
    ) -> JobRecord:
        """The submit was accepted: store the upstream ids and first state; clears `error`."""
        ...

    async def fail_submit(
        self, job_id: str, *, error: ErrorLike, processed: Literal["no", "maybe"]
    ) -> JobRecord:
        """The submit failed. `no`: `failed`/`rejected`, nothing spent. `maybe`: stays `unknown`
        with raw status `outcome_unknown` and still counts against the budget."""
        ...

    async def update(
        self,
        job_id: str,
        *,
        state: JobState,
        raw_status: str | None,
        snapshot: JsonDict | None = None,
        result: JsonDict | None = None,
        error: ErrorLike | None = None,
        credits_seen: int | None = None,
        next_check_at: datetime | None = None,
        add_warnings: Sequence[str] = (),
    ) -> JobRecord:
        """Record what a status check saw. `None` leaves a field as it was; a terminal state
        sets `finished_at` and clears `next_check_at`; a terminal job never goes back."""
        ...

    async def flag(self, job_id: str, key: str) -> None:
        """Set `snapshot[key]` to true (and `updated_at`), nothing else. One statement: the
        row is not loaded, so a finished research job's ~450 KB of records are not decoded
        and encoded again for one flag. `key` is an identifier; a missing job is no error."""
        ...

    async def get(self, job_id: str, *, tenant: str) -> JobRecord | None: ...

    async def find_by_upstream_id(self, upstream_id: str, *, tenant: str) -> JobRecord | None:
        """The newest job of `tenant` holding this Seamless requestId / AgentSEO jobId."""
        ...

    async def lookup(self, ids: Sequence[str], *, tenant: str) -> dict[str, JobRecord]:
        """Resolve handles or upstream ids (mixed) in one call; unknown ids are left out."""
        ...

    async def list(
        self,
        *,
        tenant: str,
        provider: str | None = None,
        state: JobState | None = None,
        since_hours: float | None = None,
        limit: int = 20,
        offset: int = 0,
        now: datetime | None = None,
    ) -> builtins.list[JobRecord]:
        """The tenant's jobs, newest first."""
        ...

    async def nonterminal(self, *, tenant: str | None = None) -> builtins.list[JobRecord]:
        """Jobs still `queued`, `running` or `unknown` (all tenants by default), oldest first."""
        ...

    async def job_counts(self) -> dict[tuple[Provider, JobState], int]:
        """How many jobs are in each state now, by (provider, state), every tenant (the
        `jobrelay.jobs` gauge; one aggregate read of the `(provider, state)` index, no rows
        loaded)."""
        ...

    async def credits_spent_today(
        self, *, tenant: str | None = None, sandbox: bool | None = None, now: datetime | None = None
    ) -> int:
        """Credits requested since UTC midnight by jobs of the providers the budget counts
        (`CREDIT_BUDGET_PROVIDERS`), rejected submits excluded."""
        ...

    async def recent_targets(
        self,
        keys: Sequence[str],
        *,
        tenant: str,
        within_days: float = 30,
        now: datetime | None = None,
    ) -> dict[str, str]:
        """For each key some earlier, not rejected job of `tenant` targeted within the window:
        the most recent such job's handle."""
        ...

    async def close(self) -> None: ...
