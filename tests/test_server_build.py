"""How `build_server` assembles the SDK server: what it leaves out when it costs for nothing."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from mcp.server._otel import OpenTelemetryMiddleware

from mcp_server.config import Settings
from mcp_server.server import build_server


def _traced(make_settings: Callable[..., Settings]) -> bool:
    server = build_server(make_settings())
    return any(isinstance(m, OpenTelemetryMiddleware) for m in server.middleware)


def test_the_sdks_tracing_middleware_is_dropped_when_no_tracing_is_configured(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    assert not _traced(make_settings)


def test_any_otel_variable_keeps_the_tracing_middleware(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    assert _traced(make_settings)
