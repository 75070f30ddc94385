"""The benchmark and chaos scripts still run: their quick modes, as subprocesses (issue 8).

Thresholds here are the scripts' own loose quick-mode ones (the real targets are checked by
the full runs, published in BENCHMARKS.md); the tests pin the exit status and the shape of the
JSON the scripts write, which BENCHMARKS.md and anyone comparing runs rely on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def _untracked() -> set[str]:
    """Untracked and ignored files in the working tree (outside caches and the venv)."""
    listing = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],  # noqa: S607
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    skip = ("__pycache__", ".venv", ".hypothesis", ".mypy_cache", ".ruff_cache", ".pytest_cache")
    return {line[3:] for line in listing.splitlines() if not any(p in line for p in skip)}


def test_a_chaos_results_file_in_the_tree_is_ignored_by_git() -> None:
    """Older runs (and `--json chaos-results.json`) leave it at the root: git ignores it."""
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "chaos-results.json"],  # noqa: S607
        cwd=REPO,
        check=False,
    )
    assert ignored.returncode == 0


TIMEOUT = 240
"""Generous: a loaded CI machine must not turn a slow run into a hang."""

# pytest-timeout's default (120 s) would cut a quick bench run short on a loaded machine before
# its own TIMEOUT: the scripts get theirs plus room to report.
pytestmark = [pytest.mark.slow, pytest.mark.loopback, pytest.mark.timeout(TIMEOUT + 60)]


def _run(
    script: str, out: Path, *, default_json: bool = False
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run `script --quick`; with `default_json`, no --json and TMPDIR=out's directory."""
    args = [] if default_json else ["--json", str(out)]
    env = os.environ | ({"TMPDIR": str(out.parent)} if default_json else {})
    proc = subprocess.run(  # noqa: S603  # our interpreter, our script
        [sys.executable, str(REPO / "tools" / script), "--quick", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=env,
    )
    data: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    return proc, data


def test_bench_quick_runs_every_section_within_its_loose_thresholds(tmp_path: Path) -> None:
    proc, data = _run("bench.py", tmp_path / "bench.json")

    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert data["tool"] == "bench"
    assert data["mode"] == "quick"
    assert data["ok"] is True
    assert data["crashed"] == {}
    assert {"nproc", "cpu", "ram_mb", "python"} <= set(data["machine"])
    assert set(data["sections"]) == {
        "rate",
        "completion",
        "polls",
        "overhead",
        "telemetry",
        "scale",
        "tokens",
        "agent",
        "agent_text",
        "shared",
        "burst",
        "waits",
        "webhooks",
        "replicas",
    }
    rate = data["sections"]["rate"]
    assert {
        "seamless_research_per_target",
        "seamless_research_batched",
        "agentseo_workload",
        "agentseo_control",
    } <= set(rate)
    assert all(part["upstream_429"] == 0 for key, part in rate.items() if key != "time_scale")
    assert data["sections"]["polls"]["jobrelay"]["10"]["max_calls_per_round"] == 1
    assert data["sections"]["agent"]["recovered"] is True
    text_agent = data["sections"]["agent_text"]
    assert text_agent["succeeded"] is True
    assert text_agent["tool_calls"] <= text_agent["budget"] == 9
    assert text_agent["text_tokens"] <= 8_000
    assert data["sections"]["scale"]["errors"] == 0
    assert len(data["sections"]["telemetry"]["pairs"]) == 1  # issue 19: metrics on vs off
    shared = data["sections"]["shared"]  # issue 17.5: processes sharing one ledger
    assert set(shared) == {"2", "4"}
    assert all(part["upstream_429"] == 0 and part["complete"] for part in shared.values())
    replicas = data["sections"]["replicas"]  # issue 17.5: HTTP replicas on PostgreSQL + Redis
    if "skipped" in replicas:
        assert os.environ.get("JOBRELAY_REQUIRE_SERVICES") != "1", replicas["skipped"]
    else:
        assert replicas["throughput"]["upstream_429"] == 0
        assert replicas["throughput"]["complete"]
        assert replicas["kill"]["lost_jobs"] == replicas["kill"]["duplicate_paid_posts"] == 0
    burst = data["sections"]["burst"]  # issue 17.7: an idle window goes out at once
    assert all(burst[kind]["jobrelay"]["upstream_429"] == 0 for kind in ("seo", "research"))
    waits = data["sections"]["waits"]  # issue 17.6: the cost of waiting beside the SDK floor
    assert [row["n"] for row in waits["rows"]] == [10, 30]
    for row in waits["rows"]:
        assert row["jobrelay"]["finished"] == row["floor"]["finished"] == row["n"]
        assert row["jobrelay"]["cpu_s"] > 0
        assert row["floor"]["cpu_s"] > 0
        assert row["jobrelay"]["progress_per_wait"] > 0
    hooks = data["sections"]["webhooks"]  # issue 18: deliveries, reconciliation, repeats
    assert hooks["drop_30"]["succeeded"] == hooks["drop_30"]["jobs"]
    assert hooks["duplicate_50"]["duplicate_results"] == 0
    two = hooks["two_replicas"]  # h18x: deliveries to one replica slow the other's polls
    if "skipped" in two:
        assert os.environ.get("JOBRELAY_REQUIRE_SERVICES") != "1", two["skipped"]
    else:
        assert two["succeeded"] == two["jobs"]
    checks = data["checks"]
    assert checks
    assert all({"section", "metric", "value", "target", "ok"} <= set(c) for c in checks)
    assert "section" in proc.stdout  # the table header


def test_chaos_quick_loses_nothing_and_spends_nothing_twice(tmp_path: Path) -> None:
    # Run from the repository root without --json: the results land in the temp directory.
    before = _untracked()
    proc, data = _run("chaos.py", tmp_path / "jobrelay-chaos-results.json", default_json=True)
    assert _untracked() <= before, "chaos.py left files in the working tree"
    assert f"results written to {tmp_path / 'jobrelay-chaos-results.json'}" in proc.stderr

    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert data["tool"] == "chaos"
    assert data["mode"] == "quick"
    result = data["result"]
    assert result["kills"] >= 1
    assert result["restarts"] >= 1
    assert result["cycles"] >= 1
    for key in ("lost_jobs", "duplicate_paid_posts", "bad_results", "stuck_without_advice"):
        assert result[key] == 0, (key, result)
    scenarios = data["scenarios"]  # issue 20: the fault scenarios are part of quick mode
    assert scenarios["ok"] is True, scenarios
    assert {r["item"] for r in scenarios["results"]} >= {"20.1", "20.2", "20.4", "20.6"}
    assert all(r["ok"] for r in scenarios["results"])
    assert {"nproc", "cpu", "python"} <= set(data["machine"])
