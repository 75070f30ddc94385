"""Typed shapes of what the two upstream APIs send back (and the descriptors we send).

Parsing is tolerant where the docs are loose: optional fields of the wrong type become `None`
instead of failing the whole body, unknown fields are kept (`extra="allow"`), and unknown
statuses are kept verbatim. Only what a caller cannot do without (a job id, request ids, the
list of results) is required; its absence makes the body a `MalformedResponse`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from mcp_server.json_types import JSON, JSONObject

__all__ = [
    "AGENTSEO_TERMINAL",
    "SEAMLESS_TERMINAL",
    "CompanyDescriptor",
    "ContactDescriptor",
    "JobEnvelope",
    "JobError",
    "JobProgress",
    "JobUpstream",
    "PollItem",
    "RecordsPage",
    "ResearchAccepted",
    "SeamlessKind",
    "SearchPage",
]

T = TypeVar("T")

SeamlessKind = Literal["contacts", "companies"]

#: Seamless poll statuses after which polling stops (UPSTREAMS.md section 1), lower case.
SEAMLESS_TERMINAL = frozenset(
    {
        "done",
        "missing",
        "error",
        "duplicate",
        "not found",
        "contact-already-researched",
        "no license or credits available",
    }
)
#: AgentSEO job statuses after which following stops; anything else (even `cancelled`) is not.
AGENTSEO_TERMINAL = frozenset({"completed", "failed"})


def _or_none(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Wrong type in an optional field: drop the value, keep the body."""
    try:
        return handler(value)
    except ValidationError:
        return None


def _id_text(value: Any) -> Any:
    """Ids are strings; a number is accepted as its text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _status_text(value: Any) -> Any:
    """A status that is not text is unknown, not a reason to drop the whole body."""
    return value.strip() or "unknown" if isinstance(value, str) else "unknown"


Lenient = Annotated[T | None, WrapValidator(_or_none)]
"""An optional field that tolerates a wrong type (becomes None)."""

Id = Annotated[str, BeforeValidator(_id_text), Field(min_length=1)]
Status = Annotated[str, BeforeValidator(_status_text)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


# --------------------------------------------------------------------------------------------
# AgentSEO


class JobProgress(_Wire):
    percent: Lenient[float] = None
    indeterminate: Lenient[bool] = None
    eta_seconds: Lenient[float] = None


class JobError(_Wire):
    code: Lenient[str] = None
    message: Lenient[str] = None
    retryable: Lenient[bool] = None


class JobUpstream(_Wire):
    provider: Lenient[str] = None
    task_id: Lenient[str] = None
    status_code: Lenient[int] = None
    status_message: Lenient[str] = None
    next_poll_at: Lenient[str] = None


class JobEnvelope(_Wire):
    """An AgentSEO job as the API describes it (UPSTREAMS.md section 2). Extra fields kept."""

    job_id: Id = Field(alias="jobId")
    status: Status = Field(
        "unknown", description="queued, processing, completed, failed, or anything new."
    )
    phase: Lenient[str] = None
    progress: Lenient[JobProgress] = None
    attempt: Lenient[int] = None
    max_attempts: Lenient[int] = None
    message: Lenient[str] = None
    poll_url: Lenient[str] = None
    events_url: Lenient[str] = None
    retry_after_seconds: Lenient[float] = None
    result: JSON = None
    error: Lenient[JobError] = None
    upstream: Lenient[JobUpstream] = None
    project_id: Lenient[str] = None
    workflow_id: Lenient[str] = None

    @property
    def terminal(self) -> bool:
        """`completed` or `failed`; unknown statuses (e.g. `cancelled`) are not terminal."""
        return self.status.lower() in AGENTSEO_TERMINAL


# --------------------------------------------------------------------------------------------
# Seamless


class ContactDescriptor(_Wire):
    """A contact to research without a searchResultId (wire names as aliases)."""

    contact_name: str | None = Field(None, alias="contactName")
    company_name: str | None = Field(None, alias="companyName")
    title: str | None = None
    domain: str | None = None
    email: str | None = None
    li_profile_url: str | None = Field(None, alias="liProfileUrl")
    li_sales_nav_url: str | None = Field(None, alias="liSalesNavUrl")
    li_recruiter_url: str | None = Field(None, alias="liRecruiterUrl")


class CompanyDescriptor(_Wire):
    """A company to research without a searchResultId (`companyName` on the wire)."""

    company_name: str | None = Field(None, alias="companyName")
    domain: str | None = None


class SearchPage(BaseModel):
    """One page of search hits. `items` are raw records (each with `searchResultId`)."""

    kind: SeamlessKind
    items: list[JSONObject] = Field(
        description="Hits as sent (~40 fields each); project them before showing an agent."
    )
    next_token: str | None = None
    total: int | None = None
    is_more: bool = False
    per_page: int | None = None

    @property
    def search_result_ids(self) -> list[str]:
        return [str(i["searchResultId"]) for i in self.items if i.get("searchResultId")]


class ResearchAccepted(BaseModel):
    """A research POST was accepted (202): one request id per target, credits seen after."""

    kind: SeamlessKind
    request_ids: list[str]
    credits: int | None = Field(None, description="X-PublicAPI-Credits on the 202, if sent.")


class PollItem(BaseModel):
    """One research request's state. `status` is kept verbatim (unknown values included)."""

    request_id: str
    status: str = Field(description="researching, done, missing, error, duplicate, or new.")
    search_result_id: str | None = None
    message: str | None = None
    record: JSONObject | None = Field(
        None, description="The `contact` or `company` record (~100 fields) once done."
    )
    additional_data: JSONObject | None = Field(
        None, description="Contact poll items' free-form `additionalData` (e.g. error details)."
    )

    @property
    def terminal(self) -> bool:
        return " ".join(self.status.lower().split()) in SEAMLESS_TERMINAL


class RecordsPage(BaseModel):
    """A page of the org's researched records (`GET /contacts`, `GET /companies`)."""

    kind: SeamlessKind
    items: list[JSONObject]
    page: int
    limit: int
    total: int | None = None
    is_more: bool | None = None
