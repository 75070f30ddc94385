from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from mcp_server._clock import ScaledClock
from mcp_server.config import Settings, load_settings
from mcp_server.sandbox._state import Faults, SandboxState

#: Virtual seconds per real second in end-to-end tests: a 6 s job takes 30 ms.
TEST_SCALE = 200.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ScaledClock:
    return ScaledClock(TEST_SCALE)


@pytest.fixture
def sandbox_state(clock: ScaledClock) -> SandboxState:
    return SandboxState(clock=clock, faults=Faults(time_scale=TEST_SCALE, job_seconds=6.0))


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**env: str) -> Settings:
        base = {"JOBRELAY_DB": str(tmp_path / "jobs.sqlite3")}
        return load_settings(base | env)

    return make


@pytest.fixture
async def client(
    make_settings: Callable[..., Settings], clock: ScaledClock, sandbox_state: SandboxState
) -> AsyncIterator[Client]:
    """The jobrelay server in-process, on the embedded sandbox (real loopback), virtual time."""
    from mcp_server.server import build_server

    server = build_server(make_settings(), clock=clock, sandbox_state=sandbox_state)
    async with Client(server) as c:
        yield c


def text_of(result: Any) -> str:
    """The text block an agent reads (hosts often forward only this)."""
    return "\n".join(getattr(block, "text", "") for block in result.content)
