"""The webhook route of the HTTP transport (issue 18): one provider's pushed results.

`GuardedApp` (`_http_app`) serves a provider's declared `WebhookSpec` route (Seamless:
`POST /webhooks/seamless`, `SEAMLESS_WEBHOOK_SECRET`, DESIGN.md section 5) with
`WebhookIntake`, past its Host/Origin/URL checks but without the bearer token (the API cannot
send one): the secret header compared in constant time on SHA-256 digests (401, nothing read
or recorded), a body of at most `MAX_WEBHOOK_BODY_BYTES` (413) nested at most
`MAX_WEBHOOK_DEPTH` deep, a JSON object with a non-empty id field (400 naming what is wrong),
then the server's `receive_webhook` (200 `{"received": true, "outcome"}`; an unknown id is
acknowledged too and logged by id only). No body or secret is ever logged.

The small helpers both apps use (`digest`, `header_value`, `problem`) live here too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from pydantic import SecretStr
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope

from mcp_server import telemetry

if TYPE_CHECKING:
    from mcp_server.config import Settings
    from mcp_server.providers import WebhookSpec

log = logging.getLogger("mcp_server._http_app")

MAX_WEBHOOK_BODY_BYTES: Final = 256 * 1024
"""A researched contact record is ~17 KB; 256 KiB leaves room and refuses anything absurd."""
MAX_RESEARCH_ID_CHARS: Final = 200
MAX_WEBHOOK_DEPTH: Final = 32
"""A record nests 3 levels (jobHistory, newsAndEvents entries); 32 refuses only abuse."""

REFUSALS: Final = {
    400: "invalid",
    401: "unauthorized",
    413: "invalid",
    500: "failed",
    503: "starting",
}
"""A delivery not taken: its `jobrelay.webhook.outcome` by status (any other: `refused`)."""

WebhookReceiver = Callable[[str, dict[str, object]], Awaitable[str]]
"""`(upstream id, record)` -> the outcome (`PushOutcome`, or `starting`)."""


def digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def header_value(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


async def read_limited(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it is (or is declared) larger than `limit`; empty
    when the client left."""
    declared = header_value(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        body += message.get("body", b"")
        more = bool(message.get("more_body", False))
        if len(body) > limit:
            return None
    return bytes(body)


def too_deep(body: bytes, limit: int) -> bool:
    """Whether JSON text `body` nests arrays/objects deeper than `limit` (a linear scan)."""
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def pushed_record(
    body: bytes, id_field: str, id_example: str
) -> tuple[str | None, str | None, dict[str, object] | None]:
    """`(problem, upstream id, record)` of a delivery body: a bare record naming its upstream
    id in `id_field` (Seamless: the Contact or Company record, `apiResearchId`; UPSTREAMS.md,
    Webhooks), which the provider calls `id_example`. `problem` says what to fix when it is
    not one."""
    if too_deep(body, MAX_WEBHOOK_DEPTH):  # before `json`, which recurses (RecursionError)
        return f"The body is nested deeper than {MAX_WEBHOOK_DEPTH} levels.", None, None
    try:
        data = json.loads(body)
    except ValueError:
        return (
            "The body is not JSON: send the finished record as a JSON object "
            "(Content-Type: application/json).",
            None,
            None,
        )
    if not isinstance(data, dict):
        return "The body must be a JSON object: the finished record.", None, None
    research_id = data.get(id_field)
    if not isinstance(research_id, str) or not research_id.strip():
        return (
            f"The record has no {id_field} (a non-empty string: the id of the request it "
            f"answers, e.g. {id_example}).",
            None,
            None,
        )
    research_id = research_id.strip()
    if len(research_id) > MAX_RESEARCH_ID_CHARS or not research_id.isprintable():
        return f"{id_field} is not a request id (too long or not printable).", None, None
    return None, research_id, data


def problem(status: int, error: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=headers)


class WebhookIntake:
    """One provider's webhook route: its name and spec, the secret's digest, and the receiver."""

    def __init__(
        self, webhook: tuple[str, WebhookSpec], secret: SecretStr, receive: WebhookReceiver
    ) -> None:
        self.provider, self.spec = webhook
        """The provider the route's deliveries are addressed to, and how it sends them."""
        self._digest = digest(secret.get_secret_value())
        self._receive = receive

    def counted(self, response: JSONResponse) -> JSONResponse:
        """`response`, a delivery not taken counted by its status (`REFUSALS`) and the
        provider whose route it was sent to; a taken one is counted by the receiver, with what
        it did and its lag."""
        if response.status_code != 200:
            outcome = REFUSALS.get(response.status_code, "refused")
            telemetry.webhook_delivered(outcome, provider=self.provider)
        return response

    async def answer(self, scope: Scope, receive: Receive) -> JSONResponse:
        """The answer to one request on the route, past `GuardedApp`'s Host/Origin/URL checks."""
        if scope["method"] != "POST":
            return problem(405, "method_not_allowed", "Use POST.", allow="POST")
        spec = self.spec
        presented = header_value(scope, spec.secret_header.encode("latin-1")) or ""
        if not hmac.compare_digest(digest(presented), self._digest):
            log.warning("jobrelay: webhook refused: wrong or missing %s", spec.secret_header)
            return problem(
                401,
                "unauthorized",
                f"Send the {spec.secret_header} header with {spec.setting_hint}, equal to "
                f"this server's {spec.secret_env}.",
            )
        body = await read_limited(scope, receive, MAX_WEBHOOK_BODY_BYTES)
        if body is None:
            return problem(
                413,
                "too_large",
                f"A webhook body is at most {MAX_WEBHOOK_BODY_BYTES} bytes (a researched record "
                "is ~17 KB).",
            )
        why, research_id, record = pushed_record(body, spec.id_field, spec.id_example)
        if why is not None or research_id is None or record is None:
            return problem(400, "invalid_body", why or "invalid body")
        receiver = self._receive
        try:
            outcome = await receiver(research_id, record)
        except Exception:
            # Never the body (it is a person's record) nor the secret: the id and the fault.
            log.exception("jobrelay: webhook for research id %s could not be stored", research_id)
            return problem(
                500,
                "internal_error",
                "The delivery could not be stored; polling will still find the result.",
            )
        if outcome == "starting":
            return problem(
                503, "starting", "jobrelay is starting; deliver again.", **{"retry-after": "5"}
            )
        if outcome == "unknown":
            log.info(
                "jobrelay: webhook for research id %s: no such job here, acknowledged", research_id
            )
        return JSONResponse({"received": True, "outcome": outcome})


def declared_webhook(server: object) -> tuple[str, WebhookSpec] | None:
    """The provider and `WebhookSpec` jobrelay's server serves (`JobRelayServer.webhook`),
    else None."""
    from mcp_server.providers import WebhookSpec

    declared = getattr(server, "webhook", None)
    if (
        isinstance(declared, tuple)
        and len(declared) == 2
        and isinstance(declared[0], str)
        and isinstance(declared[1], WebhookSpec)
    ):
        return declared[0], declared[1]
    return None


def stdio_notice(settings: Settings) -> None:
    """A provider's webhook secret is set, but stdio receives nothing: say so on stderr."""
    from mcp_server.providers import default_registry, webhook_of

    for p in default_registry():
        spec = webhook_of(p)
        if spec is not None and spec.secret(settings) is not None:
            print(
                f"jobrelay: {spec.secret_env} is set, but a stdio server receives no webhooks "
                "(they need `jobrelay serve --transport http` at a public HTTPS address); "
                f"{p.title} results are polled.",
                file=sys.stderr,
                flush=True,
            )
