"""The sampled gauges of issue 19: jobs by provider and state, and rate-bucket fill.

Both are read from shared state, not counted per process: the jobs from the ledger (one
`GROUP BY` read, so every process sharing a ledger reports the same figures), the buckets from
the limiter's `snapshot` (the one arithmetic of `limits._window`, shared by every backend; a
shared limiter's figures are the same in every process too). `sample_gauges` runs in the
server's background task group while metrics are on (`start_sampling`, called when the
server's `Runtime` is built, starts it only then): it refreshes the figures every
`telemetry.GAUGE_SECONDS` on the server's clock, and the observable gauges' callbacks read the
cached figures synchronously when a reader collects. A failed read is logged and tried again
next period; the last figures stay.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import anyio.abc

from mcp_server import telemetry
from mcp_server._clock import Clock
from mcp_server.ledger import Ledger
from mcp_server.limits import BucketSnapshot, Limiter

__all__ = ["bucket_fills", "sample_gauges", "sample_once", "start_sampling"]

log = logging.getLogger("mcp_server.telemetry")


def bucket_fills(snapshots: Iterable[BucketSnapshot]) -> list[telemetry.BucketFill]:
    """Per provider and bucket, summed over API keys (no key fingerprint leaves here): sends
    used and capacity added up, the longest wait."""
    fills: dict[tuple[str, str], telemetry.BucketFill] = {}
    for snap in snapshots:
        key = (snap.provider, snap.bucket)
        seen = fills.get(key)
        if seen is None:
            fills[key] = telemetry.BucketFill(
                snap.provider, snap.bucket, snap.used, snap.limit, snap.wait
            )
        else:
            fills[key] = seen._replace(
                used=seen.used + snap.used,
                capacity=seen.capacity + snap.limit,
                wait=max(seen.wait, snap.wait),
            )
    return list(fills.values())


async def sample_once(ledger: Ledger, limiter: Limiter) -> None:
    """Refresh both sampled gauges now (each read on its own: one failing keeps the other)."""
    try:
        counts = await ledger.job_counts()
        telemetry.jobs_counted({(p, s.value): n for (p, s), n in counts.items()})
    except Exception:  # a storage fault must not end the sampling
        log.exception("counting jobs by state for metrics failed; trying again later")
    try:
        telemetry.buckets_sampled(bucket_fills(await limiter.snapshot()))
    except Exception:  # a shared limiter's store unreachable
        log.exception("reading rate buckets for metrics failed; trying again later")


async def sample_gauges(
    ledger: Ledger, limiter: Limiter, clock: Clock, every: float = telemetry.GAUGE_SECONDS
) -> None:
    """Refresh the sampled gauges every `every` seconds while metrics are on."""
    while telemetry.enabled():
        await sample_once(ledger, limiter)
        await clock.sleep(every)


def start_sampling(tg: anyio.abc.TaskGroup, ledger: Ledger, limiter: Limiter, clock: Clock) -> None:
    """Start `sample_gauges` in `tg` when metrics are on; nothing otherwise."""
    if telemetry.enabled():
        tg.start_soon(sample_gauges, ledger, limiter, clock)
