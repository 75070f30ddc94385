"""The job ledger: one durable row per job handle, so paid work is never lost or paid twice.

Agents lose job ids (a call times out, a host restarts, a context is compacted) and then pay
again. The ledger keeps every job jobrelay starts: provider, operation, the request as sent,
upstream ids, the unified state beside the raw one, the last snapshot, the result, errors,
credits, and who started it (a key fingerprint, never the key).

How the tool layer uses it (DESIGN.md section 2.1-2.2):

```
record = JobRecord.new(provider="seamless", operation="research_contacts", tenant=fingerprint,
                       sandbox=..., params=body, credits_requested=n,
                       targets=target_keys("contacts", contacts=..., search_result_ids=...))
earlier = await ledger.recent_targets(record.targets, tenant=fingerprint)  # warn first
record = await ledger.record_intent(record, budget=settings.credit_budget)  # or BudgetExceeded
...the credit-spending POST...
await ledger.complete_submit(record.job_id, upstream_ids=ids, state=..., raw_status=...)
#   or fail_submit(..., processed="no")    provably not processed (connect error, 429, 4xx)
#   or fail_submit(..., processed="maybe") ambiguous (timeout after send, 5xx): stays `unknown`
await ledger.update(record.job_id, state=..., raw_status=..., snapshot=..., result=...)
```

After a restart nothing is resumed eagerly: `get`/`find_by_upstream_id`/`lookup` resolve handles
and upstream ids from the file, and the next status call or wait polls whatever is not finished
(`nonterminal()` lists those). A row still `submitting` whose process is gone died between the
intent and the answer: it has no upstream ids to poll and must be treated as `outcome_unknown`.

Decisions, briefly:

- **Intent before action.** `record_intent` commits with `synchronous=FULL` (the WAL is fsynced
  before it returns), and so do `complete_submit`/`fail_submit`: those rows are money and upstream
  ids that cannot be asked for again. Status updates commit with `synchronous=NORMAL`: after a
  power cut the worst loss is the latest snapshot, which the next poll fetches again.
- **One connection per ledger**, used from worker threads via `anyio.to_thread.run_sync` and
  serialised by an `anyio.Lock`. In-process callers never contend for SQLite's file lock (only
  other processes do, bounded by `busy_timeout`), pragmas are set once, and waiting tasks queue
  on the lock instead of occupying worker threads. Every write is one `BEGIN IMMEDIATE`
  transaction, so writers from other processes queue instead of failing on a lock upgrade.
- **Point reads on the event loop.** `get`, `find_by_upstream_id` and `lookup` (a few indexed
  rows) run on a second, read-only connection directly on the loop thread: a WAL reader never
  waits for writers, the read takes microseconds, and the worker-thread round trip it replaces
  cost more than the read (half of a finished job's `get_job_status`). That connection has
  `busy_timeout` 0, so it can never stall the loop: the rare busy answer (another process
  recovering the WAL) falls back to the worker-thread path, which waits as usual. JSON decoding
  holds the GIL either way, so a thread would not have made it parallel.
- **Terminal states are sticky.** A stale poll that says `running` after another writer stored
  `succeeded` is dropped, so concurrent pollers (two processes) can never lose a result.
- **The credit budget is per ledger** ("research credits this ledger may spend per UTC day"),
  counted over every tenant, and separately for sandbox and real jobs (sandbox credits are not
  money; a demo must not use up a real day's budget). It counts credits *requested* by Seamless
  research jobs created since UTC midnight, except those rejected before processing: a job whose
  outcome is unknown may have spent them. `record_intent(..., budget=)` checks and inserts in one
  transaction, so concurrent starts (even from two processes) cannot overshoot it.
- **Opening never repairs.** A damaged file, another application's database, a schema newer than
  this code, a lock held beyond `busy_timeout` or an unwritable path raise `LedgerError` naming the
  file and what to do. The file is left exactly as it was.
- `LedgerError` is not a `JobRelayError`: it is a local storage fault (like `ConfigError`), with
  no upstream error code, and must never be turned into "retry the API" advice.

Schema: `PRAGMA user_version` is the number of `_MIGRATIONS` applied; each migration runs in the
same transaction that bumps the version. `PRAGMA application_id` marks the file as a jobrelay
ledger, so another program's database is refused rather than written into.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import anyio
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mcp_server._clock import Clock, SystemClock
from mcp_server._duration import format_duration
from mcp_server.errors import BudgetExceeded, UnknownJob
from mcp_server.models import Advice, ErrorInfo, JobState, Provider

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "JOB_ID_PREFIXES",
    "RAW_OUTCOME_UNKNOWN",
    "RAW_REJECTED",
    "RAW_SUBMITTING",
    "SCHEMA_VERSION",
    "ErrorLike",
    "JobRecord",
    "JsonDict",
    "Ledger",
    "LedgerError",
    "LedgerProblem",
    "SqliteLedger",
    "new_job_id",
    "next_utc_midnight",
    "params_fingerprint",
    "provider_for_job_id",
    "target_keys",
]

_log = logging.getLogger(__name__)

JsonDict = dict[str, Any]
"""A JSON object whose shape the provider decides (params, snapshots, results, errors)."""
ErrorLike = ErrorInfo | Advice | Mapping[str, Any]
"""What `fail_submit`/`update` accept as a job's error: the model, or its JSON dump."""

RAW_SUBMITTING: Final = "submitting"
"""`raw_status` of an intent row: written, the credit-spending POST not (yet) answered."""
RAW_REJECTED: Final = "rejected"
"""`raw_status` of a submit the upstream provably did not process: no credits spent."""
RAW_OUTCOME_UNKNOWN: Final = "outcome_unknown"
"""`raw_status` of a submit that failed ambiguously: it may have been processed (and paid)."""

DEFAULT_BUSY_TIMEOUT = 5.0
"""Seconds to wait for another process's write lock before giving up with `LedgerError`."""

JOB_ID_PREFIXES: Final[dict[Provider, str]] = {"seamless": "sea_", "agentseo": "seo_"}

_APPLICATION_ID: Final = 0x4A524C59  # "JRLY": marks the file as a jobrelay ledger
_PAGE_CACHE_KIB: Final = 512
"""SQLite's page cache per connection (the default is 2 MiB each). The file is in the OS page
cache anyway, and one finished research row (~450 KB) still fits; measured 2 MB less peak RSS
under 1,000 concurrent waits (BENCHMARKS.md)."""
_TENANT_PATTERN: Final = r"^(nokey|k_[0-9a-f]{12})$"  # config.key_fingerprint's output
_CREDENTIAL_KEYS: Final = frozenset(
    {"token", "api_key", "apikey", "x-api-key", "authorization", "password", "secret"}
)

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Errors


LedgerProblem = Literal[
    "corrupt", "not_a_ledger", "locked", "too_new", "unwritable", "migration_failed", "io", "closed"
]


class LedgerError(Exception):
    """The ledger file cannot be used; `message` names the file and what to do about it."""

    def __init__(self, message: str, *, path: Path, problem: LedgerProblem) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.problem = problem


def _problem_message(problem: LedgerProblem, path: Path, detail: str, busy_timeout: float) -> str:
    where = f"The job ledger at {path}"
    untouched = "jobrelay has not changed it."
    match problem:
        case "corrupt":
            return (
                f"{where} is damaged or is not an SQLite database ({detail}). {untouched} "
                f"Move it aside (for example `mv '{path}' '{path}.damaged'`) so that a fresh "
                "ledger is created, or set JOBRELAY_DB to another file; "
                f"`sqlite3 '{path}' .recover` may salvage its jobs."
            )
        case "not_a_ledger":
            return (
                f"{path} is an SQLite database but not a jobrelay job ledger ({detail}). "
                f"{untouched} Set JOBRELAY_DB to another file."
            )
        case "locked":
            return (
                f"{where} is locked by another process (waited {busy_timeout:g} s for it). "
                "Close whatever holds a transaction open on it (an `sqlite3` shell, a stuck "
                "jobrelay) and try again, or set JOBRELAY_DB to another file."
            )
        case "too_new":
            return (
                f"{where} {detail}: it was written by a newer jobrelay. {untouched} "
                "Upgrade jobrelay, or set JOBRELAY_DB to another file."
            )
        case "unwritable":
            return (
                f"Cannot create or write the job ledger at {path} ({detail}). Make its "
                "directory writable, or set JOBRELAY_DB to a writable path."
            )
        case "migration_failed":
            return (
                f"Upgrading the schema of the job ledger at {path} failed ({detail}); the "
                "upgrade was rolled back and no data changed. Keep the file and report this."
            )
        case "io":
            return (
                f"{where} could not be read or written ({detail}). Check free disk space and "
                "that it is on a local filesystem (SQLite WAL does not work on network shares)."
            )
        case "closed":
            return f"{where} is closed."


# Primary SQLite result codes (https://sqlite.org/rescode.html).
_SQLITE_PROBLEMS: Final[dict[int, LedgerProblem]] = {
    3: "unwritable",  # SQLITE_PERM
    5: "locked",  # SQLITE_BUSY
    6: "locked",  # SQLITE_LOCKED
    8: "unwritable",  # SQLITE_READONLY
    11: "corrupt",  # SQLITE_CORRUPT
    14: "unwritable",  # SQLITE_CANTOPEN
    23: "unwritable",  # SQLITE_AUTH
    26: "corrupt",  # SQLITE_NOTADB
}


def _ledger_error(exc: sqlite3.Error, path: Path, busy_timeout: float) -> LedgerError:
    code = getattr(exc, "sqlite_errorcode", None)
    problem = _SQLITE_PROBLEMS.get(code & 0xFF, "io") if isinstance(code, int) else "io"
    message = _problem_message(problem, path, str(exc), busy_timeout)
    return LedgerError(message, path=path, problem=problem)


# --------------------------------------------------------------------------------------------
# Pure helpers: ids, fingerprints, target keys, UTC days


def new_job_id(provider: Provider) -> str:
    """A fresh job handle: `sea_` (Seamless) or `seo_` (AgentSEO) + 16 hex digits (64 bits)."""
    return JOB_ID_PREFIXES[provider] + secrets.token_hex(8)


def provider_for_job_id(value: str) -> Provider | None:
    """The provider whose handle `value` looks like, or None (then it may be an upstream id)."""
    for provider, prefix in JOB_ID_PREFIXES.items():
        rest = value.removeprefix(prefix)
        if rest != value and len(rest) == 16 and all(c in "0123456789abcdef" for c in rest):
            return provider
    return None


def params_fingerprint(params: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces): same request, same fingerprint."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def next_utc_midnight(now: datetime) -> datetime:
    """When the daily credit budget resets: the next 00:00 UTC after `now`."""
    return _utc_day_start(now) + timedelta(days=1)


def _utc_day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _text(item: Mapping[str, object], *names: str) -> str | None:
    for name in names:
        value = item.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _norm_name(value: str) -> str:
    # `|` separates person and organisation in contact keys, so it may not appear inside one.
    return " ".join(value.replace("|", " ").casefold().split())


def _norm_domain(value: str) -> str:
    text = value.strip().lower()
    host = urlsplit(text if "://" in text else "//" + text).hostname or ""
    return host.rstrip(".").removeprefix("www.")


def _norm_linkedin(value: str) -> str:
    text = value.strip()
    parts = urlsplit(text if "://" in text else "https://" + text)
    host = (parts.hostname or "").removeprefix("www.")
    if host.endswith(".linkedin.com"):  # uk.linkedin.com, m.linkedin.com: the same profile
        host = "linkedin.com"
    return (host + unquote(parts.path).rstrip("/")).casefold()


def target_keys(
    kind: Literal["contacts", "companies"],
    *,
    contacts: Sequence[Mapping[str, object]] = (),
    companies: Sequence[Mapping[str, object]] = (),
    search_result_ids: Sequence[str] = (),
) -> list[str]:
    """Normalised keys naming who or what a research job targets (for the rerun warning).

    Contacts give `li:<linkedin.com/in/slug>`, `email:<lower email>`,
    `name:<name>|<company>` and `name:<name>|<domain>`; companies give `domain:<domain>` and
    `name:<name>`; both give `sr:<searchResultId>`. Every key a descriptor yields is listed, so
    any one matching an earlier job is enough to warn. Descriptors use the tool's field names
    (`name`, `company`, `domain`, `email`, `linkedin_url`) or Seamless's (`contactName`,
    `companyName`, `liProfileUrl`). Pure; duplicates removed, order kept.
    """
    if kind == "contacts" and companies:
        raise ValueError("company descriptors cannot be researched as contacts")
    if kind == "companies" and contacts:
        raise ValueError("contact descriptors cannot be researched as companies")
    keys = [f"sr:{sid.strip()}" for sid in search_result_ids if sid.strip()]
    for contact in contacts:
        if url := _text(contact, "linkedin_url", "liProfileUrl"):
            keys.append(f"li:{_norm_linkedin(url)}")
        if email := _text(contact, "email"):
            keys.append(f"email:{email.lower()}")
        if name := _text(contact, "name", "contactName"):
            if org := _text(contact, "company", "companyName"):
                keys.append(f"name:{_norm_name(name)}|{_norm_name(org)}")
            if (domain := _text(contact, "domain")) and (host := _norm_domain(domain)):
                keys.append(f"name:{_norm_name(name)}|{host}")
    for company in companies:
        if (domain := _text(company, "domain")) and (host := _norm_domain(domain)):
            keys.append(f"domain:{host}")
        if name := _text(company, "name", "companyName"):
            keys.append(f"name:{_norm_name(name)}")
    return list(dict.fromkeys(keys))


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

    job_id: str = Field(description="Our handle: `sea_...` (Seamless) or `seo_...` (AgentSEO).")
    provider: Provider
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
        default_factory=list, description="Seamless requestIds or the AgentSEO jobId."
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
        provider: Provider,
        operation: str,
        tenant: str,
        sandbox: bool,
        params: Mapping[str, Any],
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
        if not self.job_id.startswith(JOB_ID_PREFIXES[self.provider]):
            raise ValueError(
                f"job_id {self.job_id!r} must start with {JOB_ID_PREFIXES[self.provider]!r} "
                f"for provider {self.provider}"
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


class Ledger(Protocol):
    """What the tools need from a job ledger; `SqliteLedger` today, Redis/Postgres later.

    Every read is scoped to a tenant (a key fingerprint): a foreign tenant's job reads as
    absent. Writes address a job by handle, which the caller got from a scoped read or from
    `record_intent`. Timestamps are the ledger's (its clock); `now=` on reads is for tests.
    """

    async def record_intent(self, record: JobRecord, *, budget: int | None = None) -> JobRecord:
        """Insert `record` as an intent (state `unknown`, raw status `submitting`), durably.

        With `budget`, refuse with `BudgetExceeded` (and insert nothing) when this Seamless
        job's `credits_requested` would take today's spend above it. Returns what was stored.
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
        provider: Provider | None = None,
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

    async def credits_spent_today(
        self, *, tenant: str | None = None, sandbox: bool | None = None, now: datetime | None = None
    ) -> int:
        """Credits requested by Seamless jobs since UTC midnight, rejected submits excluded."""
        ...

    async def budget_resets_at(self, now: datetime | None = None) -> datetime:
        """When today's budget resets: the next UTC midnight."""
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


# --------------------------------------------------------------------------------------------
# Schema and migrations


def _migration_v1(conn: sqlite3.Connection) -> None:
    """The first schema: jobs, their upstream ids and their target keys."""
    conn.execute(
        """
        CREATE TABLE jobs (
            seq INTEGER PRIMARY KEY,
            job_id TEXT NOT NULL UNIQUE,
            tenant TEXT NOT NULL,
            provider TEXT NOT NULL,
            operation TEXT NOT NULL,
            sandbox INTEGER NOT NULL,
            params TEXT NOT NULL,
            params_fingerprint TEXT NOT NULL,
            credits_requested INTEGER NOT NULL,
            credits_seen INTEGER,
            state TEXT NOT NULL,
            raw_status TEXT,
            snapshot TEXT,
            result TEXT,
            error TEXT,
            warnings TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            finished_at TEXT,
            next_check_at TEXT
        )
        """
    )
    conn.execute("CREATE INDEX jobs_by_tenant ON jobs (tenant, created_at)")
    conn.execute("CREATE INDEX jobs_by_created ON jobs (created_at)")
    conn.execute(
        "CREATE INDEX jobs_open ON jobs (created_at) "
        "WHERE state IN ('queued', 'running', 'unknown')"
    )
    conn.execute(
        """
        CREATE TABLE job_upstream_ids (
            job_seq INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            upstream_id TEXT NOT NULL,
            PRIMARY KEY (job_seq, position)
        )
        """
    )
    conn.execute("CREATE INDEX job_upstream_ids_by_id ON job_upstream_ids (upstream_id)")
    conn.execute(
        """
        CREATE TABLE job_targets (
            job_seq INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            target TEXT NOT NULL,
            PRIMARY KEY (job_seq, position)
        )
        """
    )
    conn.execute("CREATE INDEX job_targets_by_target ON job_targets (target)")


_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_migration_v1,)
"""Migration N (1-based) takes the schema from version N-1 to N. Append; never edit or reorder."""

SCHEMA_VERSION: Final = len(_MIGRATIONS)


def _identity(conn: sqlite3.Connection) -> tuple[int, int, bool]:
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE substr(name, 1, 7) <> 'sqlite_'"
    ).fetchone()[0]
    return app_id, version, bool(tables)


def _check_identity(conn: sqlite3.Connection, path: Path, known: int) -> int:
    """The schema version of a file that is ours (or empty); LedgerError for anything else."""
    app_id, version, has_tables = _identity(conn)
    if app_id == _APPLICATION_ID:
        if version > known:
            detail = f"has schema version {version}, but this jobrelay knows versions up to {known}"
            raise LedgerError(
                _problem_message("too_new", path, detail, 0), path=path, problem="too_new"
            )
        return version
    if app_id == 0 and version == 0 and not has_tables:
        return 0
    detail = f"application_id {app_id:#x}, user_version {version}, with tables of its own"
    raise LedgerError(
        _problem_message("not_a_ledger", path, detail, 0), path=path, problem="not_a_ledger"
    )


def _migrate(
    conn: sqlite3.Connection, path: Path, migrations: Sequence[Callable[[sqlite3.Connection], None]]
) -> None:
    # BEGIN IMMEDIATE also proves at open that we can take the write lock within busy_timeout,
    # and serialises two processes opening a fresh file at once (the second sees version N).
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _check_identity(conn, path, len(migrations))
        for number in range(version + 1, len(migrations) + 1):
            try:
                migrations[number - 1](conn)
            except sqlite3.Error as exc:
                detail = f"version {number - 1} to {number}: {exc}"
                raise LedgerError(
                    _problem_message("migration_failed", path, detail, 0),
                    path=path,
                    problem="migration_failed",
                ) from exc
            conn.execute(f"PRAGMA user_version = {number:d}")
        if version == 0:
            conn.execute(f"PRAGMA application_id = {_APPLICATION_ID:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _prepare(conn: sqlite3.Connection, path: Path, busy_timeout: float) -> None:
    """Check, then migrate. Nothing here writes to a file it is about to refuse."""
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    _check_identity(conn, path, len(_MIGRATIONS))  # read-only checks first
    problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        detail = "; ".join(problems[:3])
        raise LedgerError(
            _problem_message("corrupt", path, detail, busy_timeout), path=path, problem="corrupt"
        )
    mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
    if mode != "wal":
        detail = f"cannot use WAL, journal_mode is {mode}"
        raise LedgerError(
            _problem_message("io", path, detail, busy_timeout), path=path, problem="io"
        )
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA cache_size = -{_PAGE_CACHE_KIB:d}")
    _migrate(conn, path, _MIGRATIONS)


def check_ledger_location(
    raw_path: str | os.PathLike[str], busy_timeout: float = DEFAULT_BUSY_TIMEOUT
) -> Path:
    """Can the ledger live at `raw_path`? Raise `LedgerError` ("unwritable") when not.

    The one location check `jobrelay serve` and `jobrelay doctor` share. It leaves nothing
    behind: for a file that does not exist yet it creates the missing directories and a
    scratch file the way the first start would, then removes them again. An existing file is
    only looked at (opening it is `SqliteLedger.open`'s job).
    """
    path = Path(raw_path).expanduser()

    def refuse(detail: str) -> LedgerError:
        return LedgerError(
            _problem_message("unwritable", path, detail, busy_timeout),
            path=path,
            problem="unwritable",
        )

    try:
        if path.is_dir():
            raise LedgerError(
                f"JOBRELAY_DB={path} is a directory. Fix: point JOBRELAY_DB at a file inside "
                f"it, e.g. {path / 'jobs.sqlite3'}.",
                path=path,
                problem="unwritable",
            )
        if path.exists():
            if not os.access(path, os.R_OK | os.W_OK):
                raise refuse("permission denied: the file is not readable and writable")
            return path
        missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    except OSError as exc:
        raise refuse(f"cannot look at it: {exc.strerror or exc}") from exc
    made: list[Path] = []
    try:
        for directory in reversed(missing):
            directory.mkdir()
            made.append(directory)
        fd, scratch = tempfile.mkstemp(prefix=".jobrelay-check-", dir=path.parent)
        os.close(fd)
        Path(scratch).unlink()
    except OSError as exc:
        where = made[-1] if made else (missing[-1] if missing else path.parent)
        raise refuse(f"cannot create files in {where}: {exc.strerror or exc}") from exc
    finally:
        for directory in reversed(made):
            with contextlib.suppress(OSError):
                directory.rmdir()
    return path


def _open_connection(
    raw_path: str | os.PathLike[str], busy_timeout: float
) -> tuple[sqlite3.Connection, Path]:
    """Create the directory, open the file, check and migrate it (in a worker thread)."""
    path = check_ledger_location(raw_path, busy_timeout)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        detail = f"cannot create directory {path.parent}: {exc.strerror or exc}"
        raise LedgerError(
            _problem_message("unwritable", path, detail, busy_timeout),
            path=path,
            problem="unwritable",
        ) from exc
    try:
        conn = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise _ledger_error(exc, path, busy_timeout) from exc
    try:
        _prepare(conn, path, busy_timeout)
    except sqlite3.Error as exc:
        conn.close()
        raise _ledger_error(exc, path, busy_timeout) from exc
    except BaseException:
        conn.close()
        raise
    return conn, path


def _open_reader(path: Path) -> sqlite3.Connection:
    """The loop thread's read-only connection to an already prepared ledger file.

    `timeout=0`: a busy answer comes back at once instead of blocking the event loop.
    """
    reader = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    try:
        reader.row_factory = sqlite3.Row
        reader.execute("PRAGMA query_only = ON")
        reader.execute(f"PRAGMA cache_size = -{_PAGE_CACHE_KIB:d}")
    except BaseException:
        reader.close()
        raise
    return reader


# --------------------------------------------------------------------------------------------
# Row mapping


def _iso(value: datetime | None) -> str | None:
    """Fixed-width ISO-8601 UTC, so that text order is time order in SQL comparisons."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _dumps(value: object) -> str | None:
    return None if value is None else _encode(value, depth=2)


def _encode(value: object, *, depth: int) -> str:
    """`json.dumps(value)` (compact, UTF-8 kept), encoded a member at a time at the outer
    `depth` levels. CPython's encoder keeps every fragment of one call alive until it joins
    them, about five times the text: a finished research job's 100 records are ~450 KB of
    JSON and took 2.2 MB to encode in one call, 0.9 MB this way, at the same speed."""
    if depth and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        members = [f"{_ENCODER.encode(k)}:{_encode(v, depth=depth - 1)}" for k, v in value.items()]
        return "{" + ",".join(members) + "}"
    if depth and isinstance(value, list | tuple):
        return "[" + ",".join([_encode(v, depth=depth - 1) for v in value]) + "]"
    return _ENCODER.encode(value)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _error_dict(error: ErrorLike) -> JsonDict:
    if isinstance(error, BaseModel):
        return error.model_dump(mode="json")
    parsed = json.loads(json.dumps(dict(error)))  # a JSON-clean copy; TypeError if it is not
    if not isinstance(parsed, dict):  # pragma: no cover - a Mapping always dumps to an object
        raise TypeError("error must be a JSON object")
    return parsed


def _to_record(conn: sqlite3.Connection, row: sqlite3.Row) -> tuple[int, JobRecord]:
    seq = int(row["seq"])
    upstream = [
        r[0]
        for r in conn.execute(
            "SELECT upstream_id FROM job_upstream_ids WHERE job_seq = ? ORDER BY position", (seq,)
        )
    ]
    targets = [
        r[0]
        for r in conn.execute(
            "SELECT target FROM job_targets WHERE job_seq = ? ORDER BY position", (seq,)
        )
    ]
    record = JobRecord.model_validate(
        {
            "job_id": row["job_id"],
            "provider": row["provider"],
            "operation": row["operation"],
            "tenant": row["tenant"],
            "sandbox": bool(row["sandbox"]),
            "params": json.loads(row["params"]),
            "targets": targets,
            "upstream_ids": upstream,
            "credits_requested": row["credits_requested"],
            "credits_seen": row["credits_seen"],
            "state": row["state"],
            "raw_status": row["raw_status"],
            "snapshot": _loads(row["snapshot"]),
            "result": _loads(row["result"]),
            "error": _loads(row["error"]),
            "warnings": json.loads(row["warnings"]),
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "finished_at": row["finished_at"],
            "next_check_at": row["next_check_at"],
        }
    )
    return seq, record


def _replace_children(
    conn: sqlite3.Connection, seq: int, table: Literal["upstream", "targets"], values: list[str]
) -> None:
    if table == "upstream":
        conn.execute("DELETE FROM job_upstream_ids WHERE job_seq = ?", (seq,))
        conn.executemany(
            "INSERT INTO job_upstream_ids (job_seq, position, upstream_id) VALUES (?, ?, ?)",
            [(seq, i, v) for i, v in enumerate(values)],
        )
    else:
        conn.execute("DELETE FROM job_targets WHERE job_seq = ?", (seq,))
        conn.executemany(
            "INSERT INTO job_targets (job_seq, position, target) VALUES (?, ?, ?)",
            [(seq, i, v) for i, v in enumerate(values)],
        )


def _insert(conn: sqlite3.Connection, rec: JobRecord) -> None:
    try:
        cursor = conn.execute(
            """
            INSERT INTO jobs (job_id, tenant, provider, operation, sandbox, params,
                params_fingerprint, credits_requested, credits_seen, state, raw_status, snapshot,
                result, error, warnings, created_at, updated_at, finished_at, next_check_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            (
                rec.job_id,
                rec.tenant,
                rec.provider,
                rec.operation,
                int(rec.sandbox),
                _dumps(rec.params),
                rec.params_fingerprint,
                rec.credits_requested,
                rec.credits_seen,
                rec.state.value,
                rec.raw_status,
                _dumps(rec.snapshot),
                _dumps(rec.result),
                _dumps(rec.error),
                _dumps(rec.warnings),
                _iso(rec.created_at),
                _iso(rec.updated_at),
                _iso(rec.finished_at),
                _iso(rec.next_check_at),
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise ValueError(f"job {rec.job_id} is already in the ledger") from exc
    seq = cursor.lastrowid
    if seq is None:
        raise AssertionError("an INSERT into a rowid table always has a rowid")
    _replace_children(conn, seq, "upstream", rec.upstream_ids)
    _replace_children(conn, seq, "targets", rec.targets)


def _rewrite(conn: sqlite3.Connection, seq: int, old: JobRecord, new: JobRecord) -> None:
    """Store the mutable columns of `new` (identity, params and targets never change)."""
    conn.execute(
        """
        UPDATE jobs SET credits_seen = ?, state = ?, raw_status = ?, snapshot = ?, result = ?,
            error = ?, warnings = ?, updated_at = ?, finished_at = ?, next_check_at = ?
        WHERE seq = ?
        """,
        (
            new.credits_seen,
            new.state.value,
            new.raw_status,
            _dumps(new.snapshot),
            _dumps(new.result),
            _dumps(new.error),
            _dumps(new.warnings),
            _iso(new.updated_at),
            _iso(new.finished_at),
            _iso(new.next_check_at),
            seq,
        ),
    )
    if new.upstream_ids != old.upstream_ids:
        _replace_children(conn, seq, "upstream", new.upstream_ids)


def _one(conn: sqlite3.Connection, sql: str, args: Sequence[object]) -> JobRecord | None:
    row = conn.execute(sql, args).fetchone()
    return None if row is None else _to_record(conn, row)[1]


def _many(conn: sqlite3.Connection, sql: str, args: Mapping[str, object]) -> list[JobRecord]:
    return [_to_record(conn, row)[1] for row in conn.execute(sql, args).fetchall()]


_BY_UPSTREAM_ID = """
    SELECT j.* FROM jobs j JOIN job_upstream_ids u ON u.job_seq = j.seq
    WHERE u.upstream_id = ? AND j.tenant = ?
    ORDER BY j.created_at DESC, j.seq DESC LIMIT 1
"""


def _spent(
    conn: sqlite3.Connection, start: datetime, tenant: str | None, sandbox: bool | None
) -> int:
    row = conn.execute(
        """
        SELECT coalesce(sum(credits_requested), 0) FROM jobs
        WHERE provider = 'seamless' AND created_at >= :start AND created_at < :end
            AND raw_status IS NOT 'rejected'
            AND (:tenant IS NULL OR tenant = :tenant)
            AND (:sandbox IS NULL OR sandbox = :sandbox)
        """,
        {
            "start": _iso(start),
            "end": _iso(start + timedelta(days=1)),
            "tenant": tenant,
            "sandbox": None if sandbox is None else int(sandbox),
        },
    ).fetchone()
    return int(row[0])


def _budget_refusal(spent: int, budget: int, requested: int, now: datetime) -> BudgetExceeded:
    resets_at = next_utc_midnight(now)
    resets_in = (resets_at - now).total_seconds()
    return BudgetExceeded(
        f"This research needs {requested} credit(s), but {spent} of today's budget of {budget} "
        f"(JOBRELAY_CREDIT_BUDGET) are already spent or reserved. The budget resets at "
        f"{resets_at:%Y-%m-%dT%H:%M:%SZ} (in {format_duration(resets_in)}).",
        spent=spent,
        budget=budget,
        requested=requested,
        resets_in=resets_in,
    )


# --------------------------------------------------------------------------------------------
# SQLite implementation


class SqliteLedger:
    """The job ledger in one SQLite file (WAL). Open with `async with SqliteLedger.open(path)`."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, clock: Clock, busy_timeout: float
    ) -> None:
        """Use `SqliteLedger.open`: it creates, checks and migrates the file first."""
        self._conn: sqlite3.Connection | None = conn
        self._reader: sqlite3.Connection | None = None
        self._path = path
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._lock = anyio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        clock: Clock | None = None,
    ) -> AsyncIterator[SqliteLedger]:
        """Open (creating directories and file as needed), check and migrate the ledger.

        Raises `LedgerError` for a damaged or foreign file, a schema newer than this code, a
        write lock held by another process for more than `busy_timeout` seconds, or a path that
        cannot be written. The ledger is closed when the block exits.
        """
        conn, resolved = await anyio.to_thread.run_sync(_open_connection, path, busy_timeout)
        ledger = cls(conn, resolved, clock or SystemClock(), busy_timeout)
        try:
            ledger._reader = await anyio.to_thread.run_sync(_open_reader, resolved)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await ledger.close()
            raise
        try:
            yield ledger
        finally:
            with anyio.CancelScope(shield=True):
                await ledger.close()

    @property
    def path(self) -> Path:
        return self._path

    async def close(self) -> None:
        """Close the connection (idempotent); later calls raise `LedgerError`."""
        async with self._lock:
            conn, self._conn = self._conn, None
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.close()
            if conn is not None:
                await anyio.to_thread.run_sync(conn.close)

    # -- plumbing ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.time(), UTC)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise LedgerError(
                    _problem_message("closed", self._path, "", self._busy_timeout),
                    path=self._path,
                    problem="closed",
                )
            return await anyio.to_thread.run_sync(self._guarded, fn, conn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A point read on the loop thread (see the module docstring), else via `_run`."""
        reader = self._reader
        if reader is not None and self._conn is not None:
            try:
                return self._snapshot(fn)(reader)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise _ledger_error(exc, self._path, self._busy_timeout) from exc
                if reader.in_transaction:
                    reader.rollback()
            except sqlite3.Error as exc:
                raise _ledger_error(exc, self._path, self._busy_timeout) from exc
        return await self._run(self._snapshot(fn))

    def _guarded(self, fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            raise _ledger_error(exc, self._path, self._busy_timeout) from exc

    @staticmethod
    def _transaction(
        fn: Callable[[sqlite3.Connection], T], *, durable: bool = False
    ) -> Callable[[sqlite3.Connection], T]:
        """Run `fn` in one IMMEDIATE transaction; `durable` fsyncs the WAL on commit."""

        def run(conn: sqlite3.Connection) -> T:
            if durable:
                conn.execute("PRAGMA synchronous = FULL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return out
            finally:
                if durable:
                    conn.execute("PRAGMA synchronous = NORMAL")

        return run

    @staticmethod
    def _snapshot(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
        """Run several reads on one consistent snapshot of the file."""

        def run(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        return run

    async def _mutate(
        self, job_id: str, change: Callable[[JobRecord], JobRecord], *, durable: bool
    ) -> JobRecord:
        now = self._now()

        def apply(conn: sqlite3.Connection) -> JobRecord:
            row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                raise UnknownJob(f"No job {job_id} in the ledger.", job_id=job_id)
            seq, old = _to_record(conn, row)
            new = change(old)
            if old.state.terminal and not new.state.terminal:
                _log.debug("ignored stale %s for finished job %s", new.state.value, job_id)
                return old
            new = new.model_copy(
                update={
                    "updated_at": now,
                    "finished_at": (old.finished_at or now) if new.state.terminal else None,
                    "next_check_at": None if new.state.terminal else new.next_check_at,
                }
            )
            _rewrite(conn, seq, old, new)
            return new

        return await self._run(self._transaction(apply, durable=durable))

    # -- writes -----------------------------------------------------------------------------

    async def record_intent(self, record: JobRecord, *, budget: int | None = None) -> JobRecord:
        now = self._now()
        stored = record.model_copy(
            update={
                "state": JobState.UNKNOWN,
                "raw_status": RAW_SUBMITTING,
                "created_at": now,
                "updated_at": now,
                "finished_at": None,
            }
        )

        def insert(conn: sqlite3.Connection) -> JobRecord:
            if budget is not None and stored.provider == "seamless":
                spent = _spent(conn, _utc_day_start(now), None, stored.sandbox)
                if spent + stored.credits_requested > budget:
                    raise _budget_refusal(spent, budget, stored.credits_requested, now)
            _insert(conn, stored)
            return stored

        return await self._run(self._transaction(insert, durable=True))

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
        if not upstream_ids:
            raise ValueError("an accepted submit has at least one upstream id")
        ids = list(dict.fromkeys(upstream_ids))

        def change(old: JobRecord) -> JobRecord:
            return old.model_copy(
                update={
                    "upstream_ids": ids,
                    "state": state,
                    "raw_status": raw_status,
                    "snapshot": old.snapshot if snapshot is None else snapshot,
                    "result": old.result if result is None else result,
                    "credits_seen": old.credits_seen if credits_seen is None else credits_seen,
                    "next_check_at": next_check_at,
                    "error": None,
                }
            )

        return await self._mutate(job_id, change, durable=True)

    async def fail_submit(
        self, job_id: str, *, error: ErrorLike, processed: Literal["no", "maybe"]
    ) -> JobRecord:
        details = _error_dict(error)
        state = JobState.FAILED if processed == "no" else JobState.UNKNOWN
        raw = RAW_REJECTED if processed == "no" else RAW_OUTCOME_UNKNOWN

        def change(old: JobRecord) -> JobRecord:
            return old.model_copy(update={"state": state, "raw_status": raw, "error": details})

        return await self._mutate(job_id, change, durable=True)

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
        details = None if error is None else _error_dict(error)

        def change(old: JobRecord) -> JobRecord:
            return old.model_copy(
                update={
                    "state": state,
                    "raw_status": raw_status,
                    "snapshot": old.snapshot if snapshot is None else snapshot,
                    "result": old.result if result is None else result,
                    "error": old.error if details is None else details,
                    "credits_seen": old.credits_seen if credits_seen is None else credits_seen,
                    "next_check_at": old.next_check_at if next_check_at is None else next_check_at,
                    "warnings": list(dict.fromkeys([*old.warnings, *add_warnings])),
                }
            )

        return await self._mutate(job_id, change, durable=False)

    # -- reads ------------------------------------------------------------------------------

    async def get(self, job_id: str, *, tenant: str) -> JobRecord | None:
        def read(conn: sqlite3.Connection) -> JobRecord | None:
            return _one(
                conn, "SELECT * FROM jobs WHERE job_id = ? AND tenant = ?", (job_id, tenant)
            )

        return await self._read(read)

    async def find_by_upstream_id(self, upstream_id: str, *, tenant: str) -> JobRecord | None:
        def read(conn: sqlite3.Connection) -> JobRecord | None:
            return _one(conn, _BY_UPSTREAM_ID, (upstream_id, tenant))

        return await self._read(read)

    async def lookup(self, ids: Sequence[str], *, tenant: str) -> dict[str, JobRecord]:
        def read(conn: sqlite3.Connection) -> dict[str, JobRecord]:
            found: dict[str, JobRecord] = {}
            for value in dict.fromkeys(ids):
                record = _one(
                    conn, "SELECT * FROM jobs WHERE job_id = ? AND tenant = ?", (value, tenant)
                ) or _one(conn, _BY_UPSTREAM_ID, (value, tenant))
                if record is not None:
                    found[value] = record
            return found

        return await self._read(read)

    async def list(
        self,
        *,
        tenant: str,
        provider: Provider | None = None,
        state: JobState | None = None,
        since_hours: float | None = None,
        limit: int = 20,
        offset: int = 0,
        now: datetime | None = None,
    ) -> builtins.list[JobRecord]:
        if limit < 1 or offset < 0:
            raise ValueError("limit must be >= 1 and offset >= 0")
        since = None
        if since_hours is not None:
            since = _iso((now or self._now()) - timedelta(hours=since_hours))
        args = {
            "tenant": tenant,
            "provider": provider,
            "state": None if state is None else state.value,
            "since": since,
            "limit": limit,
            "offset": offset,
        }

        def read(conn: sqlite3.Connection) -> builtins.list[JobRecord]:
            return _many(
                conn,
                """
                SELECT * FROM jobs
                WHERE tenant = :tenant
                    AND (:provider IS NULL OR provider = :provider)
                    AND (:state IS NULL OR state = :state)
                    AND (:since IS NULL OR created_at >= :since)
                ORDER BY created_at DESC, seq DESC
                LIMIT :limit OFFSET :offset
                """,
                args,
            )

        return await self._run(self._snapshot(read))

    async def nonterminal(self, *, tenant: str | None = None) -> builtins.list[JobRecord]:
        def read(conn: sqlite3.Connection) -> builtins.list[JobRecord]:
            return _many(
                conn,
                """
                SELECT * FROM jobs
                WHERE state IN ('queued', 'running', 'unknown')
                    AND (:tenant IS NULL OR tenant = :tenant)
                ORDER BY created_at, seq
                """,
                {"tenant": tenant},
            )

        return await self._run(self._snapshot(read))

    async def credits_spent_today(
        self, *, tenant: str | None = None, sandbox: bool | None = None, now: datetime | None = None
    ) -> int:
        start = _utc_day_start(now or self._now())
        return await self._run(lambda conn: _spent(conn, start, tenant, sandbox))

    async def budget_resets_at(self, now: datetime | None = None) -> datetime:
        return next_utc_midnight(now or self._now())

    async def recent_targets(
        self,
        keys: Sequence[str],
        *,
        tenant: str,
        within_days: float = 30,
        now: datetime | None = None,
    ) -> dict[str, str]:
        until = now or self._now()
        window = {"tenant": tenant, "from": _iso(until - timedelta(days=within_days))}
        window["until"] = _iso(until)

        def read(conn: sqlite3.Connection) -> dict[str, str]:
            found: dict[str, str] = {}
            for key in dict.fromkeys(keys):
                row = conn.execute(
                    """
                    SELECT j.job_id FROM job_targets t JOIN jobs j ON j.seq = t.job_seq
                    WHERE t.target = :key AND j.tenant = :tenant
                        AND j.created_at >= :from AND j.created_at <= :until
                        AND j.raw_status IS NOT 'rejected'
                    ORDER BY j.created_at DESC, j.seq DESC LIMIT 1
                    """,
                    {**window, "key": key},
                ).fetchone()
                if row is not None:
                    found[key] = str(row[0])
            return found

        return await self._run(self._snapshot(read))


if TYPE_CHECKING:

    def _conforms(ledger: SqliteLedger) -> Ledger:
        return ledger  # mypy proves SqliteLedger satisfies the Ledger protocol
