"""`jobrelay demo`: the scripted session runs every step, shows the advice, and exits 0."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from mcp_server import demo
from mcp_server.demo import DemoError, run_demo
from mcp_server.server import SANDBOX_KEY


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _section(transcript: str, number: int) -> str:
    """Step `number` of the transcript, with the narration's line wrapping undone."""
    body = transcript.split(f"\n{number}. ")[1].split(f"\n{number + 1}. ", maxsplit=1)[0]
    return " ".join(body.split())


@pytest.fixture(scope="module")
def transcript() -> str:
    """One in-process run (non-TTY), shared by the assertions below: it takes a few seconds."""
    out = io.StringIO()
    started = time.monotonic()
    status = run_demo(out=out)
    elapsed = time.monotonic() - started
    text = out.getvalue()
    assert status == 0, text
    assert elapsed < 30, f"the demo took {elapsed:.1f} s"
    return text


def test_demo_walks_through_every_step_in_order(transcript: str) -> None:
    titles = [
        "1. Find prospects (search is free)",
        "2. Research those contacts (1 credit each; one job covers them all)",
        "3. Start an SEO job (AgentSEO SERP analysis)",
        "4. Wait for both jobs, with live progress (bounded waits, MCP progress)",
        "5. Read compact results (full records are one fields=[...] away)",
        "6. Rate limit: another app in the same Seamless org uses up this minute",
        "7. A job that fails upstream is a result with advice, not a tool error",
        "8. Lost the context? The ledger lists every job, with its state",
        "9. Credit error: a second session whose Seamless org has no credits left",
    ]
    positions = [transcript.index("\n" + title + "\n") for title in titles]
    assert positions == sorted(positions)
    assert "every step behaved as expected" in transcript


def test_demo_shows_each_tool_call_and_the_text_the_agent_reads(transcript: str) -> None:
    for call in (
        '-> search_prospects(kind="contacts", '
        'filters={"title": "VP Sales", "industry": "Computer Software"}',
        '-> start_research(kind="contacts", search_result_ids=[',
        '-> start_seo_job(workflow="serp_analysis", params={"keyword": "crm software"})',
        '-> wait_for_job(job_id="seo_',
        '-> wait_for_job(job_id="sea_',
        '-> get_job_result(job_id="sea_',
        "-> list_jobs()",
        "-> get_usage()",
    ):
        assert call in transcript
    assert transcript.count("agent reads:") >= 12


def test_demo_progress_is_plain_lines_when_not_a_terminal(transcript: str) -> None:
    assert "\r" not in transcript
    assert "    progress   0%  queued: Job queued." in transcript
    assert "    progress 100%  completed: Job completed." in transcript
    assert "    progress 100%  3 of 3 targets finished" in transcript


def test_demo_shows_rate_limit_advice_and_the_recovery(transcript: str) -> None:
    section = _section(transcript, 6)
    assert "agent reads (isError): Rate limited by Seamless" in section
    assert "structured error: code=rate_limited, retryable=true, retry_after_seconds=" in section
    assert "s as advised: virtual time" in section
    assert section.endswith("companies: the window has reset.")


def test_demo_shows_failed_jobs_with_advice_and_the_recovery(transcript: str) -> None:
    section = _section(transcript, 7)
    assert "failed with a transient error" in section
    assert "advice: SEO job failed transiently (retryable=true, retry_after_seconds=30)" in section
    assert "Resubmit it with start_seo_job" in section
    assert "(attempt 2 of 3)" in section  # upstream retries, seen live in the progress
    assert "advice: SEO job failed (retryable=false)" in section
    assert "Do not resubmit unchanged" in section
    assert section.count(" finished: 1 result(s)") == 2  # both recoveries succeed


def test_demo_shows_the_credit_error_and_that_free_calls_still_work(transcript: str) -> None:
    section = _section(transcript, 9)
    assert "agent reads (isError): The Seamless org has 0 research credits left" in section
    assert "structured error: code=credits_exhausted, retryable=false" in section
    assert "search_prospects, get_job_status and get_job_result stay free" in section
    assert "Seamless: 0 research credits left" in section


def test_demo_lists_the_six_jobs_it_started(transcript: str) -> None:
    section = transcript.split("\n8. ")[1].split("\n9. ", maxsplit=1)[0]
    rows = [line for line in section.splitlines() if line.startswith("    se")]
    assert len(rows) == 6
    assert sum(" failed" in r for r in rows) == 2


def test_demo_shows_one_job_as_an_mcp_task(transcript: str) -> None:
    section = _section(transcript, 10)
    assert section.startswith("A tasks-capable host: the same kind of job as an MCP task")
    assert "tasks/get -> working (submitting to AgentSEO; poll every 1000 ms)" in section
    assert "% done" in section
    assert "tasks/get -> completed agent reads: SEO serp_analysis job seo_" in section
    assert transcript.index("\n10. A tasks-capable host") > transcript.index("\n9. Credit error")


def test_demo_prints_no_key(transcript: str) -> None:
    assert SANDBOX_KEY not in transcript
    assert "another-app-in-the-same-org" not in transcript
    assert "Token" not in transcript


@pytest.mark.anyio
async def test_progress_is_one_redrawn_bar_on_a_terminal() -> None:
    screen = _Terminal()
    say = demo._Narrator(screen)

    await say.progress(25, 100, "fetching: Fetching live SERP data.")
    await say.progress(100, 100, "done")
    say.write("next")

    first = "    [#####...............]  25%  fetching: Fetching live SERP data."
    second = "    [####################] 100%  done"
    erase = " " * (len(first) - len(second))  # the longer first line is blanked out
    assert screen.getvalue() == f"\r{first}\r{second}{erase}\nnext\n"


def test_an_unexpected_step_result_exits_1_and_says_which(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def broken(*_args: object) -> None:
        await anyio.lowlevel.checkpoint()
        raise DemoError("step 'search': expected 3 contacts, got 0")

    monkeypatch.setattr(demo, "_run", broken)

    assert run_demo(out=io.StringIO()) == 1
    assert capsys.readouterr().err == (
        "jobrelay demo: unexpected result at step 'search': expected 3 contacts, got 0\n"
    )


@pytest.mark.slow
def test_jobrelay_demo_command_exits_0_well_under_a_minute(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("jobrelay")
    command = [str(script), "demo"] if script.exists() else [sys.executable, "-m", "mcp_server"]
    if not script.exists():
        command.append("demo")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603  # our own entry point, fixed arguments
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    assert "every step behaved as expected" in done.stdout
    assert done.stderr == ""
    assert list(tmp_path.iterdir()) == []  # nothing left behind
