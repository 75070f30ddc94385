"""The Streamable HTTP app: the SDK's `/mcp` endpoint behind jobrelay's own guards.

One pure ASGI layer in front of the SDK app, so every path and both protocol eras get the same
checks, in this order (cheap and unauthenticated first):

1. `GET /healthz` answers at once, unauthenticated (DESIGN.md section 5): 200 with
   `{status, ledger, redis, providers}` when the process can serve (its ledger answers), 503
   otherwise (starting, ledger unavailable, `shutting_down`). It names states only, never a
   key, a path or a version: load balancers need it, and nothing in it is worth protecting.
2. Host allowlist (421) and Origin allowlist (403): DNS-rebinding protection. A browser page on
   another origin always sends its `Origin`; no CORS headers are ever sent, so no page can read
   an answer either.
3. Credentials in the URL (400): query strings end up in proxy and access logs.
4. `Authorization: Bearer <JOBRELAY_HTTP_TOKEN>` when a token is set (401), compared in constant
   time on SHA-256 digests, so neither the content nor the length leaks through timing.
5. During shutdown, new requests get 503; open standalone GET streams are ended cleanly.

6. `POST /mcp` bodies: at most `MAX_REQUEST_BODY_BYTES` (413), then `_jsonrpc_guard` checks the
   JSON-RPC message before the SDK parses it: a malformed one gets a 400 with a JSON-RPC error
   body (a bad tool argument: the tool's `invalid_input` result), never the SDK's silence.

A provider's webhook route (its `WebhookSpec`: `POST /webhooks/seamless` with
`SEAMLESS_WEBHOOK_SECRET`, DESIGN.md section 5) takes steps 2, 3 and 5 but not the bearer
token (the API cannot send one): instead its secret header, compared in constant time on
SHA-256 digests (401, nothing read or recorded), a body of at most `MAX_WEBHOOK_BODY_BYTES`
(413) nested at most `MAX_WEBHOOK_DEPTH` deep, a JSON object with a non-empty id field
(`apiResearchId`; 400 naming what is wrong); then the server's `receive_webhook` (200
`{"received": true, "outcome"}`; an unknown id is acknowledged too, and logged by id only).
Nothing else is served on that path, and no body or secret is ever logged.

The SDK enforces the same Host/Origin lists again (defence in depth; its own rule is a prefix
match, which is why ours parses first) and the body limit. Nothing here logs or echoes a
header value.

The SDK is imported only when the app is built, so a refused start is instant.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

import anyio
from pydantic import SecretStr
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_server import telemetry
from mcp_server._bounds import MAX_MESSAGE_BYTES
from mcp_server._jsonrpc_guard import Refusal, check_message
from mcp_server._webhook_app import (
    WebhookIntake,
    WebhookReceiver,
    declared_webhook,
)
from mcp_server._webhook_app import digest as _digest
from mcp_server._webhook_app import header_value as _header
from mcp_server._webhook_app import problem as _problem
from mcp_server.json_types import JSONObject

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from mcp_server.providers import WebhookSpec

log = logging.getLogger(__name__)

MCP_PATH: Final = "/mcp"
HEALTH_PATH: Final = "/healthz"
METRICS_PATH: Final = "/metrics"
"""Prometheus text when JOBRELAY_METRICS=1 (issue 19); the same guards as `/mcp`."""
PROMETHEUS_TEXT: Final = "text/plain; version=0.0.4; charset=utf-8"

HealthCheck = Callable[[], Awaitable[tuple[bool, JSONObject]]]
"""Whether the process can serve, and the JSON body `/healthz` answers with."""

MAX_REQUEST_BODY_BYTES: Final = MAX_MESSAGE_BYTES
"""1 MiB, a quarter of the SDK default: the largest legitimate call (100 research targets) is
tens of kilobytes."""

LOOPBACK_HOSTS: Final = ("127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*")
LOOPBACK_ORIGINS: Final = (
    "http://127.0.0.1",
    "http://127.0.0.1:*",
    "http://localhost",
    "http://localhost:*",
    "http://[::1]",
    "http://[::1]:*",
)

_SECRET_PARAM = re.compile(r"(?i)(token|key|secret|passw|auth|credential|bearer)")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, `localhost`)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def bind_refusal(host: str, token: SecretStr | None) -> str | None:
    """Why `jobrelay serve --transport http --host HOST` must not start, or None if it may."""
    if token is not None or is_loopback(host):
        return None
    return (
        f"jobrelay serve: refusing to listen on {host} without JOBRELAY_HTTP_TOKEN. Anyone who "
        "can reach that address could run jobs with your API keys and spend your credits.\n"
        "  Either bind to this machine only: --host 127.0.0.1 (the default),\n"
        "  or set a long random token and send it as 'Authorization: Bearer <token>':\n"
        "    export JOBRELAY_HTTP_TOKEN=\"$(python -c 'import secrets; "
        "print(secrets.token_urlsafe(32))')\""
    )


def host_allowlist(bind_host: str, extra: Iterable[str] = ()) -> list[str]:
    """Host header values to accept: loopback names, the bind address when it is a specific
    IP (an IP literal cannot be rebound), and each `--allow-host` (bare and with any port).

    Raises ValueError naming a malformed `--allow-host` value.
    """
    hosts = list(LOOPBACK_HOSTS)
    name = bind_host.strip().strip("[]")
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None and not ip.is_unspecified and not ip.is_loopback:
        hosts.append(f"[{ip}]:*" if ip.version == 6 else f"{ip}:*")
    for raw in extra:
        value = raw.strip().lower()
        parsed = parse_host(value, pattern=True)
        if parsed is None:
            raise ValueError(
                f"--allow-host {raw!r} is not a host name: give a name such as "
                "mcp.example.com (optionally with :PORT), without scheme or path."
            )
        if parsed[1] is not None:
            hosts.append(value)
        else:
            hosts.extend([value, f"{value}:*"])
    return list(dict.fromkeys(hosts))


def origin_allowlist(extra: Iterable[str] = ()) -> list[str]:
    """Origin header values to accept: loopback pages and each `--allow-origin`.

    Raises ValueError naming a malformed `--allow-origin` value.
    """
    origins = list(LOOPBACK_ORIGINS)
    for raw in extra:
        value = raw.strip().rstrip("/").lower()
        if parse_origin(value, pattern=True) is None:
            raise ValueError(
                f"--allow-origin {raw!r} is not an origin: give scheme://host[:port], "
                "e.g. https://app.example.com."
            )
        origins.append(value)
    return list(dict.fromkeys(origins))


_HOST_PART = r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)"
_HOST_VALUE = re.compile(_HOST_PART + r"(?::([0-9]{1,5}|\*))?")
_ORIGIN_VALUE = re.compile(r"(https?)://" + _HOST_PART + r"(?::([0-9]{1,5}|\*))?/?")
_MAX_PORT = 65535

Authority = tuple[str, str | None]
"""`(host, port)`: the host lower-cased (an IPv6 literal in brackets, compressed) and the port
as digits, `"*"` (patterns only) or None when absent."""


def _authority(host: str, port: str | None, *, pattern: bool) -> Authority | None:
    if host.startswith("["):
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    if port == "*":
        return (host, port) if pattern else None
    if port is not None and int(port) > _MAX_PORT:
        return None
    return host, port


def parse_host(value: str, *, pattern: bool = False) -> Authority | None:
    """A Host header (or allowlist entry) parsed exactly: `name`, `name:PORT`, `[v6]` or
    `[v6]:PORT`, the port all digits up to 65535 (`*` only in a pattern). None when it is
    anything else: `localhost:1.evil.example` or `127.0.0.1:@evil.example` never parse."""
    match = _HOST_VALUE.fullmatch(value.lower())
    if match is None:
        return None
    return _authority(match.group(1), match.group(2), pattern=pattern)


def parse_origin(value: str, *, pattern: bool = False) -> tuple[str, Authority] | None:
    """An Origin header (or allowlist entry) parsed exactly: `http(s)://host[:PORT]`, no user
    information, path, query or fragment (one trailing `/` tolerated). None otherwise."""
    match = _ORIGIN_VALUE.fullmatch(value.lower())
    if match is None:
        return None
    authority = _authority(match.group(2), match.group(3), pattern=pattern)
    return None if authority is None else (match.group(1), authority)


def _port_matches(port: str | None, allowed: str | None) -> bool:
    return port == allowed or (allowed == "*" and port is not None)


def host_allowed(value: str, allowed: Sequence[str]) -> bool:
    """Host header `value` is exactly one of `allowed` (`name:*` = that name with any port)."""
    got = parse_host(value)
    if got is None:
        return False
    for entry in allowed:
        want = parse_host(entry, pattern=True)
        if want is not None and want[0] == got[0] and _port_matches(got[1], want[1]):
            return True
    return False


def origin_allowed(value: str, allowed: Sequence[str]) -> bool:
    """Origin header `value` is exactly one of `allowed` (scheme and host equal, port as in
    `host_allowed`)."""
    got = parse_origin(value)
    if got is None:
        return False
    for entry in allowed:
        want = parse_origin(entry, pattern=True)
        if (
            want is not None
            and want[0] == got[0]
            and want[1][0] == got[1][0]
            and _port_matches(got[1][1], want[1][1])
        ):
            return True
    return False


def _refuse(status: int, refusal: Refusal) -> JSONResponse:
    return JSONResponse(refusal.response(), status_code=status)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` that first gives the SDK the body already read, once (and then lets it go)."""
    pending = [body]

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replay


class GuardedApp:
    """jobrelay's HTTP guards in front of the SDK's Streamable HTTP app (see module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: SecretStr | None,
        allowed_hosts: Sequence[str],
        allowed_origins: Sequence[str],
        max_body_bytes: int = MAX_REQUEST_BODY_BYTES,
        health: HealthCheck | None = None,
        webhook: tuple[str, WebhookSpec] | None = None,
        webhook_secret: SecretStr | None = None,
        receive_webhook: WebhookReceiver | None = None,
    ) -> None:
        self.app = app
        self._health = health
        """None for a bare guard (its own tests): health is then just `{"status": "ok"}`."""
        self._intake = (
            None
            if webhook is None or webhook_secret is None or receive_webhook is None
            else WebhookIntake(webhook, webhook_secret, receive_webhook)
        )
        """A provider's webhook route (its name and spec), when its secret and the receiver
        are set (issue 18)."""
        self.max_body_bytes = max_body_bytes
        self._token_digest = None if token is None else _digest(token.get_secret_value())
        self.allowed_hosts = tuple(allowed_hosts)
        self.allowed_origins = tuple(allowed_origins)
        self.shutting_down = False
        self._streams: set[anyio.CancelScope] = set()

    def __repr__(self) -> str:
        return (
            f"GuardedApp(token={'set' if self._token_digest else 'unset'}, "
            f"allowed_hosts={self.allowed_hosts!r}, allowed_origins={self.allowed_origins!r})"
        )

    @property
    def open_streams(self) -> int:
        """Standalone GET event streams open now."""
        return len(self._streams)

    def begin_shutdown(self) -> None:
        """Refuse new requests and end open standalone streams, so the server can drain."""
        self.shutting_down = True
        for scope in list(self._streams):
            scope.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)  # the SDK's session manager, our lifespan
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})  # no websockets here
            return
        if scope["path"] == HEALTH_PATH and self._health_answered(scope):
            await self._answer_health(scope, receive, send)
            return
        if self._intake is not None and scope["path"] == self._intake.spec.path:
            refusal = self._check(scope, bearer=False)  # its own secret instead of the token
            if refusal is None:
                refusal = await self._intake.answer(scope, receive)
            await self._intake.counted(refusal)(scope, receive, send)
            return
        refusal = self._check(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if scope["path"] == METRICS_PATH and (metrics := telemetry.prometheus_text()) is not None:
            await Response(metrics, media_type=PROMETHEUS_TEXT)(scope, receive, send)
        elif scope["method"] == "GET" and scope["path"] == MCP_PATH:
            await self._stream(scope, receive, send)
        elif scope["method"] == "POST" and scope["path"] == MCP_PATH:
            # The check's frame, its copy of the body and the parsed message are gone before
            # the SDK runs: a wait_for_job request lives for the whole wait (2-3 KB each).
            checked = await self._checked_post(scope, receive, send)
            if checked is not None:
                await self.app(scope, checked, send)
        else:
            await self.app(scope, receive, send)

    async def _checked_post(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Read the body (up to the limit), check it with `_jsonrpc_guard` and answer a bad
        message here (None); a good one is returned as a `receive` that replays it to the SDK
        as it came."""
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _refuse(413, Refusal(f"the message is larger than {self.max_body_bytes} bytes"))(
                scope, receive, send
            )
            return None
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self.max_body_bytes:
                await _refuse(
                    413, Refusal(f"the message is larger than {self.max_body_bytes} bytes")
                )(scope, receive, send)
                return None
        data = bytes(body)
        verdict = check_message(data)
        if isinstance(verdict, Refusal):
            verdict.log("http")
            # A bad tool argument is the tool's own invalid_input result (200); anything else
            # is a 400 with the JSON-RPC error as its body (Streamable HTTP allows both).
            await _refuse(200 if verdict.tool else 400, verdict)(scope, receive, send)
            return None
        return _replay(data, receive)

    def _health_answered(self, scope: Scope) -> bool:
        """A health GET while running is answered by the health check (the rest: `_check`)."""
        return scope["method"] in ("GET", "HEAD") and not self.shutting_down

    async def _answer_health(self, scope: Scope, receive: Receive, send: Send) -> None:
        ok, body = (True, {"status": "ok"}) if self._health is None else await self._health()
        await JSONResponse(body, status_code=200 if ok else 503)(scope, receive, send)

    def _check(self, scope: Scope, *, bearer: bool = True) -> JSONResponse | None:
        path: str = scope["path"]
        if path == HEALTH_PATH:
            if scope["method"] not in ("GET", "HEAD"):
                return _problem(405, "method_not_allowed", "Use GET.", allow="GET, HEAD")
            return JSONResponse({"status": "shutting_down"}, status_code=503)
        host = _header(scope, b"host")
        if host is None or not host_allowed(host, self.allowed_hosts):
            return _problem(
                421,
                "invalid_host",
                "This Host header is not in jobrelay's allowlist (DNS-rebinding protection). "
                "If it is this server's name, restart with --allow-host NAME.",
            )
        origin = _header(scope, b"origin")
        if origin is not None and not origin_allowed(origin, self.allowed_origins):
            return _problem(
                403,
                "invalid_origin",
                "Requests from this Origin are not allowed (a web page on another site). "
                "To allow a trusted origin, restart with --allow-origin ORIGIN.",
            )
        if self._secret_in_url(scope):
            return _problem(
                400,
                "credentials_in_url",
                "Credentials are never accepted in the URL (URLs end up in logs). Send "
                "Authorization: Bearer <token> and X-Seamless-Api-Key / X-AgentSEO-Api-Key "
                "as headers.",
            )
        if bearer and self._token_digest is not None and not self._authorized(scope):
            presented = _header(scope, b"authorization") is not None
            challenge = 'Bearer realm="jobrelay"' + (', error="invalid_token"' if presented else "")
            return _problem(
                401,
                "unauthorized",
                "This jobrelay server requires 'Authorization: Bearer <token>' with the value "
                "of its JOBRELAY_HTTP_TOKEN.",
                **{"www-authenticate": challenge},
            )
        if self.shutting_down:
            return _problem(
                503,
                "shutting_down",
                "jobrelay is shutting down; retry against the restarted server.",
                **{"retry-after": "5"},
            )
        return None

    @staticmethod
    def _secret_in_url(scope: Scope) -> bool:
        query: bytes = scope.get("query_string", b"")
        if not query:
            return False
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        return any(_SECRET_PARAM.search(name) for name, _ in pairs)

    def _authorized(self, scope: Scope) -> bool:
        expected = self._token_digest or b""
        value = _header(scope, b"authorization") or ""
        scheme, _, credentials = value.strip().partition(" ")
        if scheme.lower() != "bearer":
            # Still compare, so a wrong scheme costs the same time as a wrong token.
            credentials = ""
        return hmac.compare_digest(_digest(credentials.strip()), expected)

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A standalone GET stream lives until the client leaves, or until shutdown ends it
        with a proper end of body (uvicorn would otherwise wait for it until its timeout)."""
        state: dict[str, bool] = {"started": False, "done": False}

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                state["done"] = True
            await send(message)

        cancel = anyio.CancelScope()
        self._streams.add(cancel)
        try:
            with cancel:
                await self.app(scope, receive, tracked)
        finally:
            self._streams.discard(cancel)
        if cancel.cancelled_caught and state["started"] and not state["done"]:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def create_http_app(
    server: MCPServer[Any],
    *,
    token: SecretStr | None,
    allowed_hosts: Sequence[str],
    allowed_origins: Sequence[str],
    max_body_bytes: int = MAX_REQUEST_BODY_BYTES,
    health: HealthCheck | None = None,
) -> GuardedApp:
    """The whole HTTP surface: `/mcp` (both protocol eras, SSE so progress streams),
    `/healthz`, and `/webhooks/seamless` when the server has a `webhook_secret`. Its lifespan
    runs the server's lifespan (ledger, sandbox, clients). `health` defaults to the server's
    own `health()` (jobrelay's `JobRelayServer` has one).

    Call once per server: the SDK's session manager runs only once.
    """
    from mcp.server.transport_security import TransportSecuritySettings

    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(allowed_hosts),
        allowed_origins=list(allowed_origins),
    )
    sdk_app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        json_response=False,
        stateless_http=False,
        max_request_body_size=max_body_bytes,
        transport_security=security,
    )
    return GuardedApp(
        sdk_app,
        token=token,
        allowed_hosts=allowed_hosts,
        allowed_origins=allowed_origins,
        max_body_bytes=max_body_bytes,
        health=health or getattr(server, "health", None),
        webhook=declared_webhook(server),
        webhook_secret=getattr(server, "webhook_secret", None),
        receive_webhook=getattr(server, "receive_webhook", None),
    )
