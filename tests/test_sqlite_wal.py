"""`use_wal`: a file already in WAL is not switched again, and a switch answered "database is
locked" (another process opening the same file at that moment) is retried within the busy
timeout instead of ending the process (seen: a worker of test_shared_limits died on it)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mcp_server._sqlite_wal import use_wal


class _Flaky:
    """A connection whose first `locked` journal_mode statements answer "database is locked"."""

    def __init__(self, real: sqlite3.Connection, locked: int, message: str) -> None:
        self.real = real
        self.locked = locked
        self.message = message
        self.statements: list[str] = []

    def execute(self, sql: str) -> sqlite3.Cursor:
        self.statements.append(sql)
        if self.locked > 0:
            self.locked -= 1
            raise sqlite3.OperationalError(self.message)
        return self.real.execute(sql)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def _conn(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "x.db", isolation_level=None)


def test_a_locked_switch_is_retried_until_it_succeeds(tmp_path: Path) -> None:
    flaky = _Flaky(_conn(tmp_path), locked=3, message="database is locked")
    clock = _Clock()
    mode = use_wal(flaky, 5.0, sleep=clock.sleep, monotonic=clock.monotonic)  # type: ignore[arg-type]
    assert mode == "wal"
    assert len(clock.sleeps) == 3
    assert clock.sleeps == sorted(clock.sleeps)  # backing off, not spinning


def test_a_file_already_in_wal_is_not_switched_again(tmp_path: Path) -> None:
    assert use_wal(_conn(tmp_path), 1.0) == "wal"
    again = _Flaky(_conn(tmp_path), locked=0, message="")
    assert use_wal(again, 1.0) == "wal"  # type: ignore[arg-type]
    assert again.statements == ["PRAGMA journal_mode"]


def test_a_lock_held_past_the_busy_timeout_raises_sqlites_error(tmp_path: Path) -> None:
    flaky = _Flaky(_conn(tmp_path), locked=10_000, message="database is locked")
    clock = _Clock()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        use_wal(flaky, 2.0, sleep=clock.sleep, monotonic=clock.monotonic)  # type: ignore[arg-type]
    assert 2.0 <= clock.now <= 2.0 + 0.2


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    flaky = _Flaky(_conn(tmp_path), locked=1, message="disk I/O error")
    clock = _Clock()
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        use_wal(flaky, 2.0, sleep=clock.sleep, monotonic=clock.monotonic)  # type: ignore[arg-type]
    assert clock.sleeps == []
