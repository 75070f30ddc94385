"""Placeholder: the simulated agentseo API (being written)."""

from __future__ import annotations

from starlette.applications import Starlette

from mcp_server.sandbox._state import SandboxState


def create_agentseo_app(state: SandboxState) -> Starlette:
    del state
    return Starlette(routes=[])
