"""What both simulated APIs share: virtual time, faults, a seeded RNG and request counters.

Time: the sandbox runs on a `ScaledClock`. Job durations and rate windows are virtual seconds,
and every time in a header or body (Date, X-RateLimit-Reset, ETAs) is virtual too, so a client
sharing the clock sees a self-consistent world at `time_scale` times real speed.

Faults are applied by `FaultMiddleware` around each API app, so the apps themselves only
implement the documented behaviour.
"""

from __future__ import annotations

import json
import random
import secrets
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from email.utils import formatdate
from typing import Any, Literal

import anyio
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_server._clock import ScaledClock
from mcp_server.json_types import JSON, JSONObject
from mcp_server.sandbox._persist import JobFile

SandboxProvider = Literal["seamless", "agentseo"]

#: Scenario keys (DESIGN.md "The sandbox"); any other non-empty key is valid.
KEY_INSUFFICIENT_CREDITS = "sandbox-insufficient-credits"
KEY_MISSING_LICENSE = "sandbox-missing-license"
KEY_REVOKED = "sandbox-revoked"
KEY_INSUFFICIENT_SCOPE = "sandbox-insufficient-scope"
SCENARIO_KEYS = frozenset(
    {KEY_INSUFFICIENT_CREDITS, KEY_MISSING_LICENSE, KEY_REVOKED, KEY_INSUFFICIENT_SCOPE}
)


@dataclass
class Faults:
    """Knobs settable at start and through `POST /_sandbox/faults`."""

    error_rate: float = 0.0
    """Fraction of API requests answered with a 5xx instead of being processed."""
    latency_ms: float = 0.0
    """Real milliseconds added before each API response."""
    sse_drop_after_events: int | None = None
    """Close each SSE connection after this many events (then the client must resume)."""
    malformed_rate: float = 0.0
    """Fraction of 2xx JSON responses whose body is cut short (invalid JSON)."""
    job_seconds: float = 6.0
    """Virtual seconds a simulated job takes from creation to a terminal state."""
    time_scale: float = 1.0
    """Virtual seconds per real second."""
    seed: int = 0
    """Seed of every generated record and random decision."""
    seamless_rate_limit: int = 60
    """Seamless requests per minute per endpoint per org (documented default 60)."""
    agentseo_plan: str = "hobby"
    """AgentSEO plan whose workload/control budgets the sandbox enforces."""
    initial_credits: int = 1000
    """Seamless research credits the org starts with."""

    def update(self, data: JSONObject) -> list[str]:
        """Apply a partial update; return the names of unknown or invalid keys (nothing applied)."""
        names = {f.name: f for f in fields(self)}
        bad = [k for k in data if k not in names]
        if bad:
            return bad
        staged = asdict(self) | data
        try:
            checked = Faults(**staged)
            checked.validate()
        except (TypeError, ValueError) as exc:
            return [str(exc)]
        for k in data:
            setattr(self, k, getattr(checked, k))
        return []

    def validate(self) -> None:
        for name in ("error_rate", "malformed_rate"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not 0 <= v <= 1:
                raise ValueError(f"{name} must be a number between 0 and 1")
        if not isinstance(self.latency_ms, int | float) or self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.sse_drop_after_events is not None and (
            not isinstance(self.sse_drop_after_events, int) or self.sse_drop_after_events < 1
        ):
            raise ValueError("sse_drop_after_events must be a positive integer or null")
        if not isinstance(self.job_seconds, int | float) or self.job_seconds < 0:
            raise ValueError("job_seconds must be >= 0")
        if not isinstance(self.time_scale, int | float) or self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if not isinstance(self.seed, int):
            raise ValueError("seed must be an integer")
        if not isinstance(self.seamless_rate_limit, int) or self.seamless_rate_limit < 1:
            raise ValueError("seamless_rate_limit must be a positive integer")
        if self.agentseo_plan not in {"hobby", "starter", "pro", "agency"}:
            raise ValueError("agentseo_plan must be one of hobby, starter, pro, agency")
        if not isinstance(self.initial_credits, int) or self.initial_credits < 0:
            raise ValueError("initial_credits must be a non-negative integer")


@dataclass
class SandboxState:
    """Shared by both API apps and the control endpoints. One per sandbox instance."""

    faults: Faults = field(default_factory=Faults)
    clock: ScaledClock = field(default_factory=ScaledClock)
    requests: Counter[str] = field(default_factory=Counter)
    responses: Counter[str] = field(default_factory=Counter)
    post_bodies: Counter[str] = field(default_factory=Counter)
    """Credit-spending POST bodies (canonical JSON) seen, for duplicate-spend detection."""
    rng: random.Random = field(init=False)
    fault_rng: random.Random = field(init=False)
    generation: int = 0
    """Bumped by reset(); the API apps drop their per-instance data when it changes."""
    jobs_file: JobFile | None = None
    """Where the apps keep their jobs across restarts (the embedded sandbox: beside the
    ledger); None keeps them in memory only."""

    def __post_init__(self) -> None:
        self.faults.validate()
        self.clock.rescale(self.faults.time_scale)
        self.rng = random.Random(self.faults.seed)
        self.fault_rng = random.Random(self.faults.seed ^ 0x5EED)

    # time ----------------------------------------------------------------------------------
    def now(self) -> float:
        """Virtual epoch seconds."""
        return self.clock.time()

    def http_date(self) -> str:
        return formatdate(self.now(), usegmt=True)

    async def sleep(self, virtual_seconds: float) -> None:
        await self.clock.sleep(virtual_seconds)

    # control ---------------------------------------------------------------------------------
    def set_faults(self, data: JSONObject) -> list[str]:
        bad = self.faults.update(data)
        if bad:
            return bad
        if "time_scale" in data:
            self.clock.rescale(self.faults.time_scale)
        if "seed" in data:
            self.rng.seed(self.faults.seed)
            self.fault_rng.seed(self.faults.seed ^ 0x5EED)
        return []

    def reset(self) -> None:
        """Back to defaults: faults, counters, RNG and every job/window/credit the apps hold."""
        self.faults = Faults()
        self.clock.rescale(1.0)
        self.rng.seed(0)
        self.fault_rng.seed(0x5EED)
        self.requests.clear()
        self.responses.clear()
        self.post_bodies.clear()
        self.generation += 1
        self.jobs_changed()

    def jobs_changed(self) -> None:
        """An app created jobs: keep them (when a jobs file is set)."""
        if self.jobs_file is not None:
            self.jobs_file.save()

    def record_paid_post(self, provider: SandboxProvider, path: str, body: JSON) -> None:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        self.post_bodies[f"{provider} {path} {canonical}"] += 1

    def stats(self) -> JSONObject:
        dup = sum(n - 1 for n in self.post_bodies.values() if n > 1)
        return {
            "requests": dict(self.requests),
            "responses": dict(self.responses),
            "paid_posts": sum(self.post_bodies.values()),
            "duplicate_paid_posts": dup,
            "faults": asdict(self.faults),
            "virtual_time": self.now(),
        }

    def new_id(self, prefix: str = "", n: int = 15) -> str:
        """A random id; not from the seeded RNG, so ids never repeat across resets."""
        return prefix + secrets.token_urlsafe(n)[:n]


def _route_template(scope: Scope, app: ASGIApp | None = None) -> str:
    """The matched route's path template (e.g. /jobs/{job_id}), else the path below the mount.

    With `app`, the template is looked up in its routes first: a fault that answers before
    routing must be counted under the same key as a routed response.
    """
    for candidate in getattr(app, "routes", ()):
        match, _ = candidate.matches(scope)
        if match is not Match.NONE:
            return str(candidate.path)
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and not isinstance(route, Mount):
        return path
    full, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    return full.removeprefix(root) or "/"  # unmatched: the raw path below the API's mount


def _five_xx_body(provider: SandboxProvider, status: int, request_id: str) -> bytes:
    if provider == "seamless":
        return json.dumps({"message": "Internal server error"}).encode()  # as published
    return json.dumps(
        {
            "error": {
                "code": "UPSTREAM_UNAVAILABLE" if status != 500 else "INTERNAL_ERROR",
                "message": "The service is temporarily unavailable.",
                "details": {},
                "request_id": request_id,
            }
        }
    ).encode()


class FaultMiddleware:
    """Counts requests/responses per route template and injects the configured faults.

    Wraps one API app. Templates are recorded after routing, so the count key is e.g.
    `seamless GET /contacts/research/poll 200`.
    """

    def __init__(self, app: ASGIApp, state: SandboxState, provider: SandboxProvider) -> None:
        self.app = app
        self.state = state
        self.provider = provider

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        faults = state.faults
        method = scope["method"]
        if faults.latency_ms > 0:
            await anyio.sleep(faults.latency_ms / 1000)

        if faults.error_rate > 0 and state.fault_rng.random() < faults.error_rate:
            status = state.fault_rng.choice((500, 502, 503))
            key = f"{self.provider} {method} {_route_template(scope, self.app)}"
            state.requests[key] += 1
            state.responses[f"{key} {status}"] += 1
            body = _five_xx_body(self.provider, status, state.new_id("req_", 10))
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"date", state.http_date().encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        malform = faults.malformed_rate > 0 and state.fault_rng.random() < faults.malformed_rate
        status_holder: dict[str, Any] = {}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = list(message.get("headers", []))
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                status_holder["json"] = ctype.startswith(b"application/json")
                status_holder["start"] = message
                key = f"{self.provider} {method} {_route_template(scope)}"
                state.requests[key] += 1
                state.responses[f"{key} {message['status']}"] += 1
                if malform and status_holder["json"] and 200 <= message["status"] < 300:
                    return  # held until the body arrives, to fix content-length
                await send(message)
                return
            if message["type"] == "http.response.body" and "start" in status_holder:
                start = status_holder.pop("start")
                if malform and status_holder["json"] and 200 <= status_holder["status"] < 300:
                    body: bytes = message.get("body", b"")
                    cut = body[: max(1, len(body) // 2)]
                    headers = [
                        (k, v) for k, v in start["headers"] if k.lower() != b"content-length"
                    ]
                    headers.append((b"content-length", str(len(cut)).encode()))
                    await send({**start, "headers": headers})
                    await send({"type": "http.response.body", "body": cut})
                    return
            await send(message)

        await self.app(scope, receive, send_wrapper)
