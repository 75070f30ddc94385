"""Settings: the one place that reads the environment (DESIGN.md section 1).

`load_settings()` validates once at start and turns pydantic's errors into one readable
message per bad variable, naming the variable and what it accepts.

What a provider's settings mean is the provider's knowledge: each declares a
`ProviderSettings` (its key variable, which credential identifies the account, its base URL,
any variables of its own), registered with it by the provider registry
(`register_provider_settings`); the methods below that take a provider name read those
declarations and name no provider. A provider's own variables are its `ProviderModel`
(`ProviderSettings.model`: typed fields, validators, read with `Settings.of`; the built-in
providers' variable names are public: DESIGN.md), or plain strings it lists in
`ProviderSettings.variables` and reads with `Settings.variable`. `Settings` holds jobrelay's
own variables only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self, TypeVar, get_args
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from mcp_server.errors import ConfigError
from mcp_server.models import Provider

POSTGRES_URL_SCHEMES = ("postgresql://", "postgres://")
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")

SandboxMode = Literal["auto", "on", "off"]


def default_db_path() -> Path:
    import platformdirs  # only when JOBRELAY_DB is unset (~0.4 MB of imports otherwise)

    return Path(platformdirs.user_data_dir("jobrelay", appauthor=False)) / "jobs.sqlite3"


def key_fingerprint(key: str | SecretStr | None) -> str:
    """A short, stable, non-reversible id for an API key: partitions jobs and buckets by key."""
    raw = key.get_secret_value() if isinstance(key, SecretStr) else (key or "")
    if not raw:
        return "nokey"
    return "k_" + hashlib.sha256(raw.encode()).hexdigest()[:12]


def _alias(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class ProviderModel(BaseModel):
    """A provider's own settings, declared by the provider (`ProviderSettings.model`): each
    field reads one variable, named by its `validation_alias` (upper case; the built-in
    providers' names are public: DESIGN.md). `load_settings` reads and validates it with
    jobrelay's own settings, its errors worded the same way; `Settings.of` returns it. A blank
    value counts as unset; secrets are `SecretStr` (hidden in errors, redacted from logs)."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """field -> the variable it reads, in declaration order."""
        names: dict[str, str] = {}
        for field, info in cls.model_fields.items():
            if not isinstance(info.validation_alias, str):
                raise TypeError(f"{cls.__name__}.{field}: validation_alias names its variable")
            names[field] = info.validation_alias
        return names

    @classmethod
    def read(cls, env: Mapping[str, str]) -> Self:
        """Its variables in `env` (any case), blank ones unset; `ValidationError` if invalid."""
        wanted = set(cls.env_names().values())
        data = {
            k.upper(): v
            for k, v in env.items()
            if k.upper() in wanted and not (isinstance(v, str) and not v.strip())
        }
        return cls.model_validate(data)


M = TypeVar("M", bound=ProviderModel)


class Settings(BaseSettings):
    """Everything jobrelay reads from the environment. Secrets are `SecretStr`."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True
    )

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
    _db_url: SecretStr | None = PrivateAttr(None)
    _variables: dict[str, str] = PrivateAttr(default_factory=dict)
    """Registered providers' own variables (`ProviderSettings.variables`), set ones only."""
    _providers: dict[type[ProviderModel], ProviderModel] = PrivateAttr(default_factory=dict)
    """Registered providers' own settings models (`ProviderSettings.model`), read."""

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

    @field_validator("http_token", "redis_url", mode="before")
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

    def of(self, model: type[M]) -> M:
        """A registered provider's own settings (`ProviderSettings.model`), read and validated
        by `load_settings`: `settings.of(SeamlessSettings).base_url`."""
        found = self._providers.get(model)
        if not isinstance(found, model):
            raise LookupError(
                f"{model.__name__} was not read: register its provider (the provider registry) "
                "before load_settings"
            )
        return found

    def secrets(self) -> list[str]:
        """Every configured secret value (jobrelay's and the providers'): what logs redact."""
        values: list[object] = [getattr(self, name) for name in type(self).model_fields]
        values.append(self._db_url)
        for model in self._providers.values():
            values.extend(getattr(model, name) for name in type(model).model_fields)
        return [v.get_secret_value() for v in values if isinstance(v, SecretStr)]

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
    """Variables of its own that `Settings` has no field for (upper case), read as plain
    strings with `Settings.variable`; register the provider before loading the settings."""
    model: type[ProviderModel] | None = None
    """Its own settings as a typed, validated model (`ProviderModel`), read with
    `Settings.of(model)`; register the provider before loading the settings."""
    credential: Callable[[Settings, str], list[str]] | None = None
    """What `jobrelay doctor` says of the configured credential, given its fingerprint; None:
    `key: set (ab...yz), fingerprint k_...`."""
    summary: Callable[[Settings], str] | None = None
    """`jobrelay doctor`'s line on what its settings mean for its rate limits."""


_PROVIDER_SETTINGS: dict[Provider, ProviderSettings] = {}
_BEFORE_LOAD: list[Callable[[], object]] = []


def before_load(hook: Callable[[], object]) -> None:
    """Run `hook` at the start of every `load_settings`: the provider registry registers the
    built-in providers this way (config imports no provider), so their settings are read even
    when a program loads the settings before it first asks the registry."""
    if hook not in _BEFORE_LOAD:
        _BEFORE_LOAD.append(hook)


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
    "sandbox": "JOBRELAY_SANDBOX",
    "db_path": "JOBRELAY_DB",
    "max_wait_seconds": "JOBRELAY_MAX_WAIT_SECONDS",
    "retry_max_attempts": "JOBRELAY_RETRY_MAX_ATTEMPTS",
    "credit_budget": "JOBRELAY_CREDIT_BUDGET",
    "http_token": "JOBRELAY_HTTP_TOKEN",
    "redis_url": "JOBRELAY_REDIS_URL",
    "metrics": "JOBRELAY_METRICS",
    "log_format": "JOBRELAY_LOG_FORMAT",
}
"""jobrelay's own variables (`Settings`' fields); the providers' come from their models."""


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable jobrelay reads (README "Configuration", the manifests)."""

    name: str
    """As it is written, e.g. `SEAMLESS_API_KEY`."""
    provider: str | None
    """The registered provider whose model reads it; None for jobrelay's own."""
    field: FieldInfo
    """Its field: default, type."""
    secret: bool
    """Hidden in error messages, redacted from logs (a `SecretStr`)."""


def _is_secret(info: FieldInfo) -> bool:
    annotation = info.annotation
    return annotation is SecretStr or SecretStr in get_args(annotation)


def variables() -> list[Variable]:
    """Every variable jobrelay reads: the registered providers' (in registration order, each in
    its model's order), then jobrelay's own; the providers' plain `variables` are not typed and
    not listed."""
    found: list[Variable] = []
    for provider, declared in _PROVIDER_SETTINGS.items():
        if declared.model is not None:
            for field, env in declared.model.env_names().items():
                info = declared.model.model_fields[field]
                found.append(Variable(env, provider, info, _is_secret(info)))
    for field, env in _ENV_NAMES.items():
        info = Settings.model_fields[field]
        found.append(Variable(env, None, info, _is_secret(info)))
    return found


def _describe(error: Mapping[str, object], known: Mapping[str, Variable]) -> str:
    if not error.get("loc"):  # a whole-settings check (e.g. OAuth variables that go together)
        return str(error.get("msg", "invalid settings")).removeprefix("Value error, ") + "."
    loc = error.get("loc") or ("?",)
    name = str(loc[0]).upper() if isinstance(loc, tuple) and loc else "?"
    name = _ENV_NAMES.get(name.lower(), name)  # a field name given directly
    variable = known.get(name)
    kind = str(error.get("type", ""))
    msg = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    value = error.get("input")
    shown = "<hidden>" if variable is not None and variable.secret else repr(value)
    ctx = error.get("ctx")
    if kind == "enum" and isinstance(ctx, Mapping):  # "'a', 'b' or 'c'" -> "a, b, c"
        expected = str(ctx.get("expected", "")).replace(" or ", ", ").replace("'", "")
        msg = "allowed values are " + expected
    elif name == "JOBRELAY_SANDBOX":
        msg = "allowed values are auto, 1 (force the sandbox) and 0 (never)"
    elif kind.startswith(("int_", "float_")) or "greater" in kind or "less" in kind:
        msg = msg[0].lower() + msg[1:]
    return f"{name}={shown} is not valid: {msg}."


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment once. Raise `ConfigError` naming each bad variable.

    `env`, when given, replaces the process environment (tests, subprocess launchers). The
    registered providers' models (`ProviderSettings.model`) are read from the same source,
    first, and their errors reported with jobrelay's own. As in one model, a whole-settings
    check (no variable to name) is reported only when every variable is valid.
    """
    for hook in _BEFORE_LOAD:
        hook()
    source: Mapping[str, str] = os.environ if env is None else env
    errors: list[Mapping[str, object]] = []
    models: dict[type[ProviderModel], ProviderModel] = {}
    for declared in _PROVIDER_SETTINGS.values():
        if declared.model is not None:
            try:
                models[declared.model] = declared.model.read(source)
            except ValidationError as exc:
                errors.extend(exc.errors())
    settings: Settings | None = None
    try:
        if env is None:  # the fields from the environment; the providers' own variables too
            settings = Settings()
            settings._variables = _own_variables(os.environ)
        else:
            known = _provider_variables() | set(_ENV_NAMES.values())
            data = {k.lower(): v for k, v in env.items() if k.upper() in known}
            settings = Settings.model_validate(data)
    except ValidationError as exc:
        errors.extend(exc.errors())
    if errors:
        if any(err.get("loc") for err in errors):
            errors = [err for err in errors if err.get("loc")]
        by_name = {v.name: v for v in variables()}
        lines = [_describe(err, by_name) for err in errors]
        raise ConfigError("Invalid configuration:\n  " + "\n  ".join(lines)) from None
    if settings is None:  # pragma: no cover - a failed validation always left errors
        raise ConfigError("Invalid configuration.")
    settings._providers = models
    return settings


def http_url(value: str) -> str:
    """A base URL setting: stripped, no trailing slash, http:// or https:// (else
    `ValueError`, worded for `load_settings`'s message)."""
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


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
