"""A provider's advice is data it contributes (issue 15 item 1): a third provider, defined only
here, registers one `ProviderAdvice` table and gets explained like the built-in two, through the
public functions of `mcp_server.advice`, with no edit under `mcp_server/`."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from mcp_server.advice import (
    CATALOGUE,
    BodyReading,
    CatalogueRow,
    ProviderAdvice,
    Route,
    VoteClues,
    advise_error,
    advise_http,
    advise_job,
    catalogue_markdown,
    provider_advice,
    register_provider_advice,
    render_text,
    unregister_provider_advice,
)
from mcp_server.errors import BadResponse, RateLimited, RateLimitHints, ServerError
from mcp_server.models import ErrorCode

NOW = 1_790_000_000.0  # 2026-09-21 14:13:20Z


def _read_body(top: Mapping[str, object]) -> BodyReading:
    """TinyJobs errors say who they are: `{"service": "tinyjobs", "code", "message", "need"}`."""
    if top.get("service") != "tinyjobs":
        return BodyReading()
    need = top.get("need")
    return BodyReading(shape=4, credits_needed=need if isinstance(need, int) else None)


TINY = ProviderAdvice(
    name="tinyjobs",
    service="TinyJobs",
    rows=(
        CatalogueRow(
            key="tinyjobs.429",
            provider="tinyjobs",
            when="HTTP 429",
            meaning="the task queue is full",
            code=ErrorCode.RATE_LIMITED,
            retryable=True,
            title="TinyJobs queue full",
            what="TinyJobs has no room in its task queue{until}.",
            next_step="Retry {tool_ref}{after}.",
            do_not="Do not retry before then: the queue refuses again.",
            statuses=(429,),
            api_codes=("tj-queue-full",),
            status_default=True,
            default_wait=20.0,
        ),
        CatalogueRow(
            key="tinyjobs.402",
            provider="tinyjobs",
            when="HTTP 402",
            meaning="not enough task credits",
            code=ErrorCode.CREDITS_EXHAUSTED,
            retryable=False,
            title="TinyJobs credits short",
            what="TinyJobs {credits_phrase}.",
            next_step="Tell the user to add TinyJobs credits.",
            statuses=(402,),
        ),
        CatalogueRow(
            key="tinyjobs.job.stuck",
            provider="tinyjobs",
            when="job status stuck",
            meaning="the worker stopped; the task will not finish",
            code=None,
            retryable=False,
            title="TinyJobs task stuck",
            what="TinyJobs reports {job_name} as stuck: its worker stopped.",
            next_step="Start it again with start_tiny_job.",
            job_statuses=("stuck",),
        ),
        CatalogueRow(
            key="outcome_unknown.tinyjobs",
            provider="tinyjobs",
            when="5xx on POST /v1/tasks",
            meaning="the task may have been created",
            code=ErrorCode.OUTCOME_UNKNOWN,
            retryable=False,
            title="TinyJobs task outcome unknown",
            what="TinyJobs may have created the task: {cause}.",
            next_step="Call {job_check} before anything else.",
            job_statuses=("unknown",),
        ),
    ),
    routes=(Route("POST", re.compile(r"^/v1/tasks$"), "start_tiny_job"),),
    paid_tools=frozenset({"start_tiny_job"}),
    clues=VoteClues(header_prefixes=(("x-tiny-", 2),), job_statuses=frozenset({"stuck"})),
    read_body=_read_body,
)


@pytest.fixture
def tiny() -> Iterator[ProviderAdvice]:
    register_provider_advice(TINY)
    try:
        yield TINY
    finally:
        unregister_provider_advice("tinyjobs")


@pytest.mark.usefixtures("tiny")
def test_pasted_429_is_recognised_by_the_body_and_explained_with_its_row() -> None:
    body = '{"service": "tinyjobs", "code": "tj-queue-full", "message": "queue full"}'
    advice = advise_http("auto", 429, None, {"Retry-After": "30"}, body, None, now=NOW)
    assert advice.provider == "tinyjobs"
    assert advice.code is ErrorCode.RATE_LIMITED
    assert advice.retry_after_seconds == 30
    assert render_text(advice) == (
        "TinyJobs has no room in its task queue until 14:13:50Z (in 30 s). "
        "Next: Retry the same tool after 14:13:50Z (in 30 s). "
        "Do not retry before then: the queue refuses again."
    )


@pytest.mark.usefixtures("tiny")
def test_its_headers_and_job_statuses_vote_for_it() -> None:
    by_header = advise_http("auto", 402, None, {"X-Tiny-Request": "r1"}, None, None, now=NOW)
    assert by_header.title == "TinyJobs credits short"
    assert by_header.what_happened == "TinyJobs does not have enough research credits."
    by_status = advise_http("auto", None, None, None, None, "Stuck", now=NOW)
    assert by_status.title == "TinyJobs task stuck"
    assert advise_job("tinyjobs", "stuck", now=NOW, job_id="tj_1").what_happened == (
        "TinyJobs reports job tj_1 as stuck: its worker stopped."
    )


@pytest.mark.usefixtures("tiny")
def test_its_body_reader_supplies_provider_facts() -> None:
    body = {"service": "tinyjobs", "code": "short", "message": "need more", "need": 4}
    advice = advise_http("auto", 402, None, None, body, None, now=NOW)
    assert advice.what_happened == (
        "TinyJobs does not have enough research credits and needs 4 more for this request."
    )


def _create_task_failed(cls: type[BadResponse], status: int, **extra: Any) -> BadResponse:
    """A failed `POST /v1/tasks` to the made-up provider, as its client would raise it."""
    return cls(
        "failed",
        provider="tinyjobs",  # a provider the core does not name
        operation="createTask",
        method="POST",
        path="/v1/tasks",
        status=status,
        **extra,
    )


@pytest.mark.usefixtures("tiny")
def test_an_exception_from_it_finds_the_tool_by_its_routes() -> None:
    hints = RateLimitHints(retry_after=12.0, status=429)
    advice = advise_error(_create_task_failed(RateLimited, 429, hints=hints), now=NOW)
    assert advice.title == "TinyJobs queue full"
    assert advice.next_step == "Retry start_tiny_job after 14:13:32Z (in 12 s)."
    unknown = advise_error(_create_task_failed(ServerError, 502), now=NOW)
    assert unknown.code is ErrorCode.OUTCOME_UNKNOWN
    assert unknown.what_happened == (
        "TinyJobs may have created the task: it answered HTTP 502 after receiving the request."
    )


def test_registration_adds_its_rows_and_removal_takes_them_back() -> None:
    before = dict(CATALOGUE)
    with pytest.raises(ValueError, match="unknown provider 'tinyjobs'"):
        catalogue_markdown("tinyjobs")
    register_provider_advice(TINY)
    try:
        assert provider_advice("tinyjobs") is TINY
        assert CATALOGUE["tinyjobs.429"] is TINY.rows[0]
        text = catalogue_markdown("tinyjobs")
        assert text.startswith("# jobrelay advice catalogue: TinyJobs\n")
        assert "| HTTP 429 | `tj-queue-full` | `rate_limited` | the task queue is full |" in text
        with pytest.raises(ValueError, match="already registered"):
            register_provider_advice(TINY)
    finally:
        unregister_provider_advice("tinyjobs")
    assert dict(CATALOGUE) == before
    assert provider_advice("tinyjobs") is None


def test_a_table_whose_rows_belong_elsewhere_is_refused() -> None:
    stray = ProviderAdvice(name="stray", service="Stray", rows=(TINY.rows[0],))
    with pytest.raises(ValueError, match="belongs to 'tinyjobs', not 'stray'"):
        register_provider_advice(stray)
    assert provider_advice("stray") is None


@pytest.mark.parametrize(
    "body",
    [{"details": {"budget": []}}, {"error": {"code": "RATE_LIMITED", "details": {"budget": {}}}}],
)
def test_a_budget_that_is_not_text_is_ignored_not_a_crash(body: dict[str, object]) -> None:
    # The old parser tested `budget in {...}` first and raised TypeError on a list or an object.
    advice = advise_http("agentseo", 429, None, None, body, None, now=NOW)
    assert advice.title == CATALOGUE["agentseo.429"].title
