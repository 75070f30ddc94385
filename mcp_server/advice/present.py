"""Presentation: advice as a tool result's text, the catalogue as markdown, `jobrelay explain`."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Sequence

from mcp_server._duration import format_duration
from mcp_server.advice import registry
from mcp_server.advice.clean import clean_token
from mcp_server.advice.compose import PASSED_UNTIL, context, fmt_clock
from mcp_server.advice.explain import advise_http
from mcp_server.advice.facts import Facts
from mcp_server.advice.registry import service_name
from mcp_server.advice.table import CatalogueRow
from mcp_server.models import Advice
from mcp_server.upstream import retry_at

__all__ = ["catalogue_markdown", "explain_cli", "render_text", "wait_phrase"]


def render_text(advice: Advice) -> str:
    """The text block of a tool result: what happened (with when), the next step, what not to do."""
    parts = [advice.what_happened, f"Next: {advice.next_step}"]
    if advice.do_not:
        parts.append(advice.do_not)
    return " ".join(parts)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _catalogue_cells(row: CatalogueRow, provider: str) -> list[str]:
    facts = Facts(provider=provider)
    ctx, _, _ = context(row, facts, None)
    upstream = ", ".join(f"`{c}`" for c in row.api_codes) or "-"
    ours = f"`{row.code.value}`" if row.code else "- (job outcome)"
    retry = "yes, after the wait" if row.retryable else "no"
    return [
        row.when,
        upstream,
        ours,
        row.meaning,
        retry,
        row.next_step.format_map(ctx),
    ]


def one_of(names: Sequence[str]) -> str:
    """`seamless or agentseo`; `a, b or c`."""
    return " or ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)


def catalogue_markdown(provider: str) -> str:
    """The whole catalogue for one provider, as markdown (resource `jobrelay://errors/{p}`).

    Raises `ValueError` for a provider no advice table is registered for (URI input).
    """
    names = registry.provider_names()
    if provider not in names:
        raise ValueError(f"unknown provider {provider!r}: expected {one_of(names)}")
    name = service_name(provider)
    header = (
        "| when | upstream code | jobrelay code | meaning | retry? | next step |\n"
        "|---|---|---|---|---|---|"
    )
    sections = [
        (f"## {name}", registry.rows_of(provider)),
        ("## Any provider (network, jobrelay's own guards, fallbacks)", registry.rows_of(None)),
    ]
    lines = [
        f"# jobrelay advice catalogue: {name}",
        "",
        "Every failure and job outcome jobrelay explains for this API, one row each. Waits are "
        "computed from the response's own headers when it happens; `explain_error` gives the "
        "advice for a concrete status, code, headers and body.",
    ]
    for title, rows in sections:
        lines += ["", title, "", header]
        for row in rows:
            cells = _catalogue_cells(row, provider)
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _parse_header_args(headers: Iterable[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for arg in headers:
        name, sep, value = arg.partition(":")
        if (
            not sep
            or not name.strip()
            or not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", name.strip())
        ):
            raise ValueError(
                f"bad --header {arg!r}: expected NAME:VALUE, e.g. X-RateLimit-Reset:1790000000"
            )
        parsed[name.strip()] = value.strip()
    return parsed


def explain_cli(
    status: int | None,
    code: str | None,
    provider: str,
    headers: list[str],
    *,
    body: str | None = None,
    job_status: str | None = None,
    now: float | None = None,
) -> str:
    """`jobrelay explain` output for a terminal; `ValueError` names a malformed argument.

    Takes what `explain_error` takes: a status, code, headers, the response body (JSON or
    text) and a job's status, any of them optional but at least one.
    """
    names = registry.provider_names()
    if provider not in {"auto", *names}:
        raise ValueError(f"bad --provider {provider!r}: expected {', '.join(names)} or auto")
    if status is None and not (code or body or job_status):
        raise ValueError("give an HTTP STATUS, --code, --body or --job-status")
    parsed = _parse_header_args(headers)
    moment = time.time() if now is None else now
    advice = advise_http(provider, status, code, parsed, body, job_status, now=moment)
    service = service_name(advice.provider) if advice.provider else "unknown API"
    label = advice.code.value if advice.code else "no error code"
    said = [f"HTTP {status}" if status is not None else None, label]
    if job_status:
        said.insert(0, f"job status {clean_token(job_status, ()) or '?'}")
    summary = ", ".join(f for f in said if f)
    if service not in advice.title:
        summary = f"{service}, {summary}"
    lines = [f"{advice.title} ({summary})", "", advice.what_happened]
    if advice.retryable and PASSED_UNTIL in advice.what_happened:
        lines.append("Retry: yes, now (the reset time the response states has passed).")
    elif (
        advice.retryable and advice.retry_at is not None and advice.retry_after_seconds is not None
    ):
        wait = format_duration(int(advice.retry_after_seconds))
        lines.append(f"Retry: yes, after {fmt_clock(advice.retry_at, moment)} (in {wait}).")
    else:
        lines.append("Retry: " + ("yes." if advice.retryable else "no, retrying won't help."))
    lines.append(f"Next step: {advice.next_step}")
    if advice.do_not:
        lines.append(f"Avoid: {advice.do_not}")
    return "\n".join(lines) + "\n"


def wait_phrase(seconds: float, now: float) -> str:
    """`14:12:55Z (in 12 s)`: a wait as an absolute UTC time and in seconds."""
    whole = max(1, math.ceil(seconds - 1e-9))
    return f"{fmt_clock(retry_at(now, whole), now)} (in {format_duration(whole)})"
