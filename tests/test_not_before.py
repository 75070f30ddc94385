"""One "not before" rule (issue 15 item 3): `errors.not_before`, called by the backoff, the limiter,
advice and `RateLimitHints.not_before` (which `watch.py` reads). Each caller gives exactly what its
own copy of the rule gave before; the old copies are kept here, verbatim, as the oracles."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_server.advice.facts import Facts, apply_hints
from mcp_server.errors import NotBefore, RateLimitHints, not_before
from mcp_server.limits._window import WindowState
from mcp_server.limits.base import SAFETY, BucketSpec
from mcp_server.upstream._backoff import BackoffKind, _hint_floor

_seconds = st.one_of(st.none(), st.floats(min_value=0, max_value=5000, allow_nan=False))
_statuses = st.sampled_from([200, 202, 400, 403, 429, 500, 503])


@st.composite
def _hints(draw: st.DrawFn) -> tuple[int, RateLimitHints]:
    """Hints as `parse_hints` makes them: `status` is the response's own (or absent)."""
    status = draw(_statuses)
    hints = RateLimitHints(
        limit=draw(st.one_of(st.none(), st.integers(1, 1000))),
        remaining=draw(st.one_of(st.none(), st.integers(0, 5))),
        reset_after=draw(_seconds),
        retry_after=draw(_seconds),
        window=draw(st.one_of(st.none(), st.floats(0.5, 3600))),
        status=draw(st.sampled_from([status, None])),
        passed=draw(st.booleans()),
    )
    return status, hints


# ---- the four copies as they were ----------------------------------------------------------


def _old_property(hints: RateLimitHints) -> float | None:
    if hints.retry_after is not None:
        return hints.retry_after
    if hints.reset_after is not None and hints.blocked:
        return hints.reset_after
    return None


def _old_hint_floor(hints: RateLimitHints | None, kind: BackoffKind) -> float | None:
    if hints is None:
        return None
    if hints.retry_after is not None:
        return hints.retry_after
    if hints.reset_after is not None and (kind == "rate_limit" or hints.blocked):
        return max(hints.reset_after, 1.0)
    return None


def _old_block_wait(
    window: float, max_hint: float, status: int, hints: RateLimitHints
) -> float | None:
    retry_after = hints.retry_after
    if status == 429 and retry_after is not None and retry_after <= max_hint:
        return retry_after
    if (status == 429 or hints.remaining == 0) and hints.reset_after is not None:
        reset = hints.reset_after
        if reset > 2 * window:
            return window
        return max(reset, 1.0)
    return None


def _old_advice_wait(status: int | None, hints: RateLimitHints) -> float | None:
    wait = _old_property(hints)
    if wait is None and status == 429 and hints.reset_after is not None:
        wait = hints.reset_after
    return wait


# ---- each caller against its old copy -------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(_hints())
def test_the_property_gives_what_it_gave(case: tuple[int, RateLimitHints]) -> None:
    _, hints = case
    assert hints.not_before == _old_property(hints)


@settings(max_examples=300, deadline=None)
@given(_hints(), st.sampled_from(["transient", "rate_limit"]))
def test_the_backoff_floor_gives_what_it_gave(
    case: tuple[int, RateLimitHints], kind: BackoffKind
) -> None:
    _, hints = case
    assert _hint_floor(hints, kind) == _old_hint_floor(hints, kind)
    assert _hint_floor(None, kind) is None


@settings(max_examples=300, deadline=None)
@given(_hints(), st.floats(0.5, 600), st.sampled_from([60.0, 3600.0]))
def test_the_limiter_block_gives_what_it_gave(
    case: tuple[int, RateLimitHints], window: float, max_hint: float
) -> None:
    status, hints = case
    # The one bucket arithmetic every limiter backend runs (issue 17: limits._window).
    state = WindowState.seeded(BucketSpec(10, window), SAFETY)
    expected = _old_block_wait(window, max_hint, status, hints)
    assert state._block_wait(status, hints, max_hint) == expected


@settings(max_examples=300, deadline=None)
@given(_hints(), st.sampled_from([None, 200, 429, 503]))
def test_the_advice_wait_gives_what_it_gave(
    case: tuple[int, RateLimitHints], status: int | None
) -> None:
    _, hints = case
    facts = Facts()
    apply_hints(facts, hints, status)
    old = _old_advice_wait(status, hints)
    expected = None if old is None or not math.isfinite(old) or old >= 86400 else old
    assert facts.wait == expected


def test_retry_after_wins_over_the_reset_unless_the_caller_says_it_does_not_apply() -> None:
    hints = RateLimitHints(retry_after=5.0, reset_after=30.0, remaining=0, status=503)
    assert not_before(hints) == NotBefore(5.0, "retry_after")
    assert not_before(hints, retry_after_applies=False) == NotBefore(30.0, "reset")
    assert not_before(hints, max_retry_after=4.0, reset_floor=40.0) == NotBefore(40.0, "reset")
    assert not_before(RateLimitHints(reset_after=30.0, status=200)) is None
    assert not_before(RateLimitHints(reset_after=0.2, status=200), used_up=True) == NotBefore(
        0.2, "reset"
    )
