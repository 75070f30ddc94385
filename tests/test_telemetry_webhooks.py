"""Webhook deliveries in the metrics (issues 18 and 19), through the in-memory reader and
`/metrics`: each delivery counted by what it did (applied, repeated, unknown; or refused by the
HTTP app), its lag from when the upstream finished the job as the body says, and no secret in
any series or log line."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from mcp_server import telemetry
from mcp_server._clock import ScaledClock
from mcp_server._webhook_app import MAX_WEBHOOK_BODY_BYTES
from mcp_server.config import key_fingerprint, load_settings
from mcp_server.ledger import JobRecord, open_ledger
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.sandbox.app import SEAMLESS_PREFIX
from tests.conftest import TEST_EPOCH, call, http_serving, loopback_sandbox, structured

pytestmark = pytest.mark.anyio

SECRET = "whsec-metrics-0f1e2d3c4b5a69788796a5b4"
OWN_KEY = "seamless-metrics-key-9a8b7c6d5e4f"


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    telemetry.enable(readers=[reader], tracing=False)  # and the Prometheus reader
    try:
        yield reader
    finally:
        telemetry.disable()


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(telemetry.JsonFormatter([SECRET, OWN_KEY]))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@asynccontextmanager
async def served(
    tmp_path: Path, clock: ScaledClock
) -> AsyncIterator[tuple[str, str, dict[str, str]]]:
    """The sandbox as an external Seamless (jobs that take an hour: only deliveries end them
    here), and jobrelay over HTTP with its own key and the webhook secret."""
    state = SandboxState(clock=clock, faults=Faults(time_scale=clock.scale, job_seconds=3600.0))
    async with loopback_sandbox(state) as root:
        env = {
            "JOBRELAY_DB": str(tmp_path / "jobs.db"),
            "SEAMLESS_API_KEY": OWN_KEY,
            "SEAMLESS_BASE_URL": root + SEAMLESS_PREFIX,
            "SEAMLESS_WEBHOOK_SECRET": SECRET,
        }
        async with http_serving(load_settings(env), clock) as (url, _http, _stop):
            yield url, url.removesuffix("/mcp"), env


async def _submitted(url: str, env: Mapping[str, str], name: str) -> JobRecord:
    """A research job started and left running (wait 0): its ledger row."""
    async with (
        httpx2.AsyncClient(timeout=30.0) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        result = await call(
            client,
            "start_research",
            {
                "kind": "companies",
                "companies": [{"name": f"Acme {name}", "domain": f"{name}.example"}],
                "wait_seconds": 0,
            },
        )
    assert not result.is_error, result.content
    job_id = structured(result)["job_id"]
    async with open_ledger(load_settings(env)) as ledger:
        rec = await ledger.get(job_id, tenant=key_fingerprint(OWN_KEY))
    assert rec is not None
    assert rec.upstream_ids
    return rec


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _company(rec: JobRecord, updated: datetime) -> dict[str, Any]:
    return {
        "name": "Acme",
        "domain": "acme.example",
        "apiResearchId": rec.upstream_ids[0],
        "createdAt": _iso(rec.created_at),
        "updatedAt": _iso(updated),
    }


async def test_deliveries_are_counted_by_outcome_with_their_lag_and_no_secret(
    tmp_path: Path, reader: InMemoryMetricReader, json_logs: io.StringIO
) -> None:
    clock = ScaledClock(1.0, epoch=TEST_EPOCH)  # real speed: the lag is measured to a second
    with anyio.fail_after(60):
        async with served(tmp_path, clock) as (url, root, env):
            hook = root + "/webhooks/seamless"
            first = await _submitted(url, env, "first")
            second = await _submitted(url, env, "second")
            clock.advance(60.0)  # a minute after the submits...
            finished = first.created_at + timedelta(seconds=20)  # ...that ended after 20 s
            async with httpx.AsyncClient(timeout=10) as h:
                good = {"x-seamless-webhook-secret": SECRET}
                answers = [
                    await h.post(hook, json=_company(first, finished), headers=good),
                    await h.post(hook, json=_company(first, finished), headers=good),
                    # A record updated before its job was submitted: not this job's end.
                    await h.post(
                        hook,
                        json=_company(second, second.created_at - timedelta(days=30)),
                        headers=good,
                    ),
                    await h.post(
                        hook, json={"apiResearchId": "nobody-asked", "name": "x"}, headers=good
                    ),
                    await h.post(
                        hook,
                        json=_company(first, finished),
                        headers={"x-seamless-webhook-secret": "wrong"},
                    ),
                    await h.post(hook, content=b"not json", headers=good),
                    await h.post(hook, content=b"{" * (MAX_WEBHOOK_BODY_BYTES + 1), headers=good),
                ]
            text = (telemetry.prometheus_text() or b"").decode()
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 401, 400, 413]
    assert [a.json().get("outcome") for a in answers[:4]] == [
        "applied",
        "repeated",
        "applied",
        "unknown",
    ]

    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    points.setdefault(metric.name, []).append((dict(p.attributes or {}), p))
    outcomes = {
        a["jobrelay.webhook.outcome"]: p.value for a, p in points["jobrelay.webhook.deliveries"]
    }
    assert outcomes == {
        "applied": 2,
        "repeated": 1,
        "unknown": 1,
        "unauthorized": 1,
        "invalid": 2,
    }
    lags = {a["jobrelay.webhook.outcome"]: p for a, p in points["jobrelay.webhook.delivery.lag"]}
    assert set(lags) == {"applied", "repeated"}  # the others say no finish time of their job
    assert lags["applied"].count == 1  # the record updated before its submit has no lag
    assert 40.0 <= lags["applied"].sum < 50.0  # a minute after submit, finished at 20 s
    assert lags["repeated"].count == 1
    # Refused ones too: the route they were sent to names the provider.
    for attrs, _ in points["jobrelay.webhook.deliveries"]:
        assert attrs["jobrelay.provider"] == "seamless", attrs

    delivered = [x for x in text.splitlines() if x.startswith("jobrelay_webhook_deliveries_total{")]
    assert len(delivered) == 5
    assert all('jobrelay_provider="seamless"' in line for line in delivered), delivered
    assert 'jobrelay_webhook_outcome="unauthorized"' in text
    assert "jobrelay_webhook_delivery_lag_seconds_bucket" in text
    lines = [line for line in json_logs.getvalue().splitlines() if line]
    assert any("webhook refused" in line for line in lines)
    forbidden = [SECRET, OWN_KEY, key_fingerprint(OWN_KEY)]
    for line in [*text.splitlines(), *lines]:
        for secret in forbidden:
            assert secret not in line
