"""Durations and reset times are worded the same way at every instant of a UTC day."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from mcp_server._duration import format_duration
from mcp_server.advice import advise_error, advise_http
from mcp_server.errors import BudgetExceeded

#: One UTC day (2026-09-21), swept instant by instant below.
DAY = datetime(2026, 9, 21, tzinfo=UTC).timestamp()
_WORDING = re.compile(r"^(?:(\d+) s|(\d+) min(?: (\d+) s)?|(\d+) h(?: (\d+) min)?)$")


def _seconds_stated(text: str) -> tuple[int, int]:
    """The [low, high] span of seconds a worded duration can stand for; fails on bad wording."""
    match = _WORDING.match(text)
    assert match, text
    s, m, ms, h, hm = match.groups()
    if s is not None:
        assert int(s) < 120, text
        return int(s), int(s)
    if m is not None:
        minutes, rest = int(m), int(ms or 0)
        assert 2 <= minutes < 60, text
        assert ms is None or 0 < rest < 60, text
        return minutes * 60 + rest, minutes * 60 + rest
    hours, minutes = int(h), int(hm or 0)
    assert hours >= 1, text
    assert hm is None or 0 < minutes < 60, text
    high = hours * 3600 + minutes * 60
    return high - 59, high


@given(st.integers(min_value=0, max_value=10 * 86400))
def test_every_duration_is_worded_in_range_and_never_understated(seconds: int) -> None:
    low, high = _seconds_stated(format_duration(seconds))
    assert low <= seconds <= high


def test_the_wordings_the_issue_reported() -> None:
    assert format_duration(6621) == "1 h 51 min"  # was "110 min 21 s"
    assert format_duration(14_399) == "4 h"  # was "3 h 60 min"
    assert format_duration(3599) == "59 min 59 s"
    assert format_duration(3600) == "1 h"
    assert format_duration(119) == "119 s"
    assert format_duration(120) == "2 min"


def test_budget_reset_wording_across_a_whole_day_of_instants() -> None:
    """Every 7 s of one UTC day (12,343 instants): the reset is the next midnight, and the
    stated wait is well-formed and covers the real distance to it."""
    for offset in range(0, 86400, 7):
        now = DAY + offset + 0.25
        refusal = BudgetExceeded(
            "over", provider="seamless", spent=3, budget=3, requested=1, resets_in=0
        )
        advice = advise_error(refusal, now=now)
        text = f"{advice.what_happened} {advice.next_step}"
        match = re.search(r"resets at 00:00:00Z \(in ([^)]+)\)", text)
        assert match, (offset, text)
        low, high = _seconds_stated(match.group(1))
        remaining = DAY + 86400 - now
        assert low - 1 <= remaining <= high + 1, (offset, match.group(1))  # to the second
        assert advice.retry_at == datetime.fromtimestamp(DAY + 86400, UTC)


def test_rate_limit_reset_wording_across_a_whole_day_of_instants() -> None:
    """A reset header 0 s..6 h ahead, at instants across one day: always worded, in range."""
    for offset in range(0, 86400, 97):
        now = DAY + offset
        wait = (offset * 31) % 21_600 + 1
        headers = {"x-ratelimit-reset": str(int(now) + wait)}
        advice = advise_http("seamless", 429, None, headers, None, None, now=now)
        text = advice.next_step
        match = re.search(r"\(in ([^)]+)\)", text)
        assert match, (offset, text)
        low, high = _seconds_stated(match.group(1))
        assert low <= wait <= high, (offset, wait, match.group(1))


def test_progress_eta_is_worded_by_the_same_function() -> None:
    from mcp_server.providers.agentseo.envelopes import env_progress_text as _env_progress_text

    env = {"status": "running", "phase": "crawling", "progress": {"eta_seconds": 6621}}
    assert _env_progress_text(env) == "crawling (about 1 h 51 min left)"
    env["progress"] = {"eta_seconds": 42.2}
    assert _env_progress_text(env) == "crawling (about 43 s left)"


def test_every_scaled_clock_in_the_tests_is_anchored_to_the_test_epoch() -> None:
    """A ScaledClock without `epoch=` starts at the real time of day, so wording that depends
    on "now" (reset times, budgets, UTC instants) would vary with when the suite runs."""
    import ast
    from pathlib import Path

    loose: list[str] = []
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "ScaledClock"
                and not any(k.arg == "epoch" for k in node.keywords)
            ):
                loose.append(f"{path.name}:{node.lineno}")
    assert not loose, f"ScaledClock(...) without epoch= in {loose}"
