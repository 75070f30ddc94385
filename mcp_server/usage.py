"""The usage report behind `get_usage` and `jobrelay://usage`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from mcp_server._duration import format_duration
from mcp_server.jobs import Caller, Outcome
from mcp_server.models import PROVIDERS, Provider
from mcp_server.schemas import BucketUsage, ProviderUsage, UsageOutput


async def usage_outcome(
    runtime: Any, caller: Caller, *, only: Sequence[Provider] = PROVIDERS
) -> Outcome:
    """Buckets, credits and budget for `caller`; `only` narrows the providers listed."""
    now = datetime.fromtimestamp(runtime.clock.time(), tz=UTC)
    providers: list[ProviderUsage] = []
    snapshot = await runtime.limiter.snapshot()
    for provider in only:
        tenant = caller.tenant(provider)
        buckets = [
            BucketUsage(
                bucket=b.bucket,
                limit=b.limit,
                remaining=b.remaining,
                blocked_for_seconds=round(b.blocked_for, 1) if b.blocked_for else None,
            )
            for b in snapshot
            if b.provider == provider and b.key_fingerprint == tenant
        ]
        credits = (
            await runtime.limiter.credits(provider, tenant) if provider == "seamless" else None
        )
        providers.append(
            ProviderUsage(
                provider=provider,
                sandbox=caller.sandbox[provider],
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
        budget_resets_at=await runtime.ledger.budget_resets_at(now) if budget is not None else None,
    )
    return Outcome(out, _usage_text(out))


def _usage_text(out: UsageOutput) -> str:
    parts: list[str] = []
    for p in out.providers:
        if p.provider == "seamless":
            parts.append(
                f"Seamless: {p.credits_remaining} research credits left"
                if p.credits_remaining is not None
                else "Seamless: credits not seen yet (they appear after the first call)"
            )
    if out.credit_budget is not None:
        parts.append(f"daily budget {out.credits_spent_today or 0}/{out.credit_budget} used")
    blocked = [
        (p.provider, b)
        for p in out.providers
        for b in p.buckets
        if b.blocked_for_seconds and b.blocked_for_seconds > 0
    ]
    if not blocked:
        parts.append("no rate-limited buckets")
        return "; ".join(parts) + f". Next: {_next_without_blocks(out)}"
    provider, worst = max(blocked, key=lambda pb: pb[1].blocked_for_seconds or 0.0)
    name = "Seamless" if provider == "seamless" else "AgentSEO"
    wait = format_duration(worst.blocked_for_seconds or 0.0)
    parts.append(f"{name} {worst.bucket} is blocked for {wait}")
    return "; ".join(parts) + f". Next: wait {wait} before calls that use {worst.bucket}."


def _next_without_blocks(out: UsageOutput) -> str:
    """The one next step when no bucket is blocked: say so when research cannot run."""
    seamless = next((p for p in out.providers if p.provider == "seamless"), None)
    if seamless is not None and seamless.credits_remaining == 0:
        return (
            "don't start research until credits are added (tell the user); search_prospects, "
            "get_job_status and get_job_result stay free."
        )
    if out.credit_budget is not None and (out.credits_spent_today or 0) >= out.credit_budget:
        return (
            "no more research today under JOBRELAY_CREDIT_BUDGET; ask the user to raise it or "
            "wait for the reset (budget_resets_at)."
        )
    return "start jobs as needed."
