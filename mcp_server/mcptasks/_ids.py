"""Task ids: derived from the application's handle, unguessable, and bound to the owner.

`HMAC-SHA256(secret, owner NUL handle)`, 144 bits in URL-safe base64 (24 characters, safe in
the `Mcp-Name` header). The same owner and handle always give the same id under one secret,
so a retried `tools/call` finds the task it already made; another owner's id for the same
handle differs, and nobody without the secret can compute or enumerate ids. The store keeps
the id, so tasks stay readable after a restart even if the secret changed; only that
retry-finds-its-task guarantee needs the secret to persist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_ID_BYTES = 18


class TaskIds:
    """Mints task ids with one server secret (a fresh random one when none is given)."""

    def __init__(self, secret: bytes | None = None) -> None:
        if secret is not None and len(secret) < 16:
            raise ValueError("the task id secret needs at least 16 bytes")
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    def mint(self, owner: str, handle: str) -> str:
        if "\0" in owner:
            raise ValueError("an owner key must not contain NUL")
        message = owner.encode() + b"\0" + handle.encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:_ID_BYTES]).decode("ascii")
