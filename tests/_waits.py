"""Follow a started job to its end, boundedly: on a loaded machine virtual time (100x) can
outrun one `wait_seconds`, so a still-open job is waited for again, a few times at most."""

from __future__ import annotations

from typing import Any

from conftest import call, structured
from mcp import Client

_OPEN = ("queued", "running")


async def until_done(client: Client, result: Any, rounds: int = 5) -> Any:
    for _ in range(rounds):
        data = structured(result)
        if result.is_error or data.get("state") not in _OPEN or not data.get("job_id"):
            return result
        result = await call(client, "wait_for_job", {"job_id": data["job_id"], "wait_seconds": 30})
    return result
