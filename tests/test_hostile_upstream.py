"""Issue 20: an upstream that stalls, lies in its headers or answers absurdly never breaks a
call or a promise. Each test reproduces one finding of the hostile-upstream run.

Upstreams are `httpx.MockTransport` handlers (in-process, no network); time is a
`ScaledClock`, so a 45 s deadline takes 0.45 s of real time, or a `FakeClock` for pure
policy. Every wait is bounded by `anyio.fail_after`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import TEST_EPOCH
from mcp import Client

from mcp_server._clock import Clock, FakeClock, ScaledClock
from mcp_server.advice import advise_error
from mcp_server.config import load_settings
from mcp_server.errors import DeadlineExceeded, ResponseLost, RetryBudgetExhausted, ServerError
from mcp_server.limits import InMemoryLimiter
from mcp_server.providers.seamless.connection import MAX_POLL_CALLS_PER_ROUND
from mcp_server.providers.seamless.research import CREDITS_ZERO_TRUST_SECONDS
from mcp_server.server import build_server
from mcp_server.upstream._backoff import BackoffPolicy, RetryBudget, counts_against_budget
from mcp_server.upstream._headers import format_clock, parse_hints
from mcp_server.upstream.seamless import MAX_POLL_IDS, SeamlessClient
from mcp_server.watch import PollCoalescer
from tests.conftest import structured, text_of

pytestmark = pytest.mark.anyio

SCALE = 100.0
"""Virtual seconds per real second: the 45 s deadline is 0.45 s."""
MAX_WAIT = 45.0
SLACK = 4.0
"""Virtual seconds of real processing allowed on top of a deadline (40 ms real at SCALE)."""

Handler = Callable[[httpx.Request], Any]


def _settings(tmp_path: Path, **env: str) -> Any:
    return load_settings(
        {
            "JOBRELAY_DB": str(tmp_path / "jobs.sqlite3"),
            "SEAMLESS_API_KEY": "sk-seamless-test-0001",
            "AGENTSEO_API_KEY": "sk-agentseo-test-0001",
            **env,
        }
    )


def _stall_after(clock: Clock, first_timeout: float) -> Handler:
    """The hostile run's upstream: the first request times out after `first_timeout`
    (what httpx's 30 s read timeout did), every later one never answers."""
    seen = {"n": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        seen["n"] += 1
        if seen["n"] == 1:
            await clock.sleep(first_timeout)
            raise httpx.ReadTimeout("stalled", request=request)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    return handler


# ---- 20.1: no call runs past JOBRELAY_MAX_WAIT_SECONDS ------------------------------------


async def test_client_call_with_retries_ends_at_its_deadline() -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    client = SeamlessClient(
        "https://seamless.test/api/client/v1",
        "sk-test-0001",
        clock=clock,
        limiter=InMemoryLimiter(clock=clock),
        policy=BackoffPolicy(),
        budget=RetryBudget(),
        tenant="t",
        transport=httpx.MockTransport(_stall_after(clock, 30.0)),
    )
    async with client:
        start = clock.monotonic()
        with anyio.fail_after(5), pytest.raises(DeadlineExceeded) as caught:
            await client.search("contacts", {}, deadline=start + MAX_WAIT)
    took = clock.monotonic() - start
    assert MAX_WAIT - 1 <= took <= MAX_WAIT + SLACK, took  # was 61 s: two 30 s attempts
    assert caught.value.attempts == 2
    assert caught.value.retry_after > 0


async def _served(tmp_path: Path, clock: Clock, handler: Handler, **env: str) -> Any:
    transport = httpx.MockTransport(handler)
    return build_server(
        _settings(tmp_path, **env),
        clock=clock,
        transports={"seamless": transport, "agentseo": transport},
    )


def _assert_look_again(result: Any, clock: Clock) -> None:
    """The answer says when to look again: seconds and an absolute UTC time, in the
    structure and in the text."""
    data = structured(result)
    error = data.get("error") or {}
    seconds = error.get("retry_after_seconds")
    at = error.get("retry_at")
    assert result.is_error, data
    assert error.get("code") == "upstream_unreachable", error
    assert isinstance(seconds, int | float), error
    assert seconds > 0, error
    assert isinstance(at, str), error
    assert at.endswith("Z"), error
    assert at[11:19] in text_of(result), (at, text_of(result))


async def test_search_prospects_against_a_stalled_upstream_ends_by_the_deadline(
    tmp_path: Path,
) -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    server = await _served(tmp_path, clock, _stall_after(clock, 30.0))
    async with Client(server) as client:
        start = clock.monotonic()
        with anyio.fail_after(10):
            result = await client.call_tool("search_prospects", {"kind": "contacts", "query": "x"})
        took = clock.monotonic() - start
    assert took <= MAX_WAIT + SLACK, took
    _assert_look_again(result, clock)


async def test_get_job_status_of_stalled_seo_jobs_shares_one_deadline(tmp_path: Path) -> None:
    """Two AgentSEO jobs whose GET /jobs/{id} stalls: one deadline for both, not 45 s each."""
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    started = {"n": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            started["n"] += 1
            return httpx.Response(
                202, json={"jobId": f"j{started['n']}", "status": "queued", "phase": "queued"}
            )
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    server = await _served(tmp_path, clock, handler)
    async with Client(server) as client:
        ids = []
        for kw in ("a", "b"):
            with anyio.fail_after(10):
                started_result = await client.call_tool(
                    "start_seo_job",
                    {"workflow": "serp_analysis", "params": {"keyword": kw}, "wait_seconds": 0},
                )
            ids.append(structured(started_result)["job_id"])
        start = clock.monotonic()
        with anyio.fail_after(10):
            result = await client.call_tool("get_job_status", {"job_ids": ids})
        took = clock.monotonic() - start
    assert took <= MAX_WAIT + SLACK, took  # was 60.6 s for one job
    jobs = structured(result)["jobs"]
    assert [j["state"] for j in jobs] == ["queued", "queued"]
    assert all(j.get("next_check_after_seconds") for j in jobs), jobs
    assert "Z" in text_of(result)


# ---- 20.2: one bad credits header does not lock out research ------------------------------


@pytest.mark.parametrize("raw", ["-5", "abc", "1e9", "99999999999", "3.5", "NaN", "-0.5"])
def test_implausible_credit_headers_are_ignored_and_noted(raw: str) -> None:
    hints = parse_hints("seamless", 202, {"X-PublicAPI-Credits": raw}, now=1_790_000_000.0)
    assert hints.credits is None
    assert hints.anomaly is not None
    assert "X-PublicAPI-Credits" in hints.anomaly


@pytest.mark.parametrize(("raw", "value"), [("0", 0), ("999000", 999_000), ("12", 12)])
def test_plausible_credit_headers_are_read(raw: str, value: int) -> None:
    hints = parse_hints("seamless", 202, {"X-PublicAPI-Credits": raw}, now=1_790_000_000.0)
    assert hints.credits == value


class _CreditsLiar:
    """A Seamless upstream whose research answers carry whatever credits header the test sets;
    search answers carry `search_credits`. Counts research POSTs."""

    def __init__(self) -> None:
        self.research_credits = "999000"
        self.search_credits: str | None = None
        self.posts = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/research"):
            self.posts += 1
            return httpx.Response(
                202,
                json={"success": True, "requestIds": [f"r{self.posts}"]},
                headers={"X-PublicAPI-Credits": self.research_credits},
            )
        if "/search/" in path:
            headers = (
                {} if self.search_credits is None else {"X-PublicAPI-Credits": self.search_credits}
            )
            return httpx.Response(200, json={"data": [], "supplementalData": {}}, headers=headers)
        return httpx.Response(404, json={"message": "not here"})


async def _research(client: Client, n: int) -> Any:
    with anyio.fail_after(10):
        return await client.call_tool(
            "start_research",
            {
                "kind": "contacts",
                "contacts": [{"name": f"Person {n}", "company": "Liar Inc"}],
                "wait_seconds": 0,
            },
        )


async def test_a_negative_credits_header_does_not_lock_out_research(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    liar = _CreditsLiar()
    liar.research_credits = "-5"
    server = await _served(tmp_path, clock, liar)
    async with Client(server) as client:
        first = await _research(client, 1)
        second = await _research(client, 2)
    assert not first.is_error, text_of(first)
    assert not second.is_error, text_of(second)  # was: credits_exhausted, nothing sent
    assert liar.posts == 2
    assert "not a plausible credit count" in caplog.text


async def test_a_zero_refuses_locally_only_until_a_good_answer_or_the_trust_window(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    liar = _CreditsLiar()
    liar.research_credits = "0"
    server = await _served(tmp_path, clock, liar)
    async with Client(server) as client:
        await _research(client, 1)  # says 0 credits left
        refused = await _research(client, 2)
        assert liar.posts == 1
        assert refused.is_error
        error = structured(refused)["error"]
        assert error["code"] == "credits_exhausted"
        text = text_of(refused)
        said_at = format_clock(datetime.fromtimestamp(clock.time(), tz=UTC))
        assert "POST /contacts/research" in text, text
        assert said_at in text, text  # where the number came from: which answer, when
        assert error["retry_at"] is not None
        # the next good answer corrects it: a free search says 999000
        liar.search_credits = "999000"
        with anyio.fail_after(10):
            await client.call_tool("search_prospects", {"kind": "contacts", "query": "x"})
        liar.research_credits = "0"
        again = await _research(client, 3)
        assert not again.is_error, text_of(again)
        assert liar.posts == 2
        # the 0 from that answer refuses, but only for the trust window
        assert (await _research(client, 4)).is_error
        clock.advance(CREDITS_ZERO_TRUST_SECONDS + 1)
        late = await _research(client, 5)
        assert not late.is_error, text_of(late)
        assert liar.posts == 3


# ---- 20.6: degraded mode does not hide finished work ---------------------------------------


async def test_the_breaker_keeps_its_announced_instant_and_half_opens() -> None:
    clock = FakeClock()
    budget = RetryBudget()
    state = {"fail": True, "calls": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        state["calls"] += 1
        if state["fail"]:
            return httpx.Response(503, json={"message": "down"})
        return httpx.Response(200, json={"data": [], "supplementalData": {}})

    client = SeamlessClient(
        "https://seamless.test/api/client/v1",
        "sk-test-0001",
        clock=clock,
        limiter=InMemoryLimiter(clock=clock),
        policy=BackoffPolicy(),
        budget=budget,
        tenant="t",
        transport=httpx.MockTransport(handler),
    )
    announced: list[float | None] = []
    async with client:
        with anyio.fail_after(5):
            for _ in range(2):
                with pytest.raises((ServerError, RetryBudgetExhausted)):
                    await client.search("contacts", {})
            for _ in range(3):  # later calls while open: the same instant, not 60 s from now
                clock.advance(15)
                with pytest.raises(RetryBudgetExhausted) as caught:
                    await client.search("contacts", {})
                announced.append(caught.value.until)
            assert len(set(announced)) == 1
            until = announced[0]
            assert until is not None
            assert budget.is_open(clock.monotonic())
            clock.advance(until - clock.time() + 0.5)  # past the instant: half-open
            assert not budget.is_open(clock.monotonic())
            state["fail"] = False
            await client.search("contacts", {})  # the probe succeeds: closed, full budget
    assert budget.open_until is None
    assert budget.can_retry(clock.monotonic())
    assert budget.trips == 1


def test_every_rendering_of_an_open_breaker_names_the_same_instant() -> None:
    error = RetryBudgetExhausted("degraded", provider="seamless", until=1_790_000_060.0)
    first = advise_error(error, now=1_790_000_000.3)
    later = advise_error(error, now=1_790_000_041.9)
    assert first.retry_at == later.retry_at == datetime.fromtimestamp(1_790_000_060, tz=UTC)
    assert first.retry_after_seconds is not None
    assert later.retry_after_seconds is not None
    assert later.retry_after_seconds < first.retry_after_seconds


class _FlakySeamless:
    """Seamless under a sustained 30 % 5xx rate (calls 1, 4, 7 of every 10 fail): searches
    always fail (to open the breaker first); a research job finishes `job_seconds` after
    its POST."""

    def __init__(self, clock: Clock, job_seconds: float = 4.0) -> None:
        self.clock = clock
        self.job_seconds = job_seconds
        self.done_at: float | None = None
        self.calls = 0
        self.polls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if "/search/" in path:
            return httpx.Response(503, json={"message": "overloaded"})
        self.calls += 1
        if self.calls % 10 in (1, 4, 7) and not path.endswith("/research"):
            return httpx.Response(503, json={"message": "overloaded"})
        if path.endswith("/research"):
            self.done_at = self.clock.monotonic() + self.job_seconds
            return httpx.Response(202, json={"success": True, "requestIds": ["r1"]})
        self.polls += 1
        done = self.done_at is not None and self.clock.monotonic() >= self.done_at
        item: dict[str, Any] = {"requestId": "r1", "status": "done" if done else "researching"}
        if done:
            item["contact"] = {"fullName": "Ada Lovelace", "company": "Engines"}
        return httpx.Response(200, json={"success": True, "data": [item]})


async def test_a_job_finished_upstream_is_reported_within_the_announced_time(
    tmp_path: Path,
) -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    upstream = _FlakySeamless(clock)
    server = await _served(tmp_path, clock, upstream)
    async with Client(server) as client:
        announced: set[str] = set()
        for _ in range(2):  # all searches fail: the breaker opens and announces an instant
            with anyio.fail_after(10):
                failed = await client.call_tool("search_prospects", {"kind": "contacts"})
        error = structured(failed)["error"]
        assert error["code"] == "upstream_degraded", error
        deadline_epoch = datetime.fromisoformat(error["retry_at"]).timestamp()
        started = await _research(client, 1)
        job_id = structured(started)["job_id"]
        state = structured(started)["state"]
        for _ in range(8):
            if state == "succeeded":
                break
            with anyio.fail_after(10):
                waited = await client.call_tool(
                    "wait_for_job", {"job_id": job_id, "wait_seconds": 20}
                )
            data = structured(waited)
            state = data["state"]
            advice = data.get("advice") or {}
            if advice.get("code") == "upstream_degraded" and clock.time() < deadline_epoch:
                announced.add(advice["retry_at"])
        reported_at = clock.time()
    assert state == "succeeded"
    assert reported_at <= deadline_epoch, (reported_at, deadline_epoch)  # was 8 x 20 s waits
    assert announced <= {error["retry_at"]}, announced  # the instant held
    assert upstream.polls >= 1


# ---- 20.4: absurd answers are refused; no wait spends more calls than its cadence allows -


class _IdFlood:
    """A research POST answered 202 with `count` requestIds whatever was asked; polls counted."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.polls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/research"):
            ids = [f"flood-{i}" for i in range(self.count)]
            return httpx.Response(202, json={"success": True, "requestIds": ids})
        self.polls += 1
        return httpx.Response(200, json={"success": True, "data": []})


async def test_a_202_with_100000_ids_for_one_target_is_a_protocol_error(tmp_path: Path) -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    upstream = _IdFlood(100_000)
    server = await _served(tmp_path, clock, upstream)
    async with Client(server) as client:
        result = await _research(client, 1)
        text = text_of(result)
        data = structured(result)
        job_id = data["job_id"]
        assert result.is_error
        assert data["error"]["code"] == "outcome_unknown", data
        assert "started" not in text
        assert "100,000 request ids for 1 target" in text, text
        assert len(text) < 2_000  # the ids are not echoed
        with anyio.fail_after(10):
            waited = await client.call_tool("wait_for_job", {"job_id": job_id, "wait_seconds": 27})
        assert structured(waited)["state"] == "unknown"
    assert upstream.polls == 0  # was: 1,000 poll calls in 27 s, then not_found
    row = sqlite3.connect(tmp_path / "jobs.sqlite3").execute(
        "SELECT state, snapshot FROM jobs WHERE job_id = ?", (job_id,)
    )
    state, snapshot = row.fetchone()
    kept = json.loads(snapshot)["protocol_error"]
    assert state == "unknown"
    assert kept["ids_received"] == 100_000
    assert kept["ids_expected"] == 1
    assert kept["ids_kept"][:2] == ["flood-0", "flood-1"]
    assert len(kept["ids_kept"]) == 1_000


async def test_a_wait_spends_no_more_poll_calls_than_its_cadence_allows() -> None:
    """100,000 outstanding ids (a row from before the fix, say): each round makes at most
    `MAX_POLL_CALLS_PER_ROUND` calls and every id still gets its turn."""
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    calls: list[int] = []
    polled: set[str] = set()

    async def poll(ids: Sequence[str]) -> Mapping[str, str]:
        calls.append(len(ids))
        polled.update(ids)
        return dict.fromkeys(ids, "researching")

    ids = [f"id-{i}" for i in range(100_000)]
    wait = 27.0
    async with anyio.create_task_group() as tg:

        def spawn(fn: Callable[[], Awaitable[None]]) -> None:
            tg.start_soon(fn)

        co: PollCoalescer[str] = PollCoalescer(
            poll=poll,
            is_terminal=lambda s: s == "done",
            interval=lambda i: min(5.0, 2.0 * 1.5**i),
            clock=clock,
            spawn=spawn,
            max_ids=MAX_POLL_IDS,
            max_calls_per_round=MAX_POLL_CALLS_PER_ROUND,
        )
        with anyio.fail_after(10):
            async with co.watch(ids):
                await clock.sleep(wait)
        tg.cancel_scope.cancel()
    rounds_allowed = wait / 2.0 + 1  # the cadence never polls faster than every 2 s
    assert len(calls) <= MAX_POLL_CALLS_PER_ROUND * rounds_allowed, len(calls)
    assert all(n <= MAX_POLL_IDS for n in calls)
    assert len(polled) == len(calls) * MAX_POLL_IDS  # rotation: no id polled twice yet


async def test_an_seo_batch_answered_with_the_wrong_number_of_jobs_is_not_trusted(
    tmp_path: Path,
) -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    gets = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, json=[f"job-{i}" for i in range(5_000)])
        gets["n"] += 1
        return httpx.Response(200, json={"jobId": "job-0", "status": "queued"})

    server = await _served(tmp_path, clock, handler)
    target = {"domain": "example.com", "location": "Austin, TX"}
    async with Client(server) as client:
        with anyio.fail_after(10):
            result = await client.call_tool(
                "start_seo_job",
                {"workflow": "local_audit_batch", "params": {"targets": [target, target]}},
            )
    assert result.is_error
    assert structured(result)["error"]["code"] == "outcome_unknown"
    assert "5,000 request ids for 2 target(s)" in text_of(result), text_of(result)
    assert gets["n"] == 0


def test_a_failed_half_open_probe_opens_the_breaker_again_for_a_new_cooldown() -> None:
    budget = RetryBudget()
    for _ in range(5):
        budget.record_failure()
    assert not budget.can_retry(0.0)
    assert budget.trip(0.0, 1000.0, 60.0) == (60.0, 1060.0)
    assert budget.trip(30.0, 1030.0, 60.0) == (60.0, 1060.0)  # while open: the same instant
    assert not budget.can_retry(59.0)
    budget.record_success(59.0)  # a success while open does not close it early
    assert budget.is_open(59.0)
    budget.record(ServerError("x", provider="seamless", operation="o", status=503), 61.0)
    assert not budget.can_retry(61.0)  # half-open probe failed: no retry...
    assert budget.trip(61.0, 1061.0, 60.0) == (121.0, 1121.0)  # ...and a new instant
    assert budget.trips == 2
    budget.record_success(121.5)  # a probe after it succeeds: closed with a full budget
    assert budget.open_until is None
    assert budget.tokens == budget.max_tokens


def test_a_cut_at_the_calls_own_deadline_is_not_held_against_the_upstream() -> None:
    cut = DeadlineExceeded("cut", provider="seamless", operation="o", retry_after=30.0)
    lost = ResponseLost("read timeout", provider="seamless", operation="o")
    assert not counts_against_budget(cut)
    assert counts_against_budget(lost)
