"""Seamless.ai I/O for one server runtime: a client and two poll coalescers per tenant.

With `SEAMLESS_WEBHOOK_SECRET` set, each coalescer has a `PushReconciler`: webhook deliveries
(`receive_push`) are folded like poll items and published on their path (`publish_results`:
this replica's waiters at once, the other replicas' through the fan-out), and polling drops to
the slow reconciliation cadence while they arrive (issue 18). With the fan-out (Redis), each
arrival is also told to the other replicas' reconcilers (`pushes.PushShare`), so the replica
holding the poll lease slows down even when the deliveries reach another replica.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast, get_args

import httpx

from mcp_server.config import key_fingerprint
from mcp_server.errors import DeadlineExceeded, FilterProblem, InputProblem, JobRelayError
from mcp_server.ledger import JobRecord
from mcp_server.providers.base import (
    Caller,
    JobContext,
    Outcome,
    ProgressFn,
    ProviderEnv,
    PushOutcome,
    ResearchRequest,
    SharedFold,
    aggregate_state,
)
from mcp_server.providers.seamless.limits import POLL_RESERVE
from mcp_server.providers.seamless.search_filters import search_body
from mcp_server.providers.seamless.settings import SeamlessSettings
from mcp_server.providers.seamless.states import (
    NAME,
    Kind,
    open_request_ids,
    research_kind,
    seamless_state,
)
from mcp_server.pushes import PushReconciler, PushShare
from mcp_server.sharing import ResultFeed, SharedPoll
from mcp_server.upstream import (
    DEADLINE_RETRY_AFTER,
    MAX_POLL_IDS,
    TOKEN_PATH,
    BearerAuth,
    OAuthClient,
    PollItem,
    RefreshingAuth,
    SeamlessClient,
    SearchPage,
    poll_interval,
)
from mcp_server.watch import PollCoalescer, wait_newer_until

MAX_POLL_CALLS_PER_ROUND = 10
"""Research poll calls per round and endpoint at most (1,000 ids: ten 100-target jobs); more
outstanding ids are polled in turn over the next rounds (issue 20.4)."""


def _encode(item: PollItem) -> dict[str, Any]:
    return item.model_dump(mode="json", by_alias=True)


class SeamlessConnection:
    def __init__(self, env: ProviderEnv) -> None:
        self.env = env
        self.clients: dict[str, SeamlessClient] = {}
        self._coalescers: dict[tuple[str, Kind], PollCoalescer[PollItem]] = {}
        self._feeds: dict[tuple[str, Kind], ResultFeed[PollItem]] = {}
        self._pushes = _Pushes(env, self._expedite_here)

    # ---- clients and watchers -----------------------------------------------------------
    def client(self, caller: Caller) -> SeamlessClient:
        tenant = caller.tenant(NAME)
        client = self.clients.get(tenant)
        if client is None:
            env = self.env
            key = env.key_for(tenant)
            client = SeamlessClient(
                env.base_url,
                key,
                clock=env.clock,
                limiter=env.limiter,
                policy=env.policy,
                budget=env.budget,
                transport=env.transport,
                tenant=tenant,
                auth=self._oauth(key),
            )
            self.clients[tenant] = client
        return client

    def _oauth(self, key: Any) -> httpx.Auth | None:
        """The configured OAuth auth when `key` is the server's own OAuth credential (a
        per-request key header is always an API key)."""
        settings = self.env.settings
        account = settings.api_key(NAME)
        if self.env.sandboxed or account is None:
            return None
        if not hmac.compare_digest(
            account.get_secret_value().encode(), key.get_secret_value().encode()
        ):
            return None
        own = settings.of(SeamlessSettings)
        if own.auth == "access_token" and own.access_token:
            return BearerAuth(own.access_token)
        if (
            own.auth == "oauth_refresh"
            and own.oauth_client_id
            and own.oauth_client_secret
            and own.oauth_refresh_token
            and own.oauth_redirect_uri
        ):
            return RefreshingAuth(
                OAuthClient(own.oauth_client_id, own.oauth_client_secret, own.oauth_redirect_uri),
                own.oauth_refresh_token,
                token_url=self.env.base_url.rstrip("/") + TOKEN_PATH,
                now=self.env.clock.time,
            )
        return None

    def coalescer(self, caller: Caller, kind: Kind) -> PollCoalescer[PollItem]:
        key = (caller.tenant(NAME), kind)
        co = self._coalescers.get(key)
        if co is None:
            client = self.client(caller)
            clock = self.env.clock
            policy = self.env.policy

            async def poll(ids: Sequence[str]) -> dict[str, PollItem]:
                items = await client.poll(kind, list(ids), deadline=clock.monotonic() + 30.0)
                return {i.request_id: i for i in items}

            round_poll = None
            # The embedded sandbox is this process's own: another process's request ids
            # mean nothing to it, so its polls are never handed to a lease holder, nor its
            # results to other replicas.
            shared = not self.env.sandboxed
            if self.env.leases is not None and shared:
                round_poll = SharedPoll(
                    name=f"seamless-poll:{key[0]}:{kind}",
                    poll=poll,
                    leases=self.env.leases,
                    encode=_encode,
                    decode=PollItem.model_validate,
                    is_terminal=lambda item: bool(item.terminal),
                    max_ids=MAX_POLL_IDS,
                    clock=clock,
                    spawn=self.env.spawn,
                )
            push = None
            if self.env.settings.of(SeamlessSettings).webhook_secret is not None:
                push = self._pushes.reconciler(key[0], kind)
            feed_box: list[ResultFeed[PollItem]] = []

            async def share(items: Mapping[str, PollItem]) -> None:
                await feed_box[0].share(items)

            co = PollCoalescer(
                poll=poll,
                round_poll=round_poll,
                on_items=share,
                on_idle=None if round_poll is None else round_poll.idle,
                foreign=None if round_poll is None else round_poll.foreign,
                push=push,
                is_terminal=lambda item: bool(item.terminal),
                interval=lambda n: poll_interval(NAME, n, policy=policy),
                clock=clock,
                spawn=self.env.spawn,
                max_ids=MAX_POLL_IDS,
                max_calls_per_round=MAX_POLL_CALLS_PER_ROUND,
                provider=NAME,
                sweep_calls=POLL_RESERVE,  # the poll bucket's reserve (limits.py)
            )
            feed = ResultFeed(
                topic=f"seamless-results:{key[0]}:{kind}",
                deliver=co.deliver,
                encode=_encode,
                decode=PollItem.model_validate,
                fanout=self.env.fanout if shared else None,
            )
            feed_box.append(feed)
            self._coalescers[key] = co
            self._feeds[key] = feed
        return co

    async def publish_results(
        self, caller: Caller, kind: Kind, items: Mapping[str, PollItem]
    ) -> None:
        """Poll items learnt without polling (a webhook delivery, issue 18) to every waiter
        on them, on this replica at once and on the others through the fan-out: the same
        path a poll round's results take (`sharing.ResultFeed.publish`)."""
        self.coalescer(caller, kind)
        await self._feeds[(caller.tenant(NAME), kind)].publish(items)

    async def aclose(self) -> None:
        self._pushes.close()
        for feed in self._feeds.values():
            feed.close()
        for client in self.clients.values():
            await client.aclose()

    # ---- search and research ------------------------------------------------------------
    async def search(
        self,
        ctx: JobContext,
        caller: Caller,
        *,
        kind: Kind,
        query: str | None,
        filters: Mapping[str, Any],
        limit: int,
        next_token: str | None,
    ) -> SearchPage:
        try:
            body = search_body(kind, query, filters)
        except FilterProblem as exc:
            raise InputProblem(exc.message, field=exc.field, provider=NAME) from None
        return await self.client(caller).search(
            kind, body, limit=limit, next_token=next_token, deadline=ctx.call_deadline()
        )

    async def start_research(
        self,
        ctx: JobContext,
        caller: Caller,
        request: ResearchRequest,
        *,
        wait_seconds: float,
        progress: ProgressFn | None,
    ) -> Outcome:
        from mcp_server.providers.seamless.research import start_research

        return await start_research(
            ctx, caller, self.client(caller), request, wait_seconds=wait_seconds, progress=progress
        )

    # ---- status and following -----------------------------------------------------------
    async def _poll_within(
        self, ctx: JobContext, co: PollCoalescer[PollItem], ids: Sequence[str]
    ) -> dict[str, PollItem]:
        """A direct poll cut at the call's deadline (its own client deadline may be later)."""
        clock = ctx.clock
        remaining = ctx.call_deadline() - clock.monotonic()
        if remaining > 0:
            with clock.move_on_after(remaining):
                return await co.poll_now(ids)
        raise DeadlineExceeded(
            "Seamless GET /research/poll: no answer within the call's time limit "
            "(JOBRELAY_MAX_WAIT_SECONDS, all attempts together)",
            provider=NAME,
            operation="pollResearch",
            method="GET",
            path="/research/poll",
            retry_after=DEADLINE_RETRY_AFTER,
        )

    async def refresh(
        self, ctx: JobContext, caller: Caller, records: Sequence[JobRecord]
    ) -> tuple[dict[str, JobRecord], dict[str, JobRelayError]]:
        """One poll call per endpoint (contacts, companies) for all open jobs of the batch."""
        by_kind: dict[Kind, list[JobRecord]] = {}
        for rec in records:
            if not rec.state.terminal and rec.upstream_ids:
                by_kind.setdefault(research_kind(rec), []).append(rec)
        fresh: dict[str, JobRecord] = {}
        problems: dict[str, JobRelayError] = {}
        for kind, recs in by_kind.items():
            ids = [i for r in recs for i in open_request_ids(r)]
            co = self.coalescer(caller, kind)
            co.started(_starts(ctx, recs))
            try:
                latest = await self._poll_within(ctx, co, ids)
            except JobRelayError as exc:
                for r in recs:
                    problems[r.job_id] = exc
                continue
            for r in recs:
                fresh[r.job_id] = await apply_poll(ctx, r, latest)
        return fresh, problems

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
        co = self.coalescer(caller, research_kind(rec))
        ids = open_request_ids(rec)
        problem: JobRelayError | None = None
        last_pct: float | None = None
        async with co.watch(ids):
            co.started(_starts(ctx, [rec]))  # watched first: the starts are kept while watched
            while True:
                seen = co.board.version
                rec = await _fold_round(ctx, fold, rec, co.latest(ids), seen)
                items = (rec.snapshot or {}).get("items", [])
                done = sum(1 for i in items if seamless_state(i.get("raw_status")).terminal)
                pct = 100.0 * done / max(1, len(items))
                if progress is not None and pct != last_pct:
                    last_pct = pct
                    await progress(pct, f"{done} of {len(items)} targets finished")
                if rec.state.terminal:
                    return rec, None
                round_ = co.board.value
                problem = round_.error if round_ is not None else None
                if not await wait_newer_until(co.board, seen, ctx.clock, deadline):
                    return rec, problem

    # ---- pushed results (webhooks) --------------------------------------------------------
    async def receive_push(
        self,
        ctx: JobContext,
        caller: Caller,
        rec: JobRecord,
        upstream_id: str,
        payload: Mapping[str, object],
    ) -> tuple[JobRecord, PushOutcome]:
        """A `contact-researched`/`company-researched` delivery: the record of a finished
        request, stored as the poll's `done` item with that record would be, then published
        as a poll result is (`publish_results`: waiters here at once, other replicas' through
        the fan-out)."""
        item = next(
            (
                i
                for i in (rec.snapshot or {}).get("items", [])
                if i.get("request_id") == upstream_id
            ),
            None,
        )
        if item is None:
            return rec, "unknown"
        kind = research_kind(rec)
        co = self.coalescer(caller, kind)
        # So its submit-to-delivery time is learnt, waited on here or not, ended or not.
        start = _start_of(ctx, rec)
        co.started({upstream_id: start})
        records = (rec.result or {}).get("records") or {}
        if seamless_state(item.get("raw_status")).terminal or upstream_id in records:
            co.pushed([upstream_id])  # still a sign that deliveries arrive
            await self._pushes.share_arrival(
                caller, kind, upstream_id, ctx.clock.monotonic() - start
            )
            return rec, "repeated"  # a repeat, or a poll saw it end first: changes nothing
        polled = PollItem.model_construct(
            request_id=upstream_id,
            status="done",
            search_result_id=None,
            message=None,
            record=dict(payload),
            additional_data=None,
        )
        fresh = await apply_poll(ctx, rec, {upstream_id: polled})
        co.pushed([upstream_id])
        # Told before the item is published: the other replicas' reconcilers know deliveries
        # arrive by the time their waiters have the item (one Redis channel keeps the order).
        await self._pushes.share_arrival(caller, kind, upstream_id, ctx.clock.monotonic() - start)
        # The results' one path: this replica's waiters at once, the others' through Redis.
        await self.publish_results(caller, kind, {upstream_id: polled})
        return fresh, "applied"

    def push_hint(self, upstream_id: str) -> bool:
        """Expedite `upstream_id`'s poll wherever it is watched, here at once and on the
        other replicas through the fan-out (each polls it with its watcher's own key)."""
        self._pushes.share_hint(upstream_id)
        return self._expedite_here([upstream_id])

    def _expedite_here(self, ids: list[str]) -> bool:
        hinted = False
        for co in self._coalescers.values():
            hinted = co.expedite(ids) or hinted
        return hinted


class _Pushes:
    """Each tenant's `PushReconciler`s (one per endpoint, made before its coalescer when
    another replica's arrivals come first), and the arrivals trusted for the server's own
    tenant shared with the other replicas (`PushShare`, on the fan-out only: results reach a
    replica that way too; a replica that cannot get the pushed item keeps polling for it).
    Listening from the start, so a replica learns the submit-to-delivery times before it has
    waiters of its own."""

    def __init__(self, env: ProviderEnv, expedite: Callable[[list[str]], bool]) -> None:
        self._env = env
        self._reconcilers: dict[tuple[str, Kind], PushReconciler] = {}
        self._tenant: str | None = None
        self._share: PushShare | None = None
        own = env.settings.api_key(NAME)
        if (
            env.fanout is None
            or env.sandboxed
            or own is None
            or env.settings.of(SeamlessSettings).webhook_secret is None
        ):
            return
        tenant = self._tenant = key_fingerprint(own)

        def arrived(kind: str, took: Mapping[str, float | None]) -> None:
            push = self.reconciler(tenant, cast(Kind, kind))  # one of `endpoints`: checked
            for item_id, seconds in took.items():
                push.arrived(item_id, took=seconds, relayed=True)

        self._share = PushShare(
            topic=f"seamless-pushes:{tenant}",
            fanout=env.fanout,
            endpoints=get_args(Kind),
            on_arrived=arrived,
            on_hinted=expedite,
        )

    def reconciler(self, tenant: str, kind: Kind) -> PushReconciler:
        push = self._reconcilers.get((tenant, kind))
        if push is None:
            push = self._reconcilers[(tenant, kind)] = PushReconciler(clock=self._env.clock)
        return push

    async def share_arrival(
        self, caller: Caller, kind: Kind, upstream_id: str, took: float
    ) -> None:
        """A push trusted for `caller`'s tenant, to the other replicas' reconcilers (only the
        server's own tenant's are trusted, there as here)."""
        if self._share is not None and caller.tenant(NAME) == self._tenant:
            await self._share.arrived(kind, {upstream_id: max(0.0, took)})

    def share_hint(self, upstream_id: str) -> None:
        """A push not trusted to stand in for a poll: each replica expedites the id's poll."""
        share = self._share
        if share is not None:

            async def tell() -> None:
                await share.hinted([upstream_id])

            self._env.spawn(tell)

    def close(self) -> None:
        if self._share is not None:
            self._share.close()


def _start_of(ctx: JobContext, rec: JobRecord) -> float:
    """When `rec`'s job started, on the clock's monotonic scale."""
    return ctx.clock.monotonic() - max(0.0, ctx.clock.time() - rec.created_at.timestamp())


def _starts(ctx: JobContext, recs: Sequence[JobRecord]) -> dict[str, float]:
    """Each open request id's job start, on the clock's monotonic scale."""
    return {i: _start_of(ctx, r) for r in recs for i in open_request_ids(r)}


async def _fold_round(
    ctx: JobContext, fold: SharedFold, rec: JobRecord, latest: Mapping[str, Any], version: int
) -> JobRecord:
    """Fold poll round `version` into the job once, whichever waiter gets here first."""
    async with fold.lock:
        if fold.rec is not None and fold.version >= version:
            return fold.fresher(rec)
        fold.rec = await apply_poll(ctx, fold.fresher(rec), latest)
        fold.version = version
        return fold.rec


async def apply_poll(ctx: JobContext, rec: JobRecord, latest: Mapping[str, Any]) -> JobRecord:
    """Fold poll items into the job's snapshot; store records once everything is final."""
    snapshot = dict(rec.snapshot or {})
    items = [dict(i) for i in snapshot.get("items", [])]
    records: dict[str, Any] = dict((rec.result or {}).get("records") or {})
    changed = False
    for item in items:
        polled = latest.get(item["request_id"])
        if polled is None:
            continue
        raw = _poll_status(polled)
        if raw != item.get("raw_status"):
            item["raw_status"] = raw
            changed = True
        message = _poll_message(polled)
        if message:
            item["message"] = message
        extra = _get(polled, "additional_data", "additionalData")
        if isinstance(extra, Mapping) and extra and item.get("additional_data") != extra:
            item["additional_data"] = dict(extra)  # kept in the ledger, never dropped
            changed = True
        record = _poll_record(polled)
        if record is not None and item["request_id"] not in records:
            records[item["request_id"]] = record
            changed = True
    if not changed:
        return rec
    states = [seamless_state(i.get("raw_status")) for i in items]
    snapshot["items"] = items
    return await ctx.ledger.update(
        rec.job_id,
        state=aggregate_state(states),
        raw_status=_raw_summary(items),
        snapshot=snapshot,
        result={"records": records} if records else None,
    )


def _raw_summary(items: Sequence[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for i in items:
        raw = str(i.get("raw_status") or "unknown")
        counts[raw] = counts.get(raw, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def _get(obj: Any, *names: str) -> Any:
    for name in names:
        if isinstance(obj, Mapping):
            if name in obj:
                return obj[name]
        elif hasattr(obj, name):
            return getattr(obj, name)
    return None


def _poll_status(item: Any) -> str:
    return str(_get(item, "status") or "researching")


def _poll_message(item: Any) -> str | None:
    msg = _get(item, "message")
    return str(msg) if msg else None


def _poll_record(item: Any) -> dict[str, Any] | None:
    from pydantic import BaseModel

    rec = _get(item, "record", "contact", "company")
    if isinstance(rec, BaseModel):
        return rec.model_dump(mode="json", by_alias=True)
    if isinstance(rec, dict):
        return rec  # as decoded from the poll response; nothing mutates it, so no copy
    return dict(rec) if isinstance(rec, Mapping) else None
