"""`jobrelay doctor`: what it reports, what counts as a problem, and what it never does.

Reachability is probed only on loopback: the sandbox served by uvicorn on an ephemeral port,
and a port with nothing listening. Nothing here reaches the internet.
"""

from __future__ import annotations

import io
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
import uvicorn

from mcp_server.cli import main
from mcp_server.config import variables
from mcp_server.doctor import Report, diagnose, mask_secret, run_doctor
from mcp_server.ledger import SqliteLedger
from mcp_server.sandbox.app import (
    AGENTSEO_PREFIX,
    SEAMLESS_PREFIX,
    create_sandbox_app,
    sandbox_uvicorn_config,
)

pytestmark = pytest.mark.anyio

LONG_KEY = "FAKE-key-0123456789abcdefXY"
SHORT_KEY = "abc123"


class _Server(uvicorn.Server):
    """uvicorn that says when it listens, and leaves signal handling to pytest."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()

    def install_signal_handlers(self) -> None:  # older uvicorn
        pass


@asynccontextmanager
async def _loopback_sandbox() -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(sandbox_uvicorn_config(create_sandbox_app(), port=port))
    with sock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            with anyio.fail_after(5):
                await server.ready.wait()
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections are refused at once, and no
    other process can take the port while the test runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        yield port


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"JOBRELAY_DB": str(tmp_path / "data" / "jobs.sqlite3"), **extra}


async def _report(env: dict[str, str]) -> tuple[Report, str]:
    with anyio.fail_after(10):
        report = await diagnose(env, probe_timeout=2.0)
    return report, report.render()


async def test_defaults_use_the_sandbox_are_usable_and_create_nothing(tmp_path: Path) -> None:
    report, text = await _report(_env(tmp_path))

    assert report.exit_code == 0
    assert report.problems == []
    assert "sandbox (no SEAMLESS_API_KEY): the embedded sandbox serves simulated data" in text
    assert "sandbox (no AGENTSEO_API_KEY): the embedded sandbox serves simulated data" in text
    assert f"{tmp_path / 'data' / 'jobs.sqlite3'}: will be created on first start" in text
    assert "OK: `jobrelay serve` can start with this configuration. Both APIs are simulated" in text
    assert "reachable" not in text  # the sandbox is not probed
    assert not (tmp_path / "data").exists()


async def test_live_providers_on_a_reachable_loopback_api_are_usable(tmp_path: Path) -> None:
    async with _loopback_sandbox() as root:
        env = _env(
            tmp_path,
            SEAMLESS_API_KEY=LONG_KEY,
            AGENTSEO_API_KEY=SHORT_KEY,
            SEAMLESS_BASE_URL=root + SEAMLESS_PREFIX,
            AGENTSEO_BASE_URL=root + AGENTSEO_PREFIX,
        )
        report, text = await _report(env)

    assert report.exit_code == 0, text
    assert f"live: {root}{SEAMLESS_PREFIX}" in text
    assert f"live: {root}{AGENTSEO_PREFIX}" in text
    assert text.count("reachable: HTTP ") == 2
    assert "key: set (FA...XY), fingerprint k_" in text
    assert "key: set, fingerprint k_" in text
    assert LONG_KEY not in text
    assert SHORT_KEY not in text
    assert "Live: Seamless.ai and AgentSEO." in text


async def test_an_unreachable_base_url_is_a_problem_with_its_fix(
    tmp_path: Path, closed_port: int
) -> None:
    url = f"http://127.0.0.1:{closed_port}/api/v1"
    env = _env(tmp_path, AGENTSEO_API_KEY=LONG_KEY, AGENTSEO_BASE_URL=url)

    report, text = await _report(env)

    assert report.exit_code == 1
    assert "NOT reachable: ConnectError" in text
    [problem] = report.problems
    assert problem.startswith(f"AgentSEO: cannot reach {url} (ConnectError")
    assert problem.endswith(
        "Fix: check the network or proxy, or AGENTSEO_BASE_URL (unset it for the default)."
    )
    assert "1 problem(s): `jobrelay serve` would not work as configured." in text


async def test_sandbox_switched_off_without_keys_names_both_missing_keys(
    tmp_path: Path, closed_port: int
) -> None:
    dead = f"http://127.0.0.1:{closed_port}"
    env = _env(
        tmp_path, JOBRELAY_SANDBOX="0", SEAMLESS_BASE_URL=dead, AGENTSEO_BASE_URL=dead + "/a"
    )

    report, _ = await _report(env)

    missing = [p for p in report.problems if "is not set and JOBRELAY_SANDBOX=0" in p]
    assert [p.split(":")[0] for p in missing] == ["Seamless.ai", "AgentSEO"]
    assert missing[0].endswith(
        "Fix: set SEAMLESS_API_KEY, or unset JOBRELAY_SANDBOX to use the sandbox."
    )


async def test_keys_are_masked_even_when_the_sandbox_is_forced(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        JOBRELAY_SANDBOX="1",
        SEAMLESS_API_KEY=LONG_KEY,
        AGENTSEO_API_KEY=SHORT_KEY,
        JOBRELAY_HTTP_TOKEN=LONG_KEY[::-1],
    )

    report, text = await _report(env)

    assert report.exit_code == 0
    assert "sandbox (JOBRELAY_SANDBOX=1)" in text
    assert "key: set (FA...XY), not used while JOBRELAY_SANDBOX=1" in text
    assert "key: set, not used while JOBRELAY_SANDBOX=1" in text
    assert "JOBRELAY_HTTP_TOKEN set (YX...AF)" in text
    for secret in (LONG_KEY, SHORT_KEY, LONG_KEY[::-1], LONG_KEY[2:-2], SHORT_KEY[:3]):
        assert secret not in text


def test_mask_shows_at_most_two_characters_at_each_end() -> None:
    assert mask_secret(None) == "not set"
    assert mask_secret("") == "not set"
    assert mask_secret("12345678901") == "set"
    assert mask_secret("123456789012") == "set (12...12)"


async def test_an_existing_ledger_is_opened_and_summarised(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    async with SqliteLedger.open(db):
        pass

    report, text = await _report({"JOBRELAY_DB": str(db)})

    assert report.exit_code == 0
    assert f"{db}: OK, writable" in text
    assert "0 unfinished job(s); 0 real research credit(s) requested today (UTC)" in text


async def test_a_damaged_ledger_is_a_problem_and_is_left_untouched(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    junk = b"this is not an SQLite database\n" * 200
    db.write_bytes(junk)

    report, text = await _report({"JOBRELAY_DB": str(db)})

    assert report.exit_code == 1
    assert f"{db}: cannot be used (corrupt)" in text
    [problem] = report.problems
    assert problem.startswith(f"Ledger: The job ledger at {db} is damaged")
    assert db.read_bytes() == junk


async def test_a_ledger_below_a_file_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")

    report, _ = await _report({"JOBRELAY_DB": str(blocker / "jobs.sqlite3")})

    assert report.problems == [
        f"Ledger: Cannot create or write the job ledger at {blocker / 'jobs.sqlite3'} (cannot "
        f"create files in {blocker}: Not a directory). Make its directory writable, or set "
        "JOBRELAY_DB to a writable path."
    ]


async def test_a_ledger_path_that_is_a_directory_is_a_problem(tmp_path: Path) -> None:
    report, _ = await _report({"JOBRELAY_DB": str(tmp_path)})

    assert report.problems == [
        f"Ledger: JOBRELAY_DB={tmp_path} is a directory. Fix: point JOBRELAY_DB at a file "
        f"inside it, e.g. {tmp_path / 'jobs.sqlite3'}."
    ]


async def test_invalid_settings_name_each_variable_and_the_fix(tmp_path: Path) -> None:
    report, text = await _report(_env(tmp_path, AGENTSEO_PLAN="gold", JOBRELAY_SANDBOX="maybe"))

    assert report.exit_code == 1
    assert "Configuration  cannot be read" in text
    assert report.problems == [
        "Configuration: AGENTSEO_PLAN='gold' is not valid: allowed values are hobby, starter, "
        "pro, agency. Fix: correct it, or unset it for the default.",
        "Configuration: JOBRELAY_SANDBOX='maybe' is not valid: allowed values are auto, 1 "
        "(force the sandbox) and 0 (never). Fix: correct it, or unset it for the default.",
    ]


async def test_plan_budgets_and_limits_are_shown(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        AGENTSEO_PLAN="pro",
        JOBRELAY_CREDIT_BUDGET="200",
        JOBRELAY_MAX_WAIT_SECONDS="20",
        JOBRELAY_RETRY_MAX_ATTEMPTS="5",
    )

    _, text = await _report(env)

    assert "plan pro (AGENTSEO_PLAN): 300 workload and 3000 control requests/min" in text
    assert "rate limit: 60 requests/min per endpoint, shared by the whole org" in text
    assert "research credit budget: 200 per UTC day (JOBRELAY_CREDIT_BUDGET)" in text
    assert "longest wait inside one tool call: 20 s (JOBRELAY_MAX_WAIT_SECONDS)" in text
    assert "attempts per upstream request: 5 (JOBRELAY_RETRY_MAX_ATTEMPTS)" in text
    assert "JOBRELAY_HTTP_TOKEN not set" in text


def test_run_doctor_prints_the_report_and_returns_its_status(tmp_path: Path) -> None:
    out = io.StringIO()

    assert run_doctor(_env(tmp_path), out=out) == 0
    assert out.getvalue().startswith("jobrelay doctor (jobrelay ")


def test_jobrelay_doctor_reads_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for variable in variables():
        monkeypatch.delenv(variable.name, raising=False)
    monkeypatch.setenv("JOBRELAY_DB", str(tmp_path / "jobs.sqlite3"))
    monkeypatch.setenv("AGENTSEO_PLAN", "agency")

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "plan agency (AGENTSEO_PLAN): 1000 workload and 10000 control requests/min" in out
    assert f"{tmp_path / 'jobs.sqlite3'}: will be created on first start" in out


async def test_a_postgresql_ledger_is_checked_on_the_server(postgres_schema_url: str) -> None:
    report, text = await _report({"JOBRELAY_DB": postgres_schema_url})

    assert report.exit_code == 0
    assert ": OK (PostgreSQL)" in text
    assert "0 unfinished job(s); 0 real research credit(s) requested today (UTC)" in text


async def test_an_unreachable_postgresql_ledger_is_a_problem_without_its_password() -> None:
    report, text = await _report({"JOBRELAY_DB": "postgresql://me:pw-123@127.0.0.1:1/x"})

    assert report.exit_code != 0
    assert "postgresql://me:***@127.0.0.1:1/x: cannot be used (io)" in text
    assert "pw-123" not in text


async def test_observability_says_metrics_logs_and_whether_the_otel_extra_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcp_server import telemetry

    _, off = await _report(_env(tmp_path))
    assert "metrics: off (JOBRELAY_METRICS=1 turns them on)" in off
    assert "logs: text on stderr" in off
    assert "otel extra: installed (OpenTelemetry SDK " in off  # the dev extra includes it

    on = _env(
        tmp_path,
        JOBRELAY_METRICS="1",
        JOBRELAY_LOG_FORMAT="json",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318",
    )
    report, text = await _report(on)
    assert report.exit_code == 0, text
    assert "metrics: on (JOBRELAY_METRICS=1)" in text
    assert "logs: JSON lines on stderr (JOBRELAY_LOG_FORMAT=json)" in text
    assert "OTLP export: metrics and traces" in text

    # Without the extra, metrics on is a problem `serve` would refuse to start with.
    monkeypatch.setattr(telemetry, "EXTRA_DISTRIBUTIONS", ("jobrelay-no-such-distribution",))
    report, text = await _report(on)
    assert "otel extra: not installed (pip install 'jobrelay[otel]')" in text
    assert report.exit_code == 1
    assert report.problems == [
        "Observability: JOBRELAY_METRICS=1 needs the OpenTelemetry SDK. "
        "Fix: pip install 'jobrelay[otel]', or unset JOBRELAY_METRICS."
    ]
