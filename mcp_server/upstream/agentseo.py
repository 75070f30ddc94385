"""AgentSEO API v1 client: start workflows, read jobs, follow them live (UPSTREAMS.md section 2).

Workflow POSTs spend credits, so they are `PAID` calls: replayed only when provably not
processed (see `_http`). Job reads and the event stream use the `control` budget and are
retried freely. `follow()` prefers the SSE stream and falls back to polling `GET /jobs/{id}`
on the envelope's cadence when there is no stream or it keeps dropping.

Upstream-supplied `poll_url`/`events_url` are used only when they resolve to the configured
base URL's origin (scheme, host, port); otherwise the configured `/jobs/{id}` paths are used,
so a hostile envelope cannot make us send the API key elsewhere.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from enum import StrEnum
from typing import Any, Final
from urllib.parse import quote

import anyio
import httpx
from pydantic import SecretStr

from mcp_server._clock import Clock
from mcp_server.errors import AbsurdAnswer, OutcomeUnknown, ShapeError
from mcp_server.json_types import JSON
from mcp_server.limits import BucketSnapshot, Limiter
from mcp_server.upstream._backoff import BackoffPolicy, RequestKind, RetryBudget, poll_interval
from mcp_server.upstream._client import DEFAULT_TIMEOUT, REQUEST_POOL_LIMITS, Call, same_origin
from mcp_server.upstream._failures import InvalidArguments
from mcp_server.upstream._http import UpstreamHTTP
from mcp_server.upstream._models import JobEnvelope
from mcp_server.upstream._sse import SSEMessage, StreamUnavailable, follow_sse

__all__ = [
    "BACKGROUND_POLLS_PER_SECOND",
    "MAX_BATCH_TARGETS",
    "MAX_CONCURRENT_STREAMS",
    "PLAN_BUDGETS",
    "WORKFLOW_ENDPOINTS",
    "AgentSEOClient",
    "JobEnvelope",
    "Plan",
]

_log = logging.getLogger(__name__)


class Plan(StrEnum):
    """AgentSEO's plans (`AGENTSEO_PLAN`)."""

    HOBBY = "hobby"
    STARTER = "starter"
    PRO = "pro"
    AGENCY = "agency"


#: AgentSEO per-key budgets per minute: (workload, control). UPSTREAMS.md section 2.
PLAN_BUDGETS: Final[Mapping[Plan, tuple[int, int]]] = {
    Plan.HOBBY: (60, 600),
    Plan.STARTER: (120, 1200),
    Plan.PRO: (300, 3000),
    Plan.AGENCY: (1000, 10000),
}

#: Workflow name -> POST endpoint below the base URL (UPSTREAMS.md section 2).
WORKFLOW_ENDPOINTS: Final[Mapping[str, str]] = {
    "serp_analysis": "/analyze/serp",
    "keyword_metrics": "/keyword-metrics/overview",
    "local_audit": "/audit/local",
    "local_audit_batch": "/audit/local/batch",
}
_BATCH_WORKFLOWS: Final = frozenset({"local_audit_batch"})
MAX_BATCH_TARGETS: Final = 50
"""Audits per `local_audit_batch` request: the limit is not documented; jobrelay's tool, this
client and the sandbox all use this one."""
_JOB_TEMPLATE: Final = "/jobs/{id}"
_EVENTS_TEMPLATE: Final = "/jobs/{id}/events"

MAX_CONCURRENT_STREAMS: Final = 64
"""Event streams open at once per API key, on their own connection pool of this size. Jobs
followed beyond it are polled (paced by `BACKGROUND_POLLS_PER_SECOND`) and move to a stream
when one frees up. Streams therefore never take a connection a request needs: with a shared
pool of 100, a hundred followed jobs left `start_seo_job` and `get_job_status` waiting for a
connection (issue 14.13)."""
STREAM_POOL_LIMITS: Final = httpx.Limits(
    max_connections=MAX_CONCURRENT_STREAMS, max_keepalive_connections=8
)
BACKGROUND_POLLS_PER_SECOND: Final = 2.0
"""Status polls of followed jobs (beyond the stream cap, or without a stream), per API key, all
jobs together, when the caller says nothing else: the control budget (600/min on Hobby) keeps
most of its room for the agent's own calls however many jobs are followed. The AgentSEO
connection passes a share of its plan's budget instead (`background_polls_per_second`)."""


class _Pacer:
    """Turns at most `rate` per second for all callers together, first come, first served."""

    def __init__(self, clock: Clock, rate: float) -> None:
        self._clock = clock
        self._spacing = 1.0 / rate
        self._next = -math.inf
        self._lock = anyio.Lock()

    async def turn(self, deadline: float) -> bool:
        """Wait for the next turn; False (no turn taken) when it would come after `deadline`."""
        async with self._lock:
            now = self._clock.monotonic()
            at = max(now, self._next)
            if at > deadline:
                return False
            if at > now:
                await self._clock.sleep(at - now)
            self._next = at + self._spacing
            return True


def _parse_envelope(body: Any) -> JobEnvelope:
    if not isinstance(body, dict):
        raise ShapeError("expected a job envelope object")
    return JobEnvelope.model_validate(body)


def _parse_batch(body: Any) -> list[JobEnvelope]:
    """The batch answer: documented as an array of job ids; envelopes accepted too."""
    items: Any
    if isinstance(body, list):
        items = body
    elif isinstance(body, dict):
        jobs, ids = body.get("jobs"), body.get("jobIds")
        if isinstance(jobs, list) and jobs:
            items = jobs
        elif isinstance(ids, list):
            items = ids
        elif "jobId" in body:
            items = [body]
        else:
            raise ShapeError("expected jobIds or jobs")
    else:
        raise ShapeError("expected an array of job ids")
    out: list[JobEnvelope] = []
    for item in items:
        if isinstance(item, dict):
            out.append(JobEnvelope.model_validate(item))
        elif isinstance(item, str | int) and not isinstance(item, bool) and str(item):
            out.append(JobEnvelope.model_validate({"jobId": str(item), "status": "queued"}))
        else:
            raise ShapeError("a job id is neither text nor an envelope")
    if not out:
        raise ShapeError("no job ids in the batch answer")
    return out


def _state_key(env: JobEnvelope) -> tuple[object, ...]:
    """What makes a polled envelope news (ETAs tick on every poll; they are not)."""
    progress = env.progress.percent if env.progress else None
    error = env.error.code if env.error else None
    return (env.status, env.phase, progress, env.attempt, env.message, error)


def _poll_hint(env: JobEnvelope) -> float | None:
    """The server's cadence: `retry_after_seconds`, else the ETA (when it says one)."""
    if env.retry_after_seconds is not None:
        return env.retry_after_seconds
    if env.progress is not None and env.progress.eta_seconds is not None:
        return env.progress.eta_seconds
    return None


class AgentSEOClient:
    """One API key's view of AgentSEO. Use as an async context manager (owns its clients).

    `deadline` arguments are absolute `clock.monotonic()` seconds. For requests, `None` means
    `default_wait` seconds from now; for `follow()`, `None` means no deadline (follow until
    the job ends or the consumer stops).
    """

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | str,
        *,
        clock: Clock,
        limiter: Limiter,
        policy: BackoffPolicy,
        budget: RetryBudget,
        tenant: str,
        transport: httpx.AsyncBaseTransport | None = None,
        sse_transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        default_wait: float = 45.0,
        rng: random.Random | None = None,
        max_streams: int = MAX_CONCURRENT_STREAMS,
        background_polls_per_second: float = BACKGROUND_POLLS_PER_SECOND,
    ) -> None:
        def http(
            transport: httpx.AsyncBaseTransport | None,
            limits: httpx.Limits = REQUEST_POOL_LIMITS,
        ) -> UpstreamHTTP:
            return UpstreamHTTP(
                "agentseo",
                base_url,
                api_key,
                clock=clock,
                limiter=limiter,
                policy=policy,
                budget=budget,
                tenant=tenant,
                transport=transport,
                timeout=timeout,
                default_wait=default_wait,
                limits=limits,
            )

        self._http = http(transport)
        # Streams on their own client and pool: they can never starve requests of connections.
        stream_limits = httpx.Limits(max_connections=max_streams, max_keepalive_connections=8)
        self._stream_http = http(sse_transport or transport, stream_limits)
        self._stream_slots = anyio.CapacityLimiter(max_streams)
        self._pacer = _Pacer(clock, background_polls_per_second)
        self._clock = clock
        self._policy = policy
        self._rng = rng
        self.base_url = self._http.base_url
        self.tenant = tenant

    def __repr__(self) -> str:
        return f"AgentSEOClient({self.base_url!r}, tenant={self.tenant!r})"

    async def __aenter__(self) -> AgentSEOClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._stream_http.aclose()

    async def rate_limits(self) -> list[BucketSnapshot]:
        """This key's AgentSEO buckets (`workload`, `control`) as the limiter sees them."""
        return [
            b
            for b in await self._http.limiter.snapshot()
            if b.provider == "agentseo" and b.key_fingerprint == self.tenant
        ]

    # ---- paths ------------------------------------------------------------------------------
    def _job_path(self, job_id: str, suffix: str, upstream_url: str | None) -> str:
        """The configured `/jobs/{id}` path, or the envelope's URL when it is same-origin."""
        if upstream_url and same_origin(upstream_url, self.base_url):
            return str(httpx.URL(self.base_url + "/").join(upstream_url))
        if upstream_url:
            _log.warning(
                "ignoring an AgentSEO job URL outside the configured base URL origin",
                extra={"provider": "agentseo", "upstream_id": job_id},
            )
        return f"/jobs/{quote(job_id, safe='')}{suffix}"

    # ---- operations -------------------------------------------------------------------------
    async def start(
        self,
        workflow: str,
        params: Mapping[str, JSON],
        *,
        sync: bool = False,
        deadline: float | None = None,
        project_id: str | None = None,
        workflow_id: str | None = None,
    ) -> JobEnvelope | list[JobEnvelope]:
        """Start a workflow: one envelope, or a list for `local_audit_batch`.

        With `sync=True` the API may answer with the finished job (200) instead of a queued
        one (202); both come back as an envelope. Spends credits: never replayed after an
        ambiguous failure (`OutcomeUnknown`).
        """
        path = WORKFLOW_ENDPOINTS.get(workflow)
        if path is None:
            allowed = tuple(WORKFLOW_ENDPOINTS)
            raise InvalidArguments(
                f"Unknown AgentSEO workflow {workflow!r}; allowed: {', '.join(allowed)}.",
                provider="agentseo",
                argument="workflow",
                allowed=allowed,
            )
        headers = {}
        if project_id:
            headers["x-project-id"] = project_id
        if workflow_id:
            headers["x-workflow-id"] = workflow_id
        batch = workflow in _BATCH_WORKFLOWS
        targets = params.get("targets") if batch else None
        if batch and (not isinstance(targets, list) or not 1 <= len(targets) <= MAX_BATCH_TARGETS):
            raise InvalidArguments(
                f"local_audit_batch takes 1 to {MAX_BATCH_TARGETS} targets.",
                provider="agentseo",
                argument="targets",
            )
        call = Call(
            operation=workflow,
            method="POST",
            path=path,
            template=path,
            kind=RequestKind.PAID,
            params={"sync": "true"} if sync and not batch else None,
            json_body=dict(params),
            headers=headers or None,
        )
        if batch:
            reply = await self._http.send(call, _parse_batch, deadline=deadline)
            targets = params.get("targets")
            expected = len(targets) if isinstance(targets, list) else len(reply.value)
            if len(reply.value) != expected:
                # One job per target is the contract; any other count is not trusted.
                ids = [e.job_id for e in reply.value]
                cause = AbsurdAnswer(
                    f"AgentSEO POST {path}: HTTP {reply.status} with {len(ids)} job ids for "
                    f"{expected} target(s)",
                    sample=ids,
                    count=len(ids),
                    expected=expected,
                    provider="agentseo",
                    operation=call.operation,
                    method="POST",
                    path=path,
                    status=reply.status,
                    hints=reply.hints,
                    request_id=reply.request_id,
                )
                raise OutcomeUnknown(
                    f"{cause.message}: not trusted, outcome unknown",
                    provider="agentseo",
                    cause=cause,
                )
            return reply.value
        return (await self._http.send(call, _parse_envelope, deadline=deadline)).value

    async def get_job(
        self, job_id: str, *, deadline: float | None = None, poll_url: str | None = None
    ) -> JobEnvelope:
        """The job's current envelope (`control` budget; retried on transient failures)."""
        call = Call(
            operation="getJob",
            method="GET",
            path=self._job_path(job_id, "", poll_url),
            template=_JOB_TEMPLATE,
            kind=RequestKind.READ,
        )
        return (await self._http.send(call, _parse_envelope, deadline=deadline)).value

    @property
    def open_streams(self) -> int:
        """Event streams held open now (at most `max_streams`)."""
        return int(self._stream_slots.borrowed_tokens)

    async def follow(
        self,
        job_id: str,
        *,
        deadline: float | None = None,
        last_event_id: str | None = None,
        events_url: str | None = None,
    ) -> AsyncGenerator[JobEnvelope, None]:
        """Each new state of the job until it is `completed`/`failed` or the deadline passes.

        Streams `GET /jobs/{id}/events` (resuming after `last_event_id`) when a stream slot is
        free; otherwise polls, paced with every other followed job of this key, and takes a
        stream as soon as one frees up. Falls back to polling for good when there is no
        stream or it dropped too often. Returns cleanly at the deadline: the job is still
        running. Stop early with `contextlib.aclosing`.
        """
        end = math.inf if deadline is None else deadline
        call = Call(
            operation="jobEvents",
            method="GET",
            path=self._job_path(job_id, "/events", events_url),
            template=_EVENTS_TEMPLATE,
            kind=RequestKind.STREAM,
        )
        last: JobEnvelope | None = None
        seen: tuple[object, ...] | None = None
        streamable = True
        index = 0
        while True:
            slot = object()
            if streamable and self._take_stream_slot(slot):
                try:
                    async with aclosing(
                        follow_sse(
                            self._stream_http,
                            call,
                            deadline=end,
                            last_event_id=last_event_id,
                            rng=self._rng,
                        )
                    ) as messages:
                        async for message in messages:
                            env = _event_envelope(message)
                            if env is None:
                                continue
                            last, seen = env, _state_key(env)
                            last_event_id = message.id or last_event_id
                            yield env
                            if env.terminal:
                                return
                except StreamUnavailable as exc:
                    _log.info(
                        "AgentSEO job %s: %s; polling instead",
                        job_id,
                        exc.reason,
                        extra={"provider": "agentseo", "upstream_id": job_id},
                    )
                    streamable = False
                else:
                    return  # the deadline passed
                finally:
                    self._stream_slots.release_on_behalf_of(slot)
            # One paced poll: no stream slot free (or no stream at all).
            if not await self._pacer.turn(end):
                return
            env = await self.get_job(
                job_id, deadline=end, poll_url=None if last is None else last.poll_url
            )
            if _state_key(env) != seen:
                last, seen = env, _state_key(env)
                yield env
            if env.terminal:
                return
            delay = poll_interval(
                "agentseo", index, _poll_hint(env), self._rng, policy=self._policy
            )
            if self._clock.monotonic() + delay > end:
                return
            await self._clock.sleep(delay)
            index += 1

    def _take_stream_slot(self, slot: object) -> bool:
        try:
            self._stream_slots.acquire_on_behalf_of_nowait(slot)
        except anyio.WouldBlock:
            return False
        return True


def _event_envelope(message: SSEMessage) -> JobEnvelope | None:
    """The envelope an event carries, or None for an event we cannot read (skipped)."""
    try:
        data = json.loads(message.data)
        return _parse_envelope(data)
    except (ValueError, ShapeError):
        _log.debug(
            "skipping an unreadable AgentSEO event (id %s)",
            message.id,
            extra={"provider": "agentseo"},
        )
        return None
