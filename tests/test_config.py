from __future__ import annotations

from pathlib import Path

import pytest

from mcp_server.config import ConfigError, Settings, key_fingerprint, load_settings
from mcp_server.providers.agentseo.settings import AgentSEOSettings
from mcp_server.providers.seamless.settings import SeamlessSettings
from mcp_server.upstream.agentseo import Plan


def test_defaults_without_environment() -> None:
    s = load_settings({})
    assert s.of(SeamlessSettings).base_url == "https://api.seamless.ai/api/client/v1"
    assert s.of(AgentSEOSettings).base_url == "https://www.agentseo.dev/api/v1"
    assert s.of(AgentSEOSettings).plan is Plan.HOBBY
    assert s.max_wait_seconds == 45
    assert s.retry_max_attempts == 3
    assert s.credit_budget is None
    assert s.db_path.name == "jobs.sqlite3"
    assert s.db_path.parent.name == "jobrelay"


def test_every_documented_variable_is_read(tmp_path: Path) -> None:
    s = load_settings(
        {
            "SEAMLESS_API_KEY": "sk-seam",
            "SEAMLESS_BASE_URL": "http://127.0.0.1:1/seamless/",
            "AGENTSEO_API_KEY": "sk-seo",
            "AGENTSEO_BASE_URL": "http://127.0.0.1:1/agentseo",
            "AGENTSEO_PLAN": "Agency",
            "JOBRELAY_SANDBOX": "0",
            "JOBRELAY_DB": str(tmp_path / "l.db"),
            "JOBRELAY_MAX_WAIT_SECONDS": "12.5",
            "JOBRELAY_RETRY_MAX_ATTEMPTS": "5",
            "JOBRELAY_CREDIT_BUDGET": "40",
            "JOBRELAY_HTTP_TOKEN": "tok",
        }
    )
    seamless, agentseo = s.of(SeamlessSettings), s.of(AgentSEOSettings)
    assert seamless.api_key is not None
    assert seamless.api_key.get_secret_value() == "sk-seam"
    assert seamless.base_url == "http://127.0.0.1:1/seamless"  # trailing slash dropped
    assert agentseo.api_key is not None
    assert agentseo.base_url == "http://127.0.0.1:1/agentseo"
    assert agentseo.plan is Plan.AGENCY
    assert agentseo.budgets == (1000, 10000)
    assert s.sandbox == "off"
    assert s.db_path == tmp_path / "l.db"
    assert s.max_wait_seconds == 12.5
    assert s.retry_max_attempts == 5
    assert s.credit_budget == 40
    assert s.http_token is not None


def test_process_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSEO_PLAN", "pro")
    monkeypatch.setenv("JOBRELAY_CREDIT_BUDGET", "7")
    s = load_settings()
    assert s.of(AgentSEOSettings).plan is Plan.PRO
    assert s.credit_budget == 7


def test_bad_plan_names_the_variable_and_allowed_values() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"AGENTSEO_PLAN": "gold"})
    assert str(info.value) == (
        "Invalid configuration:\n"
        "  AGENTSEO_PLAN='gold' is not valid: allowed values are hobby, starter, pro, agency."
    )


def test_every_bad_value_is_reported_at_once_and_secrets_are_hidden() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            {
                "JOBRELAY_SANDBOX": "maybe",
                "JOBRELAY_MAX_WAIT_SECONDS": "-1",
                "JOBRELAY_RETRY_MAX_ATTEMPTS": "many",
                "SEAMLESS_BASE_URL": "ftp://x",
            }
        )
    text = str(info.value)
    assert "JOBRELAY_SANDBOX='maybe' is not valid: allowed values are auto, 1" in text
    assert "JOBRELAY_MAX_WAIT_SECONDS='-1' is not valid: input should be greater than 0" in text
    assert "JOBRELAY_RETRY_MAX_ATTEMPTS='many' is not valid" in text
    assert "SEAMLESS_BASE_URL='ftp://x' is not valid" in text


@pytest.mark.parametrize(
    ("env", "seamless", "agentseo"),
    [
        ({}, True, True),
        ({"SEAMLESS_API_KEY": "k"}, False, True),
        ({"SEAMLESS_API_KEY": "k", "AGENTSEO_API_KEY": "k"}, False, False),
        ({"SEAMLESS_API_KEY": "k", "JOBRELAY_SANDBOX": "1"}, True, True),
        ({"JOBRELAY_SANDBOX": "0"}, False, False),
        ({"SEAMLESS_API_KEY": "   "}, True, True),  # blank is unset
    ],
)
def test_sandbox_is_chosen_per_provider(
    env: dict[str, str], seamless: bool, agentseo: bool
) -> None:
    s = load_settings(env)
    assert s.uses_sandbox("seamless") is seamless
    assert s.uses_sandbox("agentseo") is agentseo


def test_secrets_are_masked_in_repr_and_str() -> None:
    s = Settings(http_token="tok-VERY-SECRET-2")  # type: ignore[arg-type]  # pydantic coerces str to SecretStr
    seamless = SeamlessSettings(api_key="sk-VERY-SECRET-1")  # type: ignore[arg-type]  # the same
    for text in (repr(s), str(s), s.model_dump_json(), repr(seamless), seamless.model_dump_json()):
        assert "VERY-SECRET" not in text


def test_key_fingerprint_is_stable_short_and_not_the_key() -> None:
    fp = key_fingerprint("sk-abc")
    assert fp == key_fingerprint("sk-abc")
    assert fp != key_fingerprint("sk-abd")
    assert "sk-abc" not in fp
    assert key_fingerprint(None) == "nokey"


#: Every variable jobrelay reads (README "Configuration").
ALL_VARIABLES = (
    "SEAMLESS_API_KEY",
    "SEAMLESS_BASE_URL",
    "AGENTSEO_API_KEY",
    "AGENTSEO_BASE_URL",
    "AGENTSEO_PLAN",
    "JOBRELAY_SANDBOX",
    "JOBRELAY_DB",
    "JOBRELAY_MAX_WAIT_SECONDS",
    "JOBRELAY_RETRY_MAX_ATTEMPTS",
    "JOBRELAY_CREDIT_BUDGET",
    "JOBRELAY_HTTP_TOKEN",
)


@pytest.mark.parametrize("blank", ["", "  "])
@pytest.mark.parametrize("name", ALL_VARIABLES)
def test_an_empty_value_counts_as_unset(
    name: str, blank: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MCP bundles send "" for a cleared field: every setting then takes its default."""
    assert load_settings({name: blank}) == load_settings({})
    for variable in ALL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv(name, blank)
    assert load_settings() == load_settings({})
    assert load_settings({name: blank}).db_path != Path()


def test_all_variables_empty_at_once_is_the_default_configuration() -> None:
    assert load_settings(dict.fromkeys(ALL_VARIABLES, "")) == load_settings({})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SEAMLESS_BASE_URL", "ftp://example.com"),
        ("AGENTSEO_BASE_URL", "example.com"),
        ("JOBRELAY_MAX_WAIT_SECONDS", "soon"),
        ("JOBRELAY_MAX_WAIT_SECONDS", "0"),
        ("JOBRELAY_RETRY_MAX_ATTEMPTS", "99"),
        ("JOBRELAY_CREDIT_BUDGET", "-1"),
        ("AGENTSEO_PLAN", "gold"),
        ("JOBRELAY_SANDBOX", "maybe"),
    ],
)
def test_messages_never_carry_pydantic_prefixes(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({name: value})
    message = str(info.value)
    assert f"{name}={value!r} is not valid: " in message
    assert "Value error" not in message
    assert "pydantic" not in message.lower()
