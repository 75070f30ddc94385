"""The fault scenarios of `tools/chaos.py` (issue 20): the fast subset, in-process.

`tools/_scenarios.py` drives jobrelay against a stalling, lying fake upstream on loopback; the
chaos quick mode runs all of them, this test the `fast=True` ones (a few seconds).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"
if str(TOOLS) not in sys.path:
    sys.path.insert(0, str(TOOLS))

import _scenarios  # noqa: E402  # tools/ is not a package

from mcp_server import _bounds  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.loopback]


async def test_the_fast_fault_scenarios_pass() -> None:
    with anyio.fail_after(90):
        report: dict[str, Any] = await _scenarios.run_scenarios(fast_only=True)
    failed = {r["name"]: r["problems"] for r in report["results"] if not r["ok"]}
    assert not failed, failed
    ran = {r["name"] for r in report["results"]}
    assert ran == {s.name for s in _scenarios.SCENARIOS if s.fast}
    # every issue-20 item has a scenario in the fast subset
    assert {r["item"] for r in report["results"]} == {f"20.{i}" for i in range(1, 8)}
    figures = {r["name"]: r["figures"] for r in report["results"]}
    assert figures["stall_search"]["search_prospects_s"] <= _scenarios.MAX_WAIT + _scenarios.SLACK
    assert figures["id_flood"]["poll_calls_in_27s_wait"] == 0
    assert figures["malformed_jsonrpc"]["answered"] == "9/9"
    assert figures["bounded_input"]["refused"] == "6/6"
    assert figures["bounded_input"]["upstream_calls"] == 0
    assert figures["bounded_input"]["largest_answer_tokens"] < _scenarios.SMALL_ANSWER_TOKENS
    oversized = figures["oversized_record"]
    assert oversized["title_chars"] == 5_000_000
    assert 0 < oversized["shown_title_chars"] < 5_000
    assert oversized["largest_answer_tokens"] <= _bounds.DEFAULT_ANSWER_TOKENS


def test_every_issue_20_item_has_a_scenario_and_none_is_pending() -> None:
    covered = {s.item for s in _scenarios.SCENARIOS}
    assert covered == {f"20.{i}" for i in range(1, 8)}
    assert not _scenarios.PENDING


async def test_an_unknown_scenario_name_is_refused() -> None:
    with pytest.raises(ValueError, match="no_such"):
        await _scenarios.run_scenarios(["no_such"])
