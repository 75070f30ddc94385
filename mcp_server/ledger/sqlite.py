"""The job ledger in one SQLite file (WAL): `SqliteLedger`, the `Ledger` backend of today.

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

Schema (`_sqlite_schema.py`): `PRAGMA user_version` is the number of `_MIGRATIONS` applied;
each migration runs in the same transaction that bumps the version. `PRAGMA application_id`
marks the file as a jobrelay ledger, so another program's database is refused rather than
written into.
"""

from __future__ import annotations

import builtins
import json
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.to_thread

from mcp_server._clock import Clock, SystemClock
from mcp_server.errors import UnknownJob
from mcp_server.ledger._sqlite_rows import (
    _BY_UPSTREAM_ID,
    _budget_refusal,
    _insert,
    _iso,
    _many,
    _one,
    _rewrite,
    _spent,
    _to_record,
)
from mcp_server.ledger._sqlite_schema import (
    DEFAULT_BUSY_TIMEOUT,
    _ledger_error,
    _open_connection,
    _open_reader,
    _problem_message,
)
from mcp_server.ledger._writes import WriteRules, as_intent, stamped
from mcp_server.ledger.base import (
    CREDIT_BUDGET_PROVIDERS,
    JobRecord,
    JsonDict,
    Ledger,
    LedgerError,
    next_utc_midnight,
    utc_day_start,
)
from mcp_server.models import JobState

__all__ = ["DEFAULT_BUSY_TIMEOUT", "SqliteLedger"]

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# SQLite implementation


class SqliteLedger(WriteRules):
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
            new = stamped(old, change(old), now)
            if new is None:
                return old
            _rewrite(conn, seq, old, new)
            return new

        return await self._run(self._transaction(apply, durable=durable))

    # -- writes -----------------------------------------------------------------------------

    async def record_intent(self, record: JobRecord, *, budget: int | None = None) -> JobRecord:
        now = self._now()
        stored = as_intent(record, now)

        def insert(conn: sqlite3.Connection) -> JobRecord:
            if budget is not None and stored.provider in CREDIT_BUDGET_PROVIDERS:
                spent = _spent(conn, utc_day_start(now), None, stored.sandbox)
                if spent + stored.credits_requested > budget:
                    raise _budget_refusal(
                        spent, budget, stored.credits_requested, now, stored.provider
                    )
            _insert(conn, stored)
            return stored

        return await self._run(self._transaction(insert, durable=True))

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
        start = utc_day_start(now or self._now())
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

    # -- MCP tasks --------------------------------------------------------------------------

    async def secret(self, name: str) -> bytes:
        fresh = secrets.token_bytes(32)

        def get_or_make(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                "INSERT OR IGNORE INTO ledger_secrets (name, value) VALUES (?, ?)", (name, fresh)
            )
            row = conn.execute("SELECT value FROM ledger_secrets WHERE name = ?", (name,))
            return bytes(row.fetchone()[0])

        return await self._run(self._transaction(get_or_make, durable=True))

    async def create_task(
        self, task_id: str, *, job_id: str, data: JsonDict, expires_at: float | None
    ) -> JsonDict:
        text = json.dumps(data, separators=(",", ":"))

        def insert(conn: sqlite3.Connection) -> JsonDict:
            conn.execute(
                "INSERT OR IGNORE INTO tasks (task_id, job_id, terminal, expires_at, data) "
                "VALUES (?, ?, 0, ?, ?)",
                (task_id, job_id, expires_at, text),
            )
            row = conn.execute("SELECT data FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            stored: JsonDict = json.loads(row[0])
            return stored

        return await self._run(self._transaction(insert, durable=True))

    async def get_task(self, task_id: str) -> JsonDict | None:
        def read(conn: sqlite3.Connection) -> JsonDict | None:
            row = conn.execute("SELECT data FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is None:
                return None
            data: JsonDict = json.loads(row[0])
            return data

        return await self._read(read)

    async def save_task(self, task_id: str, data: JsonDict, *, terminal: bool) -> JsonDict | None:
        text = json.dumps(data, separators=(",", ":"))

        def change(conn: sqlite3.Connection) -> JsonDict | None:
            conn.execute(
                "UPDATE tasks SET data = ?, terminal = ? WHERE task_id = ? AND terminal = 0",
                (text, int(terminal), task_id),
            )
            row = conn.execute("SELECT data FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is None:
                return None
            stored: JsonDict = json.loads(row[0])
            return stored

        return await self._run(self._transaction(change))

    async def delete_expired_tasks(self, now: float) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            )
            return int(cursor.rowcount)

        return await self._run(self._transaction(delete))


if TYPE_CHECKING:

    def _conforms(ledger: SqliteLedger) -> Ledger:
        return ledger  # mypy proves SqliteLedger satisfies the Ledger protocol
