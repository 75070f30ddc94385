"""`jobrelay doctor`: what `jobrelay serve` would use, and whether it can.

It reads the same `Settings` the server reads and checks each thing that can stop a real
session: a provider switched to the live API without a key, a base URL that does not answer,
a ledger that cannot be opened or created. Each problem gets one line saying how to fix it,
and the exit status is 1 when there is any, so scripts can gate on it.

What it deliberately does not do: send an API key anywhere (the reachability probe is an
unauthenticated GET of the base URL; any HTTP answer means reachable), spend credits or rate
budget, create the ledger (a missing file is reported as "will be created"), or repair one.
Keys are shown masked: at most their first and last two characters.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
import time
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import anyio
import httpx

from mcp_server import __version__, telemetry
from mcp_server.config import (
    Settings,
    key_fingerprint,
    load_settings,
    provider_settings,
    url_for_display,
)
from mcp_server.errors import ConfigError
from mcp_server.ledger import Ledger, LedgerError, SqliteLedger, check_ledger_location
from mcp_server.models import Provider
from mcp_server.providers import default_registry, webhook_of
from mcp_server.redact import mask_secret

__all__ = ["Check", "Report", "diagnose", "mask_secret", "run_doctor"]

#: Seconds allowed for each reachability probe.
PROBE_TIMEOUT = 3.0
#: Seconds to wait for another process's write lock on the ledger before calling it locked.
LEDGER_BUSY_TIMEOUT = 2.0

_NAMES: dict[Provider, str] = {"seamless": "Seamless.ai", "agentseo": "AgentSEO"}
_KEY_VARS: dict[Provider, str] = {"seamless": "SEAMLESS_API_KEY", "agentseo": "AGENTSEO_API_KEY"}
_URL_VARS: dict[Provider, str] = {
    "seamless": "SEAMLESS_BASE_URL",
    "agentseo": "AGENTSEO_BASE_URL",
}
_LABEL_WIDTH = 15
_SHORT_SECRET = 32


@dataclass
class Check:
    """One area of the configuration: what was found, and the problems that break it."""

    name: str
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """One line each: what is wrong and how to fix it."""


@dataclass
class Report:
    checks: list[Check]
    summary: str = ""

    @property
    def problems(self) -> list[str]:
        return [f"{c.name}: {p}" for c in self.checks for p in c.problems]

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def render(self) -> str:
        out = [f"jobrelay doctor (jobrelay {__version__}, Python {platform.python_version()})", ""]
        for check in self.checks:
            label = check.name.ljust(_LABEL_WIDTH)
            for i, line in enumerate(check.lines or [""]):
                out.append((label if i == 0 else " " * _LABEL_WIDTH) + line)
        out.append("")
        problems = self.problems
        if problems:
            out.append(
                f"{len(problems)} problem(s): `jobrelay serve` would not work as configured."
            )
            out.extend(f"  - {p}" for p in problems)
        else:
            out.append(f"OK: `jobrelay serve` can start with this configuration. {self.summary}")
        return "\n".join(out).rstrip() + "\n"


async def _probe(client: httpx.AsyncClient, url: str) -> tuple[str | None, str | None]:
    """(what answered, None) or (None, why not). Any HTTP status means the host answered."""
    started = time.monotonic()
    try:
        response = await client.get(url)
    except httpx.TimeoutException:
        return None, f"no answer within {client.timeout.connect or PROBE_TIMEOUT:g} s"
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    took = (time.monotonic() - started) * 1000
    return f"HTTP {response.status_code} in {took:.0f} ms", None


async def _provider(settings: Settings, provider: Provider, client: httpx.AsyncClient) -> Check:
    check = Check(_NAMES[provider])
    key = settings.api_key(provider)
    key_var, url_var = _KEY_VARS[provider], _URL_VARS[provider]
    if settings.uses_sandbox(provider):
        why = "JOBRELAY_SANDBOX=1" if settings.sandbox == "on" else f"no {key_var}"
        check.lines.append(f"sandbox ({why}): the embedded sandbox serves simulated data")
        if key is not None:
            check.lines.append(f"key: {mask_secret(key)}, not used while JOBRELAY_SANDBOX=1")
    else:
        url = settings.base_url(provider)
        check.lines.append(f"live: {url}")
        if (missing := settings.missing_key(provider)) is not None:
            check.lines.append("key: not set")
            check.problems.append(missing)
        elif key is not None:
            fingerprint = key_fingerprint(key)
            credential = provider_settings(provider).credential
            check.lines.extend(
                [f"key: {mask_secret(key)}, fingerprint {fingerprint}"]
                if credential is None
                else credential(settings, fingerprint)
            )
        answered, failure = await _probe(client, url)
        if answered:
            check.lines.append(f"reachable: {answered}")
        else:
            check.lines.append(f"NOT reachable: {failure}")
            check.problems.append(
                f"cannot reach {url} ({failure}). Fix: check the network or proxy, "
                f"or {url_var} (unset it for the default)."
            )
    if (summary := provider_settings(provider).summary) is not None:
        check.lines.append(summary(settings))
    return check


def _ledger_path(settings: Settings) -> tuple[Path, Check | None]:
    """The ledger file, and the verdict when it cannot be used or does not exist yet.

    The location check is `check_ledger_location`, the same one `jobrelay serve` runs before
    it starts, so doctor never says OK where serve would refuse. It leaves nothing behind.
    """
    path = Path(settings.db_path).expanduser()
    check = Check("Ledger")
    try:
        check_ledger_location(path, LEDGER_BUSY_TIMEOUT)
    except LedgerError as exc:
        check.lines.append(f"{path}: cannot be used")
        check.problems.append(exc.message)
        return path, check
    if path.exists():
        return path, None
    check.lines.append(f"{path}: will be created on first start (its directory is writable)")
    return path, check


async def _ledger(settings: Settings) -> Check:
    if settings.db_url is not None:  # JOBRELAY_DB=postgresql://...: reachable, ours, migrated
        from mcp_server.ledger.postgres import PostgresLedger

        url = settings.db_url.get_secret_value()
        return await _summarise(url_for_display(url), "OK (PostgreSQL)", PostgresLedger.open(url))
    path, verdict = _ledger_path(settings)
    if verdict is not None:
        return verdict
    opened = SqliteLedger.open(path, busy_timeout=LEDGER_BUSY_TIMEOUT)
    return await _summarise(str(path), "OK, writable", opened)


async def _summarise(where: str, ok: str, opened: AbstractAsyncContextManager[Ledger]) -> Check:
    """Open the ledger and say what it holds, or why it cannot be used."""
    check = Check("Ledger")
    try:
        async with opened as ledger:
            unfinished = len(await ledger.nonterminal())
            spent = await ledger.credits_spent_today(sandbox=False)
    except LedgerError as exc:
        check.lines.append(f"{where}: cannot be used ({exc.problem})")
        check.problems.append(exc.message)
        return check
    check.lines.append(f"{where}: {ok}")
    check.lines.append(
        f"{unfinished} unfinished job(s); {spent} real research credit(s) requested today (UTC)"
    )
    return check


def _limits(settings: Settings) -> Check:
    check = Check("Limits")
    check.lines.append(
        f"longest wait inside one tool call: {settings.max_wait_seconds:g} s "
        "(JOBRELAY_MAX_WAIT_SECONDS)"
    )
    check.lines.append(
        f"attempts per upstream request: {settings.retry_max_attempts} "
        "(JOBRELAY_RETRY_MAX_ATTEMPTS)"
    )
    budget = settings.credit_budget
    check.lines.append(
        "research credit budget: none (JOBRELAY_CREDIT_BUDGET unset)"
        if budget is None
        else f"research credit budget: {budget} per UTC day (JOBRELAY_CREDIT_BUDGET)"
    )
    return check


def _observability(settings: Settings, env: Mapping[str, str]) -> Check:
    """Metrics, JSON logs and the `otel` extra (issue 19): what `serve` will export."""
    check = Check("Observability")
    installed = telemetry.extra_installed()
    if settings.metrics:
        check.lines.append(
            "metrics: on (JOBRELAY_METRICS=1): GET /metrics on the HTTP transport, same "
            "token rule as /mcp"
        )
        if installed is None:
            check.problems.append(
                f"JOBRELAY_METRICS=1 needs the OpenTelemetry SDK. Fix: {telemetry.EXTRA_HINT}, "
                "or unset JOBRELAY_METRICS."
            )
    else:
        check.lines.append("metrics: off (JOBRELAY_METRICS=1 turns them on)")
    check.lines.append(
        "logs: JSON lines on stderr (JOBRELAY_LOG_FORMAT=json)"
        if settings.log_format == "json"
        else "logs: text on stderr (JOBRELAY_LOG_FORMAT=json for JSON lines)"
    )
    check.lines.append(
        f"otel extra: installed (OpenTelemetry SDK {installed})"
        if installed is not None
        else f"otel extra: not installed ({telemetry.EXTRA_HINT})"
    )
    signals = telemetry.otlp_signals(env)
    if signals and settings.metrics:
        check.lines.append(f"OTLP export: {' and '.join(signals)} (the OTEL_* variables)")
    return check


def _http(settings: Settings) -> Check:
    check = Check("HTTP transport")
    if settings.http_token is None:
        check.lines.append(
            "JOBRELAY_HTTP_TOKEN not set: `jobrelay serve --transport http` serves only on "
            "loopback (stdio is unaffected)"
        )
    else:
        check.lines.append(
            f"JOBRELAY_HTTP_TOKEN {mask_secret(settings.http_token)}: clients send "
            "`Authorization: Bearer <token>`"
        )
    return check


def _webhooks(settings: Settings) -> Check:
    """Seamless webhooks (issue 18): where deliveries go, and that stdio never gets them."""
    check = Check("Webhooks")
    specs = (webhook_of(p) for p in default_registry())
    secret = next((s for spec in specs if spec and (s := spec.secret(settings))), None)
    if secret is None:
        check.lines.append(
            "SEAMLESS_WEBHOOK_SECRET not set: research results are polled. To have Seamless "
            "push them, serve over HTTP at a public HTTPS address (see the README, Webhooks)"
        )
        return check
    check.lines += [
        "SEAMLESS_WEBHOOK_SECRET set: Seamless delivers to POST https://<this server>"
        "/webhooks/seamless (Settings > Webhooks: contact-researched, company-researched, "
        "the same secret)",
        "only `jobrelay serve --transport http` at a public HTTPS address receives them; a "
        "stdio server cannot, and keeps polling",
    ]
    if len(secret.get_secret_value()) < _SHORT_SECRET:
        check.lines.append(f"the secret is short: use {_SHORT_SECRET} or more random characters")
    return check


def _summary(settings: Settings) -> str:
    live = [_NAMES[p] for p in _NAMES if not settings.uses_sandbox(p)]
    sandboxed = [_NAMES[p] for p in _NAMES if settings.uses_sandbox(p)]
    if not live:
        return (
            "Both APIs are simulated; set SEAMLESS_API_KEY and/or AGENTSEO_API_KEY for real data."
        )
    if not sandboxed:
        return f"Live: {' and '.join(live)}."
    return f"Live: {' and '.join(live)}; simulated: {' and '.join(sandboxed)}."


async def diagnose(
    env: Mapping[str, str] | None = None, *, probe_timeout: float = PROBE_TIMEOUT
) -> Report:
    """Check the configuration `env` describes (default: the process environment)."""
    default_registry()  # the providers declare what their settings mean: before reading them
    try:
        settings = load_settings(env)
    except ConfigError as exc:
        check = Check("Configuration", lines=["cannot be read"])
        bad = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        for line in bad or [str(exc)]:
            check.problems.append(f"{line} Fix: correct it, or unset it for the default.")
        return Report([check])
    config = Check("Configuration", lines=["read from the environment: OK"])
    # Default client settings (environment proxies included), as the server's clients use.
    async with httpx.AsyncClient(timeout=probe_timeout, follow_redirects=False) as client:
        checks = [config]
        for provider in _NAMES:
            checks.append(await _provider(settings, provider, client))
    checks += [await _ledger(settings), _limits(settings), _http(settings), _webhooks(settings)]
    checks.append(_observability(settings, os.environ if env is None else env))
    return Report(checks, summary=_summary(settings))


def run_doctor(
    env: Mapping[str, str] | None = None,
    *,
    out: TextIO | None = None,
    probe_timeout: float = PROBE_TIMEOUT,
) -> int:
    """`jobrelay doctor`: print the report; 0 when usable, 1 when something is broken."""
    report = anyio.run(functools.partial(diagnose, env, probe_timeout=probe_timeout))
    stream = out if out is not None else sys.stdout
    stream.write(report.render())
    stream.flush()
    return report.exit_code
