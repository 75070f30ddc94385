"""The usage report behind `get_usage` and `jobrelay://usage`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mcp_server.jobs import Caller, Outcome
from mcp_server.schemas import BucketUsage, ProviderUsage, UsageOutput


async def usage_outcome(runtime: Any, caller: Caller) -> Outcome:
    now = datetime.fromtimestamp(runtime.clock.time(), tz=UTC)
    providers: list[ProviderUsage] = []
    snapshot = await runtime.limiter.snapshot()
    for provider in ("seamless", "agentseo"):
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
    seamless = providers[0]
    parts = []
    if seamless.credits_remaining is not None:
        parts.append(f"Seamless: {seamless.credits_remaining} research credits left")
    else:
        parts.append("Seamless: credits not seen yet (they appear after the first call)")
    if budget is not None:
        parts.append(f"daily budget {spent}/{budget} used")
    blocked = [b for p in providers for b in p.buckets if b.blocked_for_seconds]
    if blocked:
        b = blocked[0]
        parts.append(f"{b.bucket} is blocked for {b.blocked_for_seconds:.0f} s")
    else:
        parts.append("no rate-limited buckets")
    return Outcome(out, "; ".join(parts) + ". Next: start jobs as needed.")
