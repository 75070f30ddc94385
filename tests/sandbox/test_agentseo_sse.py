"""The simulated AgentSEO event stream over a real loopback server.

`httpx.ASGITransport` buffers whole responses, so streaming is tested against uvicorn on
127.0.0.1. Most tests use a stepped virtual clock that jumps whenever the stream sleeps, so a
whole job streams at once and deterministically; one runs on a 1000x scaled clock to show
events arriving live, and one on a real-speed clock to show a disconnect ends a sleeping stream.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
import uvicorn
from conftest import TEST_EPOCH
from httpx_sse import ServerSentEvent, aconnect_sse
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_server._clock import ScaledClock
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.sandbox.app import AGENTSEO_PREFIX, create_sandbox_app

pytestmark = [pytest.mark.anyio, pytest.mark.loopback]

EPOCH = 1_790_000_000.0
SERP = {"keyword": "running shoes", "location_code": 2840}
# Event types of a successful job, ids 1..11 (see the agentseo module docstring).
SUCCESS_TYPES = [
    "status",  # 1 queued
    "status",  # 2 fetching 10
    "progress",  # 3 fetching 20
    "status",  # 4 waiting_upstream 30
    "progress",  # 5 40
    "progress",  # 6 50
    "status",  # 7 analyzing 60
    "progress",  # 8 70
    "progress",  # 9 80
    "status",  # 10 finalizing 90
    "completed",  # 11
]


class SteppedClock(ScaledClock):
    """Virtual time that moves only when advanced or slept through (a sleep returns at once)."""

    def __init__(self) -> None:
        super().__init__(1.0, epoch=EPOCH)
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return EPOCH + self.now

    def rescale(self, scale: float) -> None:
        self.scale = scale

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()


class Server(uvicorn.Server):
    """uvicorn with a readiness event, so tests wait for startup without polling."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()


class Switch:
    """The shared server's app: forwards to the current test's sandbox, notes finished requests.

    One server per module keeps the suite fast (uvicorn's shutdown ticks take ~0.3 s).
    """

    def __init__(self) -> None:
        self.app: ASGIApp | None = None
        self.finished: list[str] = []
        self.changed = anyio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        try:
            await self.app(scope, receive, send)
        finally:
            self.finished.append(str(scope.get("path")))
            self.changed.set()
            self.changed = anyio.Event()

    async def wait_finished(self, path: str) -> None:
        while path not in self.finished:
            await self.changed.wait()


@dataclass
class Live:
    base_url: str
    switch: Switch


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module scope, so the shared server fixture can be async


@pytest.fixture(scope="module")
async def live() -> AsyncIterator[Live]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    switch = Switch()
    config = uvicorn.Config(switch, log_level="warning", lifespan="off", date_header=False)
    server = Server(config)
    stopped = anyio.Event()

    async def run() -> None:
        try:
            await server.serve([sock])
        finally:
            stopped.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            with anyio.fail_after(5):
                await server.ready.wait()
            assert server.started
            yield Live(f"http://127.0.0.1:{port}{AGENTSEO_PREFIX}", switch)
            server.should_exit = True  # graceful: waits for every running request
            with anyio.move_on_after(5):
                await stopped.wait()
            if not stopped.is_set():
                tg.cancel_scope.cancel()
                pytest.fail("the loopback server could not stop: a stream outlived its client")
    finally:
        sock.close()


Connect = Callable[[SandboxState], httpx.AsyncClient]


@pytest.fixture
async def connect(live: Live) -> AsyncIterator[Connect]:
    """Serve a sandbox state on the shared server; returns a client for its AgentSEO API."""
    async with httpx.AsyncClient(
        base_url=live.base_url, headers={"x-api-key": "k"}, timeout=httpx.Timeout(5.0)
    ) as client:

        def use(state: SandboxState) -> httpx.AsyncClient:
            live.switch.app = create_sandbox_app(state)
            return client

        yield use


async def start_job(client: httpx.AsyncClient, body: dict[str, Any] = SERP) -> str:
    r = await client.post("/analyze/serp", json=body)
    assert r.status_code == 202
    job_id: str = r.json()["jobId"]
    return job_id


async def read_stream(
    client: httpx.AsyncClient, job_id: str, last_event_id: str | None = None
) -> list[ServerSentEvent]:
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    with anyio.fail_after(5):
        async with aconnect_sse(client, "GET", f"/jobs/{job_id}/events", headers=headers) as source:
            assert source.response.status_code == 200
            return [sse async for sse in source.aiter_sse()]


def stepped_state(**faults: Any) -> tuple[SandboxState, SteppedClock]:
    clock = SteppedClock()
    return SandboxState(clock=clock, faults=Faults(**{"job_seconds": 10.0, **faults})), clock


async def test_stream_sends_every_state_once_with_increasing_ids_then_closes(
    connect: Connect,
) -> None:
    state, _clock = stepped_state()
    client = connect(state)
    job_id = await start_job(client)
    events = await read_stream(client, job_id)
    polled = (await client.get(f"/jobs/{job_id}")).json()

    assert [e.id for e in events] == [str(i) for i in range(1, 12)]
    assert [e.event for e in events] == SUCCESS_TYPES
    assert events[0].retry == 1000
    envelopes = [e.json() for e in events]
    assert [env["progress"]["percent"] for env in envelopes] == [0, *range(10, 101, 10)]
    assert [env["progress"]["eta_seconds"] for env in envelopes] == [
        10,
        9,
        8,
        7,
        6,
        5,
        4,
        3,
        2,
        1,
        0,
    ]
    assert all(env["jobId"] == job_id for env in envelopes)
    assert envelopes[-1] == polled  # the terminal event carries the final envelope


async def test_stream_on_a_scaled_clock_delivers_events_live(connect: Connect) -> None:
    state = SandboxState(
        clock=ScaledClock(1000.0, epoch=TEST_EPOCH),
        faults=Faults(time_scale=1000.0, job_seconds=300.0),
    )
    client = connect(state)
    job_id = await start_job(client)
    arrivals: list[float] = []
    events: list[ServerSentEvent] = []
    with anyio.fail_after(5):
        async with aconnect_sse(
            client, "GET", f"/jobs/{job_id}/events", headers={"Last-Event-ID": "0"}
        ) as source:
            async for sse in source.aiter_sse():
                arrivals.append(anyio.current_time())
                events.append(sse)

    assert [e.id for e in events] == [str(i) for i in range(1, 12)]
    assert [e.event for e in events] == SUCCESS_TYPES
    assert "result" in events[-1].json()
    # The job takes 0.3 s of real time; the events were not delivered in one burst.
    assert arrivals[-1] - arrivals[0] > 0.1


async def test_raw_stream_has_retry_first_and_ping_comments_between_sparse_events(
    connect: Connect,
) -> None:
    state, _clock = stepped_state(job_seconds=600.0)  # 60 virtual seconds between states
    client = connect(state)
    job_id = await start_job(client)
    with anyio.fail_after(5):
        async with client.stream("GET", f"/jobs/{job_id}/events") as r:
            assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
            text = "".join([chunk async for chunk in r.aiter_text()])

    lines = text.split("\n")
    assert lines[0] == "retry: 1000"
    assert lines[1:3] == ["id: 1", "event: status"]
    assert lines[3].startswith('data: {"jobId":')
    assert lines[4:8] == ["", ": ping", ": ping", ": ping"]  # at 15, 30 and 45 s
    assert lines[8] == "id: 2"
    assert text.count(": ping\n") == 30  # three in each of the ten 60 s gaps
    assert "\n\n: ping" in text
    assert ": ping\n\n" not in text  # no blank line after a ping: it never dispatches an event
    assert text.endswith("\n\n")


async def test_dropped_streams_resume_from_last_event_id_without_repeats_or_gaps(
    connect: Connect,
) -> None:
    state, clock = stepped_state(sse_drop_after_events=3)
    client = connect(state)
    job_id = await start_job(client)
    per_connection: list[list[ServerSentEvent]] = []
    last: str | None = None
    while not per_connection or per_connection[-1][-1].event != "completed":
        assert len(per_connection) < 10
        events = await read_stream(client, job_id, last)
        per_connection.append(events)
        last = events[-1].id
        clock.advance(3.5)  # events happen while the client is away; they are replayed
    state.set_faults({"sse_drop_after_events": None})
    replay = await read_stream(client, job_id, "0")

    assert [[e.id for e in conn] for conn in per_connection] == [
        ["1", "2", "3"],
        ["4", "5", "6"],
        ["7", "8", "9"],
        ["10", "11"],
    ]
    received = [e for conn in per_connection for e in conn]
    assert [e.event for e in received] == SUCCESS_TYPES
    assert [e.event for e in replay] == SUCCESS_TYPES
    # A replayed event is the same event: same id, type and data, whenever it is read.
    assert [(e.id, e.event, e.data) for e in replay] == [(e.id, e.event, e.data) for e in received]


async def test_fresh_connect_to_a_finished_job_gets_only_the_terminal_event(
    connect: Connect,
) -> None:
    state, clock = stepped_state()
    client = connect(state)
    job_id = await start_job(client, {"keyword": "x fail-transient"})
    clock.advance(60.0)
    events = await read_stream(client, job_id)
    again = await client.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": events[-1].id})

    assert [(e.id, e.event) for e in events] == [("10", "failed")]
    assert events[0].retry == 1000
    error = events[0].json()["error"]
    assert error == {
        "code": "UPSTREAM_FETCH_FAILED",
        "message": "The upstream provider failed after 3 attempts; resubmitting later may succeed.",
        "retryable": True,
    }
    assert again.status_code == 204


async def test_fresh_connect_mid_job_starts_at_the_current_state(connect: Connect) -> None:
    state, clock = stepped_state()
    client = connect(state)
    job_id = await start_job(client)
    clock.advance(6.5)
    events = await read_stream(client, job_id, last_event_id="not-a-number")

    assert [e.id for e in events] == ["7", "8", "9", "10", "11"]
    assert [e.event for e in events] == SUCCESS_TYPES[6:]
    assert events[0].json()["phase"] == "analyzing"


async def test_unknown_job_stream_is_a_json_404_not_a_stream(connect: Connect) -> None:
    state, _clock = stepped_state()
    client = connect(state)
    r = await client.get("/jobs/nope/events", headers={"Accept": "text/event-stream"})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "NOT_FOUND"


async def test_client_disconnect_ends_a_sleeping_stream_at_once(
    connect: Connect, live: Live
) -> None:
    # Real speed: after its first event the stream sleeps 15 s until its first ping, so its
    # request only finishes within the bound if the server noticed the client leaving.
    state = SandboxState(
        clock=ScaledClock(1.0, epoch=TEST_EPOCH), faults=Faults(job_seconds=1000.0)
    )
    client = connect(state)
    job_id = await start_job(client)
    path = f"{AGENTSEO_PREFIX}/jobs/{job_id}/events"
    with anyio.fail_after(5):
        async with aconnect_sse(client, "GET", f"/jobs/{job_id}/events") as source:
            first = await anext(source.aiter_sse())
        assert path not in live.switch.finished
    with anyio.fail_after(2):
        await live.switch.wait_finished(path)
    assert first.id == "1"


async def test_stream_ends_on_sandbox_reset(connect: Connect) -> None:
    # 100x: the stream wakes for its 15 s ping after 0.15 s, sees the reset and ends.
    state = SandboxState(
        clock=ScaledClock(100.0, epoch=TEST_EPOCH),
        faults=Faults(time_scale=100.0, job_seconds=100_000.0),
    )
    client = connect(state)
    job_id = await start_job(client)
    with anyio.fail_after(5):
        async with aconnect_sse(client, "GET", f"/jobs/{job_id}/events") as source:
            events = source.aiter_sse()
            assert (await anext(events)).id == "1"
            state.reset()
            rest = [e async for e in events]
    assert rest == []
