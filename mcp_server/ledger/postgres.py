"""The job ledger in PostgreSQL: `PostgresLedger`, chosen when JOBRELAY_DB is a postgresql:// URL.

Every replica behind a load balancer names the same database, so a job started on one is
followed, listed and budgeted on all (issue 17). Same contract as `SqliteLedger`, same
guarantees, PostgreSQL's way; composed the same way: parts on one `PgDb` (`_postgres_db.py`,
the pool), its job rows and task rows (`_postgres_rows.py`), under the rules every backend
shares (`_core.RowLedger`):

- **Intent before action.** `record_intent`, `complete_submit` and `fail_submit` commit with
  `synchronous_commit = on` (the WAL is flushed before the commit returns, whatever the
  server's default); status updates with `synchronous_commit = off`, the analogue of SQLite's
  `synchronous=NORMAL` (a crash loses at most the latest snapshot, never a committed intent).
- **The budget holds across replicas.** `record_intent(budget=)` takes a transaction-scoped
  advisory lock before it sums today's spend, so concurrent starts queue instead of
  overshooting; other writes never take it.
- **Terminal states are sticky**: every write reads the row `FOR UPDATE` first.
- **Migrations** (`_postgres_schema.py`): the table `jobrelay_schema` holds the application
  name and the number of migrations applied; each migration runs in the transaction that bumps
  it, under an advisory lock, so two replicas starting at once migrate once. A schema with a
  `jobs` table that is not ours, or a version newer than this code, is refused with
  `LedgerError` and left untouched. The schema is the connection's `search_path` (put
  `?options=-csearch_path%3Dname` in the URL to use another than `public`).

Why psycopg 3 (with psycopg_pool) rather than asyncpg: it ships type annotations (mypy strict
checks every call), its pool checks connections and reconnects after a server restart, and
it runs on any asyncio loop with plain SQL parameters; asyncpg is faster per query, which a
ledger doing a few writes per job does not need.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from mcp_server._clock import Clock, SystemClock
from mcp_server.ledger._core import RowLedger
from mcp_server.ledger._postgres_db import PgDb
from mcp_server.ledger._postgres_rows import PgJobRows, PgTaskRows
from mcp_server.ledger._postgres_schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from mcp_server.ledger.base import Ledger

__all__ = ["SCHEMA_VERSION", "PostgresLedger"]


class PostgresLedger(RowLedger):
    """The job ledger in PostgreSQL. Open with `async with PostgresLedger.open(url)`."""

    def __init__(self, db: PgDb, clock: Clock) -> None:
        """Use `PostgresLedger.open`: it connects, checks and migrates first."""
        super().__init__(PgJobRows(db), PgTaskRows(db), clock)
        self.where = db.where
        """The database URL, password hidden."""

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, *, clock: Clock | None = None, max_connections: int = 8
    ) -> AsyncIterator[PostgresLedger]:
        """Connect (a pool of up to `max_connections`), check and migrate the ledger.

        Raises `LedgerError` when the server cannot be reached, the schema holds another
        application's `jobs` table, or its version is newer than this code.
        """
        ledger = cls(await PgDb.open(url, max_connections), clock or SystemClock())
        try:
            yield ledger
        finally:
            await ledger.close()


if TYPE_CHECKING:

    def _conforms(ledger: PostgresLedger) -> Ledger:
        return ledger  # mypy proves PostgresLedger satisfies the Ledger protocol
