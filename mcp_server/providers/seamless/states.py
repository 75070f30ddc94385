"""Seamless research states and the shape of a research row (shared by the adapter, the
connection and the submit)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from mcp_server.ledger import JobRecord
from mcp_server.models import JobState

NAME: Final[Literal["seamless"]] = "seamless"

SEAMLESS_STATES: Mapping[str, JobState] = {
    "queued": JobState.QUEUED,
    "researching": JobState.RUNNING,
    "done": JobState.SUCCEEDED,
    "missing": JobState.NOT_FOUND,
    "not found": JobState.NOT_FOUND,
    "error": JobState.FAILED,
    "no license or credits available": JobState.FAILED,
    "duplicate": JobState.DUPLICATE,
    "contact-already-researched": JobState.DUPLICATE,
}
"""Every documented contact/company poll status (UPSTREAMS.md 1), lower case."""

#: Research targets per start_research call (one handle covers all their requestIds).
MAX_TARGETS = 100
#: Per-target statuses shown inline; the rest are summarised.
MAX_ITEMS_SHOWN = 20

Kind = Literal["contacts", "companies"]


def seamless_state(raw: str | None) -> JobState:
    """Unknown statuses are treated as still running: keep watching, boundedly (the docs say
    more may be added); `unrecognised` makes the result say so."""
    return SEAMLESS_STATES.get(" ".join((raw or "").lower().split()), JobState.RUNNING)


def unrecognised(items: Sequence[Mapping[str, Any]]) -> str | None:
    """The first poll status of a research job that no documentation names, if any."""
    for item in items:
        raw = str(item.get("raw_status") or "")
        if raw and " ".join(raw.lower().split()) not in SEAMLESS_STATES:
            return raw
    return None


def research_kind(rec: JobRecord) -> Kind:
    """What a Seamless job researches, as its snapshot records it (contacts by default)."""
    return "companies" if (rec.snapshot or {}).get("kind") == "companies" else "contacts"


def open_request_ids(rec: JobRecord) -> list[str]:
    """The job's research ids still open: at most `MAX_TARGETS` (one per target), so a wait or
    status check of one job costs at most one poll call per round, whatever a row holds."""
    items = (rec.snapshot or {}).get("items", [])
    if not items:
        return list(rec.upstream_ids)[:MAX_TARGETS]
    open_ids = [i["request_id"] for i in items if not seamless_state(i.get("raw_status")).terminal]
    return open_ids[:MAX_TARGETS]
