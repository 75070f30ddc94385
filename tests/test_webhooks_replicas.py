"""Webhook deliveries across replicas (issues 17 and 18): a delivery received by one replica
wakes the waiters and MCP task followers of another, through the results' one path
(`SeamlessConnection.publish_results` -> `sharing.ResultFeed.publish` -> Redis); and it slows the
polling of the replica that holds the poll lease though that replica receives none itself
(`pushes.PushShare`: the arrivals reach every replica's `PushReconciler`).

Replica A serves Streamable HTTP (the `POST /webhooks/seamless` route); replica B runs
in-process with its own runtime, ledger pool and Redis clients, as a second process would; both
on one PostgreSQL ledger and one Redis, with the server's own key and the webhook secret. The
sandbox is an external Seamless on loopback whose jobs never finish by themselves, so a job
can only succeed through the delivery. Needs PostgreSQL and Redis (skipped without, failed in
CI).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcptasks.toy import Inbox, listening, raw_call, raw_get

import mcp_server.limits.redis as redis_limits
from mcp_server._clock import ScaledClock
from mcp_server.config import key_fingerprint, load_settings
from mcp_server.mcptasks import TasksClient
from mcp_server.sandbox._state import Faults, SandboxState
from mcp_server.sandbox.app import SEAMLESS_PREFIX
from mcp_server.server import JobRelayServer, build_server
from tests.conftest import TEST_EPOCH, call, http_serving, loopback_sandbox, structured, text_of

pytestmark = [pytest.mark.anyio, pytest.mark.loopback]

SECRET = "whsec-replicas-7a6b5c4d3e2f1a0b"
OWN_KEY = "seamless-own-key-replicas-0a1b2c3d"
SCALE = 1.0
"""Real time: B's poll rounds are 2 s (then 3, 4.5, 5 s) apart, against a delivery path of
some tens of milliseconds, so a loaded machine does not pass for a missed wake-up."""
WAIT = 120


@dataclass
class Replicas:
    url: str
    """Replica A's /mcp."""
    hook: str
    """Replica A's webhook route."""
    a: JobRelayServer
    """Replica A's server (to look into its watchers)."""
    b: JobRelayServer
    state: SandboxState
    clock: ScaledClock

    def polls(self) -> int:
        requests = self.state.stats()["requests"]
        return sum(n for k, n in requests.items() if k.endswith("/research/poll"))

    async def polled(self, n: int) -> None:
        """Until the sandbox answered `n` polls (bounded)."""
        with anyio.fail_after(10):
            while self.polls() < n:  # noqa: ASYNC110  # the sandbox's counter, no event
                await anyio.sleep(0.005)

    async def deliver(self, request_id: str) -> str:
        """A `company-researched` delivery to replica A; its outcome."""
        body = {"apiResearchId": request_id, "name": "Hooked", "domain": "hooked.example"}
        async with httpx.AsyncClient(timeout=10) as h:
            answer = await h.post(
                self.hook, json=body, headers={"x-seamless-webhook-secret": SECRET}
            )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["outcome"])

    def _b_reconcilers(self) -> list[Any]:
        coalescers = self.b.runtime.connections["seamless"]._coalescers.values()  # type: ignore[union-attr]
        return [c._push for c in coalescers if c._push is not None]

    def pushes_seen_by_b(self) -> int:
        return sum(push.pushes for push in self._b_reconcilers())

    def pushes_relayed_to_b(self) -> int:
        return sum(push.relayed for push in self._b_reconcilers())

    def b_lease_polls(self) -> int:
        """Upstream calls B made as the poll lease's holder (`SharedPoll.upstream_calls`)."""
        coalescers = self.b.runtime.connections["seamless"]._coalescers.values()  # type: ignore[union-attr]
        return sum(getattr(c._round_poll, "upstream_calls", 0) for c in coalescers)


@asynccontextmanager
async def replicas(
    postgres_schema_url: str,
    redis_url: str,
    clock: ScaledClock,
    connect: Callable[[JobRelayServer], Client] = Client,
    *,
    max_wait: float = WAIT,
) -> AsyncIterator[tuple[Replicas, Client]]:
    """Replica A over HTTP and replica B in-process (`connect`: B's client), one sandbox."""
    state = SandboxState(clock=clock, faults=Faults(time_scale=clock.scale, job_seconds=1e6))
    async with loopback_sandbox(state) as root:
        settings = load_settings(
            {
                "JOBRELAY_DB": postgres_schema_url,
                "JOBRELAY_REDIS_URL": redis_url,
                "SEAMLESS_API_KEY": OWN_KEY,
                "SEAMLESS_BASE_URL": root + SEAMLESS_PREFIX,
                "SEAMLESS_WEBHOOK_SECRET": SECRET,
                "JOBRELAY_MAX_WAIT_SECONDS": str(max_wait),
            }
        )
        async with http_serving(settings, clock) as (url, http, _stopped):
            a = http.guard._health.__self__  # type: ignore[union-attr]  # its bound health check
            b = build_server(settings, clock=clock)
            hook = url.removesuffix("/mcp") + "/webhooks/seamless"
            async with connect(b) as client:
                yield Replicas(url, hook, a, b, state, clock), client


@asynccontextmanager
async def over_http(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30.0) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


@pytest.fixture
def shared(redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_limits, "DEFAULT_PREFIX", redis_prefix)


async def start(client: Client, name: str = "acme") -> tuple[str, str]:
    started = await call(
        client,
        "start_research",
        {
            "kind": "companies",
            "companies": [{"name": name.title(), "domain": f"{name}.example"}],
            "wait_seconds": 0,
        },
    )
    assert not started.is_error, text_of(started)
    job = structured(started)
    return job["job_id"], job["items"][0]["request_id"]


@pytest.mark.usefixtures("shared")
async def test_a_delivery_to_one_replica_wakes_a_wait_on_another_without_a_poll(
    postgres_schema_url: str, redis_url: str
) -> None:
    with anyio.fail_after(60):
        clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
        async with replicas(postgres_schema_url, redis_url, clock) as (r, b):
            job_id, request_id = await start(b)
            results: list[Any] = []
            returned_at: list[tuple[float, int]] = []

            async def wait() -> None:
                results.append(
                    await call(b, "wait_for_job", {"job_id": job_id, "wait_seconds": WAIT})
                )
                returned_at.append((r.clock.monotonic(), r.polls()))

            base = r.polls()  # start_research's one look polled already
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await r.polled(base + 1)  # B's wait is registered: its first round polled
                sent_at, polls_at_delivery = r.clock.monotonic(), r.polls()
                assert await r.deliver(request_id) == "applied"  # by replica A
            assert r.pushes_seen_by_b() == 0  # B received nothing itself
    assert not results[0].is_error, text_of(results[0])
    waited = structured(results[0])
    assert waited["state"] == "succeeded"  # upstream never ends it: only the delivery did
    back_at, polls_at_return = returned_at[0]
    # Woken through Redis, not by a poll of its own: no poll between the delivery and the
    # answer, which came before B's next round was due (2 virtual seconds after its first).
    assert polls_at_return == polls_at_delivery
    assert back_at - sent_at < 2.0


@pytest.mark.usefixtures("shared")
async def test_a_task_follower_on_another_replica_wakes_on_a_delivery(
    postgres_schema_url: str, redis_url: str
) -> None:
    inbox = Inbox()
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)

    def tasks_client(server: JobRelayServer) -> Client:
        return Client(
            server,
            extensions=[TasksClient(on_notification=inbox.on_task, sleep=clock.sleep)],
            message_handler=inbox.on_message,
        )

    with anyio.fail_after(60):
        async with replicas(postgres_schema_url, redis_url, clock, tasks_client) as (r, b):
            async with over_http(r.url) as a:  # started on A, waited on as a task on B
                job_id, request_id = await start(a)
            created = await raw_call(b, "wait_for_job", {"job_id": job_id})
            task_id = created["taskId"]
            assert created["status"] == "working"
            async with listening(b, inbox, taskIds=[task_id]):
                assert await r.deliver(request_id) == "applied"  # by replica A
                await inbox.wait_for(lambda box: "completed" in box.statuses(task_id))
            final = await raw_get(b, task_id)
            assert r.pushes_seen_by_b() == 0
    assert final["status"] == "completed"
    assert final["result"]["structuredContent"]["job_id"] == job_id
    assert final["result"]["structuredContent"]["state"] == "succeeded"


FAST = 100.0
"""Virtual seconds per real second in the cadence test: its 300 s window takes 3 s."""
WINDOW = 300.0
"""Virtual seconds B's wait lasts: five slow reconciliation polls' worth (one per 60 s), and
some sixty at the normal 2-5 s cadence."""
PRIMED = 400.0
"""The first job's submit-to-delivery time: B expects the waited job's delivery within
min(600, 1.5 x 400 + 10) s, so the whole window is before its expected completion."""


@pytest.mark.usefixtures("shared")
async def test_deliveries_to_one_replica_slow_the_polls_of_the_replica_holding_the_lease(
    postgres_schema_url: str, redis_url: str
) -> None:
    clock = ScaledClock(FAST, epoch=TEST_EPOCH)
    with anyio.fail_after(60):
        async with replicas(postgres_schema_url, redis_url, clock, max_wait=2 * WINDOW) as (r, b):
            # Deliveries arrive (at A): the first job's, PRIMED virtual seconds after its start.
            # B waits on it (B alone polls, so B holds the poll lease) until the delivery
            # reaches its waiter through Redis, after A told the reconcilers (same channel).
            job_id, request_id = await start(b)
            clock.advance(PRIMED)
            async with anyio.create_task_group() as tg:
                done: list[Any] = []

                async def wait_first() -> None:
                    done.append(
                        await call(b, "wait_for_job", {"job_id": job_id, "wait_seconds": 60})
                    )

                base = r.polls()
                tg.start_soon(wait_first)
                await r.polled(base + 1)  # B's wait is registered: its first round polled
                assert await r.deliver(request_id) == "applied"  # by replica A
            assert structured(done[0])["state"] == "succeeded", text_of(done[0])
            assert r.pushes_seen_by_b() == 0  # B received nothing itself

            # A second job, waited on at B for WINDOW virtual seconds; it never ends upstream
            # and no delivery names it. B polls it on the slow reconciliation cadence only.
            job_id, _ = await start(b, "globex")
            before, lease_polls = r.polls(), r.b_lease_polls()
            began = clock.monotonic()
            waited = await call(b, "wait_for_job", {"job_id": job_id, "wait_seconds": WINDOW})
            elapsed = clock.monotonic() - began
            polls = r.polls() - before
            lease_polls = r.b_lease_polls() - lease_polls
            relayed = r.pushes_relayed_to_b()
    assert structured(waited)["state"] == "running", text_of(waited)
    assert elapsed >= WINDOW - 1.0
    # At most one reconciliation poll per started 60 s (plus the round a wait's end may
    # overlap); at the normal cadence B would have polled ~60 times. Still polled: a push can
    # be lost, and B, the lease holder, makes those calls.
    assert 1 <= polls <= elapsed / 60.0 + 1, polls
    assert lease_polls == polls
    assert relayed >= 1  # what B learnt from A's deliveries


BOB_KEY = "seamless-key-of-bob-replicas-9f8e7d6c"


@pytest.mark.usefixtures("shared")
async def test_another_replicas_delivery_for_another_tenants_job_only_expedites_its_poll(
    postgres_schema_url: str, redis_url: str
) -> None:
    """The tenancy rule holds across replicas: a delivery is trusted for the server's own
    key's jobs only. B receives one naming a job Bob started with his own key and waits on at
    A: A polls it early with Bob's key, and nothing else: no arrival counted on A (its
    polling does not slow down), nothing of the delivery's in Bob's job."""
    clock = ScaledClock(10.0, epoch=TEST_EPOCH)
    with anyio.fail_after(60):
        async with (
            replicas(postgres_schema_url, redis_url, clock) as (r, _b),
            over_http(r.url, {"X-Seamless-Api-Key": BOB_KEY}) as bob,
        ):
            job_id, request_id = await start(bob, "bobs")
            connection: Any = r.a.runtime.connections["seamless"]  # type: ignore[union-attr]
            waited: list[Any] = []
            expedited: list[str] = []

            async def wait() -> None:
                waited.append(
                    await call(bob, "wait_for_job", {"job_id": job_id, "wait_seconds": 20})
                )

            base = r.polls()
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await r.polled(base + 1)  # Bob's wait at A is registered: its first round polled
                co = connection._coalescers[(key_fingerprint(BOB_KEY), "companies")]
                hinted = anyio.Event()
                original = co.expedite

                def spy(ids: list[str]) -> bool:
                    expedited.extend(ids)
                    hinted.set()
                    return bool(original(ids))

                co.expedite = spy
                forged = {"apiResearchId": request_id, "name": "Forged", "domain": "forged.example"}
                # Delivered to B (what its webhook route hands on): nobody there watches it.
                assert await r.b.receive_webhook(request_id, forged) == "unknown"
                with anyio.fail_after(10):
                    await hinted.wait()  # through Redis
            reconcilers = list(connection._pushes._reconcilers.values())  # every tenant's
            counted = sum(p.pushes + p.relayed for p in reconcilers)
            active = [p.active() for p in reconcilers]
    assert expedited == [request_id]
    assert counted == 0
    assert active == [False] * len(active)
    answer = structured(waited[0])
    assert answer["state"] == "running", text_of(waited[0])  # upstream never ends it
    assert "forged.example" not in text_of(waited[0])
