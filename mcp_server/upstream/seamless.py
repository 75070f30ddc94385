"""Seamless.ai Public API v1 client: search, research, poll, org records (UPSTREAMS.md section 1).

Research POSTs spend credits and have no idempotency key, so they are `PAID` calls: replayed
only when provably not processed (see `_http`). Everything else is a free read. Polls take
many request ids in one call (`requestIds=a,b`, chunked by 100), because each endpoint has
its own org-wide window of about 60 requests per minute.

The last `X-PublicAPI-Credits` seen is `client.credits`; the buckets are `rate_limits()`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, Final
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from mcp_server._clock import Clock
from mcp_server.coerce import as_int
from mcp_server.errors import AbsurdAnswer, OutcomeUnknown, ShapeError
from mcp_server.json_types import JSON
from mcp_server.limits import BucketSnapshot, Limiter
from mcp_server.upstream._backoff import BackoffPolicy, RequestKind, RetryBudget
from mcp_server.upstream._client import DEFAULT_TIMEOUT, Call
from mcp_server.upstream._failures import InvalidArguments
from mcp_server.upstream._feedback import CreditsSeen
from mcp_server.upstream._http import UpstreamHTTP
from mcp_server.upstream._models import (
    CompanyDescriptor,
    ContactDescriptor,
    PollItem,
    RecordsPage,
    ResearchAccepted,
    SeamlessKind,
    SearchPage,
)

__all__ = ["MAX_POLL_IDS", "SeamlessClient"]

MAX_POLL_IDS: Final = 100
"""Request ids per poll call; more are split into several calls."""
_KINDS: Final = ("contacts", "companies")
_OPS: Final[Mapping[SeamlessKind, tuple[str, str, str, str]]] = {
    "contacts": (
        "searchContacts",
        "researchContacts",
        "pollContactsResearchResults",
        "getContacts",
    ),
    "companies": (
        "searchCompanies",
        "researchCompanies",
        "pollCompanyResearchResults",
        "getCompanies",
    ),
}


def _kind(kind: str) -> SeamlessKind:
    if kind == "contacts":
        return "contacts"
    if kind == "companies":
        return "companies"
    raise InvalidArguments(
        f"Unknown Seamless kind {kind!r}; allowed: contacts, companies.",
        provider="seamless",
        argument="kind",
        allowed=_KINDS,
    )


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _data_list(body: Any) -> list[dict[str, Any]]:
    """`body.data` as a list of objects (non-objects dropped); a missing list is malformed."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise ShapeError("expected an object with a `data` list")
    return [item for item in body["data"] if isinstance(item, dict)]


def _supplemental(body: dict[str, Any]) -> dict[str, Any]:
    extra = body.get("supplementalData")
    return extra if isinstance(extra, dict) else {}


def _descriptor(
    item: ContactDescriptor | CompanyDescriptor | Mapping[str, Any],
) -> dict[str, Any]:
    """Wire form of a target: models by alias, mappings as given; empty values dropped."""
    raw = (
        item.model_dump(by_alias=True, exclude_none=True)
        if isinstance(item, ContactDescriptor | CompanyDescriptor)
        else dict(item)
    )
    return {k: v for k, v in raw.items() if v not in (None, "", [], {})}


def _moment(value: str | date | datetime, *, end: bool) -> str:
    """An ISO date-time, as `startDate`/`endDate` are documented: a bare date is the start
    (or, for the end, the last second) of that UTC day."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        value = value.isoformat()
    if len(value) == 10:
        return f"{value}T23:59:59Z" if end else f"{value}T00:00:00Z"
    return value


class SeamlessClient:
    """One API key's view of Seamless. Use as an async context manager (owns its client).

    `deadline` arguments are absolute `clock.monotonic()` seconds; `None` means
    `default_wait` seconds from now.
    """

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | str,
        *,
        clock: Clock,
        limiter: Limiter,
        policy: BackoffPolicy,
        budget: RetryBudget,
        tenant: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        default_wait: float = 45.0,
        auth: httpx.Auth | None = None,
    ) -> None:
        """`auth`: OAuth (`_oauth.BearerAuth`/`RefreshingAuth`) instead of `Token: api_key`;
        `api_key` then only names the credential (its fingerprint is `tenant`)."""
        self._http = UpstreamHTTP(
            "seamless",
            base_url,
            api_key,
            clock=clock,
            limiter=limiter,
            policy=policy,
            budget=budget,
            tenant=tenant,
            transport=transport,
            timeout=timeout,
            default_wait=default_wait,
            auth=auth,
        )
        self.base_url = self._http.base_url
        self.tenant = tenant

    def __repr__(self) -> str:
        return f"SeamlessClient({self.base_url!r}, tenant={self.tenant!r})"

    async def __aenter__(self) -> SeamlessClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def credits(self) -> int | None:
        """Research credits left for the org, from the last plausible `X-PublicAPI-Credits`."""
        return self._http.credits

    @property
    def credits_seen(self) -> CreditsSeen | None:
        """That reading with the answer it came from and when (for honest refusals)."""
        return self._http.credits_seen

    async def rate_limits(self) -> list[BucketSnapshot]:
        """This key's Seamless buckets (one per endpoint) as the limiter sees them."""
        return [
            b
            for b in await self._http.limiter.snapshot()
            if b.provider == "seamless" and b.key_fingerprint == self.tenant
        ]

    # ---- operations -------------------------------------------------------------------------
    async def search(
        self,
        kind: SeamlessKind,
        filters: Mapping[str, JSON],
        *,
        limit: int = 50,
        next_token: str | None = None,
        deadline: float | None = None,
    ) -> SearchPage:
        """One page of search hits (free). Feed `searchResultId`s to `research`."""
        k = _kind(kind)
        body: dict[str, Any] = {**filters, "limit": limit}
        if next_token:
            body["nextToken"] = next_token

        def parse(raw: Any) -> SearchPage:
            items = _data_list(raw)
            extra = _supplemental(raw)
            token = _text(extra.get("nextToken"))
            is_more = extra.get("isMore")
            return SearchPage(
                kind=k,
                items=items,
                next_token=token,
                total=as_int(extra.get("total")),
                is_more=is_more if isinstance(is_more, bool) else token is not None,
                per_page=as_int(extra.get("perPage")),
            )

        path = f"/search/{k}"
        call = Call(_OPS[k][0], "POST", path, path, RequestKind.READ, json_body=body)
        return (await self._http.send(call, parse, deadline=deadline)).value

    async def research(
        self,
        kind: SeamlessKind,
        *,
        search_result_ids: Sequence[str] = (),
        contacts: Sequence[ContactDescriptor | Mapping[str, JSON]] = (),
        companies: Sequence[CompanyDescriptor | Mapping[str, JSON]] = (),
        is_job_change: bool = False,
        skip_dedup: bool = False,
        deadline: float | None = None,
    ) -> ResearchAccepted:
        """Queue research (spends credits): one `requestId` per target, in order.

        Never replayed after an ambiguous failure: that raises `OutcomeUnknown`.
        """
        k = _kind(kind)
        if contacts and k != "contacts":
            raise InvalidArguments(
                "`contacts` descriptors only apply to kind 'contacts'.",
                provider="seamless",
                argument="contacts",
            )
        if companies and k != "companies":
            raise InvalidArguments(
                "`companies` descriptors only apply to kind 'companies'.",
                provider="seamless",
                argument="companies",
            )
        ids = [i for i in (s.strip() for s in search_result_ids) if i]
        targets = [_descriptor(c) for c in (contacts if k == "contacts" else companies)]
        if not ids and not targets:
            raise InvalidArguments(
                f"Nothing to research: give search_result_ids and/or {k} descriptors.",
                provider="seamless",
                argument="search_result_ids",
            )
        if k == "contacts" and ids and targets:
            # UPSTREAMS.md 1: one or the other per contact-research POST, never both.
            raise InvalidArguments(
                "Seamless takes searchResultIds or contacts in one request, not both; "
                "send them in two requests.",
                provider="seamless",
                argument="contacts",
            )
        if is_job_change and not (k == "contacts" and targets):
            raise InvalidArguments(
                "isJobChange goes only with contacts descriptors.",
                provider="seamless",
                argument="is_job_change",
            )
        body: dict[str, Any] = {}
        if ids:
            body["searchResultIds"] = ids
        if targets:
            body[k] = targets
        if is_job_change:
            body["isJobChange"] = True
        if skip_dedup:
            body["skipDeduplicationCheck"] = True

        def parse(raw: Any) -> list[str]:
            if not isinstance(raw, dict) or raw.get("success") is False:
                raise ShapeError("expected {success: true, requestIds: [...]}")
            request_ids = raw.get("requestIds")
            if not isinstance(request_ids, list) or not request_ids:
                raise ShapeError("no requestIds in the answer")
            out = [_text(r) for r in request_ids]
            if any(r is None for r in out):
                raise ShapeError("a requestId is not text")
            return [r for r in out if r is not None]

        path = f"/{k}/research"
        call = Call(_OPS[k][1], "POST", path, path, RequestKind.PAID, json_body=body)
        reply = await self._http.send(call, parse, deadline=deadline)
        expected = len(ids) + len(targets)
        if len(reply.value) != expected:
            # One requestId per target is the contract; any other count cannot be trusted
            # (a 202 with 100,000 ids for one target was once taken as 100,000 jobs).
            cause = AbsurdAnswer(
                f"Seamless POST {path}: HTTP {reply.status} with {len(reply.value)} requestIds "
                f"for {expected} target(s)",
                sample=reply.value,
                count=len(reply.value),
                expected=expected,
                provider="seamless",
                operation=call.operation,
                method="POST",
                path=path,
                status=reply.status,
                hints=reply.hints,
                request_id=reply.request_id,
            )
            raise OutcomeUnknown(
                f"{cause.message}: not trusted, outcome unknown",
                provider="seamless",
                cause=cause,
            )
        credits = reply.hints.credits if reply.hints.credits is not None else self.credits
        return ResearchAccepted(kind=k, request_ids=reply.value, credits=credits)

    async def poll(
        self, kind: SeamlessKind, request_ids: Sequence[str], *, deadline: float | None = None
    ) -> list[PollItem]:
        """The state of many research requests: one call per 100 ids (`requestIds=a,b`).

        Items are returned as the API sends them: unknown statuses verbatim, items without a
        `requestId` dropped, ids the API did not mention simply absent.
        """
        k = _kind(kind)
        unique = list(dict.fromkeys(i for i in (s.strip() for s in request_ids) if i))
        record_key = "contact" if k == "contacts" else "company"

        def parse(raw: Any) -> list[PollItem]:
            items: list[PollItem] = []
            for item in _data_list(raw):
                request_id = _text(item.get("requestId"))
                if request_id is None:
                    continue
                record = item.get(record_key)
                extra = item.get("additionalData")
                # Every field is checked above, so construct without validating: validation
                # would copy each ~100-field record, and a round of 100 finished targets is
                # held by every job's waiters until they fold it.
                items.append(
                    PollItem.model_construct(
                        request_id=request_id,
                        status=_text(item.get("status")) or "unknown",
                        search_result_id=_text(item.get("searchResultId")),
                        message=_text(item.get("message")),
                        record=record if isinstance(record, dict) else None,
                        additional_data=extra if isinstance(extra, dict) and extra else None,
                    )
                )
            return items

        template = f"/{k}/research/poll"
        out: list[PollItem] = []
        for start in range(0, len(unique), MAX_POLL_IDS):
            chunk = unique[start : start + MAX_POLL_IDS]
            # Commas kept literal, as documented; each id percent-encoded on its own.
            query = ",".join(quote(i, safe="") for i in chunk)
            call = Call(
                _OPS[k][2], "GET", f"{template}?requestIds={query}", template, RequestKind.READ
            )
            out.extend((await self._http.send(call, parse, deadline=deadline)).value)
        return out

    async def get_records(
        self,
        kind: SeamlessKind,
        *,
        start_date: str | date | datetime,
        end_date: str | date | datetime,
        page: int = 1,
        limit: int = 500,
        deadline: float | None = None,
    ) -> RecordsPage:
        """The org's researched records finished in [start_date, end_date] (free)."""
        k = _kind(kind)

        def parse(raw: Any) -> RecordsPage:
            items = _data_list(raw)
            # No paging metadata is published: a full page may have a next one.
            return RecordsPage(
                kind=k,
                items=items,
                page=page,
                limit=limit,
                total=None,
                is_more=len(items) >= limit,
            )

        params = {
            "startDate": _moment(start_date, end=False),
            "endDate": _moment(end_date, end=True),
            "page": str(page),
            "limit": str(limit),
        }
        call = Call(_OPS[k][3], "GET", f"/{k}", f"/{k}", RequestKind.READ, params=params)
        return (await self._http.send(call, parse, deadline=deadline)).value
