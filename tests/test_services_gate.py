"""The gate that keeps CI honest: a test skipped for a missing server fails under
JOBRELAY_REQUIRE_SERVICES=1, and only such a skip (tests/_services.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CONFTEST = (
    "from tests._services import (  # noqa: F401\n"
    "    pytest_runtest_call, pytest_runtest_makereport, redis_url)\n"
)
TESTS = textwrap.dedent(
    """
    import pytest


    def test_needs_redis(redis_url):
        assert redis_url


    def test_skipped_for_another_reason():
        pytest.skip("not on this platform")


    def test_a_service_skip_inside_nested_task_groups():
        # As a test skips whose server check runs inside a helper that serves in a task group.
        import anyio
        from tests._services import skip_unless_reachable

        async def check() -> None:
            skip_unless_reachable("Redis", "redis://127.0.0.1:1/0", 6379, "X")

        async def serving() -> None:
            async with anyio.create_task_group() as inner:
                inner.start_soon(check)

        async def main() -> None:
            async with anyio.create_task_group() as outer:
                outer.start_soon(serving)

        anyio.run(main)
    """
)


def run_pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_gate.py").write_text(TESTS)
    base = {k: v for k, v in os.environ.items() if k != "JOBRELAY_REQUIRE_SERVICES"}
    return subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs", str(tmp_path)],
        cwd=tmp_path,
        env=base | {"JOBRELAY_TEST_REDIS_URL": "redis://127.0.0.1:1/0"} | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_the_server_the_test_is_skipped_with_a_reason(tmp_path: Path) -> None:
    done = run_pytest(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 skipped" in done.stdout
    # Each with its reason, the one raised inside nested task groups too (pytest alone reports
    # that one as "unhandled errors in a TaskGroup", which the CI gate below cannot read).
    assert done.stdout.count("service not reachable: Redis at 127.0.0.1:1") == 2, done.stdout
    assert "TaskGroup" not in done.stdout


def test_under_require_services_that_skip_fails_and_other_skips_stay(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, JOBRELAY_REQUIRE_SERVICES="1")
    assert done.returncode == 1, done.stdout + done.stderr
    # The fixture skipped during setup, so pytest counts the failure as an error.
    assert "1 failed, 1 skipped, 1 error" in done.stdout
    assert "ERROR test_gate.py::test_needs_redis" in done.stdout
    assert "FAILED test_gate.py::test_a_service_skip_inside_nested_task_groups" in done.stdout
    assert "JOBRELAY_REQUIRE_SERVICES=1 but the test was skipped" in done.stdout
    assert "SKIPPED [1] test_gate.py:10: not on this platform" in done.stdout
