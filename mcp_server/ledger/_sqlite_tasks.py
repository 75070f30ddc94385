"""The SQLite ledger's task rows and secrets: `SqliteTaskRows`, its `TaskLedger`."""

from __future__ import annotations

import secrets
import sqlite3

from mcp_server.ledger._codec import task_data, task_text
from mcp_server.ledger._sqlite_db import SqliteDb, transaction
from mcp_server.ledger.base import JsonDict

_DATA = "SELECT data FROM tasks WHERE task_id = ?"


class SqliteTaskRows:
    """The `tasks` and `ledger_secrets` tables of one `SqliteDb`."""

    def __init__(self, db: SqliteDb) -> None:
        self._db = db

    async def secret(self, name: str) -> bytes:
        fresh = secrets.token_bytes(32)

        def get_or_make(conn: sqlite3.Connection) -> bytes:
            conn.execute(
                "INSERT OR IGNORE INTO ledger_secrets (name, value) VALUES (?, ?)", (name, fresh)
            )
            row = conn.execute("SELECT value FROM ledger_secrets WHERE name = ?", (name,))
            return bytes(row.fetchone()[0])

        return await self._db.run(transaction(get_or_make, durable=True))

    async def create_task(
        self, task_id: str, *, job_id: str, data: JsonDict, expires_at: float | None
    ) -> JsonDict:
        text = task_text(data)

        def insert(conn: sqlite3.Connection) -> JsonDict:
            conn.execute(
                "INSERT OR IGNORE INTO tasks (task_id, job_id, terminal, expires_at, data) "
                "VALUES (?, ?, 0, ?, ?)",
                (task_id, job_id, expires_at, text),
            )
            return task_data(conn.execute(_DATA, (task_id,)).fetchone()[0])

        return await self._db.run(transaction(insert, durable=True))

    async def get_task(self, task_id: str) -> JsonDict | None:
        def read(conn: sqlite3.Connection) -> JsonDict | None:
            row = conn.execute(_DATA, (task_id,)).fetchone()
            return None if row is None else task_data(row[0])

        return await self._db.read(read)

    async def save_task(self, task_id: str, data: JsonDict, *, terminal: bool) -> JsonDict | None:
        text = task_text(data)

        def change(conn: sqlite3.Connection) -> JsonDict | None:
            conn.execute(
                "UPDATE tasks SET data = ?, terminal = ? WHERE task_id = ? AND terminal = 0",
                (text, int(terminal), task_id),
            )
            row = conn.execute(_DATA, (task_id,)).fetchone()
            return None if row is None else task_data(row[0])

        return await self._db.run(transaction(change))

    async def delete_expired_tasks(self, now: float) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
            )
            return int(cursor.rowcount)

        return await self._db.run(transaction(delete))
