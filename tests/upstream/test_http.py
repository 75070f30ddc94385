"""The HTTP core: client construction, classification of every failure, retries, secrets.

Transport-level behaviour is driven with `httpx.MockTransport`; time with a `FakeClock`, so
every backoff is instant while the computed delays stay observable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from mcp_server import __version__
from mcp_server._clock import FakeClock
from mcp_server.errors import (
    AuthenticationFailed,
    BadResponse,
    Conflict,
    CreditsExhausted,
    InvalidRequest,
    LicenseMissing,
    LocalBusy,
    LocalRateLimited,
    MalformedResponse,
    NotFoundError,
    PermissionDenied,
    RateLimited,
    RequestNotSent,
    ResponseLost,
    RetryBudgetExhausted,
    ServerError,
    ShapeError,
)
from mcp_server.limits import BucketKey, InMemoryLimiter
from mcp_server.models import ErrorCode, Provider
from mcp_server.upstream._backoff import BackoffPolicy, RequestKind, RetryBudget
from mcp_server.upstream._client import DEFAULT_TIMEOUT, USER_AGENT, Call, build_client, same_origin
from mcp_server.upstream._failures import POOL_BUSY_RETRY_SECONDS
from mcp_server.upstream._http import UpstreamHTTP

BUILT_IN: tuple[Provider, ...] = ("seamless", "agentseo")

KEY = "FAKE-key-SECRET-0123456789"
BASE = "https://api.example.test/api/client/v1"

Handler = Callable[[httpx.Request], httpx.Response]


class _OpenLimiter(InMemoryLimiter):
    """Learns and reports like the real limiter but never makes a caller wait, so
    `clock.slept` shows only the delays under test."""

    async def acquire(
        self, key: BucketKey, *, cost: float = 1.0, deadline: float | None = None
    ) -> float:
        del key, cost, deadline
        return 0.0


def _http(
    handler: Handler,
    *,
    provider: Provider = "seamless",
    clock: FakeClock | None = None,
    policy: BackoffPolicy | None = None,
    budget: RetryBudget | None = None,
    max_body_bytes: int = 8 * 1024 * 1024,
    limiter: InMemoryLimiter | None = None,
) -> UpstreamHTTP:
    clock = clock or FakeClock()
    return UpstreamHTTP(
        provider,
        BASE,
        KEY,
        clock=clock,
        limiter=limiter or _OpenLimiter(clock),
        policy=policy or BackoffPolicy(),
        budget=budget or RetryBudget(),
        tenant="k_test",
        transport=httpx.MockTransport(handler),
        max_body_bytes=max_body_bytes,
    )


def _call(kind: RequestKind = RequestKind.READ, method: str = "GET") -> Call:
    path = "/contacts/research/poll" if method == "GET" else "/contacts/research"
    return Call("op", method, path, path, kind)


def _any(body: Any) -> Any:
    return body


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def _assert_no_secret(exc: BaseException) -> None:
    seen: BaseException | None = exc
    while seen is not None:
        assert KEY not in str(seen)
        assert KEY not in repr(seen)
        for attr in ("message", "body_excerpt", "api_code", "request_id"):
            assert KEY not in str(getattr(seen, attr, ""))
        seen = seen.__cause__ or seen.__context__


# ---- construction -----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("provider", "header"), [("seamless", "token"), ("agentseo", "x-api-key")])
async def test_each_provider_sends_its_auth_header_and_user_agent(
    provider: Provider, header: str
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _json(200, {"ok": True})

    async with _http(handler, provider=provider) as http:
        reply = await http.send(_call(), _any)
    assert reply.value == {"ok": True}
    request = seen[0]
    assert request.headers[header] == KEY
    assert "authorization" not in request.headers
    assert request.headers["user-agent"] == USER_AGENT == f"jobrelay/{__version__}"
    assert str(request.url) == f"{BASE}/contacts/research/poll"


@pytest.mark.anyio
async def test_the_key_is_in_no_repr_and_not_in_the_default_headers() -> None:
    client = build_client("seamless", BASE, KEY)
    try:
        assert KEY not in repr(client.headers)
        assert KEY not in str(dict(client.headers))
        assert KEY not in repr(client.auth)
        assert client.timeout == DEFAULT_TIMEOUT
        assert client.timeout.connect == 5.0
        assert client.timeout.read == 30.0
        assert client.follow_redirects is False
    finally:
        await client.aclose()
    async with _http(lambda _: _json(200, {})) as http:
        assert KEY not in repr(http)


@pytest.mark.anyio
async def test_every_upstream_client_shares_one_ssl_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # httpx would load the CA bundle into a new context per client (0.1-0.2 s, ~1 MB each).
    from mcp_server.upstream import _client

    made: list[Any] = []
    original = httpx.create_ssl_context

    def counted(*args: Any, **kwargs: Any) -> Any:
        made.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(httpx, "create_ssl_context", counted)
    _client._ssl_context.cache_clear()
    clients = [build_client(p, BASE, f"{KEY}-{n}") for n in range(3) for p in BUILT_IN]
    try:
        assert len(made) == 1
    finally:
        for client in clients:
            await client.aclose()
        _client._ssl_context.cache_clear()


# ---- transport failures -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_local_pool_timeout_is_local_busy_and_never_an_upstream_failure() -> None:
    """Every connection of our own pool stayed busy: nothing was sent, the upstream was never
    asked. Not retried here, not counted by the retry budget (so it can never open the
    breaker into upstream_degraded), and reported as jobrelay's own local limit."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.PoolTimeout("")

    clock = FakeClock()
    budget = RetryBudget()
    async with _http(handler, clock=clock, budget=budget) as http:
        for _ in range(50):
            with pytest.raises(LocalBusy) as info:
                await http.send(_call(), _any)
            assert info.value.code is ErrorCode.LOCAL_RATE_LIMITED
            assert info.value.retry_after == POOL_BUSY_RETRY_SECONDS
            assert "not sent" in info.value.message
    assert calls == 50
    assert clock.slept == []
    assert budget.tokens == budget.max_tokens  # never booked as a failure


@pytest.mark.anyio
@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("connection refused"), httpx.ConnectTimeout("slow")],
)
async def test_connect_failures_are_request_not_sent_and_retried_up_to_max_attempts(
    exc: httpx.TransportError,
) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise exc

    clock = FakeClock()
    async with _http(handler, clock=clock) as http:
        with pytest.raises(RequestNotSent) as info:
            await http.send(_call(), _any)
    assert calls == 3
    assert info.value.attempts == 3
    assert info.value.endpoint == "GET /contacts/research/poll"
    assert info.value.retryable
    assert len(clock.slept) == 2  # two backoffs, taken on the injected clock
    assert all(0.1 <= s <= 20 for s in clock.slept)
    assert "not sent" in info.value.message


@pytest.mark.anyio
@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.WriteTimeout("write timed out"),
        httpx.RemoteProtocolError("peer closed connection"),
        httpx.ReadError("reset by peer"),
    ],
)
async def test_failures_after_sending_are_response_lost_and_reads_retry_them(
    exc: httpx.TransportError,
) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise exc
        return _json(200, {"data": []})

    async with _http(handler) as http:
        reply = await http.send(_call(), _any)
    assert calls == 2
    assert reply.attempts == 2

    def always(request: httpx.Request) -> httpx.Response:
        raise exc

    async with _http(always) as http:
        with pytest.raises(ResponseLost) as info:
            await http.send(_call(), _any)
    assert info.value.attempts == 3
    assert "may have been processed" in info.value.message


# ---- status classification ---------------------------------------------------------------------

_ROWS: list[tuple[int, object, type[BadResponse], str | None]] = [
    (400, {"code": "badRequest", "msg": "limit must be 1-50"}, InvalidRequest, "badRequest"),
    (401, {"code": "unauthorized", "msg": "bad key"}, AuthenticationFailed, "unauthorized"),
    (
        402,
        {"error": {"code": "CREDITS_EXHAUSTED", "message": "no credits"}},
        CreditsExhausted,
        "CREDITS_EXHAUSTED",
    ),
    (403, {"code": "insufficientScope", "msg": "scope"}, PermissionDenied, "insufficientScope"),
    (404, {"code": "notFound", "msg": "no such path"}, NotFoundError, "notFound"),
    (409, {"error": {"code": "CONFLICT", "message": "busy"}}, Conflict, "CONFLICT"),
    (410, {}, NotFoundError, None),
    (422, {"code": "insufficientCredits", "msg": "x"}, CreditsExhausted, "insufficientCredits"),
    (422, {"code": "missingLicense", "msg": "x"}, LicenseMissing, "missingLicense"),
    (422, {"code": "somethingElse", "msg": "x"}, InvalidRequest, "somethingElse"),
    (422, {}, InvalidRequest, None),
    (418, {}, InvalidRequest, None),
    (429, {"code": "rateLimitExceeded", "message": "slow down"}, RateLimited, "rateLimitExceeded"),
    (500, {"code": "internalServerError", "msg": "oops"}, ServerError, "internalServerError"),
    (
        503,
        {"error": {"code": "UPSTREAM_UNAVAILABLE", "message": "down"}},
        ServerError,
        "UPSTREAM_UNAVAILABLE",
    ),
    (408, {}, ServerError, None),
    (302, {}, MalformedResponse, None),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "body", "cls", "code"), _ROWS)
async def test_every_status_maps_to_one_error_class(
    status: int, body: object, cls: type[BadResponse], code: str | None
) -> None:
    async with _http(lambda _: _json(status, body), policy=BackoffPolicy(max_attempts=1)) as http:
        with pytest.raises(cls) as info:
            await http.send(_call(), _any)
    err = info.value
    assert type(err) is cls
    assert err.status == status
    assert err.api_code == code
    assert err.attempts == 1
    assert f"HTTP {status}" in err.message


@pytest.mark.anyio
async def test_agentseo_error_envelope_fields_are_read() -> None:
    body = {
        "error": {
            "code": "INVALID_PARAMETERS",
            "message": "The request parameters are invalid.",
            "details": {"domain": {"_errors": ["Domain or Business Name is required"]}},
            "request_id": "req_123xyz",
        }
    }
    async with _http(lambda _: _json(400, body), provider="agentseo") as http:
        with pytest.raises(InvalidRequest) as info:
            await http.send(_call(), _any)
    err = info.value
    assert err.api_code == "INVALID_PARAMETERS"
    assert err.request_id == "req_123xyz"
    assert err.details == {"domain": {"_errors": ["Domain or Business Name is required"]}}
    assert err.message == (
        "AgentSEO GET /contacts/research/poll: HTTP 400 INVALID_PARAMETERS: "
        "The request parameters are invalid."
    )
    assert err.provider == "agentseo"


@pytest.mark.anyio
async def test_request_id_falls_back_to_the_response_header() -> None:
    async with _http(
        lambda _: _json(404, {"code": "notFound"}, {"x-request-id": "req_hdr"})
    ) as http:
        with pytest.raises(NotFoundError) as info:
            await http.send(_call(), _any)
    assert info.value.request_id == "req_hdr"


@pytest.mark.anyio
async def test_seamless_429_text_is_read_from_message_and_hints_are_attached() -> None:
    clock = FakeClock()
    reset = int(clock.time()) + 40
    headers = {
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset),
        "X-PublicAPI-Credits": "17",
    }
    body = {"code": "rateLimitExceeded", "message": "Rate limit exceeded"}
    async with _http(lambda _: _json(429, body, headers), clock=clock) as http:
        with pytest.raises(RateLimited) as info:
            await http.send(_call(), _any)
        snapshot = await http.limiter.snapshot()
    err = info.value
    assert err.attempts == 1  # a 40 s wait exceeds the 20 s inline cap: handed back at once
    assert err.message.endswith("HTTP 429 rateLimitExceeded: Rate limit exceeded")
    assert err.hints.limit == 60
    assert err.hints.remaining == 0
    assert err.hints.reset_after == pytest.approx(40 - (clock.time() % 1), abs=1)
    assert err.hints.credits == 17
    assert http.credits == 17
    assert clock.slept == []
    (bucket,) = snapshot
    assert bucket.bucket == "GET /contacts/research/poll"
    assert bucket.blocked_for >= 39  # the 429 was fed to the limiter


@pytest.mark.anyio
async def test_a_read_429_whose_reset_fits_is_retried_after_the_reset() -> None:
    clock = FakeClock()
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            reset = str(int(clock.time()) + 5)
            return _json(429, {"code": "rateLimitExceeded"}, {"X-RateLimit-Reset": reset})
        return _json(200, {"data": []})

    async with _http(handler, clock=clock) as http:
        reply = await http.send(_call(), _any)
    assert calls == 2
    assert reply.attempts == 2
    assert 4.0 <= clock.monotonic() <= 7.0  # waited for the reset, not a blind backoff


# ---- tolerant body parsing ------------------------------------------------------------------


@pytest.mark.anyio
async def test_html_502_page_is_a_server_error_with_a_plain_text_excerpt() -> None:
    page = (
        "<!DOCTYPE html><html><head><title>502 Bad Gateway</title>"
        "<style>body{color:red}</style><script>var token='abc'</script></head>"
        "<body><h1>502 Bad Gateway</h1><p>nginx &amp; friends</p>" + "<p>x</p>" * 200 + "</body>"
        "</html>"
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text=page, headers={"content-type": "text/html"})

    async with _http(handler) as http:
        with pytest.raises(ServerError) as info:
            await http.send(_call(), _any)
    err = info.value
    assert err.status == 502
    assert err.api_code is None
    assert err.attempts == 3
    assert err.body_excerpt.startswith("502 Bad Gateway 502 Bad Gateway nginx & friends")
    assert "<" not in err.body_excerpt
    assert "color:red" not in err.body_excerpt
    assert "var token" not in err.body_excerpt
    assert len(err.body_excerpt) <= 200


@pytest.mark.anyio
async def test_truncated_json_on_2xx_is_malformed_and_never_a_crash() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b'{"data": [{"requestId": "a", "sta')

    async with _http(handler, policy=BackoffPolicy(max_attempts=1)) as http:
        with pytest.raises(MalformedResponse) as info:
            await http.send(_call(), _any)
    assert info.value.status == 200
    assert "invalid JSON" in info.value.message
    assert info.value.body_excerpt == '{"data": [{"requestId": "a", "sta'


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"code": 5, "msg": ["not", "text"]}, "5", None),
        ({"code": None, "message": {"x": 1}, "details": "oops"}, None, None),
        ({"error": "Unauthorized"}, None, "Unauthorized"),
        ({"error": {"code": ["x"], "message": 3}}, None, "3"),
        (["not", "an", "object"], None, None),
        ("just a string", None, None),
    ],
)
async def test_error_bodies_with_wrong_types_still_classify(
    body: object, code: str | None, message: str | None
) -> None:
    async with _http(lambda _: _json(400, body)) as http:
        with pytest.raises(InvalidRequest) as info:
            await http.send(_call(), _any)
    err = info.value
    assert err.api_code == code
    assert err.details == {}
    if message is not None:
        assert err.message.endswith(f": {message}")
    else:
        assert err.message.endswith(": Bad Request")  # the reason phrase, nothing invented


@pytest.mark.anyio
async def test_a_2xx_body_of_the_wrong_shape_is_malformed() -> None:
    def parse(body: Any) -> list[str]:
        if not isinstance(body, dict) or not isinstance(body.get("requestIds"), list):
            raise ShapeError("no requestIds")
        return list(body["requestIds"])

    async with _http(
        lambda _: _json(200, {"requestIds": "abc"}), policy=BackoffPolicy(max_attempts=1)
    ) as http:
        with pytest.raises(MalformedResponse) as info:
            await http.send(_call(), parse)
    assert info.value.message.endswith("unexpected response shape: no requestIds")


@pytest.mark.anyio
async def test_a_huge_body_is_refused_past_the_cap() -> None:
    async def chunks() -> Any:
        for _ in range(64):
            yield b"x" * 1024

    def streamed(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())

    async with _http(streamed, max_body_bytes=16 * 1024) as http:
        with pytest.raises(MalformedResponse) as info:
            await http.send(_call(), _any)
    assert "larger than" in info.value.message

    declared = httpx.Response(200, content=b"{}", headers={"content-length": str(64 * 1024 * 1024)})
    async with _http(
        lambda _: declared, policy=BackoffPolicy(max_attempts=1), max_body_bytes=1024
    ) as http:
        with pytest.raises(MalformedResponse):
            await http.send(_call(), _any)


@pytest.mark.anyio
async def test_an_empty_2xx_body_parses_as_none() -> None:
    async with _http(lambda _: httpx.Response(204)) as http:
        reply = await http.send(_call(), _any)
    assert reply.value is None
    assert reply.status == 204


# ---- secrets ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_key_echoed_by_the_server_is_redacted_everywhere() -> None:
    body = {"code": "unauthorized", "msg": f"Invalid Token: {KEY} (Bearer {KEY})"}
    async with _http(lambda _: _json(401, body)) as http:
        with pytest.raises(AuthenticationFailed) as info:
            await http.send(_call(), _any)
    _assert_no_secret(info.value)
    assert "***" in info.value.message

    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            500, text=f"<p>api_key={KEY}&x=1</p>", headers={"content-type": "text/html"}
        )

    async with _http(html, policy=BackoffPolicy(max_attempts=1)) as http:
        with pytest.raises(ServerError) as info2:
            await http.send(_call(), _any)
    _assert_no_secret(info2.value)


@pytest.mark.anyio
async def test_transport_errors_never_carry_the_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"failed with headers {dict(request.headers)}")

    async with _http(handler) as http:
        with pytest.raises(RequestNotSent) as info:
            await http.send(_call(), _any)
    assert KEY not in str(info.value)
    assert KEY not in info.value.message


# ---- limiter and budget ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_token_within_the_deadline_means_nothing_is_sent() -> None:
    calls = 0
    clock = FakeClock()

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        reset = str(int(clock.time()) + 30)
        return _json(
            200,
            {},
            {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
        )

    async with _http(handler, clock=clock, limiter=InMemoryLimiter(clock)) as http:
        await http.send(_call(), _any)
        with pytest.raises(LocalRateLimited) as info:
            await http.send(_call(), _any, deadline=clock.monotonic() + 10)
    assert calls == 1
    assert info.value.bucket == "GET /contacts/research/poll"
    assert info.value.retry_after >= 29


@pytest.mark.anyio
async def test_an_exhausted_retry_budget_stops_retries_but_not_first_attempts() -> None:
    budget = RetryBudget()
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return _json(503, {"code": "down"})

    async with _http(handler, budget=budget) as http:
        with pytest.raises(ServerError):
            await http.send(_call(), _any)  # 3 attempts: tokens 10 -> 7
        with pytest.raises(RetryBudgetExhausted) as info:
            await http.send(_call(), _any)  # 7 -> 6 -> 5: the second retry is refused
        calls_before = calls
        with pytest.raises(RetryBudgetExhausted):
            await http.send(_call(), _any)  # a first attempt is still made
    assert calls == calls_before + 1
    assert isinstance(info.value.cause, ServerError)
    assert info.value.cause.attempts == 2
    # The breaker's announced instant: the 60 s cooldown, rounded up to a whole epoch second.
    assert 60.0 <= info.value.retry_after < 61.0
    assert info.value.until is not None
    assert info.value.until == int(info.value.until)


@pytest.mark.anyio
async def test_four_xx_answers_are_not_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return _json(400, {"code": "badRequest"})

    budget = RetryBudget()
    async with _http(handler, budget=budget) as http:
        with pytest.raises(InvalidRequest):
            await http.send(_call(), _any)
    assert calls == 1
    assert budget.tokens == 10.0  # client errors say nothing about upstream health


@pytest.mark.anyio
async def test_every_wait_is_bounded() -> None:
    with anyio.fail_after(5):
        async with _http(lambda _: _json(500, {})) as http:
            with pytest.raises(ServerError):
                await http.send(_call(), _any)


# ---- origins ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("/api/v1/jobs/1", True),
        ("jobs/1", True),
        ("https://www.agentseo.dev/api/v1/jobs/1", True),
        ("https://www.agentseo.dev:443/api/v1/jobs/1", True),
        ("http://www.agentseo.dev/api/v1/jobs/1", False),
        ("https://www.agentseo.dev:8443/api/v1/jobs/1", False),
        ("https://evil.example/api/v1/jobs/1", False),
        ("//evil.example/api/v1/jobs/1", False),
        ("https://www.agentseo.dev.evil.example/x", False),
        ("http://[::1", False),
    ],
)
def test_same_origin_compares_scheme_host_and_port(url: str, ok: bool) -> None:
    assert same_origin(url, "https://www.agentseo.dev/api/v1") is ok


@pytest.mark.anyio
async def test_an_undecodable_content_encoding_is_malformed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, stream=httpx.ByteStream(b"not gzip at all"), headers={"content-encoding": "gzip"}
        )

    async with _http(handler, policy=BackoffPolicy(max_attempts=1)) as http:
        with pytest.raises(MalformedResponse) as info:
            await http.send(_call(), _any)
    assert "undecodable content encoding" in info.value.message


def test_the_package_exports_exactly_its_curated_names() -> None:
    from mcp_server import upstream

    for name in upstream.__all__:
        value = getattr(upstream, name)
        assert getattr(value, "__module__", "mcp_server.upstream").startswith(
            "mcp_server.upstream"
        ) or name in {"SeamlessKind", "RateLimitHints"}  # RateLimitHints: defined in errors.py
    assert set(upstream.__all__) <= set(dir(upstream))
    with pytest.raises(AttributeError):
        _ = upstream.UpstreamHTTP  # plumbing stays private
