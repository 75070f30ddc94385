"""WAL mode for a SQLite file several processes open at once (the ledger and its buckets).

Switching a file to WAL needs a lock that another process opening the same file at the same
moment may hold (its own switch, or recovering the WAL): SQLite can answer "database is
locked" at once instead of waiting on the busy timeout. The mode is kept in the file, so the
common case (already WAL) needs no switch at all; the switch itself is retried within the
busy timeout. Runs on a worker thread (both callers open connections off the event loop).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

__all__ = ["use_wal"]

_FIRST_DELAY = 0.005
_MAX_DELAY = 0.2


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def use_wal(
    conn: sqlite3.Connection,
    busy_timeout: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> str:
    """The file's journal mode after asking for WAL (`"wal"` unless the file system refuses
    it); a lock still held after `busy_timeout` seconds raises SQLite's own error."""
    deadline = monotonic() + busy_timeout
    delay = _FIRST_DELAY
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode == "wal":
                return mode
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or monotonic() >= deadline:
                raise
        sleep(delay)
        delay = min(delay * 2, _MAX_DELAY)
