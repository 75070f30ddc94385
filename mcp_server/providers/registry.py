"""The providers jobrelay knows: the built-in two and any a deployment registers.

The one place the core learns which providers exist. `register_provider` is the public
extension point (tests/test_third_provider.py registers a provider that lives only in the
tests); `default_registry()` holds Seamless.ai and AgentSEO from first use. A provider's advice
table (`JobProvider.advice`) is registered with it in the process-wide registry, so the advice
catalogue knows exactly the providers the server does.

Routing: `start_research` goes to the one provider of kind `research`; `start_seo_job` to the
provider of kind `seo` that lists the workflow. A handle goes to the provider whose prefix it
carries; a raw upstream id is looked up under every provider.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from mcp_server.advice import register_provider_advice, unregister_provider_advice
from mcp_server.config import (
    before_load,
    register_provider_settings,
    unregister_provider_settings,
)
from mcp_server.errors import InputProblem
from mcp_server.ledger import (
    register_credit_budget,
    register_job_id_prefix,
    unregister_credit_budget,
    unregister_job_id_prefix,
)
from mcp_server.limits import register_rate_limits, unregister_rate_limits
from mcp_server.providers.base import JobKind, JobProvider

__all__ = [
    "ProviderRegistry",
    "default_registry",
    "register_provider",
    "registered",
    "unregister_provider",
]

_NAME = re.compile(r"^[a-z][a-z0-9]{1,19}$")
_PREFIX = re.compile(r"^[a-z]{2,4}_$")


class ProviderRegistry:
    """Registered providers in registration order; names, prefixes and workflows unique."""

    def __init__(self) -> None:
        self._providers: dict[str, JobProvider] = {}

    def register(self, provider: JobProvider) -> None:
        """Add a provider. Refuses a clash (name, handle prefix, research kind, workflow)."""
        if not _NAME.match(provider.name):
            raise ValueError(f"provider name {provider.name!r}: 2-20 lower-case letters/digits")
        if not _PREFIX.match(provider.id_prefix):
            raise ValueError(f"id_prefix {provider.id_prefix!r}: 2-4 lower-case letters and _")
        for other in self._providers.values():
            if other.name == provider.name:
                raise ValueError(f"provider {provider.name!r} is already registered")
            if other.id_prefix == provider.id_prefix:
                raise ValueError(f"id_prefix {provider.id_prefix!r} is {other.name}'s")
            if provider.kind == "research" and other.kind == "research":
                raise ValueError(f"{other.name} already serves start_research")
            shared = set(provider.workflows) & set(other.workflows)
            if shared:
                raise ValueError(f"workflow(s) {sorted(shared)} already served by {other.name}")
        register_job_id_prefix(provider.name, provider.id_prefix)
        register_rate_limits(provider.name, provider.rate_limits)
        register_provider_settings(provider.name, provider.settings)
        if provider.paid_per_target:  # its credits count against JOBRELAY_CREDIT_BUDGET
            register_credit_budget(provider.name)
        self._providers[provider.name] = provider

    def unregister(self, name: str) -> None:
        if self._providers.pop(name, None) is not None:
            unregister_job_id_prefix(name)
            unregister_rate_limits(name)
            unregister_provider_settings(name)
            unregister_credit_budget(name)

    def __iter__(self) -> Iterator[JobProvider]:
        return iter(list(self._providers.values()))

    def names(self) -> list[str]:
        return list(self._providers)

    def get(self, name: str) -> JobProvider:
        try:
            return self._providers[name]
        except KeyError:
            raise LookupError(f"no provider {name!r} is registered") from None

    def of_kind(self, kind: JobKind) -> list[JobProvider]:
        return [p for p in self._providers.values() if p.kind == kind]

    def research(self) -> JobProvider:
        found = self.of_kind("research")
        if not found:
            raise InputProblem("No research provider is configured.", field="kind")
        return found[0]

    def workflows(self) -> tuple[str, ...]:
        """Every workflow `start_seo_job` accepts, in registration order."""
        return tuple(w for p in self.of_kind("seo") for w in p.workflows)

    def for_workflow(self, workflow: str) -> JobProvider | None:
        for p in self.of_kind("seo"):
            if workflow in p.workflows:
                return p
        return None

    def for_handle(self, value: str) -> list[JobProvider]:
        """The provider a handle names by its prefix; every provider for anything else."""
        for p in self._providers.values():
            if value.startswith(p.id_prefix):
                return [p]
        return list(self._providers.values())


_DEFAULT: list[ProviderRegistry] = []


def default_registry() -> ProviderRegistry:
    """The process-wide registry: Seamless.ai and AgentSEO, then whatever was registered."""
    if not _DEFAULT:
        from mcp_server.providers.agentseo import AgentSEOProvider
        from mcp_server.providers.seamless import SeamlessProvider

        registry = ProviderRegistry()
        _DEFAULT.append(registry)
        _add(registry, SeamlessProvider())
        _add(registry, AgentSEOProvider())
    return _DEFAULT[0]


before_load(default_registry)  # the built-in providers' settings are read with jobrelay's


def _add(registry: ProviderRegistry, provider: JobProvider) -> None:
    registry.register(provider)
    if provider.advice is not None:
        try:
            register_provider_advice(provider.advice)
        except ValueError:
            registry.unregister(provider.name)
            raise


def register_provider(provider: JobProvider) -> None:
    """Make `provider` (and its advice table) available to every server built afterwards
    (`build_server`)."""
    _add(default_registry(), provider)


def unregister_provider(name: str) -> None:
    """Forget a registered provider and its advice table."""
    default_registry().unregister(name)
    unregister_provider_advice(name)


@contextmanager
def registered(provider: JobProvider) -> Iterator[JobProvider]:
    """`provider` registered for the duration of the block (tests, embedding)."""
    register_provider(provider)
    try:
        yield provider
    finally:
        unregister_provider(provider.name)
