"""Following AgentSEO jobs: SSE over a real loopback sandbox, fallbacks and replays with mocks.

`httpx.ASGITransport` buffers whole responses, so live streaming is tested against uvicorn on
127.0.0.1 with the sandbox sharing the client's scaled clock.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from conftest import TEST_EPOCH

from mcp_server._clock import FakeClock, ScaledClock
from mcp_server.errors import NotFoundError
from mcp_server.limits import BucketKey, InMemoryLimiter
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.sandbox.app import AGENTSEO_PREFIX, create_sandbox_app, sandbox_uvicorn_config
from mcp_server.upstream import AgentSEOClient, JobEnvelope
from mcp_server.upstream._backoff import BackoffPolicy, RetryBudget

pytestmark = pytest.mark.anyio

SCALE = 50.0
"""Virtual seconds per real second: a 6 s job streams its 11 states in ~0.12 s."""

#: The sandbox's documented lifecycle of a successful job: (status, percent) per state.
LIFECYCLE = [
    ("queued", 0),
    *[("processing", p) for p in range(10, 100, 10)],
    ("completed", 100),
]


def _states(envs: list[JobEnvelope]) -> list[tuple[str, int]]:
    out = []
    for env in envs:
        assert env.progress is not None
        assert env.progress.percent is not None
        out.append((env.status, int(env.progress.percent)))
    return out


class Sandbox:
    def __init__(self, state: SandboxState, clock: ScaledClock, base: str) -> None:
        self.state = state
        self.clock = clock
        self.base = base

    def client(self, key: str = "sk-test") -> AgentSEOClient:
        return AgentSEOClient(
            self.base + AGENTSEO_PREFIX,
            key,
            clock=self.clock,
            limiter=InMemoryLimiter(self.clock),
            policy=BackoffPolicy(),
            budget=RetryBudget(),
            tenant="k_test",
        )

    def count(self, route: str, status: int = 200) -> int:
        return self.state.responses.get(f"agentseo {route} {status}", 0)


class _Server(uvicorn.Server):
    """uvicorn with an event for "listening", so the test waits on it instead of polling."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


@asynccontextmanager
async def _loopback(scale: float = SCALE, **faults: Any) -> AsyncIterator[Sandbox]:
    clock = ScaledClock(scale, epoch=TEST_EPOCH)
    state = SandboxState(faults=Faults(time_scale=scale, **faults), clock=clock)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(sandbox_uvicorn_config(create_sandbox_app(state), port=port))
    with sock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            with anyio.fail_after(5):
                await server.ready.wait()
            try:
                yield Sandbox(state, clock, f"http://127.0.0.1:{port}")
            finally:
                server.should_exit = True


async def _collect(iterator: AsyncIterator[JobEnvelope]) -> list[JobEnvelope]:
    async with aclosing(iterator) as envs:  # type: ignore[type-var]  # an async generator
        return [env async for env in envs]


# ---- live streams over loopback -----------------------------------------------------------------


async def test_follow_streams_each_state_once_up_to_the_terminal_envelope() -> None:
    with anyio.fail_after(10):
        async with _loopback() as sandbox, sandbox.client() as client:
            started = await client.start("serp_analysis", {"keyword": "running shoes"})
            assert isinstance(started, JobEnvelope)
            envs = await _collect(client.follow(started.job_id))
    states = _states(envs)
    # A fresh connect starts at the current state: a contiguous tail of the lifecycle.
    assert states == LIFECYCLE[len(LIFECYCLE) - len(states) :]
    assert len(states) >= 6
    assert envs[-1].terminal
    assert envs[-1].result is not None
    assert sandbox.count("GET /jobs/{job_id}/events") == 1
    assert sandbox.count("GET /jobs/{job_id}") == 0  # no polling needed


async def test_three_drops_mid_stream_still_deliver_every_event_exactly_once() -> None:
    with anyio.fail_after(10):
        async with _loopback(sse_drop_after_events=3) as sandbox, sandbox.client() as client:
            started = await client.start("serp_analysis", {"keyword": "running shoes"})
            assert isinstance(started, JobEnvelope)
            # Resume "after event 0": the whole log, 11 events, 3 per connection.
            envs = await _collect(client.follow(started.job_id, last_event_id="0"))
    assert _states(envs) == LIFECYCLE
    assert envs[-1].status == "completed"
    assert sandbox.count("GET /jobs/{job_id}/events") == 4  # 3, 3, 3, then 2 with the end
    assert sandbox.count("GET /jobs/{job_id}") == 0


async def test_more_drops_than_allowed_fall_back_to_polling_and_still_finish() -> None:
    with anyio.fail_after(10):
        async with _loopback(sse_drop_after_events=1) as sandbox, sandbox.client() as client:
            started = await client.start("serp_analysis", {"keyword": "running shoes"})
            assert isinstance(started, JobEnvelope)
            envs = await _collect(client.follow(started.job_id, last_event_id="0"))
    states = _states(envs)
    assert states[:4] == LIFECYCLE[:4]  # one event per connection, four connections
    assert states[-1] == ("completed", 100)
    assert len(states) == len(set(states))  # nothing twice
    assert states == sorted(states, key=lambda s: s[1])
    assert sandbox.count("GET /jobs/{job_id}/events") == 4  # first connect + 3 reconnects
    assert sandbox.count("GET /jobs/{job_id}") >= 1


async def test_the_deadline_ends_the_follow_cleanly_while_the_job_runs() -> None:
    with anyio.fail_after(10):
        # 60 s jobs: the second state begins 6 virtual seconds (0.6 s here) after the first.
        async with _loopback(10.0, job_seconds=60.0) as sandbox, sandbox.client() as client:
            started = await client.start("serp_analysis", {"keyword": "running shoes"})
            assert isinstance(started, JobEnvelope)
            begin = sandbox.clock.monotonic()
            envs = await _collect(client.follow(started.job_id, deadline=begin + 3.0))
            elapsed = sandbox.clock.monotonic() - begin
    assert _states(envs) == [("queued", 0)]
    assert not envs[-1].terminal
    assert 3.0 <= elapsed < 6.0
    assert sandbox.count("GET /jobs/{job_id}") == 0


async def test_a_failed_job_ends_the_follow_with_its_error() -> None:
    with anyio.fail_after(10):
        async with _loopback() as sandbox, sandbox.client() as client:
            started = await client.start("serp_analysis", {"keyword": "fail-permanent"})
            assert isinstance(started, JobEnvelope)
            envs = await _collect(client.follow(started.job_id, last_event_id="0"))
    last = envs[-1]
    assert last.status == "failed"
    assert last.error is not None
    assert (last.error.code, last.error.retryable) == ("INVALID_TARGET", False)


# ---- the follower's rules, with scripted streams ------------------------------------------------


def _event(event_id: int, status: str, percent: int, event: str = "status") -> str:
    data = json.dumps({"jobId": "j1", "status": status, "progress": {"percent": percent}})
    return f"id: {event_id}\nevent: {event}\ndata: {data}\n\n"


def _sse(body: str, status: int = 200) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "text/event-stream"}, text=body)


class Script:
    """A MockTransport handler answering events connects and job polls from scripts."""

    def __init__(
        self,
        streams: list[Callable[[httpx.Request], httpx.Response]],
        polls: list[dict[str, Any]] | None = None,
    ) -> None:
        self.streams = iter(streams)
        self.polls: Iterator[dict[str, Any]] = iter(polls or [])
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/events"):
            return next(self.streams)(request)
        return httpx.Response(200, json=next(self.polls))

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


class _OpenLimiter(InMemoryLimiter):
    """Learns and reports like the real limiter but never makes a caller wait, so
    `clock.slept` shows only the delays under test."""

    async def acquire(
        self, key: BucketKey, *, cost: float = 1.0, deadline: float | None = None
    ) -> float:
        del key, cost, deadline
        return 0.0


def _client(script: Script, clock: FakeClock | None = None) -> AgentSEOClient:
    clock = clock or FakeClock()
    return AgentSEOClient(
        "https://seo.example/api/v1",
        "sk-mock",
        clock=clock,
        limiter=_OpenLimiter(clock),
        policy=BackoffPolicy(),
        budget=RetryBudget(),
        transport=httpx.MockTransport(script),
        tenant="k_mock",
    )


_POLLS: list[dict[str, Any]] = [
    {"jobId": "j1", "status": "processing", "progress": {"percent": 50}, "retry_after_seconds": 3},
    {"jobId": "j1", "status": "processing", "progress": {"percent": 50}, "retry_after_seconds": 3},
    {"jobId": "j1", "status": "completed", "progress": {"percent": 100}, "result": {"ok": True}},
]


@pytest.mark.parametrize(
    "no_stream",
    [
        httpx.Response(404, json={"error": {"code": "NOT_FOUND", "message": "no events"}}),
        httpx.Response(200, json={"jobId": "j1", "status": "processing"}),
        httpx.Response(204),
        httpx.Response(503, text="<html>down</html>", headers={"content-type": "text/html"}),
    ],
)
async def test_without_a_stream_the_follower_polls_on_the_server_cadence(
    no_stream: httpx.Response,
) -> None:
    clock = FakeClock()
    script = Script([lambda _: no_stream], _POLLS)
    with anyio.fail_after(5):
        async with _client(script, clock) as client:
            envs = await _collect(client.follow("j1"))
    assert _states(envs) == [("processing", 50), ("completed", 100)]  # the repeat is not news
    assert envs[-1].result == {"ok": True}
    assert script.paths() == ["/api/v1/jobs/j1/events", *["/api/v1/jobs/j1"] * 3]
    assert len(clock.slept) == 2
    assert all(3.0 <= s <= 3.3 for s in clock.slept)  # retry_after_seconds + a little jitter


async def test_polling_an_unknown_job_raises_not_found() -> None:
    def missing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"code": "NOT_FOUND", "message": "nope"}})

    clock = FakeClock()
    client = AgentSEOClient(
        "https://seo.example/api/v1",
        "sk-mock",
        clock=clock,
        limiter=InMemoryLimiter(clock),
        policy=BackoffPolicy(),
        budget=RetryBudget(),
        transport=httpx.MockTransport(missing),
        tenant="k_mock",
    )
    with anyio.fail_after(5):
        async with client:
            with pytest.raises(NotFoundError) as info:
                await _collect(client.follow("j1"))
    assert info.value.endpoint == "GET /jobs/{id}"


async def test_reconnects_send_last_event_id_and_replays_are_not_yielded_twice() -> None:
    first = _event(1, "queued", 0) + _event(2, "processing", 10)
    # This server ignores Last-Event-ID and replays from the start: no event may repeat.
    second = (
        "retry: 4000\n"
        + _event(1, "queued", 0)
        + _event(2, "processing", 10)
        + ": ping\n\n"
        + "event: status\ndata: {not json}\n\n"
        + _event(3, "processing", 20)
        + _event(4, "completed", 100, "completed")
    )
    clock = FakeClock()
    script = Script([lambda _: _sse(first), lambda _: _sse(second)])
    with anyio.fail_after(5):
        async with _client(script, clock) as client:
            envs = await _collect(client.follow("j1"))
    assert _states(envs) == [("queued", 0), ("processing", 10), ("processing", 20),
                             ("completed", 100)]  # fmt: skip
    assert "last-event-id" not in script.requests[0].headers
    assert script.requests[1].headers["last-event-id"] == "2"
    assert script.requests[1].headers["accept"] == "text/event-stream"
    assert len(clock.slept) == 1  # one reconnect, after the first body ended without a final
    assert 1.0 * 0.8 <= clock.slept[0] <= 1.2


async def test_the_server_retry_field_sets_the_reconnect_floor() -> None:
    first = "retry: 7000\n" + _event(1, "queued", 0)
    clock = FakeClock()
    script = Script([lambda _: _sse(first), lambda _: _sse(_event(2, "completed", 100))])
    with anyio.fail_after(5):
        async with _client(script, clock) as client:
            envs = await _collect(client.follow("j1"))
    assert _states(envs) == [("queued", 0), ("completed", 100)]
    assert clock.slept == [7.0]


async def test_a_connection_reset_mid_stream_is_a_drop_followed_by_a_resume() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield _event(1, "queued", 0).encode()
        raise httpx.ReadError("connection reset by peer")

    def first(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=broken())

    script = Script([first, lambda _: _sse(_event(2, "completed", 100, "completed"))])
    with anyio.fail_after(5):
        async with _client(script) as client:
            envs = await _collect(client.follow("j1"))
    assert _states(envs) == [("queued", 0), ("completed", 100)]
    assert script.requests[1].headers["last-event-id"] == "1"


async def test_unknown_statuses_such_as_cancelled_do_not_end_the_follow() -> None:
    body = _event(1, "cancelled", 40) + _event(2, "completed", 100, "completed")
    script = Script([lambda _: _sse(body)])
    with anyio.fail_after(5):
        async with _client(script) as client:
            envs = await _collect(client.follow("j1"))
    assert [e.status for e in envs] == ["cancelled", "completed"]


@pytest.mark.parametrize(
    ("events_url", "expected"),
    [
        ("https://evil.example/api/v1/jobs/j1/events", "https://seo.example/api/v1/jobs/j1/events"),
        ("/api/v1/jobs/j1/events?v=2", "https://seo.example/api/v1/jobs/j1/events?v=2"),
        (None, "https://seo.example/api/v1/jobs/j1/events"),
    ],
)
async def test_events_url_is_followed_only_on_the_configured_origin(
    events_url: str | None, expected: str
) -> None:
    script = Script([lambda _: _sse(_event(1, "completed", 100, "completed"))])
    with anyio.fail_after(5):
        async with _client(script) as client:
            await _collect(client.follow("j1", events_url=events_url))
    assert [str(r.url) for r in script.requests] == [expected]
    assert script.requests[0].headers["x-api-key"] == "sk-mock"


async def test_a_failed_connect_counts_as_a_drop_and_is_retried() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    clock = FakeClock()
    script = Script([refused, lambda _: _sse(_event(1, "completed", 100, "completed"))])
    with anyio.fail_after(5):
        async with _client(script, clock) as client:
            envs = await _collect(client.follow("j1"))
    assert _states(envs) == [("completed", 100)]
    assert len(clock.slept) == 1


async def test_a_reconnect_that_would_pass_the_deadline_is_not_attempted() -> None:
    clock = FakeClock()
    script = Script([lambda _: _sse("retry: 30000\n" + _event(1, "processing", 10))])
    with anyio.fail_after(5):
        async with _client(script, clock) as client:
            envs = await _collect(client.follow("j1", deadline=clock.monotonic() + 10))
    assert _states(envs) == [("processing", 10)]
    assert clock.slept == []  # a 30 s server retry does not fit a 10 s deadline
    assert len(script.requests) == 1


async def test_polling_without_a_hint_uses_the_eta_then_the_policy_schedule() -> None:
    polls: list[dict[str, Any]] = [
        {"jobId": "j1", "status": "queued", "progress": {"percent": 0, "eta_seconds": 4}},
        {"jobId": "j1", "status": "processing", "progress": {"percent": 50}},
        {"jobId": "j1", "status": "completed", "progress": {"percent": 100}},
    ]
    clock = FakeClock()
    script = Script([lambda _: httpx.Response(404)], polls)
    with anyio.fail_after(5):
        async with _client(script, clock) as client:
            envs = await _collect(client.follow("j1"))
    assert [e.status for e in envs] == ["queued", "processing", "completed"]
    assert 4.0 <= clock.slept[0] <= 4.4  # the ETA
    assert 2.4 <= clock.slept[1] <= 3.6  # no hint: 2 s x 1.5 x U(0.8, 1.2)
