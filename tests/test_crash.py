"""Crash-safety of the job ledger with real processes (issue 5).

`jobrelay sandbox` runs as one subprocess: the external upstream, which outlives the server and
counts every paid POST (`/_sandbox/stats`). `python -m mcp_server serve` runs over stdio as
another, driven by `mcp.Client`, and is killed with SIGKILL (no cleanup of any kind) at the two
moments that matter: after the intent row is written but before the API answered, and after
`start_research` returned. A new server on the same `JOBRELAY_DB` must then list every job with
an honest state, and nothing may be paid for twice. A damaged or locked ledger must stop
`jobrelay serve` at start with one clear line, and leave the file alone.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import anyio
import anyio.abc
import anyio.to_thread
import httpx
import pytest
from conftest import structured, text_of
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client

from mcp_server.ledger import DEFAULT_BUSY_TIMEOUT, JobRecord, SqliteLedger

pytestmark = [pytest.mark.anyio, pytest.mark.loopback, pytest.mark.slow]

ADA = {"name": "Ada Lovelace", "company": "Analytical Engines"}
PAID_ROUTE = "seamless POST /contacts/research"
POLL_ROUTE = "seamless GET /contacts/research/poll"

# Writes the server's pid where the test can read it, then becomes `python -m mcp_server serve`
# (exec keeps the pid), so the test can SIGKILL exactly the process it started.
_SERVE_WITH_PIDFILE = (
    "import os, sys\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    f.write(str(os.getpid()))\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'mcp_server', 'serve'])\n"
)


_PASSED_THROUGH = ("PATH", "PYTHONDONTWRITEBYTECODE", "SYSTEMROOT", "LANG")


def _base_env(home: Path) -> dict[str, str]:
    """A clean environment: nothing from the developer's shell (keys, base URLs) leaks in."""
    env = {name: os.environ[name] for name in _PASSED_THROUGH if name in os.environ}
    return env | {"HOME": str(home)}


async def _read_all(stream: anyio.abc.ByteReceiveStream | None) -> str:
    data = b""
    if stream is not None:
        async for chunk in stream:
            data += chunk
    return data.decode()


# --------------------------------------------------------------------------------------------
# The external sandbox


@dataclass
class Sandbox:
    root: str
    http: httpx.AsyncClient

    @property
    def seamless(self) -> str:
        return f"{self.root}/seamless/api/client/v1"

    @property
    def agentseo(self) -> str:
        return f"{self.root}/agentseo/api/v1"

    async def stats(self) -> dict[str, Any]:
        with anyio.fail_after(10):
            response = await self.http.get(f"{self.root}/_sandbox/stats")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def set_faults(self, **faults: Any) -> None:
        with anyio.fail_after(10):
            response = await self.http.post(f"{self.root}/_sandbox/faults", json=faults)
        response.raise_for_status()


async def _banner(stderr: anyio.abc.ByteReceiveStream) -> str:
    """stderr up to the end of the banner `jobrelay sandbox` prints once it is listening."""
    text = ""
    async for chunk in stderr:
        text += chunk.decode()
        if "control:" in text and text.endswith("\n"):
            return text
    raise AssertionError(f"the sandbox exited before announcing its URLs: {text!r}")


async def _drain(stream: anyio.abc.ByteReceiveStream) -> None:
    async for _chunk in stream:
        pass


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    command = [
        sys.executable, "-m", "mcp_server", "sandbox",
        "--host", "127.0.0.1", "--port", "0", "--job-seconds", "0.5",
    ]  # fmt: skip
    async with (
        await anyio.open_process(
            command, stdout=subprocess.DEVNULL, env=_base_env(tmp_path), cwd=tmp_path
        ) as process,
        httpx.AsyncClient(timeout=5, trust_env=False) as http,
        anyio.create_task_group() as tg,
    ):
        assert process.stderr is not None
        try:
            with anyio.fail_after(20):
                banner = await _banner(process.stderr)
            root = banner.split("SEAMLESS_BASE_URL=", 1)[1].split("/seamless/", 1)[0]
            assert root.startswith("http://127.0.0.1:")
            tg.start_soon(_drain, process.stderr)  # keep the pipe from filling up
            yield Sandbox(root, http)
        finally:
            # A POST held by `latency_ms` may still be sleeping: don't wait for it.
            process.kill()
            with anyio.fail_after(10):
                await process.wait()
            tg.cancel_scope.cancel()


class HoldingProxy:
    """A loopback TCP relay in front of the sandbox: bytes go through both ways unchanged,
    until `hold_paid_posts()`. From then on, a connection that sends a paid research POST is
    held: nothing more of it reaches the sandbox, and the connection stays open until the relay
    closes. The POST has left the server and has no answer, for certain and for as long as the
    test needs: the sandbox counts a request only when it answers, and it never sees this one.
    `held` is set at that moment, so a test kills the server on an event, not on a guess.

    (A `latency_ms` fault cannot do this: a POST the sandbox reads only after the test turned
    the latency back off is answered at once and counted, a race a loaded machine loses.)"""

    _PAID_POST = re.compile(rb"POST \S*/contacts/research[ ?]")

    def __init__(self, upstream_root: str) -> None:
        parts = urlsplit(upstream_root)
        assert parts.hostname is not None, upstream_root
        assert parts.port is not None, upstream_root
        self._upstream = (parts.hostname, parts.port)
        self._holding = False
        self.held = anyio.Event()
        self.root = ""
        """http://127.0.0.1:<port>, once listening."""

    def hold_paid_posts(self) -> None:
        self._holding = True

    def seamless(self) -> str:
        return f"{self.root}/seamless/api/client/v1"

    async def _relay(self, client: anyio.abc.SocketStream) -> None:
        try:
            async with (
                client,
                await anyio.connect_tcp(*self._upstream) as upstream,
                anyio.create_task_group() as tg,
            ):

                async def up() -> None:
                    tail = b""
                    async for chunk in client:
                        seen, tail = tail + chunk, (tail + chunk)[-64:]
                        if self._holding and self._PAID_POST.search(seen):
                            self.held.set()
                            await anyio.sleep_forever()  # held until the relay closes
                        await upstream.send(chunk)
                    tg.cancel_scope.cancel()

                async def down() -> None:
                    async for chunk in upstream:
                        await client.send(chunk)
                    tg.cancel_scope.cancel()

                tg.start_soon(up)
                tg.start_soon(down)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # a peer went away (the server was killed): this connection is over

    @classmethod
    @asynccontextmanager
    async def running(cls, upstream_root: str) -> AsyncIterator[HoldingProxy]:
        proxy = cls(upstream_root)
        async with (
            await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
            anyio.create_task_group() as tg,
        ):
            port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610  # anyio's
            proxy.root = f"http://127.0.0.1:{port}"
            tg.start_soon(listener.serve, proxy._relay)
            try:
                yield proxy
            finally:
                tg.cancel_scope.cancel()


# --------------------------------------------------------------------------------------------
# The jobrelay server over stdio


@dataclass
class Serve:
    client: Client
    pidfile: Path

    @property
    def pid(self) -> int:
        # Written by the shim before exec, so before the server could answer anything.
        return int(self.pidfile.read_text())

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        with anyio.fail_after(30):
            return await self.client.call_tool(tool, arguments)


@asynccontextmanager
async def _serve(sandbox: Sandbox, tmp_path: Path, errlog: TextIO, n: int) -> AsyncIterator[Serve]:
    pidfile = tmp_path / f"serve-{n}.pid"
    env = _base_env(tmp_path) | {
        "JOBRELAY_DB": str(tmp_path / "jobs.sqlite3"),
        "SEAMLESS_API_KEY": "crash-test-key",
        "AGENTSEO_API_KEY": "crash-test-key",
        "SEAMLESS_BASE_URL": sandbox.seamless,
        "AGENTSEO_BASE_URL": sandbox.agentseo,
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-c", _SERVE_WITH_PIDFILE, str(pidfile)], env=env
    )
    with anyio.fail_after(30):
        async with Client(stdio_client(params, errlog=errlog)) as client:
            yield Serve(client, pidfile)


@pytest.fixture
def errlog(tmp_path: Path) -> Iterator[TextIO]:
    """The servers' stderr, shown by pytest when a test fails."""
    with (tmp_path / "serve.stderr").open("w+") as log:
        yield log
        log.seek(0)
        print(log.read(), file=sys.stderr)


def _ledger_rows(db: Path) -> list[tuple[str, str, str | None]]:
    """(job_id, state, raw_status) as committed in the file, read-only, from another process's
    point of view. Empty while the server has not created the file or its tables yet."""
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
    except sqlite3.OperationalError:
        return []
    try:
        return [
            (str(job_id), str(state), raw)
            for job_id, state, raw in conn.execute("SELECT job_id, state, raw_status FROM jobs")
        ]
    except sqlite3.OperationalError:  # no such table (yet)
        return []
    finally:
        conn.close()


async def _wait_for_intent_row(db: Path) -> str:
    with anyio.fail_after(15):
        while True:
            rows = await anyio.to_thread.run_sync(_ledger_rows, db)
            if rows:
                [(job_id, state, raw)] = rows
                assert (state, raw) == ("unknown", "submitting")
                return job_id
            await anyio.sleep(0.01)


# --------------------------------------------------------------------------------------------
# SIGKILL at the two moments that matter


async def test_a_server_killed_between_the_ledger_write_and_the_api_answer_lists_the_job_unknown(
    sandbox: Sandbox, tmp_path: Path, errlog: TextIO
) -> None:
    db = tmp_path / "jobs.sqlite3"
    # Hold the research POST in flight for longer than the test: the server dies mid-request.
    await sandbox.set_faults(latency_ms=60_000)
    outcome: list[str] = []

    async def start(serve: Serve) -> None:
        try:
            result = await serve.call("start_research", {"kind": "contacts", "contacts": [ADA]})
        except MCPError as exc:  # the server died under the call
            outcome.append(f"connection lost: {exc}")
        else:
            outcome.append(f"answered: {text_of(result)}")

    async with _serve(sandbox, tmp_path, errlog, 1) as first, anyio.create_task_group() as tg:
        tg.start_soon(start, first)
        job_id = await _wait_for_intent_row(db)
        first.kill()
    assert len(outcome) == 1
    assert outcome[0].startswith("connection lost"), outcome

    await sandbox.set_faults(latency_ms=0)
    async with _serve(sandbox, tmp_path, errlog, 2) as second:
        listed = structured(await second.call("list_jobs", {}))["jobs"]
        waited = await second.call("wait_for_job", {"job_id": job_id, "wait_seconds": 5})
        status = await second.call("get_job_status", {"job_ids": [job_id]})

    assert [(j["job_id"], j["state"], j["raw_status"]) for j in listed] == [
        (job_id, "unknown", "submitting")
    ]
    assert "Do not resubmit blindly" in listed[0]["advice"]

    assert not waited.is_error, text_of(waited)
    assert (structured(waited)["state"], structured(waited)["advice"]["code"]) == (
        "unknown",
        "outcome_unknown",
    )
    assert "may or may not have been accepted" in text_of(waited)
    assert "Do not resubmit" in text_of(waited)

    assert not status.is_error, text_of(status)
    [job] = structured(status)["jobs"]
    assert (job["job_id"], job["state"], job["advice"]["code"]) == (
        job_id,
        "unknown",
        "outcome_unknown",
    )

    stats = await sandbox.stats()
    assert stats["paid_posts"] == 0  # the held POST never completed while the test ran
    assert PAID_ROUTE not in stats["requests"]


async def test_a_server_killed_after_start_research_returned_finishes_the_job_after_a_restart(
    sandbox: Sandbox, tmp_path: Path, errlog: TextIO
) -> None:
    async with _serve(sandbox, tmp_path, errlog, 1) as first:
        started = await first.call("start_research", {"kind": "contacts", "contacts": [ADA]})
        first.kill()
    assert not started.is_error, text_of(started)
    job_id = structured(started)["job_id"]
    assert structured(started)["state"] == "running"

    async with _serve(sandbox, tmp_path, errlog, 2) as second:
        listed = structured(await second.call("list_jobs", {}))["jobs"]
        polls_before_wait = (await sandbox.stats())["requests"].get(POLL_ROUTE, 0)
        waited = await second.call("wait_for_job", {"job_id": job_id, "wait_seconds": 30})

    assert [(j["job_id"], j["state"]) for j in listed] == [(job_id, "running")]
    assert polls_before_wait == 0  # resumed lazily: nothing polled until someone asked
    assert not waited.is_error, text_of(waited)
    assert structured(waited)["state"] == "succeeded"
    assert structured(waited)["results_total"] == 1

    stats = await sandbox.stats()
    assert stats["requests"][PAID_ROUTE] == 1
    assert stats["paid_posts"] == 1
    assert stats["duplicate_paid_posts"] == 0
    assert stats["requests"][POLL_ROUTE] >= 1


# --------------------------------------------------------------------------------------------
# A ledger that cannot be used stops `jobrelay serve` at start


def _fingerprint(directory: Path) -> dict[str, str]:
    """Every file in the ledger's directory and a hash of its bytes."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


async def _serve_until_exit(tmp_path: Path, db: Path) -> tuple[int, str, str]:
    """Run `python -m mcp_server serve` with stdin held open (a host waiting to talk)."""
    env = _base_env(tmp_path) | {
        "JOBRELAY_DB": str(db),
        "JOBRELAY_SANDBOX": "1",  # never anything but loopback, whatever happens
    }
    command = [sys.executable, "-m", "mcp_server", "serve"]
    async with await anyio.open_process(command, env=env, cwd=tmp_path) as process:
        try:
            with anyio.fail_after(DEFAULT_BUSY_TIMEOUT + 30):
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
        return code, await _read_all(process.stdout), await _read_all(process.stderr)


async def test_a_damaged_ledger_stops_serve_at_start_with_one_clear_line(tmp_path: Path) -> None:
    ledger_dir = tmp_path / "ledger"
    ledger_dir.mkdir()
    db = ledger_dir / "jobs.sqlite3"
    db.write_bytes(b"this was a ledger once " * 400)
    before = _fingerprint(ledger_dir)

    code, stdout, stderr = await _serve_until_exit(tmp_path, db)

    assert code == 2
    assert stdout == ""  # stdout is the protocol: nothing else ever goes there
    assert stderr.endswith("\n")
    [line] = stderr.splitlines()
    assert line.startswith(f"jobrelay: The job ledger at {db} is damaged")
    assert f"mv '{db}' '{db}.damaged'" in line
    assert "Traceback" not in stderr
    assert _fingerprint(ledger_dir) == before  # no byte changed, no -wal/-shm created


# Another process holding the write lock (what an `sqlite3` shell in a transaction does). It
# must be another process: POSIX drops a process's SQLite locks when that process closes any
# descriptor of the file, which hashing the file here would do.
_HOLD_THE_LOCK = (
    "import sqlite3, sys\n"
    "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "conn.execute('BEGIN EXCLUSIVE')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
    "conn.execute('ROLLBACK')\n"
)


async def test_a_ledger_locked_by_another_process_stops_serve_at_start(tmp_path: Path) -> None:
    ledger_dir = tmp_path / "ledger"
    db = ledger_dir / "jobs.sqlite3"
    async with SqliteLedger.open(db) as ledger:
        kept = await ledger.record_intent(
            JobRecord.new(
                provider="agentseo",
                operation="seo:serp_analysis",
                tenant="nokey",
                sandbox=True,
                params={"keyword": "locked"},
            )
        )
    holder_command = [sys.executable, "-c", _HOLD_THE_LOCK, str(db)]
    async with await anyio.open_process(holder_command, env=_base_env(tmp_path)) as holder:
        assert holder.stdin is not None
        assert holder.stdout is not None
        try:
            with anyio.fail_after(20):
                assert await holder.stdout.receive() == b"locked\n"
            before = _fingerprint(ledger_dir)
            code, stdout, stderr = await _serve_until_exit(tmp_path, db)
            after = _fingerprint(ledger_dir)
        finally:
            await holder.stdin.aclose()  # the holder rolls back and exits
            with anyio.fail_after(20):
                await holder.wait()

    assert code == 2
    assert stdout == ""
    [line] = stderr.splitlines()
    assert line.startswith(
        f"jobrelay: The job ledger at {db} is locked by another process "
        f"(waited {DEFAULT_BUSY_TIMEOUT:g} s for it)."
    )
    assert "set JOBRELAY_DB to another file" in line
    assert after == before
    async with SqliteLedger.open(db) as ledger:  # released: the job is still there
        assert await ledger.get(kept.job_id, tenant="nokey") == kept
