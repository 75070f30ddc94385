"""What jobrelay says about itself is true (issue 14.8)."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from mcp_server.advice import advise_http, explain_cli

pytestmark = pytest.mark.anyio

NOW = 1_790_000_000.0
_KEYS = ("SEAMLESS_API_KEY", "AGENTSEO_API_KEY", "JOBRELAY_SANDBOX", "JOBRELAY_HTTP_TOKEN")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _KEYS}
    return env | {"JOBRELAY_DB": str(tmp_path / "jobs.sqlite3")} | extra


async def _serve(tmp_path: Path, *args: str, **env: str) -> tuple[int, str]:
    """`jobrelay serve ARGS` with stdin at EOF: it starts, sees no client, exits."""
    with anyio.fail_after(30):
        done = await anyio.run_process(
            [sys.executable, "-m", "mcp_server", "serve", *args],
            input=b"",
            env=_env(tmp_path, **env),
            check=False,
        )
    return done.returncode, done.stderr.decode()


@pytest.mark.parametrize(("args", "env"), [(["--sandbox"], {}), ([], {"JOBRELAY_SANDBOX": "1"})])
async def test_a_forced_sandbox_with_keys_set_does_not_claim_there_is_no_key(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    code, stderr = await _serve(
        tmp_path, *args, SEAMLESS_API_KEY="sk-real", AGENTSEO_API_KEY="ak-real", **env
    )
    assert code == 0, stderr
    assert "no API key" not in stderr
    assert "WARNING" not in stderr
    assert (
        "jobrelay: the embedded sandbox serves Seamless.ai and AgentSEO (JOBRELAY_SANDBOX=1 or "
        "--sandbox): simulated data, no API calls." in stderr
    ), stderr


async def test_a_normal_sandbox_start_says_why_and_is_not_a_warning(tmp_path: Path) -> None:
    code, stderr = await _serve(tmp_path, SEAMLESS_API_KEY="sk-real")
    assert code == 0, stderr
    assert "WARNING" not in stderr
    assert "serves AgentSEO (no AGENTSEO_API_KEY)" in stderr, stderr
    assert "Seamless.ai" not in stderr  # it has a key: live


@pytest.mark.parametrize(
    ("keys", "missing"),
    [
        ({}, ["SEAMLESS_API_KEY", "AGENTSEO_API_KEY"]),
        ({"SEAMLESS_API_KEY": "sk-real"}, ["AGENTSEO_API_KEY"]),
    ],
)
async def test_sandbox_off_without_a_key_refuses_to_start_naming_it(
    tmp_path: Path, keys: dict[str, str], missing: list[str]
) -> None:
    code, stderr = await _serve(tmp_path, JOBRELAY_SANDBOX="0", **keys)
    assert code == 2
    assert "Traceback" not in stderr
    assert stderr.splitlines() == [
        f"jobrelay: {key} is not set and JOBRELAY_SANDBOX=0 turns the sandbox off. Fix: set "
        f"{key}, or unset JOBRELAY_SANDBOX to use the sandbox."
        for key in missing
    ]
    assert not (tmp_path / "jobs.sqlite3").exists()  # refused before touching anything


async def test_serve_in_a_terminal_says_it_waits_for_an_mcp_client(tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    process = await anyio.open_process(
        [sys.executable, "-m", "mcp_server", "serve"],
        stdin=terminal,
        stdout=subprocess.DEVNULL,
        env=_env(tmp_path),
    )
    os.close(terminal)
    text = ""
    try:
        assert process.stderr is not None
        with anyio.fail_after(30):
            async for chunk in process.stderr:
                text += chunk.decode()
                if "waiting for an MCP client" in text and text.endswith("\n"):
                    break
    finally:
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            await process.wait()
        await process.aclose()
        os.close(controller)
    assert "jobrelay: waiting for an MCP client on stdin." in text, text
    assert "jobrelay demo" in text


async def test_a_pipe_on_stdin_gets_no_terminal_notice(tmp_path: Path) -> None:
    code, stderr = await _serve(tmp_path)
    assert code == 0, stderr
    assert "waiting for an MCP client" not in stderr


@pytest.mark.parametrize("ago", [30, 3 * 86400])
def test_a_reset_in_the_past_is_reported_as_passed(ago: int) -> None:
    headers = {"X-RateLimit-Reset": str(int(NOW) - ago)}
    advice = advise_http("seamless", 429, None, headers, None, None, now=NOW)
    assert "which has already passed: retry now" in advice.what_happened
    assert "no reset time was given" not in advice.what_happened
    assert advice.retryable
    assert advice.retry_after_seconds == 1
    assert advice.do_not is None or "before then" not in advice.do_not
    out = explain_cli(429, None, "seamless", [f"X-RateLimit-Reset:{int(NOW) - ago}"], now=NOW)
    assert "Retry: yes, now (the reset time the response states has passed)." in out


def test_no_reset_header_still_says_none_was_given() -> None:
    advice = advise_http("seamless", 429, None, {}, None, None, now=NOW)
    assert "no reset time was given" in advice.what_happened
    assert "has already passed" not in advice.what_happened


def test_explain_takes_a_body_and_a_job_status() -> None:
    out = explain_cli(None, None, "agentseo", [], job_status="failed", now=NOW)
    assert out.startswith("SEO job failed (AgentSEO, job status failed")
    body = '{"error": {"code": "insufficientCredits", "message": "Not enough credits"}}'
    out = explain_cli(402, None, "seamless", [], body=body, now=NOW)
    assert "Not enough credits" in out
    with pytest.raises(ValueError, match="give an HTTP STATUS, --code, --body or --job-status"):
        explain_cli(None, None, "auto", [], now=NOW)
