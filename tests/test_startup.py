"""A user's mistake at start-up is one line naming the fix and exit status 2, never a traceback.

`jobrelay doctor` and `jobrelay serve` share the ledger location check, so doctor never says
OK where serve refuses.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from mcp_server.doctor import diagnose

pytestmark = pytest.mark.anyio

_KEYS = ("SEAMLESS_API_KEY", "AGENTSEO_API_KEY", "JOBRELAY_SANDBOX", "JOBRELAY_HTTP_TOKEN")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _KEYS and k != "JOBRELAY_DB"}
    return env | extra


async def _jobrelay(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `python -m mcp_server ARGS` with stdin closed; (exit status, stderr)."""
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-m", "mcp_server", *args],
            input=b"",
            env=env or _env(),
            check=False,
        )
    return done.returncode, done.stderr.decode()


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("command", ["serve --transport http", "sandbox"])
@pytest.mark.parametrize("port", ["99999", "-5", "65536"])
async def test_a_port_out_of_range_is_one_line_and_exit_2(command: str, port: str) -> None:
    code, stderr = await _jobrelay(*command.split(), "--port", port)
    assert code == 2
    name = command.split(maxsplit=1)[0]
    assert _one_line(stderr) == (
        f"jobrelay {name}: --port {port} is not a TCP port. Fix: use a number from 1 to 65535 "
        "(or 0 for any free port)."
    )


@pytest.mark.parametrize("command", ["serve --transport http", "sandbox"])
async def test_a_port_already_in_use_is_one_line_and_exit_2(command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stderr = await _jobrelay(*command.split(), "--host", "127.0.0.1", "--port", str(port))
    name = command.split(maxsplit=1)[0]
    assert code == 2
    assert _one_line(stderr) == (
        f"jobrelay {name}: port {port} on 127.0.0.1 is already in use. Fix: stop the program "
        "listening there, or choose another port with --port."
    )


def _below_a_file(tmp: Path) -> Path:
    (tmp / "plain").write_text("x")
    return tmp / "plain" / "jobs.sqlite3"


_BAD_LOCATIONS: dict[str, Callable[[Path], Path]] = {
    "a directory": lambda tmp: tmp,
    "below a file": _below_a_file,
    "below /proc": lambda _tmp: Path("/proc/nope/jobs.sqlite3"),
}


@pytest.mark.parametrize("where", list(_BAD_LOCATIONS))
async def test_doctor_and_serve_agree_on_a_ledger_location_that_cannot_work(
    where: str, tmp_path: Path
) -> None:
    db = _BAD_LOCATIONS[where](tmp_path)
    with anyio.fail_after(10):
        report = await diagnose({"JOBRELAY_DB": str(db)}, probe_timeout=2.0)
    [problem] = report.problems
    assert problem.startswith("Ledger: ")

    code, stderr = await _jobrelay("serve", env=_env(JOBRELAY_DB=str(db)))
    assert code == 2
    assert _one_line(stderr) == "jobrelay: " + problem.removeprefix("Ledger: ")
    assert not await anyio.Path("/proc/nope").exists()


async def test_doctor_leaves_nothing_behind_where_the_ledger_would_be_created(
    tmp_path: Path,
) -> None:
    db = tmp_path / "a" / "b" / "jobs.sqlite3"
    with anyio.fail_after(10):
        report = await diagnose({"JOBRELAY_DB": str(db)}, probe_timeout=2.0)
    assert report.problems == []
    assert f"{db}: will be created on first start" in report.render()
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may enter any directory")
async def test_a_directory_the_user_may_not_enter_is_one_line_in_doctor_and_serve(
    tmp_path: Path,
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    db = locked / "jobs.sqlite3"
    locked.chmod(0)
    try:
        with anyio.fail_after(10):
            report = await diagnose({"JOBRELAY_DB": str(db)}, probe_timeout=2.0)
        code, stderr = await _jobrelay("serve", env=_env(JOBRELAY_DB=str(db)))
    finally:
        locked.chmod(0o700)
    [problem] = report.problems
    assert "Permission denied" in problem
    assert code == 2
    assert _one_line(stderr) == "jobrelay: " + problem.removeprefix("Ledger: ")


async def test_a_permission_error_on_the_ledger_path_is_a_problem_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As root (CI containers) the directory above cannot be locked: the OS's answer for a
    directory the user may not enter (EACCES from stat) is simulated instead."""
    from mcp_server.cli import main

    db = tmp_path / "locked" / "jobs.sqlite3"
    real_stat = Path.stat

    def stat(self: Path, *, follow_symlinks: bool = True) -> os.stat_result:
        if self == db or tmp_path / "locked" in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(Path, "stat", stat)
    with anyio.fail_after(10):
        report = await diagnose({"JOBRELAY_DB": str(db)}, probe_timeout=2.0)
    [problem] = report.problems
    assert problem == (
        f"Ledger: Cannot create or write the job ledger at {db} (cannot look at it: Permission "
        "denied). Make its directory writable, or set JOBRELAY_DB to a writable path."
    )
    for name in _KEYS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JOBRELAY_DB", str(db))
    assert await anyio.to_thread.run_sync(main, ["serve"]) == 2
    assert _one_line(capsys.readouterr().err) == "jobrelay: " + problem.removeprefix("Ledger: ")


def test_port_checks_run_without_a_subprocess_too() -> None:
    from mcp_server._ports import port_problem

    assert port_problem("serve", "127.0.0.1", 0) is None
    assert port_problem("serve", "127.0.0.1", 70000) is not None
