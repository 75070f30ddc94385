"""Seamless research webhooks (issue 18): `POST /webhooks/seamless` on the Streamable HTTP
server, fed by the sandbox's deliveries over loopback, with polling as the reconciliation.

The message shapes follow `../shared/reference/seamless-webhooks.yml` (read, never copied):
the body is the bare Contact/Company record, `apiResearchId` its requestId, the secret in
`x-seamless-webhook-secret`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from conftest import TEST_EPOCH, call, http_serving, loopback_sandbox
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

from mcp_server._clock import ScaledClock
from mcp_server._http_app import GuardedApp, host_allowlist, origin_allowlist
from mcp_server._webhook_app import WebhookReceiver, too_deep
from mcp_server.config import key_fingerprint, load_settings, variables
from mcp_server.ledger import JobRecord, open_ledger
from mcp_server.providers import WebhookSpec
from mcp_server.providers.seamless import SeamlessProvider
from mcp_server.providers.seamless.settings import SeamlessSettings
from mcp_server.sandbox._state import Faults, SandboxState
from mcp_server.sandbox.app import SEAMLESS_PREFIX

pytestmark = [pytest.mark.anyio, pytest.mark.loopback]

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "seamless-webhooks.yml"
SECRET = "whsec-test-5f0c1d2e3a4b5c6d7e8f"
OWN_KEY = "seamless-own-key-0a1b2c3d4e5f"
SCALE = 100.0
WAIT = 120


def reference() -> str:
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} is absent (the shared reference is read, never copied)")
    return REFERENCE.read_text()


def yaml_values(text: str, key: str) -> list[str]:
    """The scalar values of `key:` lines (no YAML library is a dependency)."""
    return re.findall(rf"^\s*(?:- )?{key}:\s*(\S+)\s*$", text, flags=re.MULTILINE)


@dataclass
class Served:
    url: str
    """jobrelay's /mcp"""
    hook: str
    sandbox: str
    state: SandboxState
    settings_env: dict[str, str]

    async def sandbox_post(self, path: str, body: Mapping[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as h:
            return await h.post(self.sandbox + path, json=dict(body))

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as h:
            data: dict[str, Any] = (await h.get(self.sandbox + "/_sandbox/stats")).json()
            return data

    async def deliver(
        self, body: bytes | Mapping[str, Any], *, secret: str | None = SECRET, **headers: str
    ) -> httpx.Response:
        sent = dict(headers)
        if secret is not None:
            sent["x-seamless-webhook-secret"] = secret
        async with httpx.AsyncClient(timeout=10) as h:
            if isinstance(body, bytes):
                return await h.post(self.hook, content=body, headers=sent)
            return await h.post(self.hook, json=dict(body), headers=sent)

    async def delivered(self, n: int) -> None:
        """Until the sandbox saw `n` deliveries answered 2xx (bounded)."""
        with anyio.fail_after(10):
            while (await self.stats())["webhooks"]["delivered"] < n:  # noqa: ASYNC110  # another process's counter
                await anyio.sleep(0.01)

    async def polled(self, n: int) -> None:
        """Until the sandbox answered `n` polls (bounded)."""
        with anyio.fail_after(10):
            while await self.polls() < n:  # noqa: ASYNC110  # another process's counter
                await anyio.sleep(0.01)

    async def polls(self) -> int:
        requests = (await self.stats())["requests"]
        return sum(n for k, n in requests.items() if k.endswith("/research/poll"))

    async def row(self, job_id: str, tenant: str | None = None) -> JobRecord:
        settings = load_settings(self.settings_env)
        async with open_ledger(settings) as ledger:
            rec = await ledger.get(job_id, tenant=tenant or key_fingerprint(OWN_KEY))
        assert rec is not None
        return rec


@asynccontextmanager
async def served(
    tmp_path: Path,
    *,
    deliver: bool = True,
    drop_rate: float = 0.0,
    duplicate_rate: float = 0.0,
    seed: int = 0,
    job_seconds: float = 6.0,
    secret: str | None = SECRET,
    token: str | None = None,
) -> AsyncIterator[Served]:
    """The sandbox as an external Seamless on loopback (own lifespan: it delivers), and
    jobrelay over Streamable HTTP with the server's own key and the webhook secret."""
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    state = SandboxState(
        clock=clock, faults=Faults(time_scale=SCALE, job_seconds=job_seconds, seed=seed)
    )
    async with loopback_sandbox(state) as root:
        env = {
            "JOBRELAY_DB": str(tmp_path / "jobs.db"),
            "SEAMLESS_API_KEY": OWN_KEY,
            "SEAMLESS_BASE_URL": root + SEAMLESS_PREFIX,
            "JOBRELAY_MAX_WAIT_SECONDS": str(WAIT),
        }
        if secret is not None:
            env["SEAMLESS_WEBHOOK_SECRET"] = secret
        async with http_serving(load_settings(env), clock, token=token) as (url, _http, _stop):
            s = Served(url, url.removesuffix("/mcp") + "/webhooks/seamless", root, state, env)
            if deliver:
                answer = await s.sandbox_post(
                    "/_sandbox/webhooks",
                    {
                        "url": s.hook,
                        "secret": secret or "unset",
                        "drop_rate": drop_rate,
                        "duplicate_rate": duplicate_rate,
                    },
                )
                assert answer.status_code == 200, answer.text
            yield s


@asynccontextmanager
async def mcp_client(url: str, headers: Mapping[str, str] | None = None) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers=dict(headers or {}), timeout=30.0) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


def ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    data: dict[str, Any] = result.structured_content
    return data


async def research(client: Client, name: str, *, wait: float = WAIT) -> dict[str, Any]:
    return ok(
        await call(
            client,
            "start_research",
            {
                "kind": "companies",
                "companies": [{"name": f"Acme {name}", "domain": f"{name}.example"}],
                "wait_seconds": wait,
            },
        )
    )


# --------------------------------------------------------------------------------------------
# The whole path: sandbox -> webhook -> ledger -> waiter


async def test_deliveries_finish_jobs_and_polling_stops_while_they_arrive(tmp_path: Path) -> None:
    async with served(tmp_path) as s, mcp_client(s.url) as client:
        first = await research(client, "first")
        assert first["state"] == "succeeded"
        # Before the first delivery nothing says webhooks work: polled as usual.
        await s.delivered(1)
        before = await s.polls()
        later = [await research(client, f"later{i}") for i in range(3)]
        assert [j["state"] for j in later] == ["succeeded"] * 3
        # Deliveries arrive now: the later jobs cost no poll at all (they end in 6 virtual
        # seconds, far inside their expected completion).
        assert await s.polls() == before
        hooks = (await s.stats())["webhooks"]
        assert hooks["sent"] == 4
        assert hooks["failed"] == 0
        assert "secret" not in json.dumps(hooks).replace('"secret": "set"', "")


@pytest.mark.parametrize("kind", ["companies", "contacts"])
async def test_a_delivered_record_is_stored_exactly_as_the_poll_returns_it(
    tmp_path: Path, kind: str
) -> None:
    def targets(name: str) -> dict[str, Any]:
        if kind == "companies":
            return {"companies": [{"name": f"Acme {name}", "domain": f"{name}.example"}]}
        return {"contacts": [{"name": f"Jane {name.title()}", "company": f"{name.title()} Inc"}]}

    async with served(tmp_path) as s, mcp_client(s.url) as client:
        args = {"kind": kind, "wait_seconds": WAIT}
        ok(await call(client, "start_research", {**args, **targets("warmup")}))
        await s.delivered(1)  # deliveries for this endpoint arrive: the next job is not polled
        polls = await s.polls()
        job = ok(await call(client, "start_research", {**args, **targets("exact")}))
        assert job["state"] == "succeeded"
        assert await s.polls() == polls  # it was the delivery that finished it
        request_id = job["items"][0]["request_id"]
        rec = await s.row(job["job_id"])
        async with httpx.AsyncClient(timeout=10) as h:
            polled = (
                await h.get(
                    f"{s.sandbox}{SEAMLESS_PREFIX}/{kind}/research/poll",
                    params={"requestIds": request_id},
                    headers={"Token": OWN_KEY},
                )
            ).json()["data"][0]
        record = polled["company" if kind == "companies" else "contact"]
        assert rec.result == {"records": {request_id: record}}
        assert rec.snapshot is not None
        assert rec.snapshot["items"][0]["raw_status"] == polled["status"] == "done"
        page = ok(await call(client, "get_job_result", {"job_id": job["job_id"]}))
        assert page["total"] == 1
        if kind == "companies":
            assert page["items"][0]["domain"] == "exact.example"
        else:
            assert page["items"][0]["name"] == "Jane Exact"


async def test_a_repeated_delivery_changes_nothing(tmp_path: Path) -> None:
    async with served(tmp_path, deliver=False, job_seconds=1e6) as s, mcp_client(s.url) as c:
        job = await research(c, "repeat", wait=0)
        request_id = job["items"][0]["request_id"]
        record = {"apiResearchId": request_id, "name": "Acme repeat", "domain": "repeat.example"}
        first = await s.deliver(record)
        assert first.json() == {"received": True, "outcome": "applied"}
        stored = await s.row(job["job_id"])
        assert stored.state.value == "succeeded"
        for _ in range(3):
            again = await s.deliver({**record, "name": "Something else"})
            assert again.json() == {"received": True, "outcome": "repeated"}
        after = await s.row(job["job_id"])
        assert after.updated_at == stored.updated_at
        assert after.result == {"records": {request_id: record}}


async def test_a_wait_returns_as_soon_as_the_delivery_lands(tmp_path: Path) -> None:
    async with served(tmp_path, deliver=False, job_seconds=1e6) as s, mcp_client(s.url) as c:
        job = await research(c, "waiter", wait=0)
        request_id = job["items"][0]["request_id"]
        results: list[dict[str, Any]] = []

        async def wait() -> None:
            results.append(
                ok(await call(c, "wait_for_job", {"job_id": job["job_id"], "wait_seconds": WAIT}))
            )

        base = await s.polls()  # start_research's one look (wait_seconds 0) polled already
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await s.polled(base + 1)  # the wait is registered: its first round asked the sandbox
            answer = await s.deliver({"apiResearchId": request_id, "name": "W", "domain": "w.io"})
            assert answer.json()["outcome"] == "applied"
        assert results[0]["state"] == "succeeded"


# --------------------------------------------------------------------------------------------
# Reconciliation


async def test_dropped_deliveries_are_reconciled_by_polling(tmp_path: Path) -> None:
    async with served(tmp_path, drop_rate=0.5, seed=7) as s, mcp_client(s.url) as client:
        jobs = [await research(client, f"drop{i}") for i in range(6)]
        assert [j["state"] for j in jobs] == ["succeeded"] * 6
        hooks = (await s.stats())["webhooks"]
        assert hooks["dropped"] >= 1
        assert hooks["sent"] + hooks["dropped"] == 6


async def test_repeated_deliveries_never_duplicate_results(tmp_path: Path) -> None:
    async with served(tmp_path, duplicate_rate=1.0) as s, mcp_client(s.url) as client:
        jobs = [await research(client, f"dup{i}") for i in range(3)]
        assert (await s.stats())["webhooks"]["repeated"] == 3
        for job in jobs:
            page = ok(await call(client, "get_job_result", {"job_id": job["job_id"]}))
            assert page["total"] == 1


# --------------------------------------------------------------------------------------------
# Bad input


async def test_a_wrong_or_missing_secret_is_refused_and_records_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with served(tmp_path, deliver=False, job_seconds=1e6) as s, mcp_client(s.url) as c:
        job = await research(c, "guarded", wait=0)
        record = {"apiResearchId": job["items"][0]["request_id"], "name": "Forged"}
        for secret in (None, "", "wrong", SECRET + "x", SECRET[:-1]):
            answer = await s.deliver(record, secret=secret)
            assert answer.status_code == 401
            assert "x-seamless-webhook-secret" in answer.json()["message"]
        rec = await s.row(job["job_id"])
        assert rec.state.value == "running"
        assert rec.result is None
    assert SECRET not in caplog.text
    assert "Forged" not in caplog.text


@pytest.mark.parametrize(
    ("body", "status", "phrase"),
    [
        (b"not json", 400, "not JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"{}", 400, "apiResearchId"),
        (b'{"apiResearchId": ""}', 400, "apiResearchId"),
        (b'{"apiResearchId": 12}', 400, "apiResearchId"),
        (json.dumps({"apiResearchId": "x" * 500}).encode(), 400, "request id"),
        (b'{"apiResearchId": "a", "pad": "' + b"x" * 300_000 + b'"}', 413, "bytes"),
        (b'{"apiResearchId": "a", "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "deeper"),
    ],
)
async def test_bad_bodies_get_a_clear_refusal(
    tmp_path: Path, body: bytes, status: int, phrase: str
) -> None:
    async with served(tmp_path, deliver=False) as s:
        answer = await s.deliver(body, **{"content-type": "application/json"})
        assert answer.status_code == status
        assert phrase in answer.json()["message"]


async def test_an_unknown_id_is_acknowledged_and_logged_without_its_body(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with served(tmp_path, deliver=False) as s:
        answer = await s.deliver({"apiResearchId": "nosuchid", "email": "jane@secret.example"})
        assert answer.status_code == 200
        assert answer.json() == {"received": True, "outcome": "unknown"}
    assert "nosuchid" in caplog.text
    assert "jane@secret.example" not in caplog.text


async def test_the_route_needs_no_mcp_token_and_serves_nothing_else(tmp_path: Path) -> None:
    token = "t" * 40
    async with served(tmp_path, deliver=False, token=token) as s:
        answer = await s.deliver({"apiResearchId": "nosuchid"})
        assert answer.status_code == 200  # no bearer token needed
        async with httpx.AsyncClient(timeout=10) as h:
            assert (await h.get(s.hook)).status_code == 405
            assert (
                await h.post(s.url, json={}, headers={"x-seamless-webhook-secret": SECRET})
            ).status_code == 401
            for path in ("/webhooks/seamless/", "/webhooks/other"):
                refused = await h.post(
                    s.hook.replace("/webhooks/seamless", path),
                    json={"apiResearchId": "x"},
                    headers={"x-seamless-webhook-secret": SECRET},
                )
                assert refused.status_code == 401  # the bearer token guards everything else
            in_url = await h.post(
                s.hook + "?secret=" + SECRET,
                json={"apiResearchId": "x"},
                headers={"x-seamless-webhook-secret": SECRET},
            )
            assert in_url.status_code == 400


async def test_without_a_secret_there_is_no_webhook_route(tmp_path: Path) -> None:
    async with served(tmp_path, deliver=False, secret=None) as s:
        answer = await s.deliver({"apiResearchId": "x"}, secret="anything")
        assert answer.status_code == 404


async def test_a_delivery_never_changes_another_tenants_job(tmp_path: Path) -> None:
    other = {"X-Seamless-Api-Key": "seamless-key-of-bob-9f8e7d6c"}
    async with (
        served(tmp_path, deliver=False, job_seconds=60) as s,
        mcp_client(s.url, other) as bob,
    ):
        job = await research(bob, "bobs", wait=0)
        request_id = job["items"][0]["request_id"]
        forged = {"apiResearchId": request_id, "name": "Forged Inc", "domain": "forged.example"}
        answer = await s.deliver(forged)
        # Nobody waits on it here: acknowledged, and nothing of Bob's is touched.
        assert answer.json()["outcome"] == "unknown"
        bob_tenant = key_fingerprint(other["X-Seamless-Api-Key"])
        assert (await s.row(job["job_id"], bob_tenant)).result is None
        results: list[dict[str, Any]] = []

        async def wait() -> None:
            results.append(
                ok(await call(bob, "wait_for_job", {"job_id": job["job_id"], "wait_seconds": WAIT}))
            )

        base = await s.polls()
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await s.polled(base + 1)  # Bob's wait is registered: its first round asked
            # Watched here: the delivery only makes Bob's own poll run early.
            assert (await s.deliver(forged)).json()["outcome"] == "forwarded"
        assert results[0]["state"] == "succeeded"
        page = ok(await call(bob, "get_job_result", {"job_id": job["job_id"]}))
        assert page["items"][0]["domain"] == "bobs.example"  # Seamless's, not the forgery


# --------------------------------------------------------------------------------------------
# The reference


def test_the_shapes_match_the_reference() -> None:
    from mcp_server.sandbox._webhooks import SECRET_HEADER

    ref = reference()
    spec = SeamlessProvider.webhook
    assert yaml_values(ref, "header") == [spec.secret_header] == [SECRET_HEADER]
    assert spec.id_field == "apiResearchId"
    assert sorted(yaml_values(ref, "name")) == ["company-researched", "contact-researched"]
    assert set(yaml_values(ref, "correlation_field")) == {"apiResearchId"}


# --------------------------------------------------------------------------------------------
# Any body: a clear answer, never a crash (the guard alone, in process)

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _webhook_only(name: str, spec: WebhookSpec, receive_webhook: WebhookReceiver) -> GuardedApp:
    """The HTTP guard with `name`'s webhook route (secret `SECRET`) in front of an MCP app that
    must never be reached."""

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("nothing reaches the MCP app")

    return GuardedApp(
        inner,
        token=SecretStr("t" * 40),
        allowed_hosts=host_allowlist("127.0.0.1"),
        allowed_origins=origin_allowlist(),
        webhook=(name, spec),
        webhook_secret=SecretStr(SECRET),
        receive_webhook=receive_webhook,
    )


@hypothesis_settings(max_examples=150, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=64),
        _json.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.text(max_size=12), _json, max_size=4).map(
            lambda d: json.dumps({**d, "apiResearchId": d.get("apiResearchId", "r1")}).encode()
        ),
    ),
    secret=st.sampled_from([SECRET, "", "nope"]),
)
def test_any_body_gets_a_clear_answer(body: bytes, secret: str) -> None:
    received: list[str] = []

    async def receive_webhook(research_id: str, record: dict[str, object]) -> str:
        assert str(record["apiResearchId"]).strip() == research_id
        received.append(research_id)
        return "unknown"

    app = _webhook_only(SeamlessProvider.name, SeamlessProvider.webhook, receive_webhook)

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765") as h:
            return await h.post(
                SeamlessProvider.webhook.path,
                content=body,
                headers={"x-seamless-webhook-secret": secret},
            )

    answer = anyio.run(post)
    assert answer.status_code in (200, 400, 401)
    message = answer.json().get("message", "")
    if secret != SECRET:
        assert answer.status_code == 401
        assert received == []
    elif answer.status_code == 400:
        assert any(w in message for w in ("JSON", "apiResearchId"))
        assert received == []
    else:
        assert answer.json() == {"received": True, "outcome": "unknown"}
        assert len(received) == 1


ACME_HOOK = WebhookSpec(
    path="/webhooks/acme",
    secret_env="ACME_WEBHOOK_SECRET",
    secret_header="x-acme-signature",
    id_field="jobId",
    secret=lambda _settings: None,
    setting_hint="the signing key shown in Acme's Console > Hooks",
    id_example="an Acme jobId",
)
"""A third provider's webhook: its refusals must name its own settings, never Seamless's."""


@pytest.mark.parametrize(
    ("name", "spec", "expected"),
    [
        (
            SeamlessProvider.name,
            SeamlessProvider.webhook,
            [
                "Send the x-seamless-webhook-secret header with the secret set in the API's "
                "dashboard (Seamless: Settings > Webhooks), equal to this server's "
                "SEAMLESS_WEBHOOK_SECRET.",
                "The record has no apiResearchId (a non-empty string: the id of the request it "
                "answers, e.g. a Seamless requestId).",
            ],
        ),
        (
            "acme",
            ACME_HOOK,
            [
                "Send the x-acme-signature header with the signing key shown in Acme's "
                "Console > Hooks, equal to this server's ACME_WEBHOOK_SECRET.",
                "The record has no jobId (a non-empty string: the id of the request it "
                "answers, e.g. an Acme jobId).",
            ],
        ),
    ],
)
async def test_refusals_name_the_providers_own_settings(
    name: str, spec: WebhookSpec, expected: list[str]
) -> None:
    async def receive_webhook(research_id: str, record: dict[str, object]) -> str:
        raise AssertionError("a refused delivery reaches no receiver")

    app = _webhook_only(name, spec, receive_webhook)
    transport = httpx.ASGITransport(app=app)
    with anyio.fail_after(10):
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765") as h:
            unauthorized = await h.post(spec.path, json={}, headers={spec.secret_header: "no"})
            no_id = await h.post(spec.path, json={}, headers={spec.secret_header: SECRET})
    assert [unauthorized.status_code, no_id.status_code] == [401, 400]
    assert [unauthorized.json()["message"], no_id.json()["message"]] == expected


# --------------------------------------------------------------------------------------------
# Telling stdio users


async def test_doctor_says_webhooks_need_an_http_deployment(tmp_path: Path) -> None:
    from mcp_server.doctor import diagnose

    base = {"JOBRELAY_DB": str(tmp_path / "jobs.db")}
    without = (await diagnose(base)).render()
    assert "SEAMLESS_WEBHOOK_SECRET not set: research results are polled" in without
    report = await diagnose({**base, "SEAMLESS_WEBHOOK_SECRET": SECRET})
    text = report.render()
    assert "POST https://<this server>/webhooks/seamless" in text
    assert "a stdio server cannot" in text
    assert "the secret is short" in text  # under 32 characters
    assert SECRET not in text
    assert report.exit_code == 0


def test_depth_is_counted_outside_strings_only() -> None:
    assert too_deep(b"[" * 33 + b"]" * 33, 32)
    assert not too_deep(b"[" * 32 + b"]" * 32, 32)
    assert not too_deep(b'{"a": "[[[[[[[[[[\\"[[[[["}', 2)
    assert too_deep(b'{"a": "\\\\", "b": [[]]}', 2)  # an escaped backslash


def test_the_secret_is_a_secret_setting() -> None:
    settings = load_settings({"SEAMLESS_WEBHOOK_SECRET": f"  {SECRET} "})
    secret = settings.of(SeamlessSettings).webhook_secret  # the provider's own variable
    assert secret is not None
    assert secret.get_secret_value() == SECRET
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert SECRET not in shown
    assert SECRET not in repr(settings.of(SeamlessSettings))
    assert "SEAMLESS_WEBHOOK_SECRET" in {v.name for v in variables() if v.secret}
    blank = load_settings({"SEAMLESS_WEBHOOK_SECRET": "  "})
    assert blank.of(SeamlessSettings).webhook_secret is None
