"""What AgentSEO's settings mean (DESIGN.md section 1): its key variable and base URL (its
plan, `AGENTSEO_PLAN`, seeds its rate limits: `limits.py`). Registered with the provider."""

from __future__ import annotations

from pydantic import SecretStr

from mcp_server.config import ProviderSettings, Settings

__all__ = ["SETTINGS"]


def _api_key(settings: Settings) -> SecretStr | None:
    return settings.agentseo_api_key


def _base_url(settings: Settings) -> str:
    return settings.agentseo_base_url


SETTINGS = ProviderSettings(key_env="AGENTSEO_API_KEY", api_key=_api_key, base_url=_base_url)
"""AgentSEO's settings: `AGENTSEO_API_KEY`, `AGENTSEO_BASE_URL`."""
