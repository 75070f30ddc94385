"""What Seamless.ai's settings mean (DESIGN.md section 1): its variables (`SeamlessSettings`:
the API key, or an access token, or the OAuth refresh flow; the base URL; the webhook
secret), which credential
identifies the account, its key variable. Registered with the provider
(`JobProvider.settings`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from mcp_server.config import ProviderModel, ProviderSettings, Settings, http_url
from mcp_server.providers.seamless.limits import RATE_LIMITS
from mcp_server.redact import mask_secret

__all__ = ["DEFAULT_BASE_URL", "SETTINGS", "SeamlessAuthKind", "SeamlessSettings"]

DEFAULT_BASE_URL = "https://api.seamless.ai/api/client/v1"

SeamlessAuthKind = Literal["api_key", "access_token", "oauth_refresh"]

_OAUTH = (
    "SEAMLESS_OAUTH_CLIENT_ID",
    "SEAMLESS_OAUTH_CLIENT_SECRET",
    "SEAMLESS_OAUTH_REFRESH_TOKEN",
    "SEAMLESS_OAUTH_REDIRECT_URI",
)


class SeamlessSettings(ProviderModel):
    """Seamless.ai's variables (`settings.of(SeamlessSettings)`)."""

    api_key: SecretStr | None = Field(None, validation_alias="SEAMLESS_API_KEY")
    base_url: str = Field(DEFAULT_BASE_URL, validation_alias="SEAMLESS_BASE_URL")
    access_token: SecretStr | None = Field(None, validation_alias="SEAMLESS_ACCESS_TOKEN")
    oauth_client_id: str | None = Field(None, validation_alias="SEAMLESS_OAUTH_CLIENT_ID")
    oauth_client_secret: SecretStr | None = Field(
        None, validation_alias="SEAMLESS_OAUTH_CLIENT_SECRET"
    )
    oauth_refresh_token: SecretStr | None = Field(
        None, validation_alias="SEAMLESS_OAUTH_REFRESH_TOKEN"
    )
    oauth_redirect_uri: str | None = Field(None, validation_alias="SEAMLESS_OAUTH_REDIRECT_URI")
    webhook_secret: SecretStr | None = Field(None, validation_alias="SEAMLESS_WEBHOOK_SECRET")
    """The shared secret of research deliveries (`x-seamless-webhook-secret`, issue 18): with
    it, the HTTP transport serves `POST /webhooks/seamless`."""

    @field_validator(
        "api_key",
        "access_token",
        "oauth_client_id",
        "oauth_client_secret",
        "oauth_refresh_token",
        "oauth_redirect_uri",
        "webhook_secret",
        mode="before",
    )
    @classmethod
    def _stripped(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @model_validator(mode="after")
    def _oauth_complete(self) -> SeamlessSettings:
        """The refresh flow needs all four of its variables; name the missing ones."""
        parts = (
            self.oauth_client_id,
            self.oauth_client_secret,
            self.oauth_refresh_token,
            self.oauth_redirect_uri,
        )
        given = [name for name, value in zip(_OAUTH, parts, strict=True) if value is not None]
        if given and len(given) < len(_OAUTH):
            missing = ", ".join(k for k in _OAUTH if k not in given)
            raise ValueError(
                f"Seamless OAuth refresh needs {', '.join(_OAUTH)} together; missing: {missing}"
            )
        return self

    @property
    def auth(self) -> SeamlessAuthKind | None:
        """Which credential is used: the API key wins, then an access token, then the OAuth
        refresh flow (one kind per request, never two)."""
        if self.api_key is not None:
            return "api_key"
        if self.access_token is not None:
            return "access_token"
        if self.oauth_refresh_token is not None:
            return "oauth_refresh"
        return None


def _account_key(settings: Settings) -> SecretStr | None:
    """The credential that identifies the account (its fingerprint partitions the ledger):
    for Seamless OAuth the access token, or the OAuth client id (stable across refreshes)."""
    own = settings.of(SeamlessSettings)
    if own.auth == "access_token":
        return own.access_token
    if own.auth == "oauth_refresh":
        return SecretStr(f"oauth-client:{own.oauth_client_id}")
    return own.api_key


def _base_url(settings: Settings) -> str:
    return settings.of(SeamlessSettings).base_url


def _credential(settings: Settings, fingerprint: str) -> list[str]:
    """`jobrelay doctor`'s lines on the credential in use, without showing any secret."""
    own = settings.of(SeamlessSettings)
    if own.auth == "api_key":
        return [
            f"key: {mask_secret(own.api_key)}, fingerprint {fingerprint}",
            "auth: API key (Token header)",
        ]
    if own.auth == "access_token" and own.access_token:
        line = (
            "auth: OAuth access token (SEAMLESS_ACCESS_TOKEN, Authorization: Bearer "
            f"{mask_secret(own.access_token)}); it is not refreshed"
        )
    else:
        line = (
            f"auth: OAuth client {own.oauth_client_id} with a refresh token "
            "(SEAMLESS_OAUTH_*): access tokens from POST /oauth/accessToken, refreshed before "
            "expiry and once after a 401"
        )
    return [f"{line}, fingerprint {fingerprint}"]


def _summary(settings: Settings) -> str:
    per_endpoint = RATE_LIMITS.spec(RATE_LIMITS.route("POST", "/contacts/research"), settings)
    return f"rate limit: {per_endpoint.limit} requests/min per endpoint, shared by the whole org"


SETTINGS = ProviderSettings(
    key_env="SEAMLESS_API_KEY",
    api_key=_account_key,
    base_url=_base_url,
    model=SeamlessSettings,
    credential=_credential,
    summary=_summary,
)
"""Seamless's settings: `SEAMLESS_API_KEY` (or an access token, or the OAuth refresh flow),
`SEAMLESS_BASE_URL`."""
