"""What only the PostgreSQL ledger has: its schema marker, migrations, refusals, reachability.

The shared behaviour (intent before POST, budget, tenants, rerun warnings) runs on both
backends in `test_ledger.py`. Each test has a schema of its own (`postgres_schema_url`).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import unquote

import anyio
import psycopg
import pytest

from mcp_server._clock import FakeClock
from mcp_server.config import Settings, key_fingerprint
from mcp_server.ledger import JobRecord, LedgerError, open_ledger
from mcp_server.ledger.postgres import SCHEMA_VERSION, PostgresLedger

pytestmark = pytest.mark.anyio

TENANT = key_fingerprint("pg-test-key")


def schema_of(url: str) -> str:
    return unquote(url).rsplit("search_path=", 1)[1]


def tables(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every table of the test's schema with its rows: proof that nothing changed."""
    with psycopg.connect(url) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "ORDER BY table_name",
                (schema_of(url),),
            )
        ]
        return {n: conn.execute(f'SELECT * FROM "{n}"').fetchall() for n in names}  # noqa: S608


async def test_a_fresh_schema_is_migrated_once_and_marked_as_a_ledger(
    postgres_schema_url: str,
) -> None:
    with anyio.fail_after(20):
        async with (
            PostgresLedger.open(postgres_schema_url) as one,
            PostgresLedger.open(postgres_schema_url) as two,
        ):
            record = await one.record_intent(
                JobRecord.new(
                    provider="agentseo", operation="seo:x", tenant=TENANT, sandbox=True, params={}
                )
            )
            assert await two.get(record.job_id, tenant=TENANT) == record
    found = tables(postgres_schema_url)
    assert found["jobrelay_schema"] == [("jobrelay-ledger", SCHEMA_VERSION)]
    assert len(found["jobs"]) == 1


async def test_another_applications_jobs_table_is_refused_and_left_untouched(
    postgres_schema_url: str,
) -> None:
    with psycopg.connect(postgres_schema_url) as conn:
        conn.execute("CREATE TABLE jobs (id integer, payload text)")
        conn.execute("INSERT INTO jobs VALUES (1, 'theirs')")
    before = tables(postgres_schema_url)
    with anyio.fail_after(20), pytest.raises(LedgerError) as info:
        async with PostgresLedger.open(postgres_schema_url):
            pass
    assert info.value.problem == "not_a_ledger"
    assert "not a jobrelay ledger" in info.value.message
    assert tables(postgres_schema_url) == before


async def test_a_schema_newer_than_this_code_is_refused_and_left_untouched(
    postgres_schema_url: str,
) -> None:
    with anyio.fail_after(20):
        async with PostgresLedger.open(postgres_schema_url):
            pass
    with psycopg.connect(postgres_schema_url) as conn:
        conn.execute("UPDATE jobrelay_schema SET version = version + 1")
    before = tables(postgres_schema_url)
    with anyio.fail_after(20), pytest.raises(LedgerError) as info:
        async with PostgresLedger.open(postgres_schema_url):
            pass
    assert info.value.problem == "too_new"
    assert f"knows versions up to {SCHEMA_VERSION}" in info.value.message
    assert tables(postgres_schema_url) == before


async def test_an_unreachable_server_is_a_clear_error_without_the_password() -> None:
    url = "postgresql://jobrelay:s3cret-pw@127.0.0.1:1/ledger"
    with anyio.fail_after(30), pytest.raises(LedgerError) as info:
        async with PostgresLedger.open(url):
            pass
    assert info.value.problem == "io"
    assert "postgresql://jobrelay:***@127.0.0.1:1/ledger" in info.value.message
    assert "s3cret-pw" not in info.value.message
    assert "s3cret-pw" not in str(info.value.path)
    assert "Check that PostgreSQL runs" in info.value.message


async def test_open_ledger_picks_postgresql_for_a_postgresql_url(
    make_settings: Callable[..., Settings], postgres_schema_url: str
) -> None:
    settings = make_settings(JOBRELAY_DB=postgres_schema_url)
    assert settings.db_url is not None
    assert settings.db_url.get_secret_value() == postgres_schema_url
    with anyio.fail_after(20):
        async with open_ledger(settings, clock=FakeClock()) as ledger:
            assert isinstance(ledger, PostgresLedger)
            await ledger.record_intent(
                JobRecord.new(
                    provider="agentseo", operation="seo:x", tenant=TENANT, sandbox=True, params={}
                )
            )
    assert len(tables(postgres_schema_url)["jobs"]) == 1


async def test_a_closed_postgres_ledger_refuses_calls(postgres_schema_url: str) -> None:
    with anyio.fail_after(20):
        async with PostgresLedger.open(postgres_schema_url) as ledger:
            pass
        with pytest.raises(LedgerError) as info:
            await ledger.get("sea_0000000000000000", tenant=TENANT)
    assert info.value.problem == "closed"
