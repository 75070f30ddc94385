"""The PostgreSQL ledger's schema: migrations, the identity check, and its error texts."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from mcp_server.ledger.base import LedgerError, LedgerProblem

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import DictRow

_APPLICATION: Final = "jobrelay-ledger"
_MIGRATION_LOCK: Final = 0x4A524C59  # "JRLY", as the SQLite file's application_id

_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE jobs (
            seq bigserial PRIMARY KEY,
            job_id text NOT NULL UNIQUE,
            tenant text NOT NULL,
            provider text NOT NULL,
            operation text NOT NULL,
            sandbox boolean NOT NULL,
            params text NOT NULL,
            params_fingerprint text NOT NULL,
            credits_requested integer NOT NULL,
            credits_seen integer,
            state text NOT NULL,
            raw_status text,
            snapshot text,
            result text,
            error text,
            warnings text NOT NULL,
            upstream_ids text[] NOT NULL DEFAULT '{}',
            targets text[] NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            finished_at timestamptz,
            next_check_at timestamptz
        )
        """,
        "CREATE INDEX jobs_by_tenant ON jobs (tenant, created_at)",
        "CREATE INDEX jobs_by_created ON jobs (created_at)",
        "CREATE INDEX jobs_open ON jobs (created_at) "
        "WHERE state IN ('queued', 'running', 'unknown')",
        "CREATE INDEX jobs_by_upstream_id ON jobs USING gin (upstream_ids)",
        "CREATE INDEX jobs_by_target ON jobs USING gin (targets)",
    ),
    (
        # MCP tasks (issue 16): per-ledger secrets, and one row per task beside its job.
        "CREATE TABLE ledger_secrets (name text PRIMARY KEY, value bytea NOT NULL)",
        """
        CREATE TABLE tasks (
            task_id text PRIMARY KEY,
            job_id text NOT NULL,
            terminal boolean NOT NULL,
            expires_at double precision,
            data text NOT NULL
        )
        """,
        "CREATE INDEX tasks_by_expiry ON tasks (expires_at) WHERE expires_at IS NOT NULL",
    ),
    (
        # Jobs by (provider, state): `job_counts` (the `jobrelay_jobs` gauge, every 15 s) is
        # an index-only scan instead of a scan of every row (BENCHMARKS.md).
        "CREATE INDEX jobs_by_provider_state ON jobs (provider, state)",
    ),
)
"""Migration N (1-based) takes the schema from version N-1 to N. Append; never edit or reorder."""

SCHEMA_VERSION: Final = len(_MIGRATIONS)


def problem_message(problem: LedgerProblem, where: str, detail: str) -> str:
    match problem:
        case "not_a_ledger":
            return (
                f"The PostgreSQL database at {where} has a `jobs` table that is not a jobrelay "
                f"ledger ({detail}). jobrelay has not changed it. Point JOBRELAY_DB at another "
                "database, or put the ledger in a schema of its own "
                "(`?options=-csearch_path%3Djobrelay` after creating that schema)."
            )
        case "too_new":
            return (
                f"The job ledger at {where} {detail}: it was written by a newer jobrelay. "
                "jobrelay has not changed it. Upgrade jobrelay, or set JOBRELAY_DB elsewhere."
            )
        case "migration_failed":
            return (
                f"Upgrading the schema of the job ledger at {where} failed ({detail}); the "
                "upgrade was rolled back and no data changed. Report this."
            )
        case "closed":
            return f"The job ledger at {where} is closed."
        case _:
            return (
                f"The job ledger at {where} cannot be reached or used ({detail}). Check that "
                "PostgreSQL runs and accepts this user and database, or set JOBRELAY_DB to a "
                "file to use a local SQLite ledger."
            )


async def migrate(
    conn: AsyncConnection[DictRow], error: Callable[[LedgerProblem, str], LedgerError]
) -> None:
    """Check the schema is ours (or empty) and bring it to `SCHEMA_VERSION`, in one
    transaction under an advisory lock (two replicas starting at once migrate once)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        marker = await (
            await conn.execute("SELECT to_regclass('jobrelay_schema') IS NOT NULL AS ok")
        ).fetchone()
        jobs = await (await conn.execute("SELECT to_regclass('jobs') IS NOT NULL AS ok")).fetchone()
        version = 0
        if marker is not None and marker["ok"]:
            row = await (
                await conn.execute("SELECT application, version FROM jobrelay_schema")
            ).fetchone()
            if row is None or row["application"] != _APPLICATION:
                raise error("not_a_ledger", f"jobrelay_schema holds {row!r}")
            version = int(row["version"])
        elif jobs is not None and jobs["ok"]:
            raise error("not_a_ledger", "no jobrelay_schema table beside it")
        if version > SCHEMA_VERSION:
            detail = (
                f"has schema version {version}, but this jobrelay knows versions up to "
                f"{SCHEMA_VERSION}"
            )
            raise error("too_new", detail)
        if version == 0:
            await conn.execute(
                "CREATE TABLE jobrelay_schema (application text NOT NULL, version integer NOT NULL)"
            )
            await conn.execute("INSERT INTO jobrelay_schema VALUES (%s, 0)", (_APPLICATION,))
        for number in range(version + 1, SCHEMA_VERSION + 1):
            try:
                async with conn.transaction():
                    for statement in _MIGRATIONS[number - 1]:
                        await conn.execute(statement)
            except Exception as exc:
                detail = f"version {number - 1} to {number}: {exc}"
                raise error("migration_failed", detail) from exc
            await conn.execute("UPDATE jobrelay_schema SET version = %s", (number,))
