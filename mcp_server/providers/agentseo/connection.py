"""AgentSEO I/O for one server runtime: a client and a stream hub per tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from mcp_server.errors import JobRelayError
from mcp_server.ledger import JobRecord
from mcp_server.models import JobState
from mcp_server.providers.agentseo.envelopes import (
    NAME,
    agentseo_state,
    env_dump,
    env_error,
    env_id,
    env_percent,
    env_progress_text,
    env_result,
    env_status,
)
from mcp_server.providers.agentseo.limits import background_polls_per_second
from mcp_server.providers.base import (
    Caller,
    JobContext,
    ProgressFn,
    ProviderEnv,
    SharedFold,
    Started,
    aggregate_state,
)
from mcp_server.sharing import StreamSharing
from mcp_server.upstream import AgentSEOClient, JobEnvelope
from mcp_server.watch import StreamHub, wait_newer_until


class AgentSEOConnection:
    def __init__(self, env: ProviderEnv) -> None:
        self.env = env
        self.clients: dict[str, AgentSEOClient] = {}
        self._hubs: dict[str, StreamHub[JobEnvelope]] = {}

    def client(self, caller: Caller) -> AgentSEOClient:
        tenant = caller.tenant(NAME)
        client = self.clients.get(tenant)
        if client is None:
            env = self.env
            client = AgentSEOClient(
                env.base_url,
                env.key_for(tenant),
                clock=env.clock,
                limiter=env.limiter,
                policy=env.policy,
                budget=env.budget,
                transport=env.transport,
                tenant=tenant,
                background_polls_per_second=background_polls_per_second(env.settings),
            )
            self.clients[tenant] = client
        return client

    def hub(self, caller: Caller) -> StreamHub[JobEnvelope]:
        tenant = caller.tenant(NAME)
        hub = self._hubs.get(tenant)
        if hub is None:
            client = self.client(caller)

            def follow(job_id: str) -> AsyncIterator[JobEnvelope]:
                return client.follow(job_id, deadline=None)

            sharing = None
            # Replicas share a job's stream through the fan-out (Redis); never the embedded
            # sandbox's jobs, which only this process knows.
            if (
                self.env.fanout is not None
                and self.env.leases is not None
                and not self.env.sandboxed
            ):
                sharing = StreamSharing(
                    fanout=self.env.fanout,
                    leases=self.env.leases,
                    clock=self.env.clock,
                    encode=env_dump,
                    decode=JobEnvelope.model_validate,
                    name=f"agentseo-stream:{tenant}",
                )
            hub = StreamHub(
                follow=follow,
                is_terminal=lambda env: bool(env.terminal),
                spawn=self.env.spawn,
                sharing=sharing,
            )
            self._hubs[tenant] = hub
        return hub

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    # ---- submit ---------------------------------------------------------------------------
    async def start(
        self, ctx: JobContext, caller: Caller, workflow: str, params: dict[str, Any]
    ) -> Started:
        started = await self.client(caller).start(workflow, params, deadline=ctx.call_deadline())
        envelopes = started if isinstance(started, list) else [started]
        first = envelopes[0]
        state = agentseo_state(env_status(first)) if len(envelopes) == 1 else JobState.QUEUED
        return Started(
            upstream_ids=[env_id(e) for e in envelopes],
            state=state,
            raw_status=env_status(first),
            snapshot={"envelopes": [env_dump(e) for e in envelopes]},
            final=_final(envelopes, now=ctx.now()) if state.terminal else None,
        )

    # ---- status and following -----------------------------------------------------------
    async def refresh(
        self, ctx: JobContext, caller: Caller, records: Sequence[JobRecord]
    ) -> tuple[dict[str, JobRecord], dict[str, JobRelayError]]:
        """One GET per open job."""
        fresh: dict[str, JobRecord] = {}
        problems: dict[str, JobRelayError] = {}
        for rec in records:
            if rec.state.terminal or not rec.upstream_ids:
                continue
            try:
                fresh[rec.job_id] = await self._refresh_one(ctx, caller, rec)
            except JobRelayError as exc:
                problems[rec.job_id] = exc
        return fresh, problems

    async def _refresh_one(self, ctx: JobContext, caller: Caller, rec: JobRecord) -> JobRecord:
        client = self.client(caller)
        envelopes = [
            await client.get_job(uid, deadline=ctx.call_deadline()) for uid in rec.upstream_ids
        ]
        return await _store(ctx, rec, envelopes)

    async def follow(
        self,
        ctx: JobContext,
        caller: Caller,
        rec: JobRecord,
        *,
        fold: SharedFold,
        deadline: float,
        progress: ProgressFn | None,
    ) -> tuple[JobRecord, JobRelayError | None]:
        """Follow the job's stream (shared through the hub) until it ends or the deadline.

        A batch is followed one open job at a time: its jobs run in parallel upstream, so
        once the first ends the others are usually done too and their streams answer at once.
        """
        hub = self.hub(caller)
        envelopes = {env_id(e): e for e in (await self._current_envelopes(ctx, caller, rec))}
        ids = list(rec.upstream_ids)

        def done(uid: str) -> bool:
            return uid in envelopes and agentseo_state(env_status(envelopes[uid])).terminal

        async def report() -> None:
            if progress is None:
                return
            if len(ids) == 1:
                env = envelopes[ids[0]]
                pct = 100.0 if done(ids[0]) else (env_percent(env) or 0.0)
                await progress(pct, env_progress_text(env))
                return
            pcts = [
                100.0 if done(u) else (env_percent(envelopes[u]) if u in envelopes else 0.0)
                for u in ids
            ]
            finished = sum(1 for u in ids if done(u))
            await progress(
                sum(p or 0.0 for p in pcts) / len(ids), f"{finished} of {len(ids)} jobs finished"
            )

        problem: JobRelayError | None = None
        for uid in ids:
            if done(uid):
                continue
            async with hub.watch(uid, initial=envelopes.get(uid)) as topic:
                while True:
                    seen = topic.latest.version
                    env = topic.latest.value
                    if env is not None:
                        envelopes[uid] = env
                        await report()
                        if done(uid):
                            break
                    if topic.finished and topic.error is not None:
                        problem = topic.error
                        break
                    if not await wait_newer_until(topic.latest, seen, ctx.clock, deadline):
                        break
            if problem is not None or not done(uid):
                break
        ordered = [envelopes[u] for u in ids if u in envelopes]
        if len(ordered) == len(ids):
            async with fold.lock:
                if fold.rec is not None and fold.rec.state.terminal:
                    rec = fold.rec  # another waiter stored the same final envelopes
                else:
                    rec = await _store(ctx, rec, ordered)
                    if rec.state.terminal:
                        fold.rec = rec
        return rec, problem

    async def _current_envelopes(
        self, ctx: JobContext, caller: Caller, rec: JobRecord
    ) -> list[Any]:
        """Last known envelopes: the ledger snapshot's (dicts), else one GET per job."""
        client = self.client(caller)
        out: list[Any] = list((rec.snapshot or {}).get("envelopes") or [])
        if not out:
            out = [
                await client.get_job(uid, deadline=ctx.call_deadline()) for uid in rec.upstream_ids
            ]
        return out


def _final(envelopes: Sequence[Any], *, now: float) -> dict[str, Any]:
    """The `Ledger.update` of a job whose envelopes are all terminal."""
    states = [agentseo_state(env_status(e)) for e in envelopes]
    state = states[0] if len(states) == 1 else aggregate_state(states)
    results = [{"job_id": env_id(e), "result": env_result(e)} for e in envelopes]
    failed = [e for e in envelopes if agentseo_state(env_status(e)) is JobState.FAILED]
    return {
        "state": state,
        "raw_status": env_status(envelopes[0]) if len(envelopes) == 1 else state.value,
        # ended_at (clock time) anchors a failed job's retry_after_seconds: "retry after
        # 30 s" means 30 s after it failed, not after whenever someone looks.
        "snapshot": {"envelopes": [env_dump(e) for e in envelopes], "ended_at": now},
        "result": {"results": results},
        "error": env_error(failed[0]) if failed else None,
    }


async def _store(ctx: JobContext, rec: JobRecord, envelopes: Sequence[Any]) -> JobRecord:
    states = [agentseo_state(env_status(e)) for e in envelopes]
    if all(s.terminal for s in states):
        return await ctx.ledger.update(rec.job_id, **_final(envelopes, now=ctx.now()))
    env = envelopes[0]
    return await ctx.ledger.update(
        rec.job_id,
        state=states[0] if len(states) == 1 else aggregate_state(states),
        raw_status=env_status(env),
        snapshot={"envelopes": [env_dump(e) for e in envelopes]},
    )
