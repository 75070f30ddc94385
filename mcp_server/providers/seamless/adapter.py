"""Seamless.ai as a job provider: its states, settings and what a research row means.

A research job is one handle over up to 100 requestIds (one per target); its ledger snapshot
holds one item per target (`request_id`, `target` label, `raw_status`, `message`) and its
result the records by requestId. I/O lives in `connection.py`, the submit in `research.py`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mcp_server import advice as advice_mod
from mcp_server import render
from mcp_server.advice import ProviderAdvice
from mcp_server.config import ProviderSettings
from mcp_server.errors import InputProblem
from mcp_server.ledger import JobRecord
from mcp_server.limits import RateLimits
from mcp_server.models import Advice, JobState, Progress
from mcp_server.projection import project_company, project_contact
from mcp_server.providers.base import (
    ByNameSettings,
    Connection,
    JobKind,
    JobReader,
    JobView,
    LineFn,
    ProviderEnv,
    WebhookSpec,
)
from mcp_server.providers.seamless import fields
from mcp_server.providers.seamless.advice import SEAMLESS
from mcp_server.providers.seamless.limits import RATE_LIMITS
from mcp_server.providers.seamless.settings import SETTINGS, SeamlessSettings
from mcp_server.providers.seamless.states import (
    MAX_ITEMS_SHOWN,
    NAME,
    research_kind,
    seamless_state,
    unrecognised,
)
from mcp_server.schemas import ItemStatus


class SeamlessReader:
    """Seamless.ai's reading of a research row: its view, advice, records and texts."""

    def view(self, rec: JobRecord) -> JobView:
        items = (rec.snapshot or {}).get("items", [])
        view = JobView(credits_remaining=rec.credits_seen)
        view.items = [
            ItemStatus(
                request_id=i["request_id"],
                target=i.get("target"),
                state=seamless_state(i.get("raw_status")),
                raw_status=i.get("raw_status") or "unknown",
            )
            for i in items[:MAX_ITEMS_SHOWN]
        ]
        view.unrecognised_status = unrecognised([{"raw_status": i.raw_status} for i in view.items])
        done = sum(1 for i in items if seamless_state(i.get("raw_status")).terminal)
        if items:
            view.progress = Progress(
                percent=round(100.0 * done / len(items), 1),
                message=f"{done} of {len(items)} targets finished",
            )
        if not rec.state.terminal and rec.upstream_ids:
            view.next_check_after_seconds = 5.0
        return view

    def needs_advice(self, rec: JobRecord) -> bool:
        return (
            not rec.state.terminal
            and unrecognised((rec.snapshot or {}).get("items", [])) is not None
        )

    def job_advice(self, rec: JobRecord, *, now: float) -> Advice:
        items = (rec.snapshot or {}).get("items", [])
        unknown = unrecognised(items) if not rec.state.terminal else None
        # The raw status of a target in the job's state: each documented status has its own
        # advice (`not found`, `contact-already-researched`, `No license or credits ...`).
        raw = unknown or next(
            (
                str(i["raw_status"])
                for i in items
                if i.get("raw_status") and seamless_state(i.get("raw_status")) is rec.state
            ),
            {
                JobState.FAILED: "error",
                JobState.NOT_FOUND: "missing",
                JobState.DUPLICATE: "duplicate",
            }.get(rec.state, rec.raw_status or "unknown"),
        )
        # The poll item's message, for the statuses added after the first wave (the older
        # rows' wording stands alone).
        message = next(
            (str(i["message"]) for i in items if i.get("raw_status") == raw and i.get("message")),
            None,
        )
        if raw.lower() in ("error", "missing", "duplicate", "done", "researching"):
            message = None
        return advice_mod.advise_job(NAME, raw, now=now, job_id=rec.job_id, message=message)

    def result_records(self, rec: JobRecord) -> list[dict[str, Any]]:
        records = (rec.result or {}).get("records") or {}
        out = []
        for item in (rec.snapshot or {}).get("items", []):
            r = records.get(item["request_id"])
            if isinstance(r, Mapping):
                out.append({"request_id": item["request_id"], **dict(r)})
        return out

    def project(self, rec: JobRecord, record: Mapping[str, Any]) -> dict[str, Any]:
        contacts = research_kind(rec) == "contacts"
        projected = project_contact(record) if contacts else project_company(record)
        return {"request_id": record.get("request_id"), **projected}

    def lines(
        self,
        rec: JobRecord,
        projected: Sequence[Mapping[str, Any]],
        window: Sequence[Mapping[str, Any]],
    ) -> tuple[Sequence[Mapping[str, Any]], LineFn]:
        del window
        line = render.contact_line if research_kind(rec) == "contacts" else render.company_line
        return projected, line

    def what(self, rec: JobRecord) -> str:
        del rec
        return "Research"

    def resubmit_note(self, rec: JobRecord) -> str:
        # UPSTREAMS.md: `duplicate` is a contact research status only.
        if rec.operation != "research_contacts":
            return ""
        return (
            " Seamless deduplicates contact research, so one careful resubmit "
            "(allow_rerun=false) returns 'duplicate' at no cost if it did arrive."
        )


class SeamlessProvider(ByNameSettings):
    """Seamless.ai contact and company research (`start_research`, `search_prospects`)."""

    name: str = NAME
    title = "Seamless"
    service_name = "Seamless.ai"
    id_prefix = "sea_"
    kind: JobKind = "research"
    workflows: tuple[str, ...] = ()
    paid_per_target = True
    key_header = "X-Seamless-Api-Key"
    task_poll_ms = (2_000, 5_000)
    """Seamless's documented 2-5 s poll cadence."""
    advice: ProviderAdvice | None = SEAMLESS
    rate_limits: RateLimits = RATE_LIMITS
    settings: ProviderSettings = SETTINGS
    reader: JobReader = SeamlessReader()
    webhook = WebhookSpec(
        path="/webhooks/seamless",
        secret_env="SEAMLESS_WEBHOOK_SECRET",  # noqa: S106  # a variable's name
        secret_header="x-seamless-webhook-secret",  # noqa: S106  # a header's name
        id_field="apiResearchId",
        secret=lambda settings: settings.of(SeamlessSettings).webhook_secret,
        setting_hint="the secret set in the API's dashboard (Seamless: Settings > Webhooks)",
        id_example="a Seamless requestId",
        # Not documented as the research's end: the record's last update, which a research
        # makes; read only when it is not before the job's submit (`following.delivery_lag`).
        finished_field="updatedAt",
    )
    """`contact-researched`/`company-researched` deliveries (UPSTREAMS.md, Webhooks)."""
    fields_description = (
        "Field names get_job_result(fields=[...]) accepts for research contacts and companies."
    )

    def result_fields(self) -> Mapping[str, Sequence[str]]:
        return fields.result_fields()

    # ---- settings (key, base URL, sandbox use: `ByNameSettings`) --------------------------
    def sandbox_url(self, root: str) -> str:
        from mcp_server.sandbox.app import SEAMLESS_PREFIX

        return root + SEAMLESS_PREFIX

    def connect(self, env: ProviderEnv) -> Connection:
        from mcp_server.providers.seamless.connection import SeamlessConnection

        return SeamlessConnection(env)

    # ---- job semantics --------------------------------------------------------------------
    def validate(self, workflow: str, params: Mapping[str, Any]) -> dict[str, Any]:
        del params
        raise InputProblem(f"Seamless runs no workflow {workflow!r}.", field="workflow")
