"""The provider tables advice knows, and the lookups built from their rows.

`register_provider_advice` adds a provider's `ProviderAdvice` table; a provider's own table is
registered with the provider (`JobProvider.advice`, by `providers.registry`), so this package
names no provider. Every lookup (HTTP status and code, code alone, job status, route, budget)
goes through the indices rebuilt here, so a table registered later is found like a built-in one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from mcp_server.advice.catalogue import GENERIC_ROWS
from mcp_server.advice.table import CatalogueRow, ProviderAdvice

__all__ = [
    "CATALOGUE",
    "code_key",
    "code_owner",
    "http_key",
    "job_key",
    "norm_code",
    "paid_tool",
    "provider_advice",
    "provider_names",
    "rate_key",
    "register_provider_advice",
    "route",
    "rows_of",
    "service_name",
    "unregister_provider_advice",
]

_tables: dict[str, ProviderAdvice] = {}
_catalogue: dict[str, CatalogueRow] = {}

CATALOGUE: Final[Mapping[str, CatalogueRow]] = MappingProxyType(_catalogue)
"""Every row by key (registered providers' rows, then the generic ones); read-only."""

_UNKNOWN_SERVICE: Final = "the upstream API"


def norm_code(code: str) -> str:
    """`insufficientCredits`, `INSUFFICIENT_CREDITS` and `insufficient-credits` are one code."""
    return code.replace("_", "").replace("-", "").replace(" ", "").lower()


@dataclass(slots=True)
class _Index:
    """Lookup tables over the rows, rebuilt whenever a table is registered or removed."""

    http: dict[tuple[str | None, int | str, str | None], str] = field(default_factory=dict)
    codes: dict[tuple[str | None, str], str] = field(default_factory=dict)
    """Upstream codes and jobrelay's own codes, for `explain_error(code=...)` alone."""
    jobs: dict[tuple[str | None, str], str] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    """Upstream codes that identify their provider even when the caller did not say which."""

    def add(self, row: CatalogueRow) -> None:
        for status in row.statuses:
            for api_code in row.api_codes:
                self.http.setdefault((row.provider, status, norm_code(api_code)), row.key)
            if not row.api_codes or row.status_default:
                self.http.setdefault((row.provider, status, None), row.key)
        for api_code in row.api_codes:
            self.codes.setdefault((row.provider, norm_code(api_code)), row.key)
            if row.provider is not None:
                self.owners[norm_code(api_code)] = row.provider
        for ours in row.our_codes:
            self.codes.setdefault((row.provider, norm_code(ours.value)), row.key)
        for status in row.job_statuses:
            self.jobs[(row.provider, status)] = row.key


_index = _Index()


def _rebuild() -> None:
    global _index  # noqa: PLW0603  # swapped whole, so a lookup never sees a half-built index
    rows = [*(row for table in _tables.values() for row in table.rows), *GENERIC_ROWS]
    index = _Index()
    for row in rows:
        index.add(row)
    _catalogue.clear()
    _catalogue.update({row.key: row for row in rows})
    _index = index


def register_provider_advice(table: ProviderAdvice) -> None:
    """Make a provider's advice known: its rows, routes, vote clues and body readers.

    Raises `ValueError` when the name is taken, a row belongs to another provider, or a row
    key is already in the catalogue.
    """
    if table.name in _tables:
        raise ValueError(f"provider advice {table.name!r} is already registered")
    for row in table.rows:
        if row.provider != table.name:
            raise ValueError(f"row {row.key!r} belongs to {row.provider!r}, not {table.name!r}")
        if row.key in _catalogue:
            raise ValueError(f"row key {row.key!r} is already in the catalogue")
    _tables[table.name] = table
    _rebuild()


def unregister_provider_advice(name: str) -> None:
    """Forget a provider's advice (tests register a made-up provider and remove it after)."""
    _tables.pop(name, None)
    _rebuild()


def provider_advice(name: str | None) -> ProviderAdvice | None:
    """The registered table for `name`, or `None`."""
    return _tables.get(name) if name is not None else None


def provider_names() -> tuple[str, ...]:
    """Registered providers, in registration order."""
    return tuple(_tables)


def rows_of(provider: str | None) -> list[CatalogueRow]:
    """The rows of one provider (`None`: the generic rows), in catalogue order."""
    return [row for row in _catalogue.values() if row.provider == provider]


def service_name(provider: str | None) -> str:
    """How texts name the provider: `Seamless`, `AgentSEO`, or "the upstream API"."""
    table = provider_advice(provider)
    return table.service if table is not None else _UNKNOWN_SERVICE


def _status_class(status: int) -> str | None:
    return f"{status // 100}xx" if 100 <= status <= 599 else None


def http_key(provider: str | None, status: int, api_code: str | None) -> str:
    """Most specific row first: provider+status+code, provider+status, provider+class, generic."""
    code = norm_code(api_code) if api_code else None
    cls = _status_class(status)
    if cls is None:
        return "generic.unexpected_status"
    candidates: list[tuple[str | None, int | str, str | None]] = []
    for who in (provider, None) if provider is not None else (None,):
        if code is not None:
            candidates.append((who, status, code))
        candidates += [(who, status, None), (who, cls, None)]
    for candidate in candidates:
        if candidate in _index.http:
            return _index.http[candidate]
    return "generic.5xx" if status >= 500 else "generic.4xx"


def code_key(provider: str | None, code: str) -> str | None:
    """The row for a code given alone: the provider's, a generic one, or its owner's."""
    norm = norm_code(code)
    for who in (provider, None):
        if (who, norm) in _index.codes:
            return _index.codes[(who, norm)]
    owner = _index.owners.get(norm)
    return _index.codes.get((owner, norm)) if owner else None


def code_owner(code: str) -> str | None:
    """The provider whose rows name this upstream code, if any."""
    return _index.owners.get(norm_code(code))


def job_key(provider: str | None, status: str) -> str | None:
    """Only the status's own API gives it meaning: AgentSEO `done` is an unknown status."""
    for candidate in ((provider, status), (None, status)):
        if candidate in _index.jobs:
            return _index.jobs[candidate]
    return None


def route(provider: str | None, method: str, path: str) -> str | None:
    """The MCP tool a failing upstream call came from, by the provider's routes."""
    table = provider_advice(provider)
    if table is None:
        return None
    bare = path.split("?", maxsplit=1)[0]
    for candidate in table.routes:
        if candidate.method == method.upper() and candidate.pattern.search(bare):
            return candidate.tool
    return None


def paid_tool(provider: str | None, tool: str | None) -> bool:
    """Whether `tool`'s call spends the provider's credits (an ambiguous failure is unknown)."""
    table = provider_advice(provider)
    return table is not None and tool is not None and tool in table.paid_tools


def rate_key(provider: str | None, budget: str | None, route_tool: str | None) -> str | None:
    """The 429 row of the budget that ran out (e.g. AgentSEO workload vs control), if known."""
    table = provider_advice(provider)
    if table is None:
        return None
    budget = budget or (table.rate_budgets.get(route_tool) if route_tool else None)
    key = f"{table.name}.429.{budget}"
    return key if budget is not None and key in _catalogue else None
