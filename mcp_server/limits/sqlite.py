"""A `Limiter` shared by every process using one SQLite `JOBRELAY_DB` (issue 17.1).

Seamless limits are per organisation, so two jobrelay processes with one org key (two desktop
hosts, or a team) used to spend the same window twice. Here each bucket is one row of the
ledger's file, holding the `limits._window.WindowState` every backend shares; a send is
admitted and recorded in one short `BEGIN IMMEDIATE` transaction, so whichever process writes
first takes the slot and the others see it: N processes together never exceed a window.
Responses correct the row exactly as they correct an in-process bucket (same code).

- **Time** is wall-clock (`clock.time()`), the one clock every process on the host shares; the
  in-process limiter uses `monotonic()`. A wall-clock step only shifts when old sends expire.
- **Waiting** happens outside transactions: a caller that must wait sleeps the predicted time
  and tries again (another process may have taken the slot meanwhile). Within one process
  callers still queue first come, first served behind a per-bucket lock, and the queue ahead
  counts in the prediction that refuses waits beyond the deadline or the inline cap.
- **Connection**: one per limiter, used from worker threads and serialised by an `anyio.Lock`
  (as the ledger does); WAL, `synchronous=NORMAL`, `busy_timeout` for other processes' writes.
  Transactions touch one row and last microseconds.

Also here: `SqliteLeases`, named expiring leases in the same file, so one process at a time
polls an org endpoint (`watch.PollCoalescer`) while the others read what it publishes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

import anyio
import anyio.to_thread

from mcp_server._clock import Clock
from mcp_server._sqlite_wal import use_wal
from mcp_server.limits._window import (
    LimiterOptions,
    SharedWindowLimiter,
    WindowState,
    snapshot_of,
    sort_key,
)
from mcp_server.limits.base import (
    BucketKey,
    BucketSnapshot,
    Limiter,
)
from mcp_server.models import Provider
from mcp_server.upstream import RateLimitHints

__all__ = ["DEFAULT_BUSY_TIMEOUT", "SqliteLeases", "SqliteLimiter", "holder_alive"]

T = TypeVar("T")
_EPS = 1e-9
DEFAULT_BUSY_TIMEOUT = 10.0

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS limiter_buckets (
        provider TEXT NOT NULL, key_fingerprint TEXT NOT NULL, bucket TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (provider, key_fingerprint, bucket)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS limiter_credits (
        provider TEXT NOT NULL, key_fingerprint TEXT NOT NULL, credits INTEGER NOT NULL,
        PRIMARY KEY (provider, key_fingerprint)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS lease_board (
        name TEXT NOT NULL, item_id TEXT NOT NULL, payload TEXT, done INTEGER NOT NULL DEFAULT 0,
        wanted_until REAL NOT NULL,
        PRIMARY KEY (name, item_id)
    ) WITHOUT ROWID""",
)


class _Db:
    """One connection, used from worker threads one transaction at a time."""

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = anyio.Lock()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        use_wal(conn, self._busy_timeout)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return conn

    def _run(self, work: Callable[[sqlite3.Connection], T], write: bool) -> T:
        if self._conn is None:
            self._conn = self._open()
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = work(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def run(self, work: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        async with self._lock:
            return await anyio.to_thread.run_sync(self._run, work, write)

    async def aclose(self) -> None:
        async with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await anyio.to_thread.run_sync(conn.close)


_KEY_WHERE = "provider = ? AND key_fingerprint = ? AND bucket = ?"


class SqliteLimiter(SharedWindowLimiter):
    """Buckets in the SQLite file at `path`, shared by every process using it (see module doc).

    Options as `limits._window.WindowLimiter`; `busy_timeout` bounds a wait for another
    process's write.
    """

    def __init__(
        self,
        path: Path,
        clock: Clock,
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        **options: Unpack[LimiterOptions],
    ) -> None:
        super().__init__(clock, **options)
        self._db = _Db(Path(path), busy_timeout)

    @property
    def path(self) -> Path:
        return self._db.path

    async def aclose(self) -> None:
        await self._db.aclose()

    # --- one bucket row ------------------------------------------------------------------

    def _load(self, conn: sqlite3.Connection, key: BucketKey) -> WindowState:
        row = conn.execute(
            f"SELECT state FROM limiter_buckets WHERE {_KEY_WHERE}",  # noqa: S608 - constant
            (key.provider, key.key_fingerprint, key.bucket),
        ).fetchone()
        if row is not None:
            return self._restore(key, row[0])
        return self._seed(key)

    @staticmethod
    def _store(conn: sqlite3.Connection, key: BucketKey, state: WindowState) -> None:
        conn.execute(
            "INSERT INTO limiter_buckets (provider, key_fingerprint, bucket, state) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (provider, key_fingerprint, bucket) "
            "DO UPDATE SET state = excluded.state",
            (key.provider, key.key_fingerprint, key.bucket, json.dumps(state.to_json())),
        )

    async def _peek(self, key: BucketKey, ahead: int, need: int, urgent: bool) -> float:
        def work(conn: sqlite3.Connection) -> float:
            return self._load(conn, key).wait(self._clock.time(), ahead, need, urgent=urgent)

        return await self._db.run(work, write=False)

    async def _try_take(self, key: BucketKey, need: int, urgent: bool) -> float:
        """Take `need` slots if free now (0.0), else the predicted wait; one transaction."""

        def work(conn: sqlite3.Connection) -> float:
            state = self._load(conn, key)
            now = self._clock.time()
            wait = state.wait(now, 0, need, urgent=urgent)
            if wait <= _EPS:
                state.record(now, need)
                self._store(conn, key, state)
                return 0.0
            return wait

        return await self._db.run(work)

    # --- the Limiter protocol ------------------------------------------------------------

    async def observe(self, key: BucketKey, status: int, hints: RateLimitHints) -> None:
        """Correct the shared row from a response, as `InMemoryLimiter.observe` does."""

        def work(conn: sqlite3.Connection) -> None:
            if hints.credits is not None:
                conn.execute(
                    "INSERT INTO limiter_credits (provider, key_fingerprint, credits) "
                    "VALUES (?, ?, ?) ON CONFLICT (provider, key_fingerprint) "
                    "DO UPDATE SET credits = excluded.credits",
                    (key.provider, key.key_fingerprint, hints.credits),
                )
            state = self._load(conn, key)
            state.observe(self._clock.time(), status, hints, max_hint=self._max_hint, rng=self._rng)
            self._store(conn, key, state)

        await self._db.run(work)

    async def snapshot(self) -> list[BucketSnapshot]:
        """Every bucket in the file, whichever process created it."""

        def work(conn: sqlite3.Connection) -> list[tuple[BucketKey, WindowState]]:
            rows = conn.execute(
                "SELECT provider, key_fingerprint, bucket, state FROM limiter_buckets"
            ).fetchall()
            return [
                (BucketKey(p, k, b), WindowState.from_json(json.loads(s))) for p, k, b, s in rows
            ]

        rows = await self._db.run(work, write=False)
        now = self._clock.time()
        return [snapshot_of(key, state, now) for key, state in sorted(rows, key=_row_order)]

    async def credits(self, provider: Provider, key_fingerprint: str) -> int | None:
        def work(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                "SELECT credits FROM limiter_credits WHERE provider = ? AND key_fingerprint = ?",
                (provider, key_fingerprint),
            ).fetchone()
            return None if row is None else int(row[0])

        return await self._db.run(work, write=False)


def _row_order(row: tuple[BucketKey, WindowState]) -> tuple[str, str, str]:
    return sort_key(row[0])


# --------------------------------------------------------------------------------------------
# Leases: one holder per name at a time, taken over when the holder stops renewing


class SqliteLeases:
    """Named leases and a small board of published items, in the SQLite file at `path`.

    `hold(name, ttl)` takes the lease when it is free, expired or already ours, renewing it for
    `ttl` seconds of wall time, and says whether we hold it: a holder that stalls stops
    renewing, and the first process to ask after `ttl` takes over. A holder named
    `"<pid>-<nonce>"` whose process is gone (kill -9, a crash: the ledger is a local file, so
    its holders are processes of this host) is taken over at once, and a closing holder lets
    its leases go. `want` and `publish` let non-holders ask for items and the holder answer
    them (`watch.PollCoalescer`).
    """

    def __init__(
        self,
        path: Path,
        clock: Clock,
        *,
        holder: str,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        alive: Callable[[str], bool] | None = None,
    ) -> None:
        self._db = _Db(Path(path), busy_timeout)
        self._clock = clock
        self.holder = holder
        self._alive = alive or holder_alive

    async def aclose(self) -> None:
        """Let this holder's leases go (the others take over at their next round), then close."""

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM leases WHERE holder = ?", (self.holder,))

        with contextlib.suppress(sqlite3.Error):  # closing anyway; the lease then expires
            await self._db.run(work)
        await self._db.aclose()

    async def hold(self, name: str, ttl: float) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            now = self._clock.time()
            row = conn.execute("SELECT holder, expires FROM leases WHERE name = ?", (name,))
            current = row.fetchone()
            if (
                current is not None
                and current[0] != self.holder
                and current[1] > now
                and self._alive(str(current[0]))
            ):
                return False
            conn.execute(
                "INSERT INTO leases (name, holder, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "expires = excluded.expires",
                (name, self.holder, now + ttl),
            )
            return True

        return await self._db.run(work)

    async def release(self, name: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, self.holder))

        await self._db.run(work)

    async def want(self, name: str, item_ids: list[str], ttl: float) -> dict[str, Any]:
        """Ask the holder for `item_ids` for `ttl` more seconds; the payloads published so far."""

        def work(conn: sqlite3.Connection) -> dict[str, Any]:
            until = self._clock.time() + ttl
            found: dict[str, Any] = {}
            for item_id in item_ids:
                conn.execute(
                    "INSERT INTO lease_board (name, item_id, payload, wanted_until) "
                    "VALUES (?, ?, NULL, ?) ON CONFLICT (name, item_id) "
                    "DO UPDATE SET wanted_until = max(wanted_until, excluded.wanted_until)",
                    (name, item_id, until),
                )
                row = conn.execute(
                    "SELECT payload FROM lease_board WHERE name = ? AND item_id = ?",
                    (name, item_id),
                ).fetchone()
                if row is not None and row[0] is not None:
                    found[item_id] = json.loads(row[0])
            return found

        return await self._db.run(work)

    async def wanted(self, name: str) -> list[str]:
        """Ids some process still asks for and not yet published as done (expired wishes are
        dropped on the way)."""

        def work(conn: sqlite3.Connection) -> list[str]:
            conn.execute(
                "DELETE FROM lease_board WHERE name = ? AND wanted_until < ?",
                (name, self._clock.time()),
            )
            rows = conn.execute(
                "SELECT item_id FROM lease_board WHERE name = ? AND done = 0 ORDER BY item_id",
                (name,),
            ).fetchall()
            return [str(r[0]) for r in rows]

        return await self._db.run(work)

    async def publish(self, name: str, items: dict[str, tuple[Any, bool]]) -> None:
        """Publish `(payload, done)` for ids someone asked for (others are not stored); a done
        item is no longer `wanted`."""

        def work(conn: sqlite3.Connection) -> None:
            for item_id, (payload, done) in items.items():
                conn.execute(
                    "UPDATE lease_board SET payload = ?, done = ? WHERE name = ? AND item_id = ?",
                    (json.dumps(payload), int(done), name, item_id),
                )

        await self._db.run(work)


def holder_alive(holder: str) -> bool:
    """Whether the process a `"<pid>-<nonce>"` holder names still runs on this host; True for
    any other name (it then keeps its lease until the lease expires)."""
    pid, sep, _ = holder.partition("-")
    if not sep or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


if TYPE_CHECKING:

    def _conforms(limiter: SqliteLimiter) -> Limiter:
        return limiter  # mypy proves SqliteLimiter satisfies the Limiter protocol
