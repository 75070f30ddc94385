"""`Ledger.job_counts` (the `jobrelay_jobs` gauge's read, every 15 s) on a large ledger.

    python tools/bench_job_counts.py                        # SQLite, 100,000 jobs
    python tools/bench_job_counts.py --postgres URL         # and PostgreSQL (a fresh schema)
    python tools/bench_job_counts.py --jobs 20000 --row-bytes 500

Fills a ledger with `--jobs` rows (one job written through the ledger, copied in SQL: 98 %
finished with a result of `--row-bytes`, the rest open), then times `job_counts` through the
ledger API with the `(provider, state)` index and, side by side in the same run, with it
dropped (the read before the index), and prints each backend's query plan for both. Prints
one JSON object. Nothing leaves 127.0.0.1 (or the PostgreSQL URL given).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import anyio

from mcp_server.ledger import JobRecord, Ledger
from mcp_server.ledger.postgres import PostgresLedger
from mcp_server.ledger.sqlite import SqliteLedger
from mcp_server.models import JobState
from mcp_server.providers import default_registry

INDEX = "jobs_by_provider_state"
COUNT_SQL = "SELECT provider, state, count(*) FROM jobs GROUP BY provider, state"
COLUMNS = (
    "tenant, provider, operation, sandbox, params, params_fingerprint, credits_requested, "
    "credits_seen, state, raw_status, snapshot, result, error, warnings, created_at, "
    "updated_at, finished_at, next_check_at"
)
# Row n of the copy: provider by n % 3, state by n % 100 (2 % open), the job's own columns.
COPIED = {
    "provider": "CASE WHEN n % 3 = 0 THEN 'agentseo' ELSE 'seamless' END",
    "state": (
        "CASE WHEN n % 100 = 0 THEN 'running' WHEN n % 100 = 1 THEN 'queued' "
        "WHEN n % 10 = 2 THEN 'failed' WHEN n % 10 = 3 THEN 'not_found' ELSE 'succeeded' END"
    ),
}


def _copy_sql(numbers: str) -> str:
    chosen = ", ".join(COPIED.get(c.strip(), c.strip()) for c in COLUMNS.split(","))
    return (
        f"INSERT INTO jobs (job_id, {COLUMNS}) "  # noqa: S608  # our own constants
        f"SELECT 'bench-' || n, {chosen} FROM {numbers}, jobs j"
    )


async def _template(ledger: Ledger, row_bytes: int) -> None:
    """One job written the ledger's way, with a result of about `row_bytes`."""
    rec = await ledger.record_intent(
        JobRecord.new(
            provider="seamless",
            operation="research_contacts",
            tenant="k_0123456789ab",
            sandbox=True,
            params={"searchResultIds": ["sr-1"]},
        )
    )
    await ledger.complete_submit(
        rec.job_id,
        upstream_ids=["r-1"],
        state=JobState.SUCCEEDED,
        raw_status="done",
        result={"records": ["x" * row_bytes]},
    )


async def _timed(read: Callable[[], Awaitable[object]], repeat: int) -> dict[str, float]:
    await read()  # warm the cache: the gauge reads every 15 s
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await read()
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2)}


async def bench_sqlite(jobs: int, row_bytes: int, repeat: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "jobs.db"
        async with SqliteLedger.open(path) as ledger:
            await _template(ledger, row_bytes)
        conn = sqlite3.connect(path, isolation_level=None, cached_statements=0)  # fresh plans
        numbers = (
            "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "  # noqa: S608  # an int
            f"WHERE n < {jobs - 1:d}) SELECT n FROM s)"
        )
        conn.execute(_copy_sql(numbers))
        conn.execute("ANALYZE")
        has_index = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = ?", (INDEX,)
        ).fetchone()[0]
        out: dict[str, object] = {"file_mb": round(path.stat().st_size / 2**20, 1)}

        def plan() -> list[str]:
            return [str(r[3]) for r in conn.execute(f"EXPLAIN QUERY PLAN {COUNT_SQL}")]

        async with SqliteLedger.open(path) as ledger:
            counts = await ledger.job_counts()
            out["counted"] = sum(counts.values())
            if has_index:
                out["with_index"] = {"plan": plan(), **await _timed(ledger.job_counts, repeat)}
            conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
            out["without_index"] = {"plan": plan(), **await _timed(ledger.job_counts, repeat)}
            assert await ledger.job_counts() == counts
        conn.close()
        return out


async def bench_postgres(url: str, jobs: int, row_bytes: int, repeat: int) -> dict[str, object]:
    import psycopg

    schema = f"jobrelay_bench_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    scoped = f"{url}{'&' if '?' in url else '?'}options={quote(f'-csearch_path={schema}')}"
    try:
        async with PostgresLedger.open(scoped) as ledger:
            await _template(ledger, row_bytes)
        with psycopg.connect(scoped, autocommit=True) as conn:
            conn.execute(_copy_sql(f"generate_series(1, {jobs - 1}) AS n"))
            conn.execute("VACUUM ANALYZE jobs")  # what autovacuum does after a bulk insert
            has_index = conn.execute(
                "SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND indexname = %s",
                (schema, INDEX),
            ).fetchone()
            size = conn.execute("SELECT pg_total_relation_size('jobs')").fetchone()
            out: dict[str, object] = {"table_mb": round((size or [0])[0] / 2**20, 1)}

            def plan() -> list[str]:
                return [str(r[0]) for r in conn.execute(f"EXPLAIN {COUNT_SQL}")]

            async with PostgresLedger.open(scoped) as ledger:
                counts = await ledger.job_counts()
                out["counted"] = sum(counts.values())
                if has_index and has_index[0]:
                    timed = await _timed(ledger.job_counts, repeat)
                    out["with_index"] = {"plan": plan(), **timed}
                conn.execute(f"DROP INDEX IF EXISTS {INDEX}")
                out["without_index"] = {"plan": plan(), **await _timed(ledger.job_counts, repeat)}
                assert await ledger.job_counts() == counts
        return out
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def main(args: argparse.Namespace) -> None:
    default_registry()  # registers the providers' job handle prefixes
    result: dict[str, object] = {"jobs": args.jobs, "row_bytes": args.row_bytes}
    result["sqlite"] = await bench_sqlite(args.jobs, args.row_bytes, args.repeat)
    if args.postgres:
        result["postgres"] = await bench_postgres(
            args.postgres, args.jobs, args.row_bytes, args.repeat
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--row-bytes", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--postgres", metavar="URL", help="also a fresh schema on this server")
    anyio.run(main, parser.parse_args())
