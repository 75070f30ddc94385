"""The instruments `telemetry` records into, built only when metrics are on (`enable`).

Split from `telemetry.py` for size; `telemetry` is its only user. Nothing from `opentelemetry`
is imported here at module level (types only): `Instruments` is constructed by `enable`,
after the SDK imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final, NamedTuple

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation
    from opentelemetry.metrics import _Gauge as Gauge
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.trace import Tracer
    from prometheus_client import CollectorRegistry

# The MCP conventions' advised boundaries for `mcp.*.operation.duration` (seconds).
MCP_BUCKETS: Final = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
HTTP_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
WAIT_BUCKETS: Final = (0.0, 0.01, 0.1, 0.5, 1, 2, 5, 10, 20, 30, 45, 60)
JOB_BUCKETS: Final = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
ROUND_BUCKETS: Final = (0, 1, 2, 3, 5, 10, 20, 50)

PROVIDER: Final = "jobrelay.provider"
BUCKET: Final = "jobrelay.limiter.bucket"
STATE: Final = "jobrelay.job.state"

GAUGE_SECONDS: Final = 15.0
"""How often the sampled gauges (jobs by state, bucket fill) are refreshed while metrics are
on: one ledger count and one limiter snapshot per period, off the request path."""


class BucketFill(NamedTuple):
    """One rate bucket as the local limiter sees it (summed over API keys): sends `used` in
    the current window, its `capacity`, and `wait`, the seconds a new request would wait."""

    provider: str
    bucket: str
    used: int
    capacity: int
    wait: float


class Instruments:
    """Everything an enabled process records into; built by `enable` only."""

    def __init__(
        self,
        provider: MeterProvider,
        registry: CollectorRegistry | None,
        tracer: Tracer,
        *,
        tracing: bool,
    ) -> None:
        self.provider = provider
        self.registry = registry
        self.tracer = tracer
        self.tracing = tracing
        meter = provider.get_meter("jobrelay")
        self.operation: Histogram = meter.create_histogram(
            "mcp.server.operation.duration",
            unit="s",
            description="MCP request or notification duration, received to answered.",
            explicit_bucket_boundaries_advisory=MCP_BUCKETS,
        )
        self.http: Histogram = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Upstream request duration, sent to response headers (each attempt).",
            explicit_bucket_boundaries_advisory=HTTP_BUCKETS,
        )
        self.rate_limited: Counter = meter.create_counter(
            "jobrelay.upstream.rate_limited",
            unit="{response}",
            description="Upstream 429 answers.",
        )
        self.wait: Histogram = meter.create_histogram(
            "jobrelay.limiter.wait.duration",
            unit="s",
            description="Time a request waited for a slot in its local rate bucket.",
            explicit_bucket_boundaries_advisory=WAIT_BUCKETS,
        )
        self.refused: Counter = meter.create_counter(
            "jobrelay.limiter.refusals",
            unit="{request}",
            description="Requests the local rate guard refused (the wait did not fit).",
        )
        self.remaining: Gauge = meter.create_gauge(
            "jobrelay.limiter.bucket.remaining",
            unit="{request}",
            description="Requests left in the bucket's window, as the upstream last said.",
        )
        self.limit: Gauge = meter.create_gauge(
            "jobrelay.limiter.bucket.limit",
            unit="{request}",
            description="The bucket's limit per window, as the upstream last said.",
        )
        self.credits: Gauge = meter.create_gauge(
            "jobrelay.credits.remaining",
            unit="{credit}",
            description="Credits left, as the upstream last said (X-PublicAPI-Credits).",
        )
        self.spent: Counter = meter.create_counter(
            "jobrelay.credits.spent",
            unit="{credit}",
            description="Credits requested by submits the upstream accepted (or may have).",
        )
        self.job_duration: Histogram = meter.create_histogram(
            "jobrelay.job.duration",
            unit="s",
            description="Job time from submit to its terminal state.",
            explicit_bucket_boundaries_advisory=JOB_BUCKETS,
        )
        self.transitions: Counter = meter.create_counter(
            "jobrelay.job.transitions",
            unit="{job}",
            description="Jobs entering a state (jobrelay.job.state), as the ledger stored it.",
        )
        from opentelemetry.metrics import Observation

        self.observation = Observation
        self.job_counts: dict[tuple[str, str], int] = {}
        """(provider, state) -> jobs, as last counted (`jobs_counted`); replaced whole."""
        self.fills: dict[tuple[str, str], BucketFill] = {}
        """(provider, bucket) -> fill, as last sampled (`buckets_sampled`); replaced whole."""
        meter.create_observable_gauge(
            "jobrelay.jobs",
            callbacks=[self._observe_jobs],
            unit="{job}",
            description="Jobs in the ledger by provider and state (counted every "
            f"{GAUGE_SECONDS:g} s; the same in every process sharing the ledger).",
        )
        meter.create_observable_gauge(
            "jobrelay.limiter.bucket.used",
            callbacks=[self._fill_of("used")],
            unit="{request}",
            description="Sends in the bucket's current window, as the local limiter counts them.",
        )
        meter.create_observable_gauge(
            "jobrelay.limiter.bucket.capacity",
            callbacks=[self._fill_of("capacity")],
            unit="{request}",
            description="Sends the local limiter admits per window (the limit it runs on).",
        )
        meter.create_observable_gauge(
            "jobrelay.limiter.bucket.wait",
            callbacks=[self._fill_of("wait")],
            unit="s",
            description="How long a new request would wait for a slot in the bucket now.",
        )
        self.poll_calls: Histogram = meter.create_histogram(
            "jobrelay.poll.round.calls",
            unit="{call}",
            description="Upstream status calls made in one shared poll round.",
            explicit_bucket_boundaries_advisory=ROUND_BUCKETS,
        )
        self.reconnects: Counter = meter.create_counter(
            "jobrelay.sse.reconnects",
            unit="{reconnect}",
            description="Event-stream reconnects after a drop.",
        )
        self.deliveries: Counter = meter.create_counter(
            "jobrelay.webhook.deliveries",
            unit="{delivery}",
            description="Webhook deliveries by outcome.",
        )
        self.lag: Histogram = meter.create_histogram(
            "jobrelay.webhook.delivery.lag",
            unit="s",
            description="Time from the job event to its webhook delivery.",
            explicit_bucket_boundaries_advisory=WAIT_BUCKETS,
        )

    def _observe_jobs(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        make = self.observation
        return [make(n, {PROVIDER: p, STATE: s}) for (p, s), n in self.job_counts.items()]

    def _fill_of(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            del options
            make = self.observation
            return [
                make(getattr(f, name), {PROVIDER: f.provider, BUCKET: f.bucket})
                for f in self.fills.values()
            ]

        return observe
