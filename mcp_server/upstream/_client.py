"""How upstream requests are built: the one `httpx.AsyncClient` constructor and `Call`.

Every upstream client is built here (auth per request, user agent, timeouts, no redirects, one
shared CA bundle), and every request is described by one `Call` before the sender sees it.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx
from pydantic import SecretStr

from mcp_server import __version__
from mcp_server.models import Provider
from mcp_server.upstream._backoff import RequestKind

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_BODY_BYTES",
    "REQUEST_POOL_LIMITS",
    "SSE_TIMEOUT",
    "USER_AGENT",
    "Call",
    "build_client",
    "same_origin",
]

USER_AGENT: Final = f"jobrelay/{__version__}"
#: Request/response calls: fail fast on connect, allow slow upstream reads.
DEFAULT_TIMEOUT: Final = httpx.Timeout(connect=5.0, read=30.0, write=10.0, pool=5.0)
#: SSE: the read timeout must exceed the ~15 s keep-alive interval (RETRY_POLICY C.2).
SSE_TIMEOUT: Final = httpx.Timeout(10.0, read=60.0)
#: Connections of one request client (one per provider and key). Event streams never use it:
#: they have their own client and cap (`agentseo.MAX_CONCURRENT_STREAMS`).
REQUEST_POOL_LIMITS: Final = httpx.Limits(max_connections=100, max_keepalive_connections=20)
#: Larger bodies are refused: the biggest documented page is well under 1 MiB.
MAX_BODY_BYTES: Final = 8 * 1024 * 1024

_AUTH_HEADER: Final[Mapping[Provider, str]] = {"seamless": "Token", "agentseo": "x-api-key"}


class _ApiKeyAuth(httpx.Auth):
    """Adds the key per request, so it is not in the client's default headers or any repr."""

    def __init__(self, header: str, key: SecretStr) -> None:
        self._header = header
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._header] = self._key.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return f"_ApiKeyAuth({self._header!r}, '**********')"


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One CA bundle for every upstream client. httpx would load it into a new context per
    client (0.1-0.2 s and about 1 MB each), and there is a client per provider and API key.
    Built as httpx builds its default (certifi, `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured)."""
    return httpx.create_ssl_context()


def build_client(
    provider: Provider,
    base_url: str,
    api_key: SecretStr | str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    limits: httpx.Limits = REQUEST_POOL_LIMITS,
    auth: httpx.Auth | None = None,
) -> httpx.AsyncClient:
    """The only constructor of upstream `httpx.AsyncClient`s: auth, UA, timeouts, no redirects.

    `auth` replaces the API key header (Seamless OAuth, `_oauth`)."""
    key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
    return httpx.AsyncClient(
        verify=_ssl_context(),
        base_url=base_url.rstrip("/"),
        auth=auth or _ApiKeyAuth(_AUTH_HEADER[provider], key),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        timeout=timeout,
        transport=transport,
        limits=limits,
        follow_redirects=False,
    )


def same_origin(url: str, base_url: str) -> bool:
    """True when `url` (absolute, or a path) resolves to `base_url`'s scheme, host and port.

    Upstream-supplied `poll_url`/`events_url` are followed only then, so a hostile or broken
    envelope cannot send our API key to another host.
    """
    try:
        base = httpx.URL(base_url)
        target = base.join(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        return False
    return (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)


@dataclass(frozen=True, slots=True)
class Call:
    """One upstream operation as sent: names it, routes it to a bucket, says how to retry it."""

    operation: str
    """Upstream operation name, e.g. `researchContacts` (for messages and logs)."""
    method: str
    path: str
    """Concrete path below the base URL, e.g. `/jobs/abc123`."""
    template: str
    """Path template for buckets and messages, e.g. `/jobs/{id}`."""
    kind: RequestKind
    params: Mapping[str, str] | None = None
    json_body: Any = None
    headers: Mapping[str, str] | None = None
