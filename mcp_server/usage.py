"""The usage report behind `get_usage` and `jobrelay://usage`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mcp_server.advice import wait_phrase
from mcp_server.jobs import Caller, Outcome
from mcp_server.ledger import next_utc_midnight
from mcp_server.providers import JobProvider
from mcp_server.schemas import BucketUsage, ProviderUsage, UsageOutput

if TYPE_CHECKING:
    from mcp_server.server import Runtime


async def usage_outcome(
    runtime: Runtime, caller: Caller, *, only: Sequence[str] | None = None
) -> Outcome:
    """Buckets, credits and budget for `caller`; `only` narrows the providers listed."""
    now = datetime.fromtimestamp(runtime.clock.time(), tz=UTC)
    providers: list[ProviderUsage] = []
    snapshot = await runtime.limiter.snapshot()
    known = {p.name: p for p in runtime.providers}
    for name in only if only is not None else list(known):
        tenant = caller.tenant(name)
        buckets = [
            BucketUsage(
                bucket=b.bucket,
                limit=b.limit,
                remaining=b.remaining,
                blocked_for_seconds=round(b.blocked_for, 1) if b.blocked_for else None,
            )
            for b in snapshot
            if b.provider == name and b.key_fingerprint == tenant
        ]
        # Credits as the limiter last saw them in a paid-per-target provider's answers.
        credits = None
        if known[name].paid_per_target:
            credits = await runtime.limiter.credits(name, tenant)
        providers.append(
            ProviderUsage(
                provider=name,
                sandbox=caller.sandbox[name],
                credits_remaining=credits,
                buckets=buckets,
            )
        )
    budget = runtime.settings.credit_budget
    spent = await runtime.ledger.credits_spent_today(now=now)
    out = UsageOutput(
        providers=providers,
        credit_budget=budget,
        credits_spent_today=spent,
        budget_resets_at=next_utc_midnight(now) if budget is not None else None,
    )
    return Outcome(out, _usage_text(out, known, now=now.timestamp()))


def _usage_text(out: UsageOutput, known: Mapping[str, JobProvider], *, now: float) -> str:
    parts: list[str] = []
    for p in out.providers:
        provider = known[p.provider]
        if provider.paid_per_target:
            parts.append(
                f"{provider.title}: {p.credits_remaining} research credits left"
                if p.credits_remaining is not None
                else f"{provider.title}: credits not seen yet (they appear after the first call)"
            )
    reset = (
        wait_phrase(max(1.0, out.budget_resets_at.timestamp() - now), now)
        if out.budget_resets_at is not None
        else None
    )
    if out.credit_budget is not None:
        parts.append(
            f"daily budget {out.credits_spent_today or 0}/{out.credit_budget} used"
            + (f", resets at {reset}" if reset else "")
        )
    blocked = [
        (p.provider, b)
        for p in out.providers
        for b in p.buckets
        if b.blocked_for_seconds and b.blocked_for_seconds > 0
    ]
    if not blocked:
        parts.append("no rate-limited buckets")
        return "; ".join(parts) + f". Next: {_next_without_blocks(out, known)}"
    provider_name, worst = max(blocked, key=lambda pb: pb[1].blocked_for_seconds or 0.0)
    name = known[provider_name].title
    until = wait_phrase(worst.blocked_for_seconds or 0.0, now)
    parts.append(f"{name} {worst.bucket} is blocked until {until}")
    return "; ".join(parts) + f". Next: wait until {until} before calls that use {worst.bucket}."


def _next_without_blocks(out: UsageOutput, known: Mapping[str, JobProvider]) -> str:
    """The one next step when no bucket is blocked: say so when research cannot run."""
    paid = next((p for p in out.providers if known[p.provider].paid_per_target), None)
    if paid is not None and paid.credits_remaining == 0:
        return (
            f"tell the user research needs more {known[paid.provider].title} credits; "
            "search_prospects, get_job_status and get_job_result stay free."
        )
    if out.credit_budget is not None and (out.credits_spent_today or 0) >= out.credit_budget:
        return (
            "ask the user to raise JOBRELAY_CREDIT_BUDGET if research must run before the "
            "reset. Do not start research until then: it is refused."
        )
    return "start jobs as needed."
