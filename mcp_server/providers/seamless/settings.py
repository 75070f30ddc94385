"""What Seamless.ai's settings mean (DESIGN.md section 1): its key variable, which credential
identifies the account, its base URL. Registered with the provider (`JobProvider.settings`)."""

from __future__ import annotations

from pydantic import SecretStr

from mcp_server.config import ProviderSettings, Settings

__all__ = ["SETTINGS"]


def _account_key(settings: Settings) -> SecretStr | None:
    """The credential that identifies the account (its fingerprint partitions the ledger):
    for Seamless OAuth the access token, or the OAuth client id (stable across refreshes)."""
    kind = settings.seamless_auth
    if kind == "access_token":
        return settings.seamless_access_token
    if kind == "oauth_refresh":
        return SecretStr(f"oauth-client:{settings.seamless_oauth_client_id}")
    return settings.seamless_api_key


def _base_url(settings: Settings) -> str:
    return settings.seamless_base_url


SETTINGS = ProviderSettings(key_env="SEAMLESS_API_KEY", api_key=_account_key, base_url=_base_url)
"""Seamless's settings: `SEAMLESS_API_KEY` (or an access token, or the OAuth refresh flow)."""
