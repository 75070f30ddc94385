"""The PostgreSQL ledger's connections: `PgDb`, a pool shared by its job rows and task rows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, TypeVar

from mcp_server.config import url_for_display
from mcp_server.ledger._postgres_schema import migrate, problem_message
from mcp_server.ledger.base import LedgerError, LedgerProblem

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import DictRow
    from psycopg_pool import AsyncConnectionPool

    Conn = AsyncConnection[DictRow]

T = TypeVar("T")

_CONNECT_TIMEOUT: Final = 10.0


class PgDb:
    """A connection pool to the ledger's database; `run` is one transaction on it."""

    def __init__(self, pool: AsyncConnectionPool[Conn], where: str) -> None:
        """Use `PgDb.open`: it connects, checks and migrates first."""
        self._pool: AsyncConnectionPool[Conn] | None = pool
        self.where = where
        """The database URL, password hidden."""

    @classmethod
    async def open(cls, url: str, max_connections: int) -> PgDb:
        """Connect (a pool of up to `max_connections`), check and migrate the ledger; raises
        `LedgerError` (see `PostgresLedger.open`)."""
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
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={"row_factory": dict_row, "connect_timeout": int(_CONNECT_TIMEOUT)},
            open=False,
            timeout=_CONNECT_TIMEOUT,
            name="jobrelay-ledger",
        )
        db = cls(pool, where)
        try:
            # One plain connection first: a refused or unknown server fails at once with the
            # driver's reason, where the pool would retry until its timeout.
            await db.guard(_probe(url))
            await db.guard(pool.open(wait=True, timeout=_CONNECT_TIMEOUT))
            await db.guard(db._migrate())
        except BaseException:
            await pool.close()
            raise
        return db

    async def close(self) -> None:
        """Close the pool (idempotent); later calls raise `LedgerError`."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def error(self, problem: LedgerProblem, detail: str) -> LedgerError:
        return LedgerError(
            problem_message(problem, self.where, detail), path=self.where, problem=problem
        )

    async def guard(self, work: Awaitable[T]) -> T:
        """Await `work`, turning the driver's and the pool's errors into `LedgerError`."""
        import psycopg
        import psycopg_pool

        try:
            return await work
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise self.error("io", str(exc).strip() or type(exc).__name__) from exc
        except psycopg.errors.InsufficientPrivilege as exc:
            raise self.error("unwritable", str(exc).strip()) from exc

    async def run(self, fn: Callable[[Conn], Awaitable[T]], *, durable: bool | None) -> T:
        """Run `fn(conn)` in one transaction. `durable` True: the commit waits for the WAL
        flush; False: it does not (a status update); None: read only."""
        pool = self._pool
        if pool is None:
            raise self.error("closed", "")

        async def work() -> T:
            async with pool.connection() as conn, conn.transaction():
                if durable is not None:
                    commit = "on" if durable else "off"
                    await conn.execute(f"SET LOCAL synchronous_commit = {commit}")
                return await fn(conn)

        return await self.guard(work())

    async def _migrate(self) -> None:
        pool = self._pool
        if pool is None:  # pragma: no cover - only called from open
            raise self.error("closed", "")
        async with pool.connection() as conn:
            await migrate(conn, self.error)


async def _probe(url: str) -> None:
    import psycopg

    conn = await psycopg.AsyncConnection.connect(url, connect_timeout=int(_CONNECT_TIMEOUT))
    await conn.close()
