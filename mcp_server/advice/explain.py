"""The use cases: advice for an exception, for pasted input (`explain_error`), for a job outcome.

Everything here is pure: time comes in as `now` (epoch seconds), so the same input always
yields the same text. Each function gathers facts and picks a catalogue row; `compose.build`
words it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from mcp_server.advice import registry
from mcp_server.advice.clean import (
    clean_job_status,
    clean_status,
    clean_text,
    clean_token,
    render_details,
    scrub_status,
)
from mcp_server.advice.compose import build
from mcp_server.advice.facts import DEFAULT_CAUSE, Facts, apply_hints, merge_wait, read_error
from mcp_server.advice.facts import refined_code as _refined_code
from mcp_server.advice.parse import detect_provider, first_token, parse_body, secrets_of
from mcp_server.coerce import as_int, as_number
from mcp_server.errors import JobRelayError
from mcp_server.models import Advice
from mcp_server.upstream import parse_hints

__all__ = ["advise_error", "advise_http", "advise_job"]

_REQUEST_ID_HEADERS: Final = ("x-request-id", "request-id", "x-amzn-requestid")


def advise_error(
    error: JobRelayError, *, now: float, tool: str | None = None, job_id: str | None = None
) -> Advice:
    """Advice for an exception from the clients, the ledger or the limiter.

    `tool` names the MCP tool that failed, for the next step; when omitted it is inferred
    from the upstream route. `job_id`: the handle the failure belongs to, when there is one
    (an outcome-unknown submit), so the next step names it. Waits come from the error's parsed
    hints, rounded up to whole seconds, with `retry_at = now + wait`.
    """
    key, facts, at = read_error(error, clean_token(tool, ()), now, job_id=job_id)
    return build(key, facts, at)


def advise_http(  # noqa: PLR0917  # positional order is the explain_error argument contract
    provider: str | Literal["auto"] | None,
    http_status: int | None,
    code: str | None,
    headers: Mapping[str, str] | None,
    body: str | Mapping[str, object] | None,
    job_status: str | None,
    *,
    now: float,
) -> Advice:
    """Advice for whatever an agent or a human pasted: status, code, headers, body, job status.

    The engine behind the `explain_error` tool and `jobrelay explain`. `provider` "auto" (or
    None, or a name no table is registered for) detects the API from the input. Never raises:
    unknown combinations get advice by status class, and empty input gets advice on what to pass.
    """
    raw_headers = headers if isinstance(headers, Mapping) else {}
    lower = {str(k).strip().lower(): str(v) for k, v in raw_headers.items()}
    secrets = secrets_of(lower)
    status = as_int(http_status)
    parsed = parse_body(body if isinstance(body, str | Mapping) else None, secrets)
    given_code = clean_token(code, secrets) if code is not None else None
    the_code = given_code or clean_token(_refined_code(parsed.code, parsed.details), secrets)
    wanted_status = job_status.strip().lower() if isinstance(job_status, str) else None
    the_job_status = clean_job_status(wanted_status, secrets) if wanted_status else None
    if the_job_status is None and (status is None or status < 400):
        the_job_status = parsed.job_status
    who: str | None
    if isinstance(provider, str) and provider in registry.provider_names():
        who = provider
    else:
        who = detect_provider(lower, parsed, the_code, status, the_job_status)

    hints = parse_hints(who, status or 0, lower, parsed.mapping, now=now)  # never raises
    facts = Facts(
        provider=who,
        http_status=status,
        api_code=the_code,
        request_id=parsed.request_id or first_token(lower, _REQUEST_ID_HEADERS, secrets),
        details=render_details(parsed.details, secrets),
        message=parsed.message,
        credits=parsed.credits,
        credits_needed=parsed.credits_needed,
        budget=parsed.budget,
        job_id=parsed.job_id,
        secrets=secrets,
    )
    if facts.details:
        facts.message = None
    apply_hints(facts, hints, status)
    facts.wait = merge_wait(facts.wait, parsed.retry_after)

    if status is not None and not 100 <= status < 400:
        key = registry.rate_key(who, facts.budget, None) if status == 429 else None
        return build(key or registry.http_key(who, status, the_code), facts, now)
    if the_job_status:
        return _advise_job_facts(who, the_job_status, parsed.job_error, facts, now)
    if the_code:
        return _advise_code(who, the_code, facts, now)
    if status is not None:
        return build(registry.http_key(who, status, None), facts, now)
    if hints.remaining == 0 and (hints.reset_after is not None or hints.retry_after is not None):
        return build(registry.http_key(who, 429, None), facts, now)
    return build("generic.no_input", facts, now)


def _advise_code(who: str | None, code: str, facts: Facts, now: float) -> Advice:
    """A code given alone (or a body's code without a status)."""
    key = registry.code_key(who, code)
    if key is None:
        return build("generic.unknown_code", facts, now)
    found = registry.CATALOGUE[key]
    facts.provider = who or found.provider
    if facts.provider and key.startswith(f"{facts.provider}.429"):
        key = registry.rate_key(facts.provider, facts.budget, None) or key
    return build(key, facts, now)


def _job_error_text(error: Mapping[str, object] | None, secrets: tuple[str, ...]) -> str | None:
    if error is None:
        return None
    code = clean_token(error.get("code"), secrets)
    message = clean_text(error.get("message"), secrets)
    if code and message:
        return f"{code}: {message}"
    return code or message


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return value is True


def _job_status_owner(status: str) -> str | None:
    """The provider whose clues name this job status, when the caller did not say."""
    for name in registry.provider_names():
        table = registry.provider_advice(name)
        if table is not None and status in table.clues.job_statuses:
            return name
    return None


def _advise_job_facts(
    provider: str | None,
    raw_status: str,
    error: Mapping[str, object] | None,
    facts: Facts,
    now: float,
) -> Advice:
    status = raw_status.strip().lower()
    who = provider or _job_status_owner(status)
    facts.provider = who
    facts.raw_status = clean_status(raw_status, facts.secrets) or scrub_status(
        raw_status, facts.secrets
    )
    lookup = status
    if status == "failed":
        retryable = _truthy(error.get("retryable")) if error is not None else False
        lookup = "failed/retryable" if retryable else "failed/permanent"
        facts.job_error = _job_error_text(error, facts.secrets)
        if error is not None:
            facts.wait = merge_wait(facts.wait, as_number(error.get("retry_after_seconds")))
    elif status == "error" and error is not None and facts.message is None:
        facts.message = clean_text(error.get("message"), facts.secrets)
    if status == "unknown":
        facts.cause = facts.cause or DEFAULT_CAUSE
    return build(registry.job_key(who, lookup) or "job.unknown_status", facts, now)


def advise_job(
    provider: str | None,
    raw_status: str,
    *,
    error: Mapping[str, object] | None = None,
    retry_after: float | None = None,
    now: float,
    job_id: str | None = None,
    message: str | None = None,
) -> Advice:
    """Advice for a job outcome (a normal result, not a tool failure).

    `raw_status` is the upstream status (Seamless poll or AgentSEO job); `error` the AgentSEO
    `error` object of a failed job; `retry_after` the envelope's `retry_after_seconds`;
    `message` a Seamless poll item's `message`.
    """
    error = error if isinstance(error, Mapping) else None  # stored envelopes may hold junk
    facts = Facts(
        provider=provider,
        job_id=clean_token(job_id, ()),
        wait=merge_wait(None, retry_after),
        message=clean_text(message, ()) if message else None,
    )
    return _advise_job_facts(
        provider, raw_status if isinstance(raw_status, str) else "", error, facts, now
    )
