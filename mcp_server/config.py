"""Settings: the one place that reads the environment (DESIGN.md section 1).

`load_settings()` validates once at start and turns pydantic's errors into one readable
message per bad variable, naming the variable and what it accepts.

What a provider's settings mean is the provider's knowledge: each declares a
`ProviderSettings` (its key variable, which credential identifies the account, its base URL,
any variables of its own), registered with it by the provider registry
(`register_provider_settings`); the methods below that take a provider name read those
declarations and name no provider. The built-in providers' own variables are still fields
here (their names are public: DESIGN.md); a provider registered from outside declares its
variables in `ProviderSettings.variables` and reads them with `Settings.variable`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import platformdirs
from pydantic import (
    AliasChoices,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from mcp_server.errors import ConfigError
from mcp_server.models import Provider

DEFAULT_SEAMLESS_BASE_URL = "https://api.seamless.ai/api/client/v1"
DEFAULT_AGENTSEO_BASE_URL = "https://www.agentseo.dev/api/v1"


class Plan(StrEnum):
    HOBBY = "hobby"
    STARTER = "starter"
    PRO = "pro"
    AGENCY = "agency"


#: AgentSEO per-key budgets per minute: (workload, control). UPSTREAMS.md section 2.
PLAN_BUDGETS: dict[Plan, tuple[int, int]] = {
    Plan.HOBBY: (60, 600),
    Plan.STARTER: (120, 1200),
    Plan.PRO: (300, 3000),
    Plan.AGENCY: (1000, 10000),
}

POSTGRES_URL_SCHEMES = ("postgresql://", "postgres://")
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")

SandboxMode = Literal["auto", "on", "off"]
SeamlessAuthKind = Literal["api_key", "access_token", "oauth_refresh"]


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("jobrelay", appauthor=False)) / "jobs.sqlite3"


def key_fingerprint(key: str | SecretStr | None) -> str:
    """A short, stable, non-reversible id for an API key: partitions jobs and buckets by key."""
    raw = key.get_secret_value() if isinstance(key, SecretStr) else (key or "")
    if not raw:
        return "nokey"
    return "k_" + hashlib.sha256(raw.encode()).hexdigest()[:12]


def _alias(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Everything jobrelay reads from the environment. Secrets are `SecretStr`."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True
    )

    seamless_api_key: SecretStr | None = Field(None, validation_alias=_alias("SEAMLESS_API_KEY"))
    seamless_access_token: SecretStr | None = Field(
        None, validation_alias=_alias("SEAMLESS_ACCESS_TOKEN")
    )
    seamless_oauth_client_id: str | None = Field(
        None, validation_alias=_alias("SEAMLESS_OAUTH_CLIENT_ID")
    )
    seamless_oauth_client_secret: SecretStr | None = Field(
        None, validation_alias=_alias("SEAMLESS_OAUTH_CLIENT_SECRET")
    )
    seamless_oauth_refresh_token: SecretStr | None = Field(
        None, validation_alias=_alias("SEAMLESS_OAUTH_REFRESH_TOKEN")
    )
    seamless_oauth_redirect_uri: str | None = Field(
        None, validation_alias=_alias("SEAMLESS_OAUTH_REDIRECT_URI")
    )
    seamless_base_url: str = Field(
        DEFAULT_SEAMLESS_BASE_URL, validation_alias=_alias("SEAMLESS_BASE_URL")
    )
    agentseo_api_key: SecretStr | None = Field(None, validation_alias=_alias("AGENTSEO_API_KEY"))
    agentseo_base_url: str = Field(
        DEFAULT_AGENTSEO_BASE_URL, validation_alias=_alias("AGENTSEO_BASE_URL")
    )
    agentseo_plan: Plan = Field(Plan.HOBBY, validation_alias=_alias("AGENTSEO_PLAN"))
    sandbox: SandboxMode = Field("auto", validation_alias=_alias("JOBRELAY_SANDBOX"))
    db_path: Path = Field(default_factory=default_db_path, validation_alias=_alias("JOBRELAY_DB"))
    max_wait_seconds: float = Field(
        45.0, gt=0, le=3600, validation_alias=_alias("JOBRELAY_MAX_WAIT_SECONDS")
    )
    retry_max_attempts: int = Field(
        3, ge=1, le=10, validation_alias=_alias("JOBRELAY_RETRY_MAX_ATTEMPTS")
    )
    credit_budget: int | None = Field(None, ge=0, validation_alias=_alias("JOBRELAY_CREDIT_BUDGET"))
    http_token: SecretStr | None = Field(None, validation_alias=_alias("JOBRELAY_HTTP_TOKEN"))
    redis_url: SecretStr | None = Field(None, validation_alias=_alias("JOBRELAY_REDIS_URL"))
    metrics: bool = Field(False, validation_alias=_alias("JOBRELAY_METRICS"))
    log_format: Literal["text", "json"] = Field(
        "text", validation_alias=_alias("JOBRELAY_LOG_FORMAT")
    )
    seamless_webhook_secret: SecretStr | None = Field(
        None, validation_alias=_alias("SEAMLESS_WEBHOOK_SECRET")
    )
    _db_url: SecretStr | None = PrivateAttr(None)
    _variables: dict[str, str] = PrivateAttr(default_factory=dict)
    """Registered providers' own variables (`ProviderSettings.variables`), set ones only."""

    @model_validator(mode="wrap")
    @classmethod
    def _postgres_db(cls, data: object, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        """`JOBRELAY_DB=postgresql://...` names a PostgreSQL ledger, not a file: kept aside as
        `db_url` (a secret: it may hold a password), and `db_path` keeps its default. The
        registered providers' own variables are kept aside too (`variable`)."""
        url: str | None = None
        if isinstance(data, Mapping):
            for name, value in data.items():
                if str(name).lower() not in {"jobrelay_db", "db_path"} or not isinstance(
                    value, str
                ):
                    continue
                if value.strip().lower().startswith(POSTGRES_URL_SCHEMES):
                    url = value.strip()
                    data = {k: v for k, v in data.items() if k != name}
                    break
        own = _own_variables(data) if isinstance(data, Mapping) else {}
        settings = handler(data)
        settings._db_url = None if url is None else SecretStr(url)
        settings._variables = own
        return settings

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset_everywhere(cls, data: object) -> object:
        """An empty (or all-blank) value counts as unset for every setting: MCP bundles and
        launchers send "" for a cleared field, and `JOBRELAY_DB=""` must not become "."."""
        if isinstance(data, Mapping):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
        return data

    @field_validator(
        "seamless_api_key",
        "agentseo_api_key",
        "http_token",
        "seamless_access_token",
        "seamless_oauth_client_id",
        "seamless_oauth_client_secret",
        "seamless_oauth_refresh_token",
        "seamless_oauth_redirect_uri",
        "redis_url",
        "seamless_webhook_secret",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("credit_budget", mode="before")
    @classmethod
    def _blank_budget_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("sandbox", mode="before")
    @classmethod
    def _sandbox_mode(cls, value: object) -> object:
        if value is None:
            return "auto"
        text = str(value).strip().lower()
        if text in {"", "auto"}:
            return "auto"
        if text in {"1", "true", "yes", "on"}:
            return "on"
        if text in {"0", "false", "no", "off"}:
            return "off"
        return value  # rejected by the Literal with the allowed values

    @field_validator("agentseo_plan", mode="before")
    @classmethod
    def _plan_lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("seamless_base_url", "agentseo_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().lower().startswith(REDIS_URL_SCHEMES):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @property
    def db_url(self) -> SecretStr | None:
        """The PostgreSQL URL when JOBRELAY_DB is one (the ledger then lives there), else None."""
        return self._db_url

    @model_validator(mode="after")
    def _oauth_complete(self) -> Settings:
        """The refresh flow needs all four of its variables; name the missing ones."""
        parts = {
            "SEAMLESS_OAUTH_CLIENT_ID": self.seamless_oauth_client_id,
            "SEAMLESS_OAUTH_CLIENT_SECRET": self.seamless_oauth_client_secret,
            "SEAMLESS_OAUTH_REFRESH_TOKEN": self.seamless_oauth_refresh_token,
            "SEAMLESS_OAUTH_REDIRECT_URI": self.seamless_oauth_redirect_uri,
        }
        given = [k for k, v in parts.items() if v is not None]
        if given and len(given) < len(parts):
            missing = ", ".join(k for k in parts if k not in given)
            raise ValueError(
                f"Seamless OAuth refresh needs {', '.join(parts)} together; missing: {missing}"
            )
        return self

    @property
    def seamless_auth(self) -> SeamlessAuthKind | None:
        """Which Seamless credential is used: the API key wins, then an access token, then the
        OAuth refresh flow (one kind per request, never two)."""
        if self.seamless_api_key is not None:
            return "api_key"
        if self.seamless_access_token is not None:
            return "access_token"
        if self.seamless_oauth_refresh_token is not None:
            return "oauth_refresh"
        return None

    def variable(self, name: str) -> str | None:
        """A registered provider's own variable (`ProviderSettings.variables`), stripped;
        None when unset or blank."""
        return self._variables.get(name.upper())

    def api_key(self, provider: Provider) -> SecretStr | None:
        """The credential that identifies the account (its fingerprint partitions the ledger),
        as the provider declares it (`ProviderSettings.api_key`)."""
        return provider_settings(provider).api_key(self)

    def base_url(self, provider: Provider) -> str:
        return provider_settings(provider).base_url(self)

    def uses_sandbox(self, provider: Provider) -> bool:
        """True when `provider` is served by the embedded sandbox rather than its base URL."""
        if self.sandbox == "on":
            return True
        if self.sandbox == "off":
            return False
        return self.api_key(provider) is None

    def missing_key(self, provider: Provider) -> str | None:
        """Why `provider` cannot work at all (JOBRELAY_SANDBOX=0 and no key), else None.

        `jobrelay serve` refuses to start on it and `jobrelay doctor` reports it, same words.
        """
        if self.uses_sandbox(provider) or self.api_key(provider) is not None:
            return None
        key_var = provider_settings(provider).key_env
        return (
            f"{key_var} is not set and JOBRELAY_SANDBOX=0 turns the sandbox off. "
            f"Fix: set {key_var}, or unset JOBRELAY_SANDBOX to use the sandbox."
        )

    def sandbox_reason(self, provider: Provider) -> str | None:
        """Why the embedded sandbox serves `provider` (`no SEAMLESS_API_KEY`), else None."""
        if not self.uses_sandbox(provider):
            return None
        if self.sandbox == "on":
            return "JOBRELAY_SANDBOX=1 or --sandbox"
        return f"no {provider_settings(provider).key_env}"

    @property
    def agentseo_budgets(self) -> tuple[int, int]:
        """(workload, control) requests per minute for the configured plan."""
        return PLAN_BUDGETS[self.agentseo_plan]


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """What a provider's settings mean, declared by the provider (`JobProvider.settings`) and
    registered with it: config reads it and names no provider."""

    key_env: str
    """The variable that holds its API key, e.g. `SEAMLESS_API_KEY`: named in the texts when
    it is missing (`missing_key`, `sandbox_reason`)."""
    api_key: Callable[[Settings], SecretStr | None]
    """The credential that identifies the account (its fingerprint partitions the ledger)."""
    base_url: Callable[[Settings], str]
    variables: tuple[str, ...] = ()
    """Variables of its own that `Settings` has no field for (upper case), read with
    `Settings.variable`; register the provider before loading the settings."""


_PROVIDER_SETTINGS: dict[Provider, ProviderSettings] = {}


def register_provider_settings(provider: Provider, declared: ProviderSettings) -> None:
    """`provider`'s settings mean what `declared` says (called by the provider registry)."""
    _PROVIDER_SETTINGS[provider] = declared


def unregister_provider_settings(provider: Provider) -> None:
    _PROVIDER_SETTINGS.pop(provider, None)


def provider_settings(provider: Provider) -> ProviderSettings:
    """The registered `ProviderSettings` of `provider`; LookupError naming the fix if none."""
    try:
        return _PROVIDER_SETTINGS[provider]
    except KeyError:
        raise LookupError(
            f"no settings registered for provider {provider!r} "
            "(providers register theirs through mcp_server.providers.registry)"
        ) from None


def _provider_variables() -> set[str]:
    return {v.upper() for d in _PROVIDER_SETTINGS.values() for v in d.variables}


def _own_variables(data: Mapping[Any, object]) -> dict[str, str]:
    """The registered providers' own variables in `data` (any case), stripped; blank = unset."""
    wanted = _provider_variables()
    own: dict[str, str] = {}
    for name, value in data.items():
        upper = str(name).upper()
        if upper in wanted and isinstance(value, str) and value.strip():
            own[upper] = value.strip()
    return own


_ENV_NAMES = {
    "seamless_api_key": "SEAMLESS_API_KEY",
    "seamless_base_url": "SEAMLESS_BASE_URL",
    "agentseo_api_key": "AGENTSEO_API_KEY",
    "agentseo_base_url": "AGENTSEO_BASE_URL",
    "agentseo_plan": "AGENTSEO_PLAN",
    "sandbox": "JOBRELAY_SANDBOX",
    "db_path": "JOBRELAY_DB",
    "max_wait_seconds": "JOBRELAY_MAX_WAIT_SECONDS",
    "retry_max_attempts": "JOBRELAY_RETRY_MAX_ATTEMPTS",
    "credit_budget": "JOBRELAY_CREDIT_BUDGET",
    "http_token": "JOBRELAY_HTTP_TOKEN",
    "redis_url": "JOBRELAY_REDIS_URL",
    "seamless_access_token": "SEAMLESS_ACCESS_TOKEN",
    "seamless_oauth_client_id": "SEAMLESS_OAUTH_CLIENT_ID",
    "seamless_oauth_client_secret": "SEAMLESS_OAUTH_CLIENT_SECRET",
    "seamless_oauth_refresh_token": "SEAMLESS_OAUTH_REFRESH_TOKEN",
    "seamless_oauth_redirect_uri": "SEAMLESS_OAUTH_REDIRECT_URI",
    "metrics": "JOBRELAY_METRICS",
    "log_format": "JOBRELAY_LOG_FORMAT",
    "seamless_webhook_secret": "SEAMLESS_WEBHOOK_SECRET",
}

_FIELD_BY_ENV = {env: field for field, env in _ENV_NAMES.items()}

_SECRET_FIELDS = {
    "seamless_api_key",
    "agentseo_api_key",
    "http_token",
    "redis_url",
    "seamless_access_token",
    "seamless_oauth_client_secret",
    "seamless_oauth_refresh_token",
    "seamless_webhook_secret",
}


def _describe(error: Mapping[str, object]) -> str:
    if not error.get("loc"):  # a whole-settings check (e.g. OAuth variables that go together)
        return str(error.get("msg", "invalid settings")).removeprefix("Value error, ") + "."
    loc = error.get("loc") or ("?",)
    field = str(loc[0]).lower() if isinstance(loc, tuple) and loc else "?"
    field = _FIELD_BY_ENV.get(field.upper(), field)
    env = _ENV_NAMES.get(field, field.upper())
    kind = str(error.get("type", ""))
    msg = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    value = error.get("input")
    shown = "<hidden>" if field in _SECRET_FIELDS else repr(value)
    if field == "agentseo_plan":
        msg = "allowed values are " + ", ".join(p.value for p in Plan)
    elif field == "sandbox":
        msg = "allowed values are auto, 1 (force the sandbox) and 0 (never)"
    elif kind.startswith(("int_", "float_")) or "greater" in kind or "less" in kind:
        msg = msg[0].lower() + msg[1:]
    return f"{env}={shown} is not valid: {msg}."


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment once. Raise `ConfigError` naming each bad variable.

    `env`, when given, replaces the process environment (tests, subprocess launchers).
    """
    try:
        if env is None:  # the fields from the environment; the providers' own variables too
            settings = Settings()
            settings._variables = _own_variables(os.environ)
            return settings
        known = _provider_variables() | set(_ENV_NAMES.values())
        data = {k.lower(): v for k, v in env.items() if k.upper() in known}
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        raise ConfigError("Invalid configuration:\n  " + "\n  ".join(lines)) from None


def url_for_display(url: str) -> str:
    """`url` with any password replaced by `***`: safe in logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
