"""The job ledger in one SQLite file (WAL): `SqliteLedger`.

Composed of parts on one `SqliteDb` (`_sqlite_db.py`): its job rows (`_sqlite_rows.py`), its
task rows and secrets (`_sqlite_tasks.py`), under the rules every backend shares
(`_core.RowLedger`).

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

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from mcp_server._clock import Clock, SystemClock
from mcp_server.ledger._core import RowLedger
from mcp_server.ledger._sqlite_db import SqliteDb
from mcp_server.ledger._sqlite_rows import SqliteJobRows
from mcp_server.ledger._sqlite_schema import DEFAULT_BUSY_TIMEOUT
from mcp_server.ledger._sqlite_tasks import SqliteTaskRows

if TYPE_CHECKING:
    from mcp_server.ledger.base import Ledger

__all__ = ["DEFAULT_BUSY_TIMEOUT", "SqliteLedger"]


class SqliteLedger(RowLedger):
    """The job ledger in one SQLite file (WAL). Open with `async with SqliteLedger.open(path)`."""

    def __init__(self, db: SqliteDb, clock: Clock) -> None:
        """Use `SqliteLedger.open`: it creates, checks and migrates the file first."""
        super().__init__(SqliteJobRows(db), SqliteTaskRows(db), clock)
        self._db = db
        self.path: Path = db.path
        """The ledger file, resolved."""

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
        ledger = cls(await SqliteDb.open(path, busy_timeout), clock or SystemClock())
        try:
            yield ledger
        finally:
            with anyio.CancelScope(shield=True):
                await ledger.close()


if TYPE_CHECKING:

    def _conforms(ledger: SqliteLedger) -> Ledger:
        return ledger  # mypy proves SqliteLedger satisfies the Ledger protocol
