"""Metrics, spans and JSON logs (issue 19): names, units and attributes as the OpenTelemetry
MCP and HTTP semantic conventions spell them; `/metrics`; nothing secret exported; nothing
imported or recorded when off."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client import Client
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from mcp_server import telemetry
from mcp_server._clock import ScaledClock
from mcp_server.config import Settings, key_fingerprint
from mcp_server.limits import bucket_key
from mcp_server.limits._window import refusal
from mcp_server.sandbox._state import SandboxState
from tests.conftest import call, http_serving, structured, text_of

pytestmark = pytest.mark.anyio

SEAMLESS_KEY = "FAKE-key-seamless-0123456789abcdef"
AGENTSEO_KEY = "FAKE-key-agentseo-fedcba9876543210"
HTTP_TOKEN = "FAKE-token-http-abcdefghijklmnopqrstuvwxyz0123"


Points = dict[str, list[tuple[dict[str, Any], Any]]]


def _metrics(reader: InMemoryMetricReader) -> tuple[Points, dict[str, str]]:
    """Every data point by metric name (attributes, point), and each metric's unit."""
    points: Points = {}
    units: dict[str, str] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                units[metric.name] = metric.unit or ""
                for p in metric.data.data_points:
                    points.setdefault(metric.name, []).append((dict(p.attributes or {}), p))
    return points, units


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    telemetry.enable(readers=[reader], tracing=False)
    try:
        yield reader
    finally:
        telemetry.disable()


class _Collect(SpanProcessor):
    """Keeps finished spans while `on` (the global provider outlives the test)."""

    def __init__(self) -> None:
        self.on = False
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self.spans.append(span)


_COLLECT = _Collect()
_ADDED: list[TracerProvider] = []


@pytest.fixture
def spans() -> Iterator[_Collect]:
    """An SDK tracer provider as the global one (set once per process), collecting spans."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if provider not in _ADDED:
        provider.add_span_processor(_COLLECT)
        _ADDED.append(provider)
    _COLLECT.spans.clear()
    _COLLECT.on = True
    try:
        yield _COLLECT
    finally:
        _COLLECT.on = False
        _COLLECT.spans.clear()


async def _research(client: Client, n: int = 2) -> dict[str, Any]:
    found = await call(client, "search_prospects", {"kind": "contacts", "limit": n})
    ids = [item["search_result_id"] for item in structured(found)["items"]]
    result = await call(
        client,
        "start_research",
        {"kind": "contacts", "search_result_ids": ids, "wait_seconds": 30},
    )
    assert not result.is_error, text_of(result)
    return structured(result)


# --------------------------------------------------------------------------------------------
# Off: nothing imported, nothing installed


def test_disabled_imports_no_metrics_api_sdk_or_exporter() -> None:
    """The mcp SDK imports `opentelemetry.trace` for its spans; jobrelay adds nothing."""
    script = """
import sys, anyio
from mcp_server import telemetry
from mcp_server.config import load_settings
from mcp_server.server import build_server
from mcp_server.transport import serve
from mcp_server._http_app import create_http_app
from mcp_server.limits import bucket_key
from mcp_server.limits._window import refusal
server = build_server(load_settings({"JOBRELAY_DB": sys.argv[1]}))
assert not any(type(m).__name__ == "OperationMetrics" for m in server._lowlevel_server.middleware)
with telemetry.upstream_call("seamless", "GET", "/x") as c:
    c.answered(429)
telemetry.limiter_waited("seamless", "b", 1.0)
refusal(bucket_key("seamless", "k", "GET", "/x"), 2.0)
telemetry.hints_seen("seamless", "b", remaining=1, limit=2, credits=3)
telemetry.poll_round(3, "seamless")
telemetry.sse_reconnected("agentseo")
telemetry.webhook_delivered("delivered", 1.0)
telemetry.jobs_counted({("seamless", "running"): 1})
telemetry.buckets_sampled([telemetry.BucketFill("seamless", "b", 1, 2, 0.0)])
assert telemetry.extra_installed()  # read from the installed distributions, not imported
assert telemetry.prometheus_text() is None
print(sorted(m for m in sys.modules
             if m.startswith(("opentelemetry.metrics", "opentelemetry.sdk",
                              "opentelemetry.exporter", "prometheus_client"))))
"""
    out = subprocess.run(  # noqa: S603  # this interpreter, our own script
        [sys.executable, "-c", script, ":memory:"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_metrics_on_without_the_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.metrics", None)
    with pytest.raises(telemetry.TelemetryUnavailable, match=r"pip install 'jobrelay\[otel\]'"):
        telemetry.enable()
    assert not telemetry.enabled()


def test_serve_refuses_metrics_without_the_extra_in_one_line(
    monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Settings]
) -> None:
    from mcp_server.transport import _observability

    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.prometheus", None)
    monkeypatch.setattr(telemetry, "configure_logging", lambda *_args: None)
    problem = _observability(make_settings(JOBRELAY_METRICS="1"))
    assert problem is not None
    assert "JOBRELAY_METRICS=1" in problem
    assert "jobrelay[otel]" in problem
    assert _observability(make_settings()) is None
    assert not telemetry.enabled()


# --------------------------------------------------------------------------------------------
# On: the instruments through the in-memory reader


async def test_a_research_job_records_operation_upstream_job_and_credit_metrics(
    reader: InMemoryMetricReader,
    make_settings: Callable[..., Settings],
    clock: ScaledClock,
    sandbox_state: SandboxState,
) -> None:
    from mcp_server.server import build_server

    server = build_server(make_settings(), clock=clock, sandbox_state=sandbox_state)
    async with Client(server) as client:
        job = await _research(client, 2)
        bad = await call(client, "get_job_status", {"job_id": "sea_nope"})
        # The sampled gauges, refreshed by the server's background sampler (virtual time):
        # the job counted in the state the tool reported (or its end, if it moved on since).
        with anyio.fail_after(10):
            while not any(
                a["jobrelay.provider"] == "seamless"
                and a["jobrelay.job.state"] in (job["state"], "succeeded")
                and p.value == 1
                for a, p in _metrics(reader)[0].get("jobrelay.jobs", [])
            ):
                await clock.sleep(1.0)
    assert job["state"] == "succeeded"
    assert bad.is_error
    points, units = _metrics(reader)

    # MCP conventions: mcp.server.operation.duration, seconds, method/tool/operation names.
    assert units["mcp.server.operation.duration"] == "s"
    ops = points["mcp.server.operation.duration"]
    tools = {a.get("gen_ai.tool.name"): a for a, _ in ops if a["mcp.method.name"] == "tools/call"}
    assert set(tools) >= {"search_prospects", "start_research", "get_job_status"}
    started = tools["start_research"]
    assert started["gen_ai.operation.name"] == "execute_tool"
    assert "error.type" not in started
    assert started["mcp.protocol.version"]
    assert tools["get_job_status"]["error.type"] == "tool_error"
    assert {"tools/list", "tools/call"} <= {a["mcp.method.name"] for a, _ in ops}
    assert all("gen_ai.tool.name" not in a for a, _ in ops if a["mcp.method.name"] != "tools/call")

    # HTTP client conventions for each upstream attempt, plus the provider.
    assert units["http.client.request.duration"] == "s"
    http = points["http.client.request.duration"]
    research = [a for a, _ in http if a["url.template"] == "/contacts/research"]
    assert research
    assert research[0] == {
        "jobrelay.provider": "seamless",
        "http.request.method": "POST",
        "url.template": "/contacts/research",
        "http.response.status_code": 202,
    }
    assert sum(p.count for _, p in http) >= 3  # search, research, at least one poll

    waits = points["jobrelay.limiter.wait.duration"]
    assert units["jobrelay.limiter.wait.duration"] == "s"
    assert {a["jobrelay.provider"] for a, _ in waits} == {"seamless"}
    assert sum(p.count for _, p in waits) == sum(p.count for _, p in http)

    credits = points["jobrelay.credits.remaining"]
    assert credits[0][0] == {"jobrelay.provider": "seamless"}
    assert credits[0][1].value >= 0
    spent = points["jobrelay.credits.spent"]
    assert [(a, p.value) for a, p in spent] == [({"jobrelay.provider": "seamless"}, 2)]

    transitions = {a["jobrelay.job.state"]: p.value for a, p in points["jobrelay.job.transitions"]}
    assert transitions.get("succeeded") == 1
    (done_attrs, done), *_ = points["jobrelay.job.duration"]
    assert done_attrs == {
        "jobrelay.provider": "seamless",
        "jobrelay.job.operation": "research_contacts",
        "jobrelay.job.state": "succeeded",
    }
    assert done.count == 1
    assert units["jobrelay.job.duration"] == "s"
    rounds = points.get("jobrelay.poll.round.calls", [])
    assert all(p.sum >= p.count for _, p in rounds)  # a round that ran made at least one call
    assert all(a == {"jobrelay.provider": "seamless"} for a, _ in rounds)

    # Bucket fill as the local limiter sees it (the sampler's last look): the research POST
    # bucket used once, of its capacity (0 if that send left the window: virtual time runs
    # 100x; the arithmetic itself is pinned in test_telemetry_gauges on a FakeClock).
    fill = {
        name: {a["jobrelay.limiter.bucket"]: p.value for a, p in points[name]}
        for name in (
            "jobrelay.limiter.bucket.used",
            "jobrelay.limiter.bucket.capacity",
            "jobrelay.limiter.bucket.wait",
        )
    }
    assert fill["jobrelay.limiter.bucket.used"]["POST /contacts/research"] in (0, 1)
    assert fill["jobrelay.limiter.bucket.capacity"]["POST /contacts/research"] > 1
    assert fill["jobrelay.limiter.bucket.wait"]["POST /contacts/research"] == 0.0
    assert units["jobrelay.limiter.bucket.wait"] == "s"
    assert units["jobrelay.jobs"] == "{job}"


def test_a_429_an_upstream_error_and_a_local_refusal_are_counted(
    reader: InMemoryMetricReader,
) -> None:
    with telemetry.upstream_call("agentseo", "POST", "/serp") as c:
        c.answered(429)
    with pytest.raises(httpx.ConnectError), telemetry.upstream_call("agentseo", "GET", "/jobs"):
        raise httpx.ConnectError("refused")
    error = refusal(bucket_key("agentseo", "k_0123456789ab", "POST", "/serp"), 12.0)
    assert error.retry_after == 12.0
    telemetry.hints_seen("agentseo", "workload", remaining=0, limit=10, credits=None)
    points, units = _metrics(reader)
    where = {
        "jobrelay.provider": "agentseo",
        "http.request.method": "POST",
        "url.template": "/serp",
    }
    assert [(a, p.value) for a, p in points["jobrelay.upstream.rate_limited"]] == [(where, 1)]
    by_error = {a.get("error.type"): a for a, _ in points["http.client.request.duration"]}
    assert by_error["429"]["http.response.status_code"] == 429
    assert "http.response.status_code" not in by_error["ConnectError"]
    (refused, n), *_ = [(a, p.value) for a, p in points["jobrelay.limiter.refusals"]]
    assert refused == {"jobrelay.provider": "agentseo", "jobrelay.limiter.bucket": error.bucket}
    assert n == 1
    remaining = points["jobrelay.limiter.bucket.remaining"]
    assert [(a, p.value) for a, p in remaining] == [
        ({"jobrelay.provider": "agentseo", "jobrelay.limiter.bucket": "workload"}, 0)
    ]
    assert units["jobrelay.upstream.rate_limited"] == "{response}"


def test_webhook_sse_and_round_recorders(reader: InMemoryMetricReader) -> None:
    telemetry.webhook_delivered("delivered", 0.25, provider="seamless")
    telemetry.webhook_delivered("failed")
    telemetry.sse_reconnected("agentseo")
    telemetry.poll_round(3)
    points, units = _metrics(reader)
    outcomes = {
        (a["jobrelay.webhook.outcome"], a["jobrelay.provider"]): p.value
        for a, p in points["jobrelay.webhook.deliveries"]
    }
    # A delivery whose provider is not known is labelled so, never left without one.
    assert outcomes == {("delivered", "seamless"): 1, ("failed", "unknown"): 1}
    assert [p.count for _, p in points["jobrelay.webhook.delivery.lag"]] == [1]
    assert [p.value for _, p in points["jobrelay.sse.reconnects"]] == [1]
    assert [p.sum for _, p in points["jobrelay.poll.round.calls"]] == [3]
    assert units["jobrelay.webhook.delivery.lag"] == "s"


# --------------------------------------------------------------------------------------------
# Spans: upstream calls as children of the SDK's tool span, trace context from params._meta


async def test_upstream_spans_are_children_of_the_tool_span_from_params_meta(
    spans: _Collect,
    make_settings: Callable[..., Settings],
    clock: ScaledClock,
    sandbox_state: SandboxState,
) -> None:
    from mcp_server.server import build_server

    telemetry.enable(readers=[InMemoryMetricReader()], tracing=True, prometheus=False)
    try:
        server = build_server(make_settings(), clock=clock, sandbox_state=sandbox_state)
        async with Client(server) as client:
            with trace.get_tracer("agent").start_as_current_span("agent turn") as agent:
                found = await call(client, "search_prospects", {"kind": "contacts", "limit": 1})
        assert not found.is_error
    finally:
        telemetry.disable()
    by_name = {s.name: s for s in spans.spans}
    tool = by_name["tools/call search_prospects"]
    assert tool.kind is trace.SpanKind.SERVER
    assert tool.context.trace_id == agent.get_span_context().trace_id
    upstream = [
        s
        for s in spans.spans
        if s.kind is trace.SpanKind.CLIENT and s.attributes and "url.template" in s.attributes
    ]
    assert upstream
    for span in upstream:
        assert span.parent is not None
        assert span.parent.span_id == tool.context.span_id
        assert span.attributes["jobrelay.provider"] == "seamless"
        assert (
            span.name
            == f"{span.attributes['http.request.method']} {span.attributes['url.template']}"
        )


# --------------------------------------------------------------------------------------------
# /metrics on the HTTP transport; nothing secret in any series or log line


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The root logger's records as `JSON_FORMAT` lines, redacted of the test's secrets."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(telemetry.JsonFormatter([SEAMLESS_KEY, AGENTSEO_KEY, HTTP_TOKEN]))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
async def metrics_on() -> AsyncIterator[None]:
    telemetry.enable()
    try:
        yield
    finally:
        telemetry.disable()


async def test_metrics_endpoint_serves_prometheus_text_behind_the_token_with_no_secret(
    metrics_on: None,
    json_logs: io.StringIO,
    make_settings: Callable[..., Settings],
    clock: ScaledClock,
    sandbox_state: SandboxState,
) -> None:
    from mcp.client.streamable_http import streamable_http_client

    settings = make_settings(
        SEAMLESS_API_KEY=SEAMLESS_KEY,
        AGENTSEO_API_KEY=AGENTSEO_KEY,
        JOBRELAY_SANDBOX="on",
        JOBRELAY_HTTP_TOKEN=HTTP_TOKEN,
    )
    auth = {"Authorization": f"Bearer {HTTP_TOKEN}"}
    async with http_serving(settings, clock, sandbox_state, token=HTTP_TOKEN) as (url, _, _):
        async with (
            httpx2.AsyncClient(headers=auth, timeout=httpx2.Timeout(30.0, read=60.0)) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            await _research(client, 1)
            seo = await call(
                client, "start_seo_job", {"workflow": "serp_analysis", "params": {"keyword": "x"}}
            )
            assert not seo.is_error, text_of(seo)
            # The sampled gauges (jobs by state, bucket fill) refresh off the request path:
            # wait (virtual time) until they show these jobs, so the grep below covers them.
            with anyio.fail_after(10):
                while b'job_state="succeeded",jobrelay_provider="seamless"' not in (
                    telemetry.prometheus_text() or b""
                ):
                    await clock.sleep(1.0)
        logging.getLogger("mcp_server.test").warning("echo of a key: %s", SEAMLESS_KEY)
        metrics_url = url.removesuffix("/mcp") + "/metrics"
        with anyio.fail_after(10):
            async with httpx.AsyncClient() as plain:
                refused = await plain.get(metrics_url)
                answered = await plain.get(metrics_url, headers=auth)
    assert refused.status_code == 401
    assert answered.status_code == 200
    assert answered.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = answered.text
    # The Prometheus names the OpenTelemetry ones map to: unit suffix, _total on counters.
    assert "# TYPE mcp_server_operation_duration_seconds histogram" in text
    assert 'mcp_method_name="tools/call"' in text
    assert 'gen_ai_tool_name="start_research"' in text
    assert "# TYPE http_client_request_duration_seconds histogram" in text
    assert 'url_template="/contacts/research"' in text
    assert "jobrelay_credits_spent_total" in text
    assert "jobrelay_job_transitions_total" in text
    assert "# TYPE jobrelay_jobs gauge" in text
    [succeeded] = [
        line
        for line in text.splitlines()
        if line.startswith("jobrelay_jobs{")
        and 'jobrelay_job_state="succeeded"' in line
        and 'jobrelay_provider="seamless"' in line
    ]
    assert succeeded.endswith(" 1.0")  # the one research job, counted in the ledger
    assert "# TYPE jobrelay_limiter_bucket_used gauge" in text
    assert "# TYPE jobrelay_limiter_bucket_capacity gauge" in text
    assert "# TYPE jobrelay_limiter_bucket_wait_seconds gauge" in text
    assert 'jobrelay_limiter_bucket="POST /contacts/research"' in text

    fingerprints = [key_fingerprint(SEAMLESS_KEY), key_fingerprint(AGENTSEO_KEY)]
    forbidden = [SEAMLESS_KEY, AGENTSEO_KEY, HTTP_TOKEN, *fingerprints]
    lines = [line for line in json_logs.getvalue().splitlines() if line]
    assert any("echo of a key" in line for line in lines)  # the planted line is there...
    for line in [*text.splitlines(), *lines]:
        for secret in forbidden:
            assert secret not in line  # ...redacted, like every other line and series


# --------------------------------------------------------------------------------------------
# JSON logs


def test_json_log_lines_carry_timestamp_level_event_ids_and_no_secret() -> None:
    formatter = telemetry.JsonFormatter([SEAMLESS_KEY])
    record = logging.LogRecord(
        "mcp_server.jobs",
        logging.WARNING,
        __file__,
        1,
        "poll of %s failed: key=%s",
        ("sea_1", SEAMLESS_KEY),
        None,
    )
    record.job_id = "sea_1"
    record.provider = "seamless"
    token = telemetry.REQUEST_ID.set("7")
    try:
        line = formatter.format(record)
    finally:
        telemetry.REQUEST_ID.reset(token)
    assert "\n" not in line
    out = json.loads(line)
    assert set(out) == {"timestamp", "level", "event", "logger", "job_id", "provider", "request_id"}
    assert out["level"] == "warning"
    assert out["job_id"] == "sea_1"
    assert out["provider"] == "seamless"
    assert out["request_id"] == "7"
    assert out["timestamp"].endswith("+00:00")
    assert SEAMLESS_KEY not in line
    assert out["event"].startswith("poll of sea_1 failed: key=")
    record.upstream_id = "abc-123"  # a provider's own id, where a line knows no handle
    assert json.loads(formatter.format(record))["upstream_id"] == "abc-123"


def test_configure_logging_switches_the_stderr_handler_and_the_default_stays_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = io.StringIO()
    monkeypatch.setattr(sys, "stderr", fake)
    handler = logging.StreamHandler(fake)
    monkeypatch.setattr(logging.getLogger(), "handlers", [handler])  # this test's only handler
    telemetry.configure_logging("text", [SEAMLESS_KEY])
    logging.getLogger("mcp_server.x").warning("plain %s", SEAMLESS_KEY)
    telemetry.configure_logging("json", [SEAMLESS_KEY])
    logging.getLogger("mcp_server.x").warning("as json")
    first, second = [line for line in fake.getvalue().splitlines() if "mcp_server.x" in line]
    assert first == "WARNING mcp_server.x: plain [redacted]"
    assert json.loads(second)["event"] == "as json"


async def test_metrics_path_is_the_apps_own_404_when_metrics_are_off() -> None:
    from starlette.responses import PlainTextResponse
    from starlette.types import Receive, Scope, Send

    from mcp_server._http_app import GuardedApp

    async def sdk(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("not here", status_code=404)(scope, receive, send)

    guarded = GuardedApp(sdk, token=None, allowed_hosts=["127.0.0.1"], allowed_origins=[])
    transport = httpx.ASGITransport(app=guarded)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        with anyio.fail_after(10):
            off = await http.get("/metrics")
            telemetry.enable()
            try:
                on = await http.get("/metrics")
                elsewhere = await http.get("/metrics", headers={"host": "evil.example"})
            finally:
                telemetry.disable()
    assert (off.status_code, off.text) == (404, "not here")
    assert on.status_code == 200
    assert on.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert elsewhere.status_code == 421  # the Host guard of /mcp applies to /metrics too


async def test_a_ledger_log_line_names_its_job_and_provider_and_the_write_is_counted(
    tmp_path: Path, json_logs: io.StringIO, reader: InMemoryMetricReader
) -> None:
    from mcp_server.ledger import JobRecord, SqliteLedger
    from mcp_server.models import JobState

    async with SqliteLedger.open(tmp_path / "jobs.sqlite3") as ledger:
        job = await ledger.record_intent(
            JobRecord.new(
                provider="seamless",
                operation="research_contacts",
                tenant="k_0123456789ab",
                sandbox=True,
                params={"searchResultIds": ["sr-1"]},
                credits_requested=3,
            )
        )
        await ledger.complete_submit(
            job.job_id, upstream_ids=["r-1"], state=JobState.SUCCEEDED, raw_status="done"
        )
        await ledger.update(job.job_id, state=JobState.RUNNING, raw_status="processing")  # stale
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    [stale] = [line for line in lines if line["event"].startswith("ignored stale")]
    assert stale["job_id"] == job.job_id
    assert stale["provider"] == "seamless"
    assert stale["level"] == "debug"
    # Every committed state change is a debug line naming its job and provider.
    [moved] = [line for line in lines if line["event"] == f"job {job.job_id}: unknown -> succeeded"]
    assert (moved["job_id"], moved["provider"]) == (job.job_id, "seamless")
    points, _ = _metrics(reader)
    assert [p.value for _, p in points["jobrelay.credits.spent"]] == [3]
    states = {a["jobrelay.job.state"]: p.value for a, p in points["jobrelay.job.transitions"]}
    assert states == {"succeeded": 1}  # the stale write changed nothing, so counts nothing


@pytest.mark.parametrize(
    ("environ", "traces", "metrics"),
    [
        ({}, False, False),
        ({"OTEL_SERVICE_NAME": "x"}, False, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True, False),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_METRICS_EXPORTER": "none",
            },
            True,
            False,
        ),
    ],
)
def test_otlp_export_follows_the_standard_otel_variables(
    environ: dict[str, str], traces: bool, metrics: bool
) -> None:
    assert telemetry._otlp_wanted("traces", environ) is traces
    assert telemetry._otlp_wanted("metrics", environ) is metrics


def test_client_chosen_method_and_tool_names_are_capped_as_other(
    reader: InMemoryMetricReader, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry, "_operation_attrs", {})
    for i in range(300):
        telemetry.mcp_operation(
            "tools/call",
            tool=f"made_up_{i}",
            protocol_version="2026-07-28",
            error_type="-32602",
            status_code="-32602",
            seconds=0.001,
        )
    points, _ = _metrics(reader)
    names = [a.get("gen_ai.tool.name") for a, _ in points["mcp.server.operation.duration"]]
    assert len(names) == 257  # 256 kept, then one series for the rest
    assert "_OTHER" in names
    assert "made_up_299" not in names
