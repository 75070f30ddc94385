"""parse_hints: golden examples for every header form, and properties over hostile input."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import formatdate

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_server.models import Provider
from mcp_server.upstream._headers import (
    MAX_WAIT,
    RateLimitHints,
    format_clock,
    parse_hints,
    retry_at,
)

NOW = 1_790_000_000.0  # 2026-09-21T14:13:20Z, whole seconds so HTTP-dates are exact
HOUR = 3600.0


def http_date(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)


# --- Seamless: X-RateLimit-* with an epoch reset ------------------------------------------


def test_seamless_429_reset_epoch_is_converted_against_the_date_header() -> None:
    hints = parse_hints(
        "seamless",
        429,
        {
            "X-RateLimit-Limit": "60",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(NOW) + 37),
            "X-PublicAPI-Credits": "412",
            "Date": http_date(NOW),
        },
        {"code": "rateLimitExceeded", "message": "Rate limit exceeded"},
        now=NOW,
    )
    assert hints == RateLimitHints(
        limit=60, remaining=0, reset_after=37.0, credits=412, status=429, anomaly=None
    )
    assert hints.blocked
    assert hints.not_before == 37.0


def test_server_clock_one_hour_ahead_still_yields_the_true_wait() -> None:
    server_now = NOW + HOUR
    hints = parse_hints(
        "seamless",
        200,
        {"X-RateLimit-Reset": str(int(server_now) + 30), "Date": http_date(server_now)},
        now=NOW,
    )
    assert hints.reset_after == 30.0


def test_without_a_date_header_epochs_are_read_against_local_now() -> None:
    hints = parse_hints("seamless", 200, {"X-RateLimit-Reset": str(int(NOW) + 42)}, now=NOW)
    assert hints.reset_after == 42.0


def test_an_unreadable_date_header_falls_back_to_local_now_and_says_so() -> None:
    hints = parse_hints(
        "seamless",
        200,
        {"X-RateLimit-Reset": str(int(NOW) + 42), "Date": "yesterday-ish"},
        now=NOW,
    )
    assert hints.reset_after == 42.0
    assert hints.anomaly == "Date 'yesterday-ish' unreadable; local time used"


def test_a_duplicated_date_header_counts_once() -> None:
    both = f"{http_date(NOW + 10)}, {http_date(NOW + 10)}"
    hints = parse_hints(
        "seamless", 200, {"X-RateLimit-Reset": str(int(NOW) + 40), "Date": both}, now=NOW
    )
    assert hints.reset_after == 30.0
    assert hints.anomaly is None


def test_seamless_reset_below_1e9_is_not_an_epoch_so_it_is_read_as_a_delta() -> None:
    hints = parse_hints("seamless", 200, {"X-RateLimit-Reset": "30"}, now=NOW)
    assert hints.reset_after == 30.0
    assert (
        hints.anomaly == "x-ratelimit-reset 30 is not an epoch as documented; read as delta seconds"
    )


def test_seamless_reset_in_the_past_on_a_429_is_floored_at_one_second() -> None:
    hints = parse_hints(
        "seamless",
        429,
        {"X-RateLimit-Reset": str(int(NOW) - 5), "Date": http_date(NOW)},
        now=NOW,
    )
    assert hints.reset_after == 1.0


def test_reset_in_the_past_without_a_block_is_zero() -> None:
    hints = parse_hints(
        "seamless",
        200,
        {"X-RateLimit-Reset": str(int(NOW) - 5), "X-RateLimit-Remaining": "3"},
        now=NOW,
    )
    assert hints.reset_after == 0.0
    assert hints.not_before is None


def test_remaining_above_zero_makes_the_reset_informational_only() -> None:
    hints = parse_hints(
        "seamless",
        200,
        {"X-RateLimit-Remaining": "59", "X-RateLimit-Reset": str(int(NOW) + 50)},
        now=NOW,
    )
    assert (hints.remaining, hints.reset_after, hints.not_before) == (59, 50.0, None)


# --- AgentSEO: RateLimit-* (delta by default, defensively any form) -------------------------


@pytest.mark.parametrize(
    ("reset", "expected"),
    [
        ("30", 30.0),
        ("0", 1.0),  # remaining 0: floor of 1 s
        (str(int(NOW) + 25), 25.0),  # epoch seconds
        (str(int(NOW) * 1000 + 12_500), 12.5),  # epoch milliseconds
        (http_date(NOW + 45), 45.0),  # HTTP-date
        (datetime.fromtimestamp(NOW + 20, tz=UTC).isoformat().replace("+00:00", "Z"), 20.0),
    ],
)
def test_agentseo_reset_is_read_by_shape(reset: str, expected: float) -> None:
    hints = parse_hints(
        "agentseo",
        429,
        {"RateLimit-Limit": "60", "RateLimit-Remaining": "0", "RateLimit-Reset": reset},
        now=NOW,
    )
    assert hints.limit == 60
    assert hints.remaining == 0
    assert hints.reset_after == pytest.approx(expected)
    assert hints.anomaly is None


def test_retry_after_takes_precedence_over_the_reset() -> None:
    hints = parse_hints(
        "agentseo",
        429,
        {"Retry-After": "5", "RateLimit-Remaining": "0", "RateLimit-Reset": "30"},
        now=NOW,
    )
    assert (hints.retry_after, hints.reset_after) == (5.0, 30.0)
    assert hints.not_before == 5.0


def test_ietf_structured_ratelimit_and_policy() -> None:
    hints = parse_hints(
        None,
        200,
        {"RateLimit": '"default";r=50;t=30', "RateLimit-Policy": '"default";q=100;w=60'},
        now=NOW,
    )
    assert (hints.limit, hints.remaining, hints.reset_after, hints.window) == (100, 50, 30.0, 60.0)


def test_structured_ratelimit_picks_the_binding_policy() -> None:
    hints = parse_hints(
        None,
        200,
        {
            "RateLimit": '"day";r=900;t=8000, "minute";r=2;t=12',
            "RateLimit-Policy": '"day";q=1000;w=86400, "minute";q=60;w=60',
        },
        now=NOW,
    )
    assert (hints.limit, hints.remaining, hints.reset_after, hints.window) == (60, 2, 12.0, 60.0)


def test_older_draft_dictionary_form() -> None:
    hints = parse_hints(
        None,
        200,
        {"RateLimit": "limit=100, remaining=0, reset=30", "RateLimit-Policy": "100;w=60"},
        now=NOW,
    )
    assert (hints.limit, hints.remaining, hints.reset_after, hints.window) == (100, 0, 30.0, 60.0)


def test_limit_header_with_quota_policy_parameters() -> None:
    hints = parse_hints(None, 200, {"RateLimit-Limit": "100, 100;w=60"}, now=NOW)
    assert (hints.limit, hints.window) == (100, None)
    hints = parse_hints(None, 200, {"RateLimit-Limit": "100;w=60"}, now=NOW)
    assert (hints.limit, hints.window) == (100, 60.0)


def test_the_providers_documented_family_wins_over_a_stray_other_family() -> None:
    headers = {
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "10",
        "RateLimit-Limit": "600",
        "RateLimit-Remaining": "500",
    }
    seamless = parse_hints("seamless", 200, headers, now=NOW)
    agentseo = parse_hints("agentseo", 200, headers, now=NOW)
    assert (seamless.limit, seamless.remaining) == (60, 10)
    assert (agentseo.limit, agentseo.remaining) == (600, 500)


# --- Retry-After, retry-after-ms, envelope ----------------------------------------------------


def test_retry_after_delta_seconds() -> None:
    assert parse_hints(None, 503, {"Retry-After": "120"}, now=NOW).retry_after == 120.0


def test_retry_after_http_date_uses_the_date_header() -> None:
    headers = {"Retry-After": http_date(NOW + HOUR + 90), "Date": http_date(NOW + HOUR)}
    assert parse_hints(None, 503, headers, now=NOW).retry_after == 90.0


def test_retry_after_ms_is_milliseconds() -> None:
    assert parse_hints(None, 503, {"retry-after-ms": "1500"}, now=NOW).retry_after == 1.5


def test_all_retry_hints_mean_not_before_so_the_max_wins() -> None:
    headers = httpx.Headers(
        [("retry-after", "5"), ("Retry-After", "10"), ("retry-after-ms", "12500")]
    )
    body = {"error": {"code": "X", "retry_after_seconds": 7}}
    assert parse_hints(None, 503, headers, body, now=NOW).retry_after == 12.5


@pytest.mark.parametrize(
    "body",
    [
        {"jobId": "j1", "status": "processing", "retry_after_seconds": 2},
        {"error": {"code": "UPSTREAM_FETCH_FAILED", "retry_after_seconds": "2"}},
        '{"retry_after_seconds": 2.0}',
        b'{"retry_after_seconds": 2}',
    ],
)
def test_envelope_retry_after_seconds_counts_as_retry_after(body: object) -> None:
    assert parse_hints("agentseo", 202, {}, body, now=NOW).retry_after == 2.0


@pytest.mark.parametrize(
    "body",
    [None, [], "not json", {"retry_after_seconds": True}, {"error": "boom"}, {"x": 1}],
)
def test_bodies_without_a_usable_hint_give_none(body: object) -> None:
    assert parse_hints("agentseo", 202, {}, body, now=NOW).retry_after is None


def test_header_lookup_ignores_case_in_plain_dicts() -> None:
    hints = parse_hints(
        "seamless",
        200,
        {"x-ratelimit-LIMIT": "60", "X-RATELIMIT-REMAINING": "7", "x-publicapi-credits": "3"},
        now=NOW,
    )
    assert (hints.limit, hints.remaining, hints.credits) == (60, 7, 3)


def test_duplicated_counts_take_the_most_conservative_value() -> None:
    headers = httpx.Headers(
        [
            ("X-RateLimit-Remaining", "9"),
            ("x-ratelimit-remaining", "4"),
            ("X-RateLimit-Limit", "60, 30"),
        ]
    )
    hints = parse_hints("seamless", 200, headers, now=NOW)
    assert (hints.limit, hints.remaining) == (30, 4)


# --- The misparse guard ------------------------------------------------------------------------


def test_an_epoch_sent_as_retry_after_is_dropped_not_reported_as_a_wait() -> None:
    # The crunchtools/mcp-github bug: "Retry after 1792152901 seconds".
    hints = parse_hints(None, 429, {"Retry-After": "1792152901"}, now=NOW)
    assert hints.retry_after is None
    assert hints.not_before is None
    assert hints.anomaly == (
        "retry-after means a wait of 1792152901 s (over a day): misparse, ignored"
    )


def test_a_reset_two_days_out_is_a_misparse() -> None:
    hints = parse_hints("agentseo", 429, {"RateLimit-Reset": str(2 * 86_400)}, now=NOW)
    assert hints.reset_after is None
    assert hints.anomaly is not None
    assert "over a day" in hints.anomaly


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "1e3"])
def test_non_finite_and_exponent_numbers_are_ignored(value: str) -> None:
    hints = parse_hints(
        None,
        429,
        {"Retry-After": value, "RateLimit-Reset": value, "RateLimit-Remaining": value},
        {"retry_after_seconds": value},
        now=NOW,
    )
    assert (hints.retry_after, hints.reset_after, hints.remaining) == (None, None, None)


def test_negative_values_clamp_to_zero() -> None:
    hints = parse_hints(
        None,
        200,
        {"Retry-After": "-5", "RateLimit-Remaining": "-3", "RateLimit-Reset": "-2"},
        now=NOW,
    )
    assert (hints.retry_after, hints.remaining) == (1.0, 0)  # remaining 0 => 1 s floor
    assert hints.reset_after == 1.0


def test_unicode_digits_are_not_numbers() -> None:
    hints = parse_hints(None, 200, {"Retry-After": "\u0663\u0660"}, now=NOW)
    assert hints.retry_after is None


def test_a_huge_body_integer_is_ignored() -> None:
    hints = parse_hints(None, 503, {}, {"retry_after_seconds": 10**5000}, now=NOW)
    assert hints.retry_after is None
    assert hints.anomaly == "body retry_after_seconds is an implausibly large integer, ignored"


def test_nonpositive_limits_are_dropped() -> None:
    assert parse_hints(None, 200, {"RateLimit-Limit": "0"}, now=NOW).limit is None


def test_empty_headers_give_empty_hints() -> None:
    assert parse_hints(None, 200, {}, now=NOW) == RateLimitHints(status=200)


# --- retry_at ----------------------------------------------------------------------------------


def test_retry_at_rounds_up_to_the_next_whole_second_in_utc() -> None:
    at = retry_at(NOW, 36.2)
    assert at == datetime(2026, 9, 21, 14, 13, 57, tzinfo=UTC)
    assert format_clock(at) == "14:13:57Z"


@pytest.mark.parametrize("delay", [math.inf, math.nan, -5.0, 1e300])
def test_retry_at_never_raises(delay: float) -> None:
    assert retry_at(NOW, delay).tzinfo is UTC


# --- Properties -------------------------------------------------------------------------------

HEADER_NAMES = [
    "Retry-After",
    "retry-after-ms",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit",
    "RateLimit-Policy",
    "X-PublicAPI-Credits",
    "Date",
]

_numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-0", "", " ", "1e9", "1.", ".5", "+7", "0x1F"]),
)
_dates = st.integers(min_value=-(10**11), max_value=10**11).map(
    lambda s: formatdate(s, usegmt=True) if -(10**10) < s < 2.5 * 10**11 else str(s)
)
_values = st.one_of(
    st.text(max_size=80),
    _numbers,
    _dates,
    st.lists(_numbers, min_size=2, max_size=4).map(", ".join),
    st.builds(
        lambda r, t, q, w: f'"x";r={r};t={t}, "y";q={q};w={w}',
        _numbers,
        _numbers,
        _numbers,
        _numbers,
    ),
)
_bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["retry_after_seconds", "error", "x"]), inner, max_size=3)
    ),
    max_leaves=8,
)
_providers: st.SearchStrategy[Provider | None] = st.sampled_from(["seamless", "agentseo", None])


@settings(max_examples=150, deadline=None)
@given(
    provider=_providers,
    status=st.integers(min_value=0, max_value=999),
    headers=st.dictionaries(
        st.sampled_from(HEADER_NAMES).flatmap(lambda n: st.sampled_from([n, n.lower(), n.upper()])),
        _values,
        max_size=8,
    ),
    body=_bodies,
    now=st.floats(min_value=0, max_value=4e9),
)
def test_parse_hints_never_raises_and_stays_in_range(
    provider: Provider | None,
    status: int,
    headers: dict[str, str],
    body: object,
    now: float,
) -> None:
    hints = parse_hints(provider, status, headers, body, now=now)
    for wait in (hints.reset_after, hints.retry_after, hints.not_before):
        assert wait is None or 0.0 <= wait <= MAX_WAIT
    assert hints.limit is None or hints.limit >= 1
    assert hints.remaining is None or hints.remaining >= 0
    assert hints.credits is None or hints.credits >= 0
    assert hints.window is None or 0 < hints.window <= MAX_WAIT
    if hints.blocked:
        for wait in (hints.reset_after, hints.retry_after):
            assert wait is None or wait >= 1.0


@settings(max_examples=100, deadline=None)
@given(headers=st.lists(st.tuples(st.text(max_size=30), st.text(max_size=60)), max_size=6))
def test_any_text_in_any_header_never_raises(headers: list[tuple[str, str]]) -> None:
    parse_hints(None, 429, dict(headers), now=NOW)


_delta = st.integers(min_value=0, max_value=86_000)


@given(delta=_delta)
def test_small_reset_values_are_deltas(delta: int) -> None:
    hints = parse_hints("agentseo", 200, {"RateLimit-Reset": str(delta)}, now=NOW)
    assert hints.reset_after == float(delta)


@given(delta=_delta, now=st.integers(min_value=10**9, max_value=4 * 10**9))
def test_epoch_seconds_and_milliseconds_are_recognised_by_magnitude(delta: int, now: int) -> None:
    seconds = parse_hints(None, 200, {"X-RateLimit-Reset": str(now + delta)}, now=now)
    millis = parse_hints(None, 200, {"RateLimit-Reset": str((now + delta) * 1000)}, now=now)
    assert seconds.reset_after == float(delta)
    assert millis.reset_after == pytest.approx(float(delta), abs=1e-3)


@given(
    delta=_delta,
    skew=st.integers(min_value=-20 * 3600, max_value=20 * 3600),
    provider=_providers,
)
def test_the_date_header_cancels_any_server_clock_skew(
    delta: int, skew: int, provider: Provider | None
) -> None:
    server_now = int(NOW) + skew
    headers = {
        "X-RateLimit-Reset": str(server_now + delta),
        "Retry-After": http_date(server_now + delta),
        "Date": http_date(server_now),
    }
    hints = parse_hints(provider, 200, headers, now=NOW)
    assert hints.reset_after == float(delta)
    assert hints.retry_after == float(delta)
