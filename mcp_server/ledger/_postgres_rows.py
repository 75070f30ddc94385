"""The PostgreSQL ledger's rows: `PgJobRows` (its `JobRows`) and `PgTaskRows` (its
`TaskLedger`), on one `PgDb`. JSON columns are text encoded by the shared encoder
(`_codec.dumps`), upstream ids and target keys text arrays with GIN indexes, times
`timestamptz`."""

from __future__ import annotations

import builtins
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from mcp_server.errors import UnknownJob
from mcp_server.ledger._codec import dumps, record_from_row, task_data, task_text
from mcp_server.ledger._core import BudgetCheck, Change, JobQuery
from mcp_server.ledger.base import CREDIT_BUDGET_PROVIDERS, JobRecord, JsonDict
from mcp_server.models import JobState

if TYPE_CHECKING:
    from psycopg.rows import DictRow

    from mcp_server.ledger._postgres_db import Conn, PgDb

_BUDGET_LOCK: Final = 0x4A524C5A

_COLUMNS: Final = (
    "job_id, tenant, provider, operation, sandbox, params, params_fingerprint, "
    "credits_requested, credits_seen, state, raw_status, snapshot, result, error, warnings, "
    "upstream_ids, targets, created_at, updated_at, finished_at, next_check_at"
)
_INSERT: Final = (
    f"INSERT INTO jobs ({_COLUMNS}) VALUES "  # noqa: S608 - fixed column names; values are parameters
    f"({', '.join(f'%({column.strip()})s' for column in _COLUMNS.split(','))})"
)
JOB_COUNTS: Final = "SELECT provider, state, count(*) AS n FROM jobs GROUP BY provider, state"
"""An index-only scan of `jobs_by_provider_state` (migration 3) once vacuumed."""
_BY_HANDLE: Final = "SELECT * FROM jobs WHERE job_id = %(id)s AND tenant = %(tenant)s"
_BY_UPSTREAM_ID: Final = """
    SELECT * FROM jobs WHERE upstream_ids @> ARRAY[%(id)s]::text[] AND tenant = %(tenant)s
    ORDER BY created_at DESC, seq DESC LIMIT 1
"""

Value = str | int | bool | datetime | list[str] | None
"""A query parameter."""


def _row(rec: JobRecord) -> dict[str, Value]:
    return {
        "job_id": rec.job_id,
        "tenant": rec.tenant,
        "provider": rec.provider,
        "operation": rec.operation,
        "sandbox": rec.sandbox,
        "params": dumps(rec.params),
        "params_fingerprint": rec.params_fingerprint,
        "credits_requested": rec.credits_requested,
        "credits_seen": rec.credits_seen,
        "state": rec.state.value,
        "raw_status": rec.raw_status,
        "snapshot": dumps(rec.snapshot),
        "result": dumps(rec.result),
        "error": dumps(rec.error),
        "warnings": dumps(rec.warnings),
        "upstream_ids": rec.upstream_ids,
        "targets": rec.targets,
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "finished_at": rec.finished_at,
        "next_check_at": rec.next_check_at,
    }


def _record(row: DictRow) -> JobRecord:
    return record_from_row(row, list(row["upstream_ids"]), list(row["targets"]))


async def _spent(
    conn: Conn,
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
    if row is None:  # pragma: no cover - an aggregate always has a row
        raise AssertionError("sum() returned no row")
    return int(row["spent"])


class PgJobRows:
    """The `jobs` table. Every write reads the row `FOR UPDATE` first."""

    def __init__(self, db: PgDb) -> None:
        self._db = db

    async def close(self) -> None:
        await self._db.close()

    async def insert(self, record: JobRecord, budget: BudgetCheck | None) -> None:
        import psycopg

        async def insert(conn: Conn) -> None:
            if budget is not None:
                # concurrent starts (any replica) queue here instead of overshooting
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_BUDGET_LOCK,))
                budget.check(await _spent(conn, budget.day, None, budget.sandbox))
            try:
                await conn.execute(_INSERT, _row(record))
            except psycopg.errors.UniqueViolation as exc:
                raise ValueError(f"job {record.job_id} is already in the ledger") from exc

        await self._db.run(insert, durable=True)

    async def mutate(self, job_id: str, change: Change, *, durable: bool) -> JobRecord:
        async def apply(conn: Conn) -> JobRecord:
            cur = await conn.execute("SELECT * FROM jobs WHERE job_id = %s FOR UPDATE", (job_id,))
            row = await cur.fetchone()
            if row is None:
                raise UnknownJob(f"No job {job_id} in the ledger.", job_id=job_id)
            old = _record(row)
            new = change(old)
            if new is None:
                return old
            await conn.execute(
                """
                UPDATE jobs SET credits_seen = %(credits_seen)s, state = %(state)s,
                    raw_status = %(raw_status)s, snapshot = %(snapshot)s, result = %(result)s,
                    error = %(error)s, warnings = %(warnings)s, upstream_ids = %(upstream_ids)s,
                    updated_at = %(updated_at)s, finished_at = %(finished_at)s,
                    next_check_at = %(next_check_at)s
                WHERE job_id = %(job_id)s
                """,
                _row(new),
            )
            return new

        return await self._db.run(apply, durable=durable)

    async def set_flag(self, job_id: str, key: str, now: datetime) -> None:
        async def write(conn: Conn) -> None:
            await conn.execute(
                """
                UPDATE jobs SET snapshot = (coalesce(snapshot::jsonb, '{}'::jsonb)
                    || jsonb_build_object(%(key)s::text, true))::text, updated_at = %(now)s
                WHERE job_id = %(job_id)s
                """,
                {"key": key, "now": now, "job_id": job_id},
            )

        await self._db.run(write, durable=False)

    async def _many(self, sql: str, args: dict[str, Value]) -> builtins.list[JobRecord]:
        async def read(conn: Conn) -> builtins.list[JobRecord]:
            cur = await conn.execute(sql, args)
            return [_record(row) for row in await cur.fetchall()]

        return await self._db.run(read, durable=None)

    async def get(self, job_id: str, tenant: str) -> JobRecord | None:
        found = await self._many(_BY_HANDLE, {"id": job_id, "tenant": tenant})
        return found[0] if found else None

    async def by_upstream_id(self, upstream_id: str, tenant: str) -> JobRecord | None:
        found = await self._many(_BY_UPSTREAM_ID, {"id": upstream_id, "tenant": tenant})
        return found[0] if found else None

    async def lookup(self, ids: Sequence[str], tenant: str) -> dict[str, JobRecord]:
        async def read(conn: Conn) -> dict[str, JobRecord]:
            found: dict[str, JobRecord] = {}
            for value in dict.fromkeys(ids):
                args = {"id": value, "tenant": tenant}
                row = await (await conn.execute(_BY_HANDLE, args)).fetchone()
                if row is None:
                    row = await (await conn.execute(_BY_UPSTREAM_ID, args)).fetchone()
                if row is not None:
                    found[value] = _record(row)
            return found

        return await self._db.run(read, durable=None)

    async def select(self, query: JobQuery) -> builtins.list[JobRecord]:
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
                "tenant": query.tenant,
                "provider": query.provider,
                "state": None if query.state is None else query.state.value,
                "since": query.since,
                "limit": query.limit,
                "offset": query.offset,
            },
        )

    async def nonterminal(self, tenant: str | None) -> builtins.list[JobRecord]:
        return await self._many(
            """
            SELECT * FROM jobs
            WHERE state IN ('queued', 'running', 'unknown')
                AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
            ORDER BY created_at, seq
            """,
            {"tenant": tenant},
        )

    async def spent(self, day: datetime, tenant: str | None, sandbox: bool | None) -> int:
        async def read(conn: Conn) -> int:
            return await _spent(conn, day, tenant, sandbox)

        return await self._db.run(read, durable=None)

    async def counts(self) -> dict[tuple[str, JobState], int]:
        async def read(conn: Conn) -> dict[tuple[str, JobState], int]:
            cur = await conn.execute(JOB_COUNTS)
            return {
                (str(row["provider"]), JobState(row["state"])): int(row["n"])
                for row in await cur.fetchall()
            }

        return await self._db.run(read, durable=None)

    async def recent_targets(
        self, keys: Sequence[str], tenant: str, since: datetime, until: datetime
    ) -> dict[str, str]:
        window: dict[str, Value] = {"tenant": tenant, "from": since, "until": until}

        async def read(conn: Conn) -> dict[str, str]:
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

        return await self._db.run(read, durable=None)


_DATA: Final = "SELECT data FROM tasks WHERE task_id = %s"


class PgTaskRows:
    """The `tasks` and `ledger_secrets` tables."""

    def __init__(self, db: PgDb) -> None:
        self._db = db

    async def secret(self, name: str) -> bytes:
        fresh = secrets.token_bytes(32)

        async def get_or_make(conn: Conn) -> bytes:
            await conn.execute(
                "INSERT INTO ledger_secrets (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO NOTHING",
                (name, fresh),
            )
            cur = await conn.execute("SELECT value FROM ledger_secrets WHERE name = %s", (name,))
            row = await cur.fetchone()
            if row is None:  # pragma: no cover - inserted above, or there already
                raise AssertionError("the row just written is gone")
            return bytes(row["value"])

        return await self._db.run(get_or_make, durable=True)

    async def create_task(
        self, task_id: str, *, job_id: str, data: JsonDict, expires_at: float | None
    ) -> JsonDict:
        text = task_text(data)

        async def insert(conn: Conn) -> JsonDict:
            await conn.execute(
                "INSERT INTO tasks (task_id, job_id, terminal, expires_at, data) "
                "VALUES (%s, %s, false, %s, %s) ON CONFLICT (task_id) DO NOTHING",
                (task_id, job_id, expires_at, text),
            )
            row = await (await conn.execute(_DATA, (task_id,))).fetchone()
            if row is None:  # pragma: no cover - inserted above, or there already
                raise AssertionError("the row just written is gone")
            return task_data(row["data"])

        return await self._db.run(insert, durable=True)

    async def get_task(self, task_id: str) -> JsonDict | None:
        async def read(conn: Conn) -> JsonDict | None:
            row = await (await conn.execute(_DATA, (task_id,))).fetchone()
            return None if row is None else task_data(row["data"])

        return await self._db.run(read, durable=None)

    async def save_task(self, task_id: str, data: JsonDict, *, terminal: bool) -> JsonDict | None:
        text = task_text(data)

        async def change(conn: Conn) -> JsonDict | None:
            await conn.execute(
                "UPDATE tasks SET data = %s, terminal = %s WHERE task_id = %s AND NOT terminal",
                (text, terminal, task_id),
            )
            row = await (await conn.execute(_DATA, (task_id,))).fetchone()
            return None if row is None else task_data(row["data"])

        return await self._db.run(change, durable=False)

    async def delete_expired_tasks(self, now: float) -> int:
        async def delete(conn: Conn) -> int:
            cur = await conn.execute(
                "DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= %s", (now,)
            )
            return int(cur.rowcount)

        return await self._db.run(delete, durable=False)
