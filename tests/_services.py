"""Real PostgreSQL and Redis for the tests that need them, skipped (or failed in CI) without.

The README's test command must pass on a machine without these servers, so a test that needs
one skips with a reason starting `SERVICE_SKIP`. CI starts both servers and sets
`JOBRELAY_REQUIRE_SERVICES=1`; then the `pytest_runtest_makereport` hook below (imported by
`conftest.py`) turns every such skip into a failure, so a CI run can never pass by silently not
testing the backends. Where to find the servers: `JOBRELAY_TEST_REDIS_URL` and
`JOBRELAY_TEST_POSTGRES_URL` (defaults: the loopback servers this machine kind runs).

Each test gets its own namespace (a Redis key prefix, a PostgreSQL schema) with a random name
and removes it afterwards, so parallel helpers or CI runs on one server never collide.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Generator, Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

SERVICE_SKIP = "service not reachable:"
REQUIRE_ENV = "JOBRELAY_REQUIRE_SERVICES"
REDIS_URL = os.environ.get("JOBRELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "JOBRELAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _reachable(url: str, default_port: int) -> str | None:
    """None when something accepts TCP connections at the URL's host and port, else why not."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"


def skip_unless_reachable(name: str, url: str, default_port: int, env: str) -> None:
    problem = _reachable(url, default_port)
    if problem is not None:
        pytest.skip(
            f"{SERVICE_SKIP} {name} at {problem} (set {env} to another server; "
            f"CI starts it and sets {REQUIRE_ENV}=1, which makes this skip a failure)"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    """Under JOBRELAY_REQUIRE_SERVICES=1, a test skipped for a missing server fails instead."""
    del item, call
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and os.environ.get(REQUIRE_ENV) == "1"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    if SERVICE_SKIP in str(reason):
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_ENV}=1 but the test was skipped: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, Any]:
    """A `pytest.skip` raised inside a task group reaches pytest wrapped in an exception group,
    reported as "unhandled errors in a TaskGroup": the reason lost, and with it the CI check
    that fails a skip for a missing server (`tests._services`). A group of skips alone is
    re-raised as its first skip, reason and all; anything else in the group stays as it was."""
    del item
    try:
        return (yield)
    except BaseExceptionGroup as group:
        skips, rest = group.split(pytest.skip.Exception)
        if skips is None or rest is not None:
            raise
        first: BaseException = skips
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


@pytest.fixture
def redis_url() -> str:
    """The test Redis URL; skips (see the module doc) when nothing listens there."""
    skip_unless_reachable("Redis", REDIS_URL, 6379, "JOBRELAY_TEST_REDIS_URL")
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix; every key under it is deleted afterwards."""
    import redis

    prefix = f"jobrelay-test:{secrets.token_hex(6)}"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema of its own, dropped afterwards."""
    skip_unless_reachable("PostgreSQL", POSTGRES_URL, 5432, "JOBRELAY_TEST_POSTGRES_URL")
    import psycopg

    schema = f"jobrelay_test_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
