"""The SQLite ledger's job rows: `SqliteJobRows` (the `JobRows` part), records to rows and back."""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from mcp_server.errors import UnknownJob
from mcp_server.ledger._codec import dumps as _dumps
from mcp_server.ledger._codec import record_from_row
from mcp_server.ledger._core import BudgetCheck, Change, JobQuery
from mcp_server.ledger._sqlite_db import SqliteDb, snapshot, transaction
from mcp_server.ledger.base import CREDIT_BUDGET_PROVIDERS, JobRecord
from mcp_server.models import JobState

JOB_COUNTS: Final = "SELECT provider, state, count(*) FROM jobs GROUP BY provider, state"
"""Reads the covering index `jobs_by_provider_state` (migration 3) alone, not the rows."""

# --------------------------------------------------------------------------------------------
# Row mapping


def _iso(value: datetime | None) -> str | None:
    """Fixed-width ISO-8601 UTC, so that text order is time order in SQL comparisons."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    record = record_from_row(row, upstream, targets)
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


_BY_HANDLE = "SELECT * FROM jobs WHERE job_id = ? AND tenant = ?"
_BY_UPSTREAM_ID = """
    SELECT j.* FROM jobs j JOIN job_upstream_ids u ON u.job_seq = j.seq
    WHERE u.upstream_id = ? AND j.tenant = ?
    ORDER BY j.created_at DESC, j.seq DESC LIMIT 1
"""


def _spent(
    conn: sqlite3.Connection,
    start: datetime,
    tenant: str | None,
    sandbox: bool | None,
) -> int:
    """Credits requested since `start` (one UTC day) by the providers the budget counts."""
    row = conn.execute(
        """
        SELECT coalesce(sum(credits_requested), 0) FROM jobs
        WHERE provider IN (SELECT value FROM json_each(:providers))
            AND created_at >= :start AND created_at < :end
            AND raw_status IS NOT 'rejected'
            AND (:tenant IS NULL OR tenant = :tenant)
            AND (:sandbox IS NULL OR sandbox = :sandbox)
        """,
        {
            "providers": json.dumps(sorted(CREDIT_BUDGET_PROVIDERS)),
            "start": _iso(start),
            "end": _iso(start + timedelta(days=1)),
            "tenant": tenant,
            "sandbox": None if sandbox is None else int(sandbox),
        },
    ).fetchone()
    return int(row[0])


class SqliteJobRows:
    """The `jobs`, `job_upstream_ids` and `job_targets` tables of one `SqliteDb`. Point reads
    (`get`, `by_upstream_id`, `lookup`) go through `SqliteDb.read` (on the loop thread)."""

    def __init__(self, db: SqliteDb) -> None:
        self._db = db

    async def close(self) -> None:
        await self._db.close()

    async def insert(self, record: JobRecord, budget: BudgetCheck | None) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            if budget is not None:
                budget.check(_spent(conn, budget.day, None, budget.sandbox))
            _insert(conn, record)

        await self._db.run(transaction(insert, durable=True))

    async def mutate(self, job_id: str, change: Change, *, durable: bool) -> JobRecord:
        def apply(conn: sqlite3.Connection) -> JobRecord:
            row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                raise UnknownJob(f"No job {job_id} in the ledger.", job_id=job_id)
            seq, old = _to_record(conn, row)
            new = change(old)
            if new is None:
                return old
            _rewrite(conn, seq, old, new)
            return new

        return await self._db.run(transaction(apply, durable=durable))

    async def set_flag(self, job_id: str, key: str, now: datetime) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE jobs SET snapshot = json_set(coalesce(snapshot, '{}'), ?, json('true')),"
                " updated_at = ? WHERE job_id = ?",
                (f"$.{key}", _iso(now), job_id),
            )

        await self._db.run(transaction(write))

    async def get(self, job_id: str, tenant: str) -> JobRecord | None:
        return await self._db.read(lambda conn: _one(conn, _BY_HANDLE, (job_id, tenant)))

    async def by_upstream_id(self, upstream_id: str, tenant: str) -> JobRecord | None:
        return await self._db.read(lambda conn: _one(conn, _BY_UPSTREAM_ID, (upstream_id, tenant)))

    async def lookup(self, ids: Sequence[str], tenant: str) -> dict[str, JobRecord]:
        def read(conn: sqlite3.Connection) -> dict[str, JobRecord]:
            found: dict[str, JobRecord] = {}
            for value in dict.fromkeys(ids):
                record = _one(conn, _BY_HANDLE, (value, tenant)) or _one(
                    conn, _BY_UPSTREAM_ID, (value, tenant)
                )
                if record is not None:
                    found[value] = record
            return found

        return await self._db.read(read)

    async def select(self, query: JobQuery) -> builtins.list[JobRecord]:
        args = {
            "tenant": query.tenant,
            "provider": query.provider,
            "state": None if query.state is None else query.state.value,
            "since": _iso(query.since),
            "limit": query.limit,
            "offset": query.offset,
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

        return await self._db.run(snapshot(read))

    async def nonterminal(self, tenant: str | None) -> builtins.list[JobRecord]:
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

        return await self._db.run(snapshot(read))

    async def spent(self, day: datetime, tenant: str | None, sandbox: bool | None) -> int:
        return await self._db.run(lambda conn: _spent(conn, day, tenant, sandbox))

    async def counts(self) -> dict[tuple[str, JobState], int]:
        def read(conn: sqlite3.Connection) -> dict[tuple[str, JobState], int]:
            rows = conn.execute(JOB_COUNTS).fetchall()
            return {(str(p), JobState(s)): int(n) for p, s, n in rows}

        return await self._db.run(snapshot(read))

    async def recent_targets(
        self, keys: Sequence[str], tenant: str, since: datetime, until: datetime
    ) -> dict[str, str]:
        window = {"tenant": tenant, "from": _iso(since), "until": _iso(until)}

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

        return await self._db.run(snapshot(read))
