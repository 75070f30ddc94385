"""The job ledger in PostgreSQL: `PostgresLedger`, chosen when JOBRELAY_DB is a postgresql:// URL.

Every replica behind a load balancer names the same database, so a job started on one is
followed, listed and budgeted on all (issue 17). Same contract as `SqliteLedger`, same
guarantees, PostgreSQL's way:

- **Intent before action.** `record_intent`, `complete_submit` and `fail_submit` commit with
  `synchronous_commit = on` (the WAL is flushed before the commit returns, whatever the
  server's default); status updates with `synchronous_commit = off`, the analogue of SQLite's
  `synchronous=NORMAL` (a crash loses at most the latest snapshot, never a committed intent).
- **The budget holds across replicas.** `record_intent(budget=)` takes a transaction-scoped
  advisory lock before it sums today's spend, so concurrent starts queue instead of
  overshooting; other writes never take it.
- **Terminal states are sticky**: every write reads the row `FOR UPDATE` first.
- **Migrations**: the table `jobrelay_schema` holds the application name and the number of
  migrations applied; each migration runs in the transaction that bumps it, under an advisory
  lock, so two replicas starting at once migrate once. A schema with a `jobs` table that is not
  ours, or a version newer than this code, is refused with `LedgerError` and left untouched.
  The schema is the connection's `search_path` (put `?options=-csearch_path%3Dname` in the URL
  to use another than `public`).

Why psycopg 3 (with psycopg_pool) rather than asyncpg: it ships type annotations (mypy strict
checks every call), its pool checks connections and reconnects after a server restart, and
it runs on any asyncio loop with plain SQL parameters; asyncpg is faster per query, which a
ledger doing a few writes per job does not need.

Rows: JSON columns are text encoded by the SQLite backend's encoder, upstream ids and target
keys are text arrays with GIN indexes, times are `timestamptz`.
"""

from __future__ import annotations

import builtins
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

from mcp_server._clock import Clock, SystemClock
from mcp_server.config import url_for_display
from mcp_server.errors import UnknownJob
from mcp_server.ledger._sqlite_rows import _budget_refusal, _dumps, record_from_row
from mcp_server.ledger._writes import WriteRules, as_intent, stamped
from mcp_server.ledger.base import (
    CREDIT_BUDGET_PROVIDERS,
    JobRecord,
    JsonDict,
    Ledger,
    LedgerError,
    LedgerProblem,
    next_utc_midnight,
    utc_day_start,
)
from mcp_server.models import JobState

if TYPE_CHECKING:
    from psycopg.rows import DictRow
    from psycopg_pool import AsyncConnectionPool

__all__ = ["SCHEMA_VERSION", "PostgresLedger"]

T = TypeVar("T")

_APPLICATION: Final = "jobrelay-ledger"
_MIGRATION_LOCK: Final = 0x4A524C59  # "JRLY", as the SQLite file's application_id
_BUDGET_LOCK: Final = 0x4A524C5A
_CONNECT_TIMEOUT: Final = 10.0

_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE jobs (
            seq bigserial PRIMARY KEY,
            job_id text NOT NULL UNIQUE,
            tenant text NOT NULL,
            provider text NOT NULL,
            operation text NOT NULL,
            sandbox boolean NOT NULL,
            params text NOT NULL,
            params_fingerprint text NOT NULL,
            credits_requested integer NOT NULL,
            credits_seen integer,
            state text NOT NULL,
            raw_status text,
            snapshot text,
            result text,
            error text,
            warnings text NOT NULL,
            upstream_ids text[] NOT NULL DEFAULT '{}',
            targets text[] NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            finished_at timestamptz,
            next_check_at timestamptz
        )
        """,
        "CREATE INDEX jobs_by_tenant ON jobs (tenant, created_at)",
        "CREATE INDEX jobs_by_created ON jobs (created_at)",
        "CREATE INDEX jobs_open ON jobs (created_at) "
        "WHERE state IN ('queued', 'running', 'unknown')",
        "CREATE INDEX jobs_by_upstream_id ON jobs USING gin (upstream_ids)",
        "CREATE INDEX jobs_by_target ON jobs USING gin (targets)",
    ),
    (
        # MCP tasks (issue 16): per-ledger secrets, and one row per task beside its job.
        "CREATE TABLE ledger_secrets (name text PRIMARY KEY, value bytea NOT NULL)",
        """
        CREATE TABLE tasks (
            task_id text PRIMARY KEY,
            job_id text NOT NULL,
            terminal boolean NOT NULL,
            expires_at double precision,
            data text NOT NULL
        )
        """,
        "CREATE INDEX tasks_by_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL",
    ),
)
"""Migration N (1-based) takes the schema from version N-1 to N. Append; never edit or reorder."""

SCHEMA_VERSION: Final = len(_MIGRATIONS)

_COLUMNS: Final = (
    "job_id, tenant, provider, operation, sandbox, params, params_fingerprint, "
    "credits_requested, credits_seen, state, raw_status, snapshot, result, error, warnings, "
    "upstream_ids, targets, created_at, updated_at, finished_at, next_check_at"
)
_INSERT: Final = (
    f"INSERT INTO jobs ({_COLUMNS}) VALUES "  # noqa: S608 - fixed column names; values are parameters
    f"({', '.join(f'%({column.strip()})s' for column in _COLUMNS.split(','))})"
)
_BY_UPSTREAM_ID: Final = """
    SELECT * FROM jobs WHERE upstream_ids @> ARRAY[%(id)s]::text[] AND tenant = %(tenant)s
    ORDER BY created_at DESC, seq DESC LIMIT 1
"""


def _problem_message(problem: LedgerProblem, where: str, detail: str) -> str:
    match problem:
        case "not_a_ledger":
            return (
                f"The PostgreSQL database at {where} has a `jobs` table that is not a jobrelay "
                f"ledger ({detail}). jobrelay has not changed it. Point JOBRELAY_DB at another "
                "database, or put the ledger in a schema of its own "
                "(`?options=-csearch_path%3Djobrelay` after creating that schema)."
            )
        case "too_new":
            return (
                f"The job ledger at {where} {detail}: it was written by a newer jobrelay. "
                "jobrelay has not changed it. Upgrade jobrelay, or set JOBRELAY_DB elsewhere."
            )
        case "migration_failed":
            return (
                f"Upgrading the schema of the job ledger at {where} failed ({detail}); the "
                "upgrade was rolled back and no data changed. Report this."
            )
        case "closed":
            return f"The job ledger at {where} is closed."
        case _:
            return (
                f"The job ledger at {where} cannot be reached or used ({detail}). Check that "
                "PostgreSQL runs and accepts this user and database, or set JOBRELAY_DB to a "
                "file to use a local SQLite ledger."
            )


def _row(rec: JobRecord) -> dict[str, Any]:
    return {
        "job_id": rec.job_id,
        "tenant": rec.tenant,
        "provider": rec.provider,
        "operation": rec.operation,
        "sandbox": rec.sandbox,
        "params": _dumps(rec.params),
        "params_fingerprint": rec.params_fingerprint,
        "credits_requested": rec.credits_requested,
        "credits_seen": rec.credits_seen,
        "state": rec.state.value,
        "raw_status": rec.raw_status,
        "snapshot": _dumps(rec.snapshot),
        "result": _dumps(rec.result),
        "error": _dumps(rec.error),
        "warnings": _dumps(rec.warnings),
        "upstream_ids": rec.upstream_ids,
        "targets": rec.targets,
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "finished_at": rec.finished_at,
        "next_check_at": rec.next_check_at,
    }


def _record(row: DictRow) -> JobRecord:
    return record_from_row(row, list(row["upstream_ids"]), list(row["targets"]))


class PostgresLedger(WriteRules):
    """The job ledger in PostgreSQL. Open with `async with PostgresLedger.open(url)`."""

    def __init__(self, pool: AsyncConnectionPool[Any], where: str, clock: Clock) -> None:
        """Use `PostgresLedger.open`: it connects, checks and migrates first."""
        self._pool: AsyncConnectionPool[Any] | None = pool
        self._where = where
        self._clock = clock

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, *, clock: Clock | None = None, max_connections: int = 8
    ) -> AsyncIterator[PostgresLedger]:
        """Connect (a pool of up to `max_connections`), check and migrate the ledger.

        Raises `LedgerError` when the server cannot be reached, the schema holds another
        application's `jobs` table, or its version is newer than this code.
        """
        where = url_for_display(url)
        try:
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool
        except ImportError as exc:
            raise LedgerError(
                f"JOBRELAY_DB names a PostgreSQL database ({where}) but the PostgreSQL client "
                "is not installed. Fix: pip install 'jobrelay[postgres]', or set JOBRELAY_DB "
                "to a file.",
                path=where,
                problem="io",
            ) from exc
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={"row_factory": dict_row, "connect_timeout": int(_CONNECT_TIMEOUT)},
            open=False,
            timeout=_CONNECT_TIMEOUT,
            name="jobrelay-ledger",
        )
        ledger = cls(pool, where, clock or SystemClock())
        try:
            # One plain connection first: a refused or unknown server fails at once with the
            # driver's reason, where the pool would retry until its timeout.
            await ledger._guard(ledger._probe(url))
            await ledger._guard(pool.open(wait=True, timeout=_CONNECT_TIMEOUT))
            await ledger._guard(ledger._migrate())
        except BaseException:
            await pool.close()
            raise
        try:
            yield ledger
        finally:
            await ledger.close()

    @property
    def where(self) -> str:
        """The database URL, password hidden."""
        return self._where

    async def close(self) -> None:
        """Close the pool (idempotent); later calls raise `LedgerError`."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.time(), UTC)

    def _error(self, problem: LedgerProblem, detail: str) -> LedgerError:
        return LedgerError(
            _problem_message(problem, self._where, detail), path=self._where, problem=problem
        )

    async def _guard(self, work: Awaitable[T]) -> T:
        """Await `work`, turning the driver's and the pool's errors into `LedgerError`."""
        import psycopg
        import psycopg_pool

        try:
            return await work
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise self._error("io", str(exc).strip() or type(exc).__name__) from exc
        except psycopg.errors.InsufficientPrivilege as exc:
            raise self._error("unwritable", str(exc).strip()) from exc

    async def _run(self, fn: Callable[[Any], Awaitable[T]], *, durable: bool | None) -> T:
        """Run `fn(conn)` in one transaction. `durable` True: the commit waits for the WAL
        flush; False: it does not (a status update); None: read only."""
        pool = self._pool
        if pool is None:
            raise self._error("closed", "")

        async def work() -> T:
            async with pool.connection() as conn, conn.transaction():
                if durable is not None:
                    commit = "on" if durable else "off"
                    await conn.execute(f"SET LOCAL synchronous_commit = {commit}")
                return await fn(conn)

        return await self._guard(work())

    @staticmethod
    async def _probe(url: str) -> None:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=int(_CONNECT_TIMEOUT))
        await conn.close()

    async def _migrate(self) -> None:
        pool = self._pool
        if pool is None:  # pragma: no cover - only called from open
            raise self._error("closed", "")
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            marker = await (
                await conn.execute("SELECT to_regclass('jobrelay_schema') IS NOT NULL AS ok")
            ).fetchone()
            jobs = await (
                await conn.execute("SELECT to_regclass('jobs') IS NOT NULL AS ok")
            ).fetchone()
            version = 0
            if marker is not None and marker["ok"]:
                row = await (
                    await conn.execute("SELECT application, version FROM jobrelay_schema")
                ).fetchone()
                if row is None or row["application"] != _APPLICATION:
                    raise self._error("not_a_ledger", f"jobrelay_schema holds {row!r}")
                version = int(row["version"])
            elif jobs is not None and jobs["ok"]:
                raise self._error("not_a_ledger", "no jobrelay_schema table beside it")
            if version > SCHEMA_VERSION:
                detail = (
                    f"has schema version {version}, but this jobrelay knows versions up to "
                    f"{SCHEMA_VERSION}"
                )
                raise self._error("too_new", detail)
            if version == 0:
                await conn.execute(
                    "CREATE TABLE jobrelay_schema (application text NOT NULL, "
                    "version integer NOT NULL)"
                )
                await conn.execute("INSERT INTO jobrelay_schema VALUES (%s, 0)", (_APPLICATION,))
            for number in range(version + 1, SCHEMA_VERSION + 1):
                try:
                    async with conn.transaction():
                        for statement in _MIGRATIONS[number - 1]:
                            await conn.execute(statement)
                except Exception as exc:
                    detail = f"version {number - 1} to {number}: {exc}"
                    raise self._error("migration_failed", detail) from exc
                await conn.execute("UPDATE jobrelay_schema SET version = %s", (number,))

    async def _mutate(
        self, job_id: str, change: Callable[[JobRecord], JobRecord], *, durable: bool
    ) -> JobRecord:
        now = self._now()

        async def apply(conn: Any) -> JobRecord:
            cur = await conn.execute("SELECT * FROM jobs WHERE job_id = %s FOR UPDATE", (job_id,))
            row = await cur.fetchone()
            if row is None:
                raise UnknownJob(f"No job {job_id} in the ledger.", job_id=job_id)
            old = _record(row)
            new = stamped(old, change(old), now)
            if new is None:
                return old
            values = _row(new)
            await conn.execute(
                """
                UPDATE jobs SET credits_seen = %(credits_seen)s, state = %(state)s,
                    raw_status = %(raw_status)s, snapshot = %(snapshot)s, result = %(result)s,
                    error = %(error)s, warnings = %(warnings)s, upstream_ids = %(upstream_ids)s,
                    updated_at = %(updated_at)s, finished_at = %(finished_at)s,
                    next_check_at = %(next_check_at)s
                WHERE job_id = %(job_id)s
                """,
                values,
            )
            return new

        return await self._run(apply, durable=durable)

    async def _spent(
        self,
        conn: Any,
        start: datetime,
        tenant: str | None,
        sandbox: bool | None,
    ) -> int:
        """Credits requested since `start` (one UTC day) by the providers the budget counts."""
        cur = await conn.execute(
            """
            SELECT coalesce(sum(credits_requested), 0) AS spent FROM jobs
            WHERE provider = ANY(%(providers)s)
                AND created_at >= %(start)s AND created_at < %(end)s
                AND raw_status IS DISTINCT FROM 'rejected'
                AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
                AND (%(sandbox)s::boolean IS NULL OR sandbox = %(sandbox)s)
            """,
            {
                "providers": sorted(CREDIT_BUDGET_PROVIDERS),
                "start": start,
                "end": start + timedelta(days=1),
                "tenant": tenant,
                "sandbox": sandbox,
            },
        )
        row = await cur.fetchone()
        return int(row["spent"])

    # -- writes -----------------------------------------------------------------------------

    async def record_intent(self, record: JobRecord, *, budget: int | None = None) -> JobRecord:
        import psycopg

        now = self._now()
        stored = as_intent(record, now)

        async def insert(conn: Any) -> JobRecord:
            if budget is not None and stored.provider in CREDIT_BUDGET_PROVIDERS:
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_BUDGET_LOCK,))
                spent = await self._spent(conn, utc_day_start(now), None, stored.sandbox)
                if spent + stored.credits_requested > budget:
                    raise _budget_refusal(
                        spent, budget, stored.credits_requested, now, stored.provider
                    )
            try:
                await conn.execute(
                    _INSERT,
                    _row(stored),
                )
            except psycopg.errors.UniqueViolation as exc:
                raise ValueError(f"job {stored.job_id} is already in the ledger") from exc
            return stored

        return await self._run(insert, durable=True)

    # -- reads ------------------------------------------------------------------------------

    async def _many(self, sql: str, args: dict[str, Any]) -> builtins.list[JobRecord]:
        async def read(conn: Any) -> builtins.list[JobRecord]:
            cur = await conn.execute(sql, args)
            return [_record(row) for row in await cur.fetchall()]

        return await self._run(read, durable=None)

    async def get(self, job_id: str, *, tenant: str) -> JobRecord | None:
        found = await self._many(
            "SELECT * FROM jobs WHERE job_id = %(id)s AND tenant = %(tenant)s",
            {"id": job_id, "tenant": tenant},
        )
        return found[0] if found else None

    async def find_by_upstream_id(self, upstream_id: str, *, tenant: str) -> JobRecord | None:
        found = await self._many(_BY_UPSTREAM_ID, {"id": upstream_id, "tenant": tenant})
        return found[0] if found else None

    async def lookup(self, ids: Sequence[str], *, tenant: str) -> dict[str, JobRecord]:
        async def read(conn: Any) -> dict[str, JobRecord]:
            found: dict[str, JobRecord] = {}
            for value in dict.fromkeys(ids):
                args = {"id": value, "tenant": tenant}
                cur = await conn.execute(
                    "SELECT * FROM jobs WHERE job_id = %(id)s AND tenant = %(tenant)s", args
                )
                row = await cur.fetchone()
                if row is None:
                    row = await (await conn.execute(_BY_UPSTREAM_ID, args)).fetchone()
                if row is not None:
                    found[value] = _record(row)
            return found

        return await self._run(read, durable=None)

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
        if limit < 1 or offset < 0:
            raise ValueError("limit must be >= 1 and offset >= 0")
        since = None
        if since_hours is not None:
            since = (now or self._now()) - timedelta(hours=since_hours)
        return await self._many(
            """
            SELECT * FROM jobs
            WHERE tenant = %(tenant)s
                AND (%(provider)s::text IS NULL OR provider = %(provider)s)
                AND (%(state)s::text IS NULL OR state = %(state)s)
                AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
            ORDER BY created_at DESC, seq DESC
            LIMIT %(limit)s OFFSET %(offset)s
            """,
            {
                "tenant": tenant,
                "provider": provider,
                "state": None if state is None else state.value,
                "since": since,
                "limit": limit,
                "offset": offset,
            },
        )

    async def nonterminal(self, *, tenant: str | None = None) -> builtins.list[JobRecord]:
        return await self._many(
            """
            SELECT * FROM jobs
            WHERE state IN ('queued', 'running', 'unknown')
                AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
            ORDER BY created_at, seq
            """,
            {"tenant": tenant},
        )

    async def credits_spent_today(
        self, *, tenant: str | None = None, sandbox: bool | None = None, now: datetime | None = None
    ) -> int:
        start = utc_day_start(now or self._now())

        async def read(conn: Any) -> int:
            return await self._spent(conn, start, tenant, sandbox)

        return await self._run(read, durable=None)

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
        window = {"tenant": tenant, "from": until - timedelta(days=within_days), "until": until}

        async def read(conn: Any) -> dict[str, str]:
            found: dict[str, str] = {}
            for key in dict.fromkeys(keys):
                cur = await conn.execute(
                    """
                    SELECT job_id FROM jobs
                    WHERE targets @> ARRAY[%(key)s]::text[] AND tenant = %(tenant)s
                        AND created_at >= %(from)s AND created_at <= %(until)s
                        AND raw_status IS DISTINCT FROM 'rejected'
                    ORDER BY created_at DESC, seq DESC LIMIT 1
                    """,
                    {**window, "key": key},
                )
                row = await cur.fetchone()
                if row is not None:
                    found[key] = str(row["job_id"])
            return found

        return await self._run(read, durable=None)

    # -- MCP tasks --------------------------------------------------------------------------

    async def secret(self, name: str) -> bytes:
        fresh = secrets.token_bytes(32)

        async def get_or_make(conn: Any) -> bytes:
            await conn.execute(
                "INSERT INTO ledger_secrets (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO NOTHING",
                (name, fresh),
            )
            cur = await conn.execute("SELECT value FROM ledger_secrets WHERE name = %s", (name,))
            return bytes((await cur.fetchone())["value"])

        return await self._run(get_or_make, durable=True)

    async def create_task(
        self, task_id: str, *, job_id: str, data: JsonDict, expires_at: float | None
    ) -> JsonDict:
        text = json.dumps(data, separators=(",", ":"))

        async def insert(conn: Any) -> JsonDict:
            await conn.execute(
                "INSERT INTO tasks (task_id, job_id, terminal, expires_at, data) "
                "VALUES (%s, %s, false, %s, %s) ON CONFLICT (task_id) DO NOTHING",
                (task_id, job_id, expires_at, text),
            )
            cur = await conn.execute("SELECT data FROM tasks WHERE task_id = %s", (task_id,))
            stored: JsonDict = json.loads((await cur.fetchone())["data"])
            return stored

        return await self._run(insert, durable=True)

    async def get_task(self, task_id: str) -> JsonDict | None:
        async def read(conn: Any) -> JsonDict | None:
            cur = await conn.execute("SELECT data FROM tasks WHERE task_id = %s", (task_id,))
            row = await cur.fetchone()
            if row is None:
                return None
            data: JsonDict = json.loads(row["data"])
            return data

        return await self._run(read, durable=None)

    async def save_task(self, task_id: str, data: JsonDict, *, terminal: bool) -> JsonDict | None:
        text = json.dumps(data, separators=(",", ":"))

        async def change(conn: Any) -> JsonDict | None:
            await conn.execute(
                "UPDATE tasks SET data = %s, terminal = %s WHERE task_id = %s AND NOT terminal",
                (text, terminal, task_id),
            )
            cur = await conn.execute("SELECT data FROM tasks WHERE task_id = %s", (task_id,))
            row = await cur.fetchone()
            if row is None:
                return None
            stored: JsonDict = json.loads(row["data"])
            return stored

        return await self._run(change, durable=False)

    async def delete_expired_tasks(self, now: float) -> int:
        async def delete(conn: Any) -> int:
            cur = await conn.execute(
                "DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= %s", (now,)
            )
            return int(cur.rowcount)

        return await self._run(delete, durable=False)


if TYPE_CHECKING:

    def _conforms(ledger: PostgresLedger) -> Ledger:
        return ledger  # mypy proves PostgresLedger satisfies the Ledger protocol
