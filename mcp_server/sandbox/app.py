"""One ASGI app serving both simulated APIs plus the `/_sandbox` control endpoints."""

from __future__ import annotations

import json
import sys
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from mcp_server._clock import ScaledClock
from mcp_server.sandbox._state import FaultMiddleware, Faults, SandboxState
from mcp_server.sandbox.agentseo import create_agentseo_app
from mcp_server.sandbox.seamless import create_seamless_app

SEAMLESS_PREFIX = "/seamless/api/client/v1"
AGENTSEO_PREFIX = "/agentseo/api/v1"


def create_sandbox_app(state: SandboxState | None = None) -> Starlette:
    """Both APIs under their prefixes, and `/_sandbox/{stats,faults,reset}`."""
    state = state or SandboxState()

    async def stats(_request: Request) -> Response:
        return JSONResponse(state.stats())

    async def set_faults(request: Request) -> Response:
        try:
            data: Any = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        if not isinstance(data, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        bad = state.set_faults(data)
        if bad:
            allowed = sorted(Faults.__dataclass_fields__)
            return JSONResponse(
                {"error": "invalid fault settings", "invalid": bad, "allowed": allowed},
                status_code=400,
            )
        return JSONResponse(state.stats()["faults"])

    async def reset(_request: Request) -> Response:
        state.reset()
        return JSONResponse({"reset": True})

    app = Starlette(
        routes=[
            Route("/_sandbox/stats", stats, methods=["GET"]),
            Route("/_sandbox/faults", set_faults, methods=["POST"]),
            Route("/_sandbox/reset", reset, methods=["POST"]),
            Mount(
                SEAMLESS_PREFIX, app=FaultMiddleware(create_seamless_app(state), state, "seamless")
            ),
            Mount(
                AGENTSEO_PREFIX, app=FaultMiddleware(create_agentseo_app(state), state, "agentseo")
            ),
        ]
    )
    app.state.sandbox = state
    return app


def serve_sandbox(
    *,
    host: str = "127.0.0.1",
    port: int = 8766,
    seed: int = 0,
    time_scale: float = 1.0,
    job_seconds: float | None = None,
) -> int:
    """`jobrelay sandbox`: serve both APIs until interrupted."""
    import uvicorn

    faults = Faults(seed=seed, time_scale=time_scale)
    if job_seconds is not None:
        faults.job_seconds = job_seconds
    try:
        faults.validate()
    except ValueError as exc:
        print(f"jobrelay sandbox: {exc}", file=sys.stderr)
        return 2
    state = SandboxState(faults=faults, clock=ScaledClock(time_scale))
    base = f"http://{host}:{port}"
    print(
        "jobrelay sandbox: simulated APIs (any key works; scenario keys trigger errors)\n"
        f"  SEAMLESS_BASE_URL={base}{SEAMLESS_PREFIX}\n"
        f"  AGENTSEO_BASE_URL={base}{AGENTSEO_PREFIX}\n"
        f"  control: GET {base}/_sandbox/stats, POST {base}/_sandbox/faults,"
        f" POST {base}/_sandbox/reset",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(create_sandbox_app(state), host=host, port=port, log_level="warning")
    return 0
