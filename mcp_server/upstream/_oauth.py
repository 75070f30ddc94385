"""Seamless OAuth (UPSTREAMS.md 1 "OAuth", DESIGN.md 5): how requests are authenticated.

Three ways, one per request, never two ([OAU]: never both kinds on one request):
- an API key, sent as `Token: <key>` (`_client._ApiKeyAuth`);
- an access token, sent as `Authorization: Bearer <token>` (`BearerAuth`);
- a client id/secret/refresh token (+ the connection's redirect URI, which the token request
  requires): `RefreshingAuth` obtains access tokens with `POST /oauth/accessToken`
  (`grant_type=refresh_token`), refreshes them before they expire and once after a 401.

Tokens are secrets: held as `SecretStr`, never in a repr, a log line or an error message
(`secrets()` hands them to the sanitiser). `expires_at` has no documented unit; it is read
defensively (epoch ms, epoch s, or seconds from now). Whether refresh tokens rotate is not
documented either: a refresh token in the answer replaces the one held (in memory only).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Final

import anyio
import httpx
from pydantic import SecretStr

from mcp_server.errors import TokenError

__all__ = ["REFRESH_MARGIN", "BearerAuth", "OAuthClient", "RefreshingAuth", "TokenError"]

log = logging.getLogger(__name__)

TOKEN_PATH: Final = "/oauth/accessToken"  # noqa: S105 - a path, not a password
REFRESH_MARGIN: Final = 60.0
"""Seconds before `expires_at` at which a token is refreshed rather than used."""
_DEFAULT_LIFETIME: Final = 3600.0
"""Assumed lifetime when the answer has no usable `expires_at` (not documented)."""


class BearerAuth(httpx.Auth):
    """A fixed access token (`SEAMLESS_ACCESS_TOKEN`) as `Authorization: Bearer`."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        yield request

    def secrets(self) -> tuple[str, ...]:
        return (self._token.get_secret_value(),)

    def __repr__(self) -> str:
        return "BearerAuth('**********')"


@dataclass(frozen=True)
class OAuthClient:
    """An OAuth connection's registration (Settings > Public API > OAuth Connections)."""

    client_id: str
    client_secret: SecretStr
    redirect_uri: str

    def __repr__(self) -> str:
        return f"OAuthClient({self.client_id!r}, '**********', {self.redirect_uri!r})"


def expiry(value: object, now: float) -> float:
    """`expires_at` as an epoch second (clock time); unit not documented, so: >= 1e12 is epoch
    milliseconds, >= 1e9 epoch seconds, anything smaller seconds from now."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return now + _DEFAULT_LIFETIME
    if value >= 1e12:
        return value / 1000.0
    if value >= 1e9:
        return float(value)
    return now + float(value)


class RefreshingAuth(httpx.Auth):
    """Access tokens from a refresh token: refreshed before expiry and once on a 401."""

    def __init__(
        self,
        client: OAuthClient,
        refresh_token: SecretStr,
        *,
        token_url: str,
        now: Callable[[], float],
        margin: float = REFRESH_MARGIN,
    ) -> None:
        self._client = client
        self._refresh = refresh_token
        self._token_url = token_url
        self._now = now
        self._margin = margin
        self._access: SecretStr | None = None
        self._expires_at = 0.0
        self._lock = anyio.Lock()
        self._old: list[str] = []
        """Earlier tokens, kept only so the sanitiser can still hide them."""
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"RefreshingAuth({self._client!r}, '**********')"

    def secrets(self) -> tuple[str, ...]:
        held = [self._client.client_secret.get_secret_value(), self._refresh.get_secret_value()]
        if self._access is not None:
            held.append(self._access.get_secret_value())
        return (*held, *self._old)

    def _fresh(self) -> bool:
        return self._access is not None and self._now() < self._expires_at - self._margin

    def token_request(self) -> httpx.Request:
        body = {
            "client_id": self._client.client_id,
            "client_secret": self._client.client_secret.get_secret_value(),
            "redirect_uri": self._client.redirect_uri,
            "grant_type": "refresh_token",
            "refresh_token": self._refresh.get_secret_value(),
        }
        return httpx.Request(
            "POST",
            self._token_url,
            json=body,
            headers={"Accept": "application/json"},
        )

    def _accept(self, response: httpx.Response) -> None:
        """Store the tokens of a token answer, or raise `TokenError` (never echoing them)."""
        status = response.status_code
        try:
            data = json.loads(response.content) if response.content else None
        except ValueError:
            data = None
        if status != 200 or not isinstance(data, dict):
            why = "refused the refresh token" if status in (400, 401, 403) else "failed"
            raise TokenError(
                f"Seamless POST {TOKEN_PATH} {why} (HTTP {status}); check "
                "SEAMLESS_OAUTH_CLIENT_ID/_SECRET/_REFRESH_TOKEN/_REDIRECT_URI, or "
                "re-authorize the OAuth connection.",
                status=status,
            )
        token = data.get("access_token")
        if not isinstance(token, str) or not token.strip():
            raise TokenError(f"Seamless POST {TOKEN_PATH} answered without an access_token.")
        if self._access is not None:
            self._old.append(self._access.get_secret_value())
        self._access = SecretStr(token.strip())
        self._expires_at = expiry(data.get("expires_at"), self._now())
        rotated = data.get("refresh_token")
        if isinstance(rotated, str) and rotated.strip():
            self._old.append(self._refresh.get_secret_value())
            self._refresh = SecretStr(rotated.strip())
        self.refreshes += 1
        log.info("Seamless OAuth access token refreshed (refresh %d)", self.refreshes)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Sign with the current token; `UpstreamHTTP` calls `ensure` first (and `refresh`
        after a 401), so a failed token request is never mistaken for the call's own."""
        if self._access is not None:
            request.headers.pop("Token", None)  # never both kinds of auth on one request
            request.headers["Authorization"] = f"Bearer {self._access.get_secret_value()}"
        yield request

    @property
    def token(self) -> SecretStr | None:
        return self._access

    async def ensure(self, client: httpx.AsyncClient) -> None:
        """Have a token that does not expire within the margin (refresh if needed)."""
        async with self._lock:
            if not self._fresh():
                await self._refresh_now(client)

    async def refresh(self, client: httpx.AsyncClient, used: SecretStr | None) -> None:
        """After a 401 with token `used`: refresh, unless another call already did."""
        async with self._lock:
            if self._access is used:
                await self._refresh_now(client)

    async def _refresh_now(self, client: httpx.AsyncClient) -> None:
        response = await client.send(self.token_request(), auth=None)
        try:
            await response.aread()
        finally:
            await response.aclose()
        self._accept(response)
