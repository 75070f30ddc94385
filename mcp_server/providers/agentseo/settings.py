"""What AgentSEO's settings mean (DESIGN.md section 1): its variables (`AgentSEOSettings`:
`AGENTSEO_API_KEY`, `AGENTSEO_BASE_URL`, `AGENTSEO_PLAN`, whose plan seeds its rate limits:
`limits.py`), its key variable and base URL. Registered with the provider."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from mcp_server.config import ProviderModel, ProviderSettings, Settings, http_url
from mcp_server.upstream.agentseo import PLAN_BUDGETS, Plan

__all__ = ["DEFAULT_BASE_URL", "SETTINGS", "AgentSEOSettings"]

DEFAULT_BASE_URL = "https://www.agentseo.dev/api/v1"


class AgentSEOSettings(ProviderModel):
    """AgentSEO's variables (`settings.of(AgentSEOSettings)`)."""

    api_key: SecretStr | None = Field(None, validation_alias="AGENTSEO_API_KEY")
    base_url: str = Field(DEFAULT_BASE_URL, validation_alias="AGENTSEO_BASE_URL")
    plan: Plan = Field(Plan.HOBBY, validation_alias="AGENTSEO_PLAN")

    @field_validator("api_key", mode="before")
    @classmethod
    def _stripped(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    @field_validator("plan", mode="before")
    @classmethod
    def _plan_lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @property
    def budgets(self) -> tuple[int, int]:
        """(workload, control) requests per minute for the configured plan."""
        return PLAN_BUDGETS[self.plan]


def _api_key(settings: Settings) -> SecretStr | None:
    return settings.of(AgentSEOSettings).api_key


def _base_url(settings: Settings) -> str:
    return settings.of(AgentSEOSettings).base_url


def _summary(settings: Settings) -> str:
    own = settings.of(AgentSEOSettings)
    workload, control = own.budgets
    return (
        f"plan {own.plan.value} (AGENTSEO_PLAN): {workload} workload and "
        f"{control} control requests/min"
    )


SETTINGS = ProviderSettings(
    key_env="AGENTSEO_API_KEY",
    api_key=_api_key,
    base_url=_base_url,
    model=AgentSEOSettings,
    summary=_summary,
)
"""AgentSEO's settings: `AGENTSEO_API_KEY`, `AGENTSEO_BASE_URL`, `AGENTSEO_PLAN`."""
