"""AgentSEO as a job provider: its workflows and their params, and what an SEO row means.

A job is one handle over one AgentSEO jobId (a batch: one per target); the ledger snapshot
holds the last envelopes, the result `{"results": [{"job_id", "result"}]}`. I/O lives in
`connection.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mcp_server import _bounds as B
from mcp_server import advice as advice_mod
from mcp_server import render
from mcp_server._bounds import cut_strings
from mcp_server.advice import ProviderAdvice
from mcp_server.config import ProviderSettings
from mcp_server.errors import InputProblem
from mcp_server.ledger import JobRecord
from mcp_server.limits import RateLimits
from mcp_server.models import Advice, JobState, Progress
from mcp_server.projection import project_seo_result
from mcp_server.providers.agentseo import fields
from mcp_server.providers.agentseo.advice import AGENTSEO
from mcp_server.providers.agentseo.envelopes import NAME, agentseo_state, clamp_pct, nonneg
from mcp_server.providers.agentseo.limits import RATE_LIMITS
from mcp_server.providers.agentseo.settings import SETTINGS
from mcp_server.providers.base import (
    ByNameSettings,
    Connection,
    JobKind,
    JobReader,
    JobView,
    LineFn,
    ProviderEnv,
)
from mcp_server.upstream.agentseo import MAX_BATCH_TARGETS

# ---- per-workflow parameter validation ------------------------------------------------------


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


_Keyword = Annotated[str, Field(min_length=1, max_length=B.MAX_QUERY_CHARS)]
_Place = Annotated[str | None, Field(max_length=B.MAX_NAME_CHARS)]
_Code = Annotated[int | None, Field(ge=0, le=10**9)]


class SerpParams(_Params):
    keyword: _Keyword
    location: _Place = None
    location_code: _Code = None
    device: Literal["desktop", "mobile"] | None = None


class KeywordParams(_Params):
    keywords: list[_Keyword] = Field(min_length=1, max_length=B.MAX_KEYWORDS)
    location: _Place = None
    location_code: _Code = None


class LocalAuditParams(_Params):
    domain: Annotated[str | None, Field(max_length=B.MAX_DOMAIN_CHARS)] = None
    business_name: _Place = None
    location: _Place = None
    location_code: _Code = None
    language: str | None = Field(None, min_length=2, max_length=10)


class LocalAuditBatchParams(_Params):
    targets: list[LocalAuditParams] = Field(min_length=1, max_length=MAX_BATCH_TARGETS)


WORKFLOW_PARAMS: Mapping[str, type[_Params]] = {
    "serp_analysis": SerpParams,
    "keyword_metrics": KeywordParams,
    "local_audit": LocalAuditParams,
    "local_audit_batch": LocalAuditBatchParams,
}


def validate_workflow_params(workflow: str, params: Mapping[str, Any]) -> dict[str, Any]:
    model = WORKFLOW_PARAMS.get(workflow)
    if model is None:
        allowed = ", ".join(WORKFLOW_PARAMS)
        raise InputProblem(
            f"Unknown workflow {B.echo(workflow)}; allowed: {allowed}.", field="workflow"
        )
    size = len(B.compact_json(params))
    if size > B.MAX_PARAMS_CHARS:
        raise InputProblem(
            f"params is {size:,} characters of JSON; at most {B.MAX_PARAMS_CHARS:,} are accepted.",
            field="params",
            next_step="Call start_seo_job again with fewer or shorter params (split big batches).",
        )
    try:
        parsed = model.model_validate(dict(params))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(["params", *(str(p) for p in first["loc"])])
        raise InputProblem(
            f"Invalid params for {workflow}: {_pydantic_problems(exc, model)}.",
            field=where,
            next_step=(
                f"Call start_seo_job again without {where}."
                if first["type"] == "extra_forbidden"
                else None
            ),
        ) from None
    audits: list[tuple[str, LocalAuditParams]] = []
    if isinstance(parsed, LocalAuditParams):
        audits = [("params", parsed)]
    elif isinstance(parsed, LocalAuditBatchParams):
        audits = [(f"params.targets.{i}", t) for i, t in enumerate(parsed.targets)]
    for where, audit in audits:
        # UPSTREAMS.md: a local audit is "domain or business name + location"; checked here so
        # the agent learns it before anything is sent.
        if not (audit.domain or audit.business_name):
            raise InputProblem(
                f"{workflow} needs {where}.domain or {where}.business_name.",
                field=f"{where}.domain",
            )
        if audit.domain and audit.business_name:
            raise InputProblem(
                f"{workflow} takes {where}.domain or {where}.business_name, not both: AgentSEO "
                "reads one of them, in its `domain` field.",
                field=f"{where}.business_name",
            )
        if not audit.location:
            # AgentSEO requires `location`; `location_code` only wins over it when both are set.
            raise InputProblem(
                f"{workflow} needs {where}.location (e.g. 'Austin, TX'); location_code may be "
                "added, not used instead.",
                field=f"{where}.location",
            )
    clean = parsed.model_dump(exclude_none=True)
    if isinstance(parsed, LocalAuditParams):
        return _audit_wire(clean)
    if isinstance(parsed, LocalAuditBatchParams):
        return {"targets": [_audit_wire(t) for t in clean["targets"]]}
    return clean


def _audit_wire(audit: dict[str, Any]) -> dict[str, Any]:
    """A local audit as AgentSEO publishes it: the business name goes in `domain`."""
    name = audit.pop("business_name", None)
    if name is not None:
        audit["domain"] = name
    return audit


def _pydantic_problems(exc: ValidationError, model: type[_Params]) -> str:
    """`params.keyword is required; params.colour is not a known field (known: ...)`."""
    parts = []
    known = ", ".join(sorted(model.model_fields))
    for err in exc.errors():
        where = ".".join(["params", *(str(p) for p in err["loc"])])
        if err["type"] == "missing":
            parts.append(f"{where} is required")
        elif err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
            parts.append(f"{where} is not a known field (known: {known})")
        else:
            msg = err["msg"]
            parts.append(f"{where}: {msg[0].lower() + msg[1:]}")
    return "; ".join(parts)


class AgentSEOReader:
    """AgentSEO's reading of a job row: its view, advice, records and texts."""

    def view(self, rec: JobRecord) -> JobView:
        view = JobView()
        envs = (rec.snapshot or {}).get("envelopes") or []
        if envs:
            env = envs[0]
            prog = env.get("progress") or {}
            view.progress = Progress(
                percent=clamp_pct(prog.get("percent")),
                phase=env.get("phase"),
                message=env.get("message"),
                eta_seconds=nonneg(prog.get("eta_seconds")),
            )
            if not rec.state.terminal:
                hint = nonneg(env.get("retry_after_seconds"))
                view.next_check_after_seconds = hint if hint else 2.0
        return view

    def needs_advice(self, rec: JobRecord) -> bool:
        del rec
        return False

    def job_advice(self, rec: JobRecord, *, now: float) -> Advice:
        snapshot = rec.snapshot or {}
        envs = snapshot.get("envelopes") or [{}]
        env = next((e for e in envs if agentseo_state(e.get("status")) is JobState.FAILED), envs[0])
        retry_after = nonneg(env.get("retry_after_seconds"))
        ended = nonneg(snapshot.get("ended_at"))
        if retry_after is not None and ended is not None:
            retry_after = max(0.0, ended + retry_after - now)
        return advice_mod.advise_job(
            NAME,
            rec.raw_status or "unknown",
            error=env.get("error") or rec.error,
            retry_after=retry_after,
            now=now,
            job_id=rec.job_id,
        )

    def result_records(self, rec: JobRecord) -> list[dict[str, Any]]:
        out = []
        for entry in (rec.result or {}).get("results") or []:
            r = entry.get("result")
            if isinstance(r, Mapping):
                out.append({"job_id": entry.get("job_id"), **dict(r)})
        return out

    def project(self, rec: JobRecord, record: Mapping[str, Any]) -> dict[str, Any]:
        del rec
        body = {k: v for k, v in record.items() if k != "job_id"}
        return {"job_id": record.get("job_id"), **project_seo_result(body)}

    def lines(
        self,
        rec: JobRecord,
        projected: Sequence[Mapping[str, Any]],
        window: Sequence[Mapping[str, Any]],
    ) -> tuple[Sequence[Mapping[str, Any]], LineFn]:
        del rec
        return [cut_strings(dict(r)) for r in window[: len(projected)]], render.seo_lines

    def what(self, rec: JobRecord) -> str:
        return f"SEO {rec.operation.removeprefix('seo:')}"

    def resubmit_note(self, rec: JobRecord) -> str:
        del rec
        return ""


class AgentSEOProvider(ByNameSettings):
    """AgentSEO workflows (`start_seo_job`)."""

    name: str = NAME
    title = "AgentSEO"
    service_name = "AgentSEO"
    id_prefix = "seo_"
    kind: JobKind = "seo"
    workflows: tuple[str, ...] = tuple(WORKFLOW_PARAMS)
    paid_per_target = False
    key_header = "X-AgentSEO-Api-Key"
    task_poll_ms = (1_000, 60_000)
    """AgentSEO's own `retry_after_seconds`, within 1 s to 1 min."""
    advice: ProviderAdvice | None = AGENTSEO
    rate_limits: RateLimits = RATE_LIMITS
    settings: ProviderSettings = SETTINGS
    reader: JobReader = AgentSEOReader()
    fields_description = "Field names get_job_result(fields=[...]) accepts, per SEO workflow."

    def result_fields(self) -> Mapping[str, Sequence[str]]:
        return fields.result_fields()

    # ---- settings (key, base URL, sandbox use: `ByNameSettings`) --------------------------
    def sandbox_url(self, root: str) -> str:
        from mcp_server.sandbox.app import AGENTSEO_PREFIX

        return root + AGENTSEO_PREFIX

    def connect(self, env: ProviderEnv) -> Connection:
        from mcp_server.providers.agentseo.connection import AgentSEOConnection

        return AgentSEOConnection(env)

    # ---- job semantics --------------------------------------------------------------------
    def validate(self, workflow: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return validate_workflow_params(workflow, params)
