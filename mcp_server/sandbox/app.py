"""One ASGI app serving both simulated APIs plus the `/_sandbox` control endpoints."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_server._clock import ScaledClock
from mcp_server.sandbox._state import FaultMiddleware, Faults, SandboxState
from mcp_server.sandbox._webhooks import webhooks_of
from mcp_server.sandbox.agentseo import create_agentseo_app
from mcp_server.sandbox.seamless import create_seamless_app

if TYPE_CHECKING:
    import uvicorn

SEAMLESS_PREFIX = "/seamless/api/client/v1"
AGENTSEO_PREFIX = "/agentseo/api/v1"


class _VirtualDate:
    """Gives every response the sandbox's virtual `Date` unless the app already set one.

    Reset epochs in rate-limit headers are virtual too; a client corrects skew with `Date`,
    so a real-time `Date` (uvicorn's, or none) would make them look wrong at any time scale.
    """

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"date" for k, _ in headers):
                    headers.append((b"date", self.state.http_date().encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_dated)


def create_sandbox_app(
    state: SandboxState | None = None, *, spawn: anyio.abc.TaskGroup | None = None
) -> Starlette:
    """Both APIs under their prefixes, and `/_sandbox/{stats,faults,reset,webhooks}`.

    `spawn`: the task group webhook deliveries run in (the embedded sandbox lends the
    server's); without it, a served app's lifespan opens one.
    """
    state = state or SandboxState()

    async def stats(_request: Request) -> Response:
        return JSONResponse({**state.stats(), "webhooks": webhooks_of(state).stats()})

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
        webhooks_of(state).reset()
        return JSONResponse({"reset": True})

    async def set_webhooks(request: Request) -> Response:
        try:
            data: Any = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        if not isinstance(data, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        status, answer = webhooks_of(state).configure(data)
        return JSONResponse(answer, status_code=status)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        """A served sandbox lends its webhook deliveries a task group of its own."""
        sender = webhooks_of(state)
        if spawn is not None:
            yield
            return
        async with anyio.create_task_group() as tg:
            sender.attach(tg)
            try:
                yield
            finally:
                sender.attach(None)
                tg.cancel_scope.cancel()

    app = Starlette(
        routes=[
            Route("/_sandbox/stats", stats, methods=["GET"]),
            Route("/_sandbox/faults", set_faults, methods=["POST"]),
            Route("/_sandbox/reset", reset, methods=["POST"]),
            Route("/_sandbox/webhooks", set_webhooks, methods=["POST"]),
            Mount(
                SEAMLESS_PREFIX, app=FaultMiddleware(create_seamless_app(state), state, "seamless")
            ),
            Mount(
                AGENTSEO_PREFIX, app=FaultMiddleware(create_agentseo_app(state), state, "agentseo")
            ),
        ],
        middleware=[Middleware(_VirtualDate, state=state)],
        lifespan=lifespan,
    )
    if spawn is not None:
        webhooks_of(state).attach(spawn)
    app.state.sandbox = state
    return app


def sandbox_uvicorn_config(
    app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0
) -> uvicorn.Config:
    """How to serve the sandbox with uvicorn (CLI, loopback tests, the embedded default).

    uvicorn's own `Date` header is turned off: it is real time and would sit next to the
    sandbox's virtual one, contradicting `X-RateLimit-Reset` whenever time is scaled.
    """
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", date_header=False)


def serve_sandbox(
    *,
    host: str = "127.0.0.1",
    port: int = 8766,
    seed: int = 0,
    time_scale: float = 1.0,
    job_seconds: float | None = None,
) -> int:
    """`jobrelay sandbox`: serve both APIs until interrupted.

    The base URLs are printed to stderr once the port is bound (with the real port when
    `--port 0`), so a script can wait for that line instead of polling the port.
    """
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

    def announce(bound_port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        base = f"http://{shown}:{bound_port}"
        print(
            "jobrelay sandbox: simulated APIs (any key works; scenario keys trigger errors)\n"
            f"  SEAMLESS_BASE_URL={base}{SEAMLESS_PREFIX}\n"
            f"  AGENTSEO_BASE_URL={base}{AGENTSEO_PREFIX}\n"
            f"  control: GET {base}/_sandbox/stats, POST {base}/_sandbox/faults,"
            f" POST {base}/_sandbox/reset, POST {base}/_sandbox/webhooks",
            file=sys.stderr,
            flush=True,
        )

    class _AnnouncingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                listening = [s for server in self.servers for s in (server.sockets or ())]
                announce(int(listening[0].getsockname()[1]) if listening else port)

    _AnnouncingServer(sandbox_uvicorn_config(create_sandbox_app(state), host=host, port=port)).run()
    return 0
