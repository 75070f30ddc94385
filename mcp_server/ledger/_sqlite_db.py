"""The SQLite ledger's connections: `SqliteDb`, shared by its job rows and its task rows.

- **One connection per ledger**, used from worker threads via `anyio.to_thread.run_sync` and
  serialised by an `anyio.Lock`. In-process callers never contend for SQLite's file lock (only
  other processes do, bounded by `busy_timeout`), pragmas are set once, and waiting tasks queue
  on the lock instead of occupying worker threads. Every write is one `BEGIN IMMEDIATE`
  transaction (`transaction`), so writers from other processes queue instead of failing on a
  lock upgrade.
- **Point reads on the event loop** (`read`): a second, read-only connection used directly on
  the loop thread (see `mcp_server.ledger.sqlite`); a busy answer falls back to `run`.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from mcp_server.ledger._sqlite_schema import (
    _ledger_error,
    _open_connection,
    _open_reader,
    _problem_message,
)
from mcp_server.ledger.base import LedgerError

T = TypeVar("T")

Work = Callable[[sqlite3.Connection], T]


class SqliteDb:
    """The writer connection (worker threads, one at a time) and the loop thread's reader."""

    def __init__(self, conn: sqlite3.Connection, path: Path, busy_timeout: float) -> None:
        """Use `SqliteDb.open`: it creates, checks and migrates the file first."""
        self._conn: sqlite3.Connection | None = conn
        self._reader: sqlite3.Connection | None = None
        self.path = path
        self._busy_timeout = busy_timeout
        self._lock = anyio.Lock()

    @classmethod
    async def open(cls, path: str | os.PathLike[str], busy_timeout: float) -> SqliteDb:
        """Open (creating directories and file as needed), check and migrate the file; then
        the reader. Raises `LedgerError` (see `SqliteLedger.open`)."""
        conn, resolved = await anyio.to_thread.run_sync(_open_connection, path, busy_timeout)
        db = cls(conn, resolved, busy_timeout)
        try:
            db._reader = await anyio.to_thread.run_sync(_open_reader, resolved)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await db.close()
            raise
        return db

    async def close(self) -> None:
        """Close both connections (idempotent); later calls raise `LedgerError`."""
        async with self._lock:
            conn, self._conn = self._conn, None
            reader, self._reader = self._reader, None
            if reader is not None:
                reader.close()
            if conn is not None:
                await anyio.to_thread.run_sync(conn.close)

    async def run(self, fn: Work[T]) -> T:
        """`fn(conn)` on the writer connection in a worker thread, one call at a time."""
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise LedgerError(
                    _problem_message("closed", self.path, "", self._busy_timeout),
                    path=self.path,
                    problem="closed",
                )
            return await anyio.to_thread.run_sync(self._guarded, fn, conn)

    async def read(self, fn: Work[T]) -> T:
        """A point read on the loop thread (see `mcp_server.ledger.sqlite`), else via `run`."""
        reader = self._reader
        if reader is not None and self._conn is not None:
            try:
                return snapshot(fn)(reader)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise _ledger_error(exc, self.path, self._busy_timeout) from exc
                if reader.in_transaction:
                    reader.rollback()
            except sqlite3.Error as exc:
                raise _ledger_error(exc, self.path, self._busy_timeout) from exc
        return await self.run(snapshot(fn))

    def _guarded(self, fn: Work[T], conn: sqlite3.Connection) -> T:
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            raise _ledger_error(exc, self.path, self._busy_timeout) from exc


def transaction(fn: Work[T], *, durable: bool = False) -> Work[T]:
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


def snapshot(fn: Work[T]) -> Work[T]:
    """Run several reads on one consistent snapshot of the file."""

    def run(conn: sqlite3.Connection) -> T:
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    return run
