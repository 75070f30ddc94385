"""Metrics, spans and structured logs (issue 19): the one module every seam calls into.

Off by default, and then free: every recording function below starts with `if _active is
None: return`, and nothing from `opentelemetry` is imported here until `enable()` runs (the
mcp SDK itself imports `opentelemetry.trace`/`context`/`propagate` for its own spans; the
metrics API, the SDK and the exporters stay unimported; tests/test_telemetry.py checks).

`JOBRELAY_METRICS=1` turns it on (`enable`, from `transport.serve`): the instruments are
created on a `MeterProvider` of our own (not the global one), read by a Prometheus reader
(`GET /metrics` on the HTTP transport, `prometheus_text()`) and, when `OTEL_EXPORTER_OTLP_*`
names an endpoint, by an OTLP exporter; spans for upstream calls (`upstream_call`) go to the
global tracer provider, which `enable` sets to an OTLP one in the same case. The SDK's spans
for MCP messages already carry the trace context from `params._meta`, so an upstream span
started inside a tool call is that tool span's child.

The seams, one call each: `upstream/_http.py` (`upstream_call`, `limiter_waited`),
`upstream/_feedback.py` (`hints_seen`), `limits/_window.py` (`limiter_refused`),
`ledger/_core.py` (`job_written`, after the write committed), `watch.py` (`poll_round`, with the
provider polled), `upstream/_sse.py` (`sse_reconnected`), the MCP middleware in `_operations.py`
(`mcp_operation`); webhooks call `webhook_delivered`. Two figures are sampled rather than
recorded: jobs by provider and state (counted in the ledger) and each bucket's fill as the
local limiter sees it; `_gauges.py` refreshes them off the request path every
`GAUGE_SECONDS` (`jobs_counted`, `buckets_sampled`) and the observable gauges' callbacks read
the cached figures when a reader collects. No attribute carries a key, token, tenant
fingerprint or contact data: providers, endpoint templates, bucket names, states and statuses
only.

`JOBRELAY_LOG_FORMAT=json` (`configure_logging`): one JSON object per line on stderr.
The log formatters live in `logs.py` (re-exported here). Imports nothing from jobrelay but
`logs` (and through it `redact`, a leaf).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final, Protocol

from mcp_server._instruments import BUCKET, GAUGE_SECONDS, PROVIDER, BucketFill, Instruments
from mcp_server.logs import REQUEST_ID, JsonFormatter, configure_logging

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.trace import Span

__all__ = [
    "GAUGE_SECONDS",
    "LOG_FORMAT_ENV",
    "METRICS_ENV",
    "REQUEST_ID",
    "UNKNOWN_PROVIDER",
    "BucketFill",
    "JobLike",
    "JsonFormatter",
    "TelemetryUnavailable",
    "buckets_sampled",
    "configure_logging",
    "disable",
    "enable",
    "enabled",
    "extra_installed",
    "hints_seen",
    "job_written",
    "jobs_counted",
    "limiter_refused",
    "limiter_waited",
    "mcp_operation",
    "otlp_signals",
    "poll_round",
    "prometheus_text",
    "sse_reconnected",
    "tracing",
    "upstream_call",
    "webhook_delivered",
]

METRICS_ENV: Final = "JOBRELAY_METRICS"
LOG_FORMAT_ENV: Final = "JOBRELAY_LOG_FORMAT"
EXTRA_HINT: Final = "pip install 'jobrelay[otel]'"
UNKNOWN_PROVIDER: Final = "unknown"
"""`jobrelay.provider` of a webhook delivery whose provider is not known (README, Metrics):
never an absent label, which a `sum by (jobrelay_provider)` would show empty."""


EXTRA_DISTRIBUTIONS: Final = (
    "opentelemetry-sdk",
    "opentelemetry-exporter-prometheus",
    "opentelemetry-exporter-otlp-proto-http",
)
"""What the `otel` extra installs (pyproject's optional-dependencies)."""


class TelemetryUnavailable(RuntimeError):
    """`JOBRELAY_METRICS=1` without the `otel` extra installed."""


class JobLike(Protocol):
    """What `job_written` reads of a ledger row (`ledger.JobRecord` fits)."""

    @property
    def provider(self) -> str: ...
    @property
    def operation(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def credits_requested(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def finished_at(self) -> datetime | None: ...


_active: Instruments | None = None


def enabled() -> bool:
    return _active is not None


def tracing() -> bool:
    """Whether upstream spans are exported (so the SDK's MCP spans are worth keeping)."""
    return _active is not None and _active.tracing


def _otlp_wanted(signal: str, environ: Mapping[str, str]) -> bool:
    """OTLP export of `signal` ("traces"/"metrics"): an endpoint is named and the signal's
    exporter is not `none` (the standard OTEL_* variables)."""
    if environ.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    )


def otlp_signals(environ: Mapping[str, str]) -> list[str]:
    """The signals ("metrics", "traces") `environ`'s OTEL_* variables export over OTLP."""
    return [signal for signal in ("metrics", "traces") if _otlp_wanted(signal, environ)]


def extra_installed() -> str | None:
    """The installed OpenTelemetry SDK's version when the `otel` extra is complete, else None
    (read from the installed distributions: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = [version(name) for name in EXTRA_DISTRIBUTIONS]
    except PackageNotFoundError:
        return None
    return found[0]


def enable(
    *,
    readers: Sequence[MetricReader] = (),
    prometheus: bool = True,
    tracing: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Turn metrics on for this process (idempotent: a second call replaces the first).

    `readers` are extra metric readers (tests pass an `InMemoryMetricReader`). `tracing`:
    record upstream spans through the global tracer provider; None: when OTLP traces are
    configured, in which case this sets the global provider to a batching OTLP one.
    Raises `TelemetryUnavailable` when the `otel` extra is not installed.
    """
    global _active  # noqa: PLW0603  # swapped whole; the hot paths read one global
    env = os.environ if environ is None else environ
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    except ImportError as exc:
        raise TelemetryUnavailable(
            f"{METRICS_ENV}=1 needs the OpenTelemetry SDK: {EXTRA_HINT} (or unset {METRICS_ENV})"
        ) from exc
    disable()
    resource = Resource.create({} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "jobrelay"})
    all_readers: list[MetricReader] = list(readers)
    registry = None
    if prometheus:
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry
        except ImportError as exc:
            raise TelemetryUnavailable(
                f"{METRICS_ENV}=1 needs the Prometheus exporter: {EXTRA_HINT}"
            ) from exc
        registry = CollectorRegistry(auto_describe=True)
        all_readers.append(PrometheusMetricReader(registry=registry))
    if _otlp_wanted("metrics", env):
        all_readers.append(_otlp_metric_reader())
    if tracing is None:
        tracing = _otlp_wanted("traces", env)
        if tracing:
            _install_otlp_tracing(resource)
    provider = MeterProvider(resource=resource, metric_readers=all_readers)
    _active = Instruments(provider, registry, trace.get_tracer("jobrelay"), tracing=tracing)


def _otlp_metric_reader() -> MetricReader:
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    except ImportError as exc:
        raise TelemetryUnavailable(f"OTLP export needs {EXTRA_HINT}") from exc
    return PeriodicExportingMetricReader(OTLPMetricExporter())


def _install_otlp_tracing(resource: Resource) -> None:
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TelemetryUnavailable(f"OTLP export needs {EXTRA_HINT}") from exc
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def disable() -> None:
    """Turn metrics off (tests; shutdown): flushes and drops the instruments."""
    global _active  # swapped whole; the hot paths read one global
    active, _active = _active, None
    if active is not None:
        active.provider.shutdown()


def prometheus_text() -> bytes | None:
    """The current metrics in the Prometheus text format, or None when disabled."""
    active = _active
    if active is None or active.registry is None:
        return None
    from prometheus_client import generate_latest

    return generate_latest(active.registry)


# --- recording: each a no-op when disabled ---------------------------------------------------


_MAX_OPERATION_KEYS: Final = 256
"""Distinct (method, tool, version, error) attribute sets kept; method and tool names come from
clients, so past this many new ones are recorded as `_OTHER` (bounded series and memory)."""
_operation_attrs: dict[tuple[str, str | None, str | None, str | None, str | None], dict[str, str]]
_operation_attrs = {}


def _operation_attributes(
    method: str,
    tool: str | None,
    protocol_version: str | None,
    error_type: str | None,
    status_code: str | None,
) -> dict[str, str]:
    key = (method, tool, protocol_version, error_type, status_code)
    attrs = _operation_attrs.get(key)
    if attrs is not None:
        return attrs
    if len(_operation_attrs) >= _MAX_OPERATION_KEYS:
        method, tool = "_OTHER", None if tool is None else "_OTHER"
    attrs = {"mcp.method.name": method}
    if tool is not None:
        attrs["gen_ai.tool.name"] = tool
        attrs["gen_ai.operation.name"] = "execute_tool"
    if protocol_version:
        attrs["mcp.protocol.version"] = protocol_version
    if error_type is not None:
        attrs["error.type"] = error_type
    if status_code is not None:
        attrs["rpc.response.status_code"] = status_code
    if len(_operation_attrs) < _MAX_OPERATION_KEYS:
        _operation_attrs[key] = attrs
    return attrs


def mcp_operation(
    method: str,
    *,
    tool: str | None,
    protocol_version: str | None,
    error_type: str | None,
    status_code: str | None,
    seconds: float,
) -> None:
    """One MCP request or notification handled (the MCP semantic conventions' attributes)."""
    active = _active
    if active is None:
        return
    attrs = _operation_attributes(method, tool, protocol_version, error_type, status_code)
    active.operation.record(seconds, attrs)


class _NoCall:
    """What `upstream_call` returns when disabled: does nothing."""

    __slots__ = ()

    def __enter__(self) -> _NoCall:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def answered(self, status: int) -> None:
        del status


_NO_CALL: Final = _NoCall()


class _Call:
    """One upstream attempt: a CLIENT span (child of the current tool span) and its timing."""

    __slots__ = ("_active", "_attrs", "_span", "_start", "_status", "_token")

    def __init__(self, active: Instruments, provider: str, method: str, template: str) -> None:
        self._active = active
        self._attrs: dict[str, str | int] = {
            PROVIDER: provider,
            "http.request.method": method,
            "url.template": template,
        }
        self._status: int | None = None
        self._span: Span | None = None
        self._token: object = None
        self._start = 0.0

    def __enter__(self) -> _Call:
        if self._active.tracing:
            from opentelemetry import context, trace

            self._span = self._active.tracer.start_span(
                f"{self._attrs['http.request.method']} {self._attrs['url.template']}",
                kind=trace.SpanKind.CLIENT,
                attributes=self._attrs,
            )
            self._token = context.attach(trace.set_span_in_context(self._span))
        self._start = time.perf_counter()
        return self

    def answered(self, status: int) -> None:
        self._status = status

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        seconds = time.perf_counter() - self._start
        attrs = dict(self._attrs)
        if self._status is not None:
            attrs["http.response.status_code"] = self._status
            if self._status >= 400:
                attrs["error.type"] = str(self._status)
        elif exc_type is not None:
            attrs["error.type"] = exc_type.__qualname__
        self._active.http.record(seconds, attrs)
        if self._status == 429:
            self._active.rate_limited.add(1, self._attrs)
        span = self._span
        if span is not None:
            from opentelemetry import context, trace

            span.set_attributes(attrs)
            if "error.type" in attrs:
                span.set_status(trace.StatusCode.ERROR)
            span.end()
            context.detach(self._token)  # type: ignore[arg-type]


def upstream_call(provider: str, method: str, template: str) -> _Call | _NoCall:
    """`with upstream_call(...) as call: ...; call.answered(status)` around one send."""
    active = _active
    if active is None:
        return _NO_CALL
    return _Call(active, provider, method, template)


def limiter_waited(provider: str, bucket: str, seconds: float) -> None:
    """A request got its slot after `seconds` in the local rate bucket."""
    active = _active
    if active is None:
        return
    active.wait.record(seconds, {PROVIDER: provider, BUCKET: bucket})


def limiter_refused(provider: str, bucket: str) -> None:
    """The local rate guard refused a request (its wait did not fit)."""
    active = _active
    if active is None:
        return
    active.refused.add(1, {PROVIDER: provider, BUCKET: bucket})


def hints_seen(
    provider: str, bucket: str, *, remaining: int | None, limit: int | None, credits: int | None
) -> None:
    """What one upstream answer said of its budget: bucket remaining/limit, credits left."""
    active = _active
    if active is None:
        return
    where = {PROVIDER: provider, BUCKET: bucket}
    if remaining is not None:
        active.remaining.set(remaining, where)
    if limit is not None:
        active.limit.set(limit, where)
    if credits is not None:
        active.credits.set(credits, {PROVIDER: provider})


def job_written(old: JobLike, new: JobLike, *, spent: bool) -> None:
    """A ledger row changed from `old` to `new` and the change committed; `spent`: its submit
    left `submitting` for a state that may have spent its `credits_requested`."""
    active = _active
    if active is None:
        return
    attrs = {PROVIDER: new.provider, "jobrelay.job.operation": new.operation}
    if spent and new.credits_requested:
        active.spent.add(new.credits_requested, {PROVIDER: new.provider})
    if str(old.state) == str(new.state):
        return
    active.transitions.add(1, {**attrs, "jobrelay.job.state": str(new.state)})
    if new.finished_at is not None and old.finished_at is None:
        seconds = max(0.0, (new.finished_at - new.created_at).total_seconds())
        active.job_duration.record(seconds, {**attrs, "jobrelay.job.state": str(new.state)})


def poll_round(calls: int, provider: str | None = None) -> None:
    """One shared poll round for `provider` made `calls` upstream status calls."""
    active = _active
    if active is None:
        return
    active.poll_calls.record(calls, None if provider is None else {PROVIDER: provider})


def jobs_counted(counts: Mapping[tuple[str, str], int]) -> None:
    """The ledger's jobs by (provider, state), as just counted; a pair counted before and
    absent now reads 0 (its jobs all moved on)."""
    active = _active
    if active is None:
        return
    active.job_counts = dict.fromkeys(active.job_counts, 0) | dict(counts)


def buckets_sampled(fills: Iterable[BucketFill]) -> None:
    """Every rate bucket's fill as the local limiter sees it now (one per provider and
    bucket); a bucket sampled before and absent now keeps its last figures."""
    active = _active
    if active is None:
        return
    active.fills = active.fills | {(f.provider, f.bucket): f for f in fills}


def sse_reconnected(provider: str) -> None:
    active = _active
    if active is None:
        return
    active.reconnects.add(1, {PROVIDER: provider})


def webhook_delivered(
    outcome: str, lag_seconds: float | None = None, *, provider: str = UNKNOWN_PROVIDER
) -> None:
    """One webhook delivery to `provider`'s route ended: `outcome` what it did (the
    receiver's `applied`, `repeated`, `forwarded`, `unknown`; or the HTTP app's refusal:
    `unauthorized`, `invalid`, `starting`, `failed`, `refused`); `lag_seconds` from when the
    upstream finished the job (as the body says) to the delivery, None when unknown."""
    active = _active
    if active is None:
        return
    attrs = {"jobrelay.webhook.outcome": outcome, PROVIDER: provider}
    active.deliveries.add(1, attrs)
    if lag_seconds is not None:
        active.lag.record(lag_seconds, attrs)
