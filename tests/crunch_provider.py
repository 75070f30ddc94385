"""A third job provider that exists only in the tests: "Crunch", a tiny async-job API.

One adapter module (this file: the provider, its connection, its advice table), registered
through `mcp_server.providers.register_provider` (which registers its advice table with it);
no file under `mcp_server/` knows it.

The API (`crunch_app`, Starlette, served in-process through `httpx.ASGITransport`):
`POST /jobs {"workflow", "params"}` -> `{"id", "status": "queued"}`; each `GET /jobs/{id}`
moves the job one step: queued -> running -> done (or failed when `params.text` is empty),
with `result` (word counts) or `error` (`{"code"}`) at the end. Its rate limits (`RATE_LIMITS`:
a small `start` bucket for POSTs, a `status` bucket for the rest) are declared here too, and
every request waits on the runtime's limiter for the bucket they name. Its settings
(`SETTINGS`: `CRUNCH_API_KEY`, `CRUNCH_BASE_URL`) are declared here and read by
`mcp_server.config.Settings` without an edit there.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as HttpRoute

from mcp_server.advice import CatalogueRow, ProviderAdvice, Route, VoteClues, advise_job
from mcp_server.config import ProviderSettings, Settings
from mcp_server.errors import InputProblem, JobRelayError
from mcp_server.ledger import JobRecord
from mcp_server.limits import BucketSpec, RateLimits, bucket_key
from mcp_server.models import Advice, ErrorCode, JobState, Progress
from mcp_server.providers import (
    ByNameSettings,
    Caller,
    JobContext,
    JobKind,
    JobView,
    LineFn,
    ProgressFn,
    ProviderEnv,
    SharedFold,
    Started,
)

NAME = "crunch"
BASE_URL = "http://crunch.invalid/v1"

# ---- the fake API ---------------------------------------------------------------------------


def crunch_app() -> Starlette:
    jobs: dict[str, dict[str, Any]] = {}
    ids = itertools.count(1)

    async def start(request: Request) -> JSONResponse:
        body = await request.json()
        job_id = f"cr-{next(ids)}"
        jobs[job_id] = {"id": job_id, "status": "queued", "params": body["params"]}
        return JSONResponse({"id": job_id, "status": "queued"}, status_code=202)

    async def get(request: Request) -> JSONResponse:
        job = jobs.get(request.path_params["job_id"])
        if job is None:
            return JSONResponse({"error": {"code": "not_found"}}, status_code=404)
        if job["status"] == "queued":
            job["status"] = "running"
        elif job["status"] == "running":
            text = str(job["params"].get("text") or "")
            if text:
                counts: dict[str, int] = {}
                for word in text.lower().split():
                    counts[word] = counts.get(word, 0) + 1
                job["status"] = "done"
                job["result"] = {"words": len(text.split()), "top": max(counts, key=counts.get)}  # type: ignore[arg-type]
            else:
                job["status"] = "failed"
                job["error"] = {"code": "empty_text", "message": "params.text was empty"}
        return JSONResponse({k: v for k, v in job.items() if k != "params"})

    return Starlette(
        routes=[HttpRoute("/v1/jobs", start, methods=["POST"]), HttpRoute("/v1/jobs/{job_id}", get)]
    )


# ---- its advice table -----------------------------------------------------------------------

ADVICE = ProviderAdvice(
    name=NAME,
    service="Crunch",
    rows=(
        CatalogueRow(
            key="crunch.429",
            provider=NAME,
            when="HTTP 429",
            meaning="the counting queue is full",
            code=ErrorCode.RATE_LIMITED,
            retryable=True,
            title="Crunch queue full",
            what="Crunch has no room in its counting queue{until}.",
            next_step="Retry {tool_ref}{after}.",
            do_not="Do not retry before then: the queue refuses again.",
            statuses=(429,),
            status_default=True,
            default_wait=10.0,
        ),
        CatalogueRow(
            key="crunch.job.failed",
            provider=NAME,
            when="job status failed",
            meaning="the text could not be counted; it must change",
            code=None,
            retryable=False,
            title="Crunch job failed",
            what="Crunch reports {job_name} as failed ({job_error}).",
            next_step='Start it again with text: start_seo_job(workflow="word_count", '
            'params={{"text": "..."}}).',
            do_not="Do not resend the same params: they fail again.",
            job_statuses=("failed/permanent",),
        ),
    ),
    routes=(Route("POST", re.compile(r"^/v1/jobs$"), "start_seo_job"),),
    paid_tools=frozenset({"start_seo_job"}),
    clues=VoteClues(header_prefixes=(("x-crunch-", 2),)),
)
"""Crunch's advice table: its pasted 429s and its failed jobs."""

# ---- its settings ---------------------------------------------------------------------------


def _api_key(settings: Settings) -> SecretStr | None:
    value = settings.variable("CRUNCH_API_KEY")
    return None if value is None else SecretStr(value)


SETTINGS = ProviderSettings(
    key_env="CRUNCH_API_KEY",
    api_key=_api_key,
    base_url=lambda settings: settings.variable("CRUNCH_BASE_URL") or BASE_URL,
    variables=("CRUNCH_API_KEY", "CRUNCH_BASE_URL"),
)
"""Its key and base URL, from its own variables (registered before the settings are read)."""

# ---- its rate limits --------------------------------------------------------------------------

START_LIMIT = 2
"""Job starts per minute per key: small, so a test can run out of them."""
STATUS_LIMIT = 50


def crunch_bucket(method: str, path: str) -> str:
    """`start` for a POST (a new job), `status` for everything else."""
    del path
    return "start" if method.upper() == "POST" else "status"


def crunch_spec(bucket: str, settings: Settings) -> BucketSpec:
    del settings
    return BucketSpec(START_LIMIT if bucket == "start" else STATUS_LIMIT)


RATE_LIMITS = RateLimits(route=crunch_bucket, spec=crunch_spec)


STATES = {"queued": JobState.QUEUED, "running": JobState.RUNNING, "done": JobState.SUCCEEDED,
          "failed": JobState.FAILED}  # fmt: skip


# ---- the adapter -----------------------------------------------------------------------------


class CrunchReader:
    """Crunch's reading of a job row."""

    def view(self, rec: JobRecord) -> JobView:
        done = rec.state.terminal
        return JobView(
            progress=Progress(percent=100.0 if done else 0.0, message=rec.raw_status),
            next_check_after_seconds=None if done else 1.0,
        )

    def needs_advice(self, rec: JobRecord) -> bool:
        del rec
        return False

    def job_advice(self, rec: JobRecord, *, now: float) -> Advice:
        return advise_job(
            NAME, rec.raw_status or "unknown", error=rec.error, now=now, job_id=rec.job_id
        )

    def result_records(self, rec: JobRecord) -> list[dict[str, Any]]:
        return [dict(r) for r in (rec.result or {}).get("results", [])]

    def project(self, rec: JobRecord, record: Mapping[str, Any]) -> dict[str, Any]:
        del rec
        return dict(record)

    def lines(
        self,
        rec: JobRecord,
        projected: Sequence[Mapping[str, Any]],
        window: Sequence[Mapping[str, Any]],
    ) -> tuple[Sequence[Mapping[str, Any]], LineFn]:
        del rec, window
        return projected, lambda r: f"{r.get('words')} words, most often {r.get('top')!r}"

    def what(self, rec: JobRecord) -> str:
        return f"Crunch {rec.operation.removeprefix('seo:')}"

    def resubmit_note(self, rec: JobRecord) -> str:
        del rec
        return ""


class CrunchProvider(ByNameSettings):
    name = NAME
    title = "Crunch"
    service_name = "Crunch"
    id_prefix = "crn_"
    kind: JobKind = "seo"
    workflows: tuple[str, ...] = ("word_count",)
    paid_per_target = False
    key_header = "X-Crunch-Api-Key"
    task_poll_ms = (1_000, 10_000)
    advice: ProviderAdvice | None = ADVICE
    rate_limits = RATE_LIMITS
    settings = SETTINGS
    reader = CrunchReader()
    fields_description = "Field names get_job_result(fields=[...]) accepts for word counts."

    def result_fields(self) -> Mapping[str, Sequence[str]]:
        return {"word_count": ("job_id", "words", "top")}

    def sandboxed(self, settings: Settings) -> bool:
        del settings
        return False  # no sandbox of its own: it runs against `crunch_app` in tests

    def sandbox_reason(self, settings: Settings) -> str | None:
        del settings
        return None

    def sandbox_url(self, root: str) -> str:
        return root

    def connect(self, env: ProviderEnv) -> CrunchConnection:
        return CrunchConnection(env)

    def validate(self, workflow: str, params: Mapping[str, Any]) -> dict[str, Any]:
        text = params.get("text")
        if not isinstance(text, str) or len(text) > 1000 or set(params) - {"text"}:
            raise InputProblem(f"{workflow} takes params.text, a string of at most 1000 "
                               "characters.", field="params.text")  # fmt: skip
        return {"text": text}


class CrunchConnection:
    def __init__(self, env: ProviderEnv) -> None:
        self.http = httpx.AsyncClient(base_url=env.base_url, transport=env.transport)
        self.limiter = env.limiter

    async def _send(
        self, ctx: JobContext, tenant: str, method: str, path: str, body: Any = None
    ) -> dict[str, Any]:
        """One request, after a slot in the bucket its route names (refused past the call's
        deadline with `LocalRateLimited`, before anything is sent)."""
        key = bucket_key(NAME, tenant, method, path)
        await self.limiter.acquire(key, deadline=ctx.call_deadline())
        response = await self.http.request(method, path, json=body)
        return dict(response.json())

    async def aclose(self) -> None:
        await self.http.aclose()

    async def start(
        self, ctx: JobContext, caller: Caller, workflow: str, params: dict[str, Any]
    ) -> Started:
        body = await self._send(
            ctx, caller.tenant(NAME), "POST", "/jobs", {"workflow": workflow, "params": params}
        )
        return Started(upstream_ids=[body["id"]], state=STATES[body["status"]],
                       raw_status=body["status"], snapshot={})  # fmt: skip

    async def _check(self, ctx: JobContext, rec: JobRecord) -> JobRecord:
        body = await self._send(ctx, rec.tenant, "GET", f"/jobs/{rec.upstream_ids[0]}")
        state = STATES.get(body["status"], JobState.RUNNING)
        if not state.terminal:
            return await ctx.ledger.update(rec.job_id, state=state, raw_status=body["status"])
        return await ctx.ledger.update(
            rec.job_id,
            state=state,
            raw_status=body["status"],
            result={"results": [{"job_id": body["id"], **body["result"]}]}
            if "result" in body
            else None,
            error=body.get("error"),
        )  # fmt: skip

    async def refresh(
        self, ctx: JobContext, caller: Caller, records: Sequence[JobRecord]
    ) -> tuple[dict[str, JobRecord], dict[str, JobRelayError]]:
        del caller
        fresh = {}
        for rec in records:
            if not rec.state.terminal and rec.upstream_ids:
                fresh[rec.job_id] = await self._check(ctx, rec)
        return fresh, {}

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
        del caller
        while True:
            async with fold.lock:
                rec = fold.rec = await self._check(ctx, fold.fresher(rec))
            if progress is not None:
                await progress(100.0 if rec.state.terminal else 50.0, rec.raw_status)
            if rec.state.terminal or ctx.clock.monotonic() + 1.0 > deadline:
                return rec, None
            await ctx.clock.sleep(1.0)
