"""The sender says whether a request spends credits (`UpstreamError.paid`); advice believes it.

Issue 15 item 3: "was this a paid POST?" is decided once, by the sender that knows the
request's kind, and carried on the error, instead of being guessed again from the URL.
"""

from __future__ import annotations

import anyio
import httpx
import pytest

from mcp_server._clock import FakeClock
from mcp_server.advice import advise_error
from mcp_server.errors import InvalidRequest, OutcomeUnknown, ServerError
from mcp_server.limits import InMemoryLimiter
from mcp_server.models import ErrorCode
from mcp_server.upstream import SeamlessClient
from mcp_server.upstream._backoff import BackoffPolicy, RetryBudget

NOW = 1_767_000_000.0


def _client(handler: httpx.MockTransport) -> SeamlessClient:
    clock = FakeClock()
    return SeamlessClient(
        "https://api.seamless.test/api/client/v1",
        "sk-test",
        clock=clock,
        limiter=InMemoryLimiter(clock),
        policy=BackoffPolicy(),
        budget=RetryBudget(),
        transport=handler,
        tenant="k_test",
    )


def _answer(status: int) -> httpx.MockTransport:
    return httpx.MockTransport(lambda _request: httpx.Response(status, json={"code": "oops"}))


@pytest.mark.anyio
async def test_the_sender_marks_a_research_post_paid() -> None:
    with anyio.fail_after(5):
        async with _client(_answer(502)) as client:
            with pytest.raises(OutcomeUnknown) as info:
                await client.research("contacts", search_result_ids=["s1"])
    assert info.value.cause.paid is True


@pytest.mark.anyio
async def test_the_sender_marks_a_search_post_not_paid() -> None:
    with anyio.fail_after(5):
        async with _client(_answer(400)) as client:
            with pytest.raises(InvalidRequest) as info:
                await client.search("contacts", {"companyName": ["Acme"]})
    assert info.value.paid is False


def _server_error(method: str, path: str, paid: bool | None) -> ServerError:
    error = ServerError(
        "upstream failed",
        provider="seamless",
        operation="op",
        method=method,
        path=path,
        status=502,
    )
    error.paid = paid
    return error


def test_advice_believes_the_flag_over_the_url() -> None:
    # A paid call on a path no route names is still an ambiguous spend: outcome unknown.
    paid = advise_error(_server_error("POST", "/somewhere/new", True), now=NOW)
    assert paid.code is ErrorCode.OUTCOME_UNKNOWN
    assert not paid.retryable
    # A research-looking URL the sender says was not paid is an ordinary, retryable 5xx.
    unpaid = advise_error(_server_error("POST", "/contacts/research", False), now=NOW)
    assert unpaid.code is ErrorCode.UPSTREAM_ERROR
    assert unpaid.retryable


def test_without_the_flag_the_route_still_decides() -> None:
    """Errors built outside the sender (hand-made, or restored) keep today's behaviour."""
    advice = advise_error(_server_error("POST", "/contacts/research", None), now=NOW)
    assert advice.code is ErrorCode.OUTCOME_UNKNOWN
