"""Tool inputs and outputs: the agent-facing schemas (DESIGN.md section 1).

Argument names and types are public contract; descriptions are written for a model and kept
short, because every tool's schema is sent to the model on each `tools/list`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from mcp_server import _bounds as B
from mcp_server.json_types import JSONObject
from mcp_server.models import Advice, ErrorInfo, JobState, Progress

Kind = Literal["contacts", "companies"]
Workflow = Literal["serp_analysis", "keyword_metrics", "local_audit", "local_audit_batch"]
WORKFLOWS: tuple[str, ...] = get_args(Workflow)


_SANDBOX = "True when the data is simulated (embedded sandbox, no API key)."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- inputs ---------------------------------------------------------------------------------


def _str(limit: int, description: str | None = None) -> Any:
    """An optional string argument bounded by `limit` characters (see `_bounds`)."""
    return Field(None, max_length=limit, description=description)


_Term = Annotated[str, Field(max_length=B.MAX_NAME_CHARS)]
Terms = Annotated[
    _Term | Annotated[list[_Term], Field(max_length=B.MAX_TERMS)],
    WithJsonSchema(
        {
            "type": ["string", "array"],
            "maxLength": B.MAX_NAME_CHARS,
            "maxItems": B.MAX_TERMS,
            "items": {"type": "string", "maxLength": B.MAX_NAME_CHARS},
        }
    ),
]
"""One value or a list of them (strings); advertised tersely, validated in full."""


class SearchFilters(_Strict):
    # Published as the `filters` argument's description (a docstring would keep its newline).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "description": "Seamless's values, e.g. company_size '51 - 200'; location: "
            "country/state/zip; person filters: contacts only."
        },
    )

    company_name: Terms | None = None
    company_domain: Terms | None = None
    full_name: Terms | None = None
    title: Terms | None = None
    seniority: Terms | None = None
    department: Terms | None = None
    industry: Terms | None = None
    company_size: Terms | None = None
    company_revenue: Terms | None = None
    technologies: Terms | None = None
    location: str | None = _str(B.MAX_NAME_CHARS)  # described by the class docstring
    country: Terms | None = None
    state: Terms | None = None
    zip: Terms | None = None
    location_type: Literal["bothOR", "bothAND", "company", "contact"] | None = None
    job_change: Literal["New Hire", "New Promotion", "New Hire or New Promotion"] | None = None
    job_change_days: Literal[60, 90, 180, 365] | None = None


class ContactTarget(_Strict):
    # Needs a LinkedIn/Sales Nav/Recruiter URL, email, or name plus company or domain (said by
    # the `contacts` argument's description; a docstring would be published again here).

    name: str | None = _str(B.MAX_NAME_CHARS)
    company: str | None = _str(B.MAX_NAME_CHARS)
    domain: str | None = _str(B.MAX_DOMAIN_CHARS)
    title: str | None = _str(B.MAX_NAME_CHARS)
    email: str | None = _str(B.MAX_EMAIL_CHARS)
    linkedin_url: str | None = _str(B.MAX_URL_CHARS)
    sales_nav_url: str | None = _str(B.MAX_URL_CHARS)
    recruiter_url: str | None = _str(B.MAX_URL_CHARS)


class CompanyTarget(_Strict):
    name: str | None = _str(B.MAX_NAME_CHARS)
    domain: str | None = _str(B.MAX_DOMAIN_CHARS)


# ---- outputs --------------------------------------------------------------------------------


class ItemStatus(BaseModel):
    """One target inside a research job."""

    request_id: str
    target: str | None = None
    state: JobState
    raw_status: str


class JobOutput(BaseModel):
    """A job as the agent sees it. On failure only `error` (and the handle, if any) is set."""

    job_id: str | None = None
    provider: str | None = None
    operation: str | None = None
    state: JobState | None = None
    raw_status: str | None = None
    progress: Progress | None = None
    items: list[ItemStatus] | None = None
    results: list[JSONObject] | None = Field(
        None, description="Compact results (first page) once finished."
    )
    results_total: int | None = None
    next_check_after_seconds: float | None = None
    advice: Advice | None = None
    next_step: str | None = Field(
        None, description="In a many-job status: this job's one next step (advice in short)."
    )
    next_step_ref: int | None = Field(
        None, description="In a many-job status: index of this job's next step in `next_steps`."
    )
    warnings: list[str] | None = None
    credits_remaining: int | None = None
    sandbox: bool | None = Field(None, description=_SANDBOX)
    error: ErrorInfo | None = None


class StatusOutput(BaseModel):
    jobs: list[JobOutput] = Field(default_factory=list)
    next_steps: list[str] | None = Field(
        None, description="Distinct next steps of the jobs, each said once (`next_step_ref`)."
    )
    next_check_after_seconds: float | None = None
    sandbox: bool | None = Field(None, description=_SANDBOX)
    error: ErrorInfo | None = None


class SearchOutput(BaseModel):
    kind: Kind | None = None
    items: list[JSONObject] = Field(default_factory=list)
    total: int | None = None
    next_token: str | None = None
    sandbox: bool | None = Field(None, description=_SANDBOX)
    error: ErrorInfo | None = None


class ResultPage(BaseModel):
    job_id: str | None = None
    state: JobState | None = None
    items: list[JSONObject] = Field(default_factory=list)
    offset: int = 0
    total: int = 0
    next_offset: int | None = None
    fields_available: list[str] | None = None
    advice: Advice | None = Field(None, description="Why a job has no results, and what next.")
    sandbox: bool | None = Field(None, description=_SANDBOX)
    error: ErrorInfo | None = None


class JobSummary(BaseModel):
    job_id: str
    provider: str
    operation: str
    state: JobState
    raw_status: str | None = None
    targets: int = 0
    created_at: datetime
    result_read: bool | None = Field(
        None, description="Finished jobs: whether the results were shown to an agent yet."
    )
    advice: str | None = None


class ListOutput(BaseModel):
    jobs: list[JobSummary] = Field(default_factory=list)
    sandbox: bool | None = Field(None, description=_SANDBOX)
    error: ErrorInfo | None = None


class ExplainOutput(BaseModel):
    advice: Advice | None = None
    error: ErrorInfo | None = None


class BucketUsage(BaseModel):
    bucket: str
    limit: int | None = None
    remaining: float | None = None
    blocked_for_seconds: float | None = None


class ProviderUsage(BaseModel):
    provider: str
    sandbox: bool
    credits_remaining: int | None = None
    buckets: list[BucketUsage] = Field(default_factory=list)


class UsageOutput(BaseModel):
    providers: list[ProviderUsage] = Field(default_factory=list)
    credit_budget: int | None = Field(None, description="JOBRELAY_CREDIT_BUDGET per UTC day.")
    credits_spent_today: int | None = None
    budget_resets_at: datetime | None = None
    error: ErrorInfo | None = None
