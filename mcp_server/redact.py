"""Redaction: the one place that decides what counts as a credential in text we show.

Used by the upstream sender (error messages and body excerpts, marker `***`) and by advice
(upstream prose, pasted errors and headers, marker `[redacted]`). The two used to keep their
own patterns and had drifted apart; these are the union of both (issue 15), so anything either
hid is still hidden (tests/test_redact.py). A leaf: it imports nothing from jobrelay.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from pydantic import SecretStr

__all__ = ["BEARER", "SECRET_FIELD", "SECRET_HEADERS", "mask_secret", "redact"]

SECRET_FIELD: Final = re.compile(
    r"(?i)\b(token|x-api-key|api[_-]?key|apikey|authorization|secret|password)"
    r"(\"?\s*[:=]\s*\"?)(bearer\s+)?[^\s\"',;&]+"
)
"""`name: value` / `name=value` for a credential-looking name; the value is replaced."""

BEARER: Final = re.compile(r"(?i)\bbearer\s+\S+")
"""A bearer token anywhere in the text."""

SECRET_HEADERS: Final = frozenset(
    {"token", "x-api-key", "authorization", "x-seamless-webhook-secret", "cookie", "api-key"}
)
"""Headers whose values are credentials: never echoed anywhere."""


def redact(
    text: str, secrets: Iterable[str] = (), *, marker: str = "[redacted]", min_length: int = 1
) -> str:
    """`text` with every known secret (at least `min_length` characters), credential field
    and bearer token replaced by `marker`."""
    for secret in secrets:
        if secret and len(secret) >= min_length:
            text = text.replace(secret, marker)
    text = SECRET_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{marker}", text)
    return BEARER.sub(f"Bearer {marker}", text)


def mask_secret(secret: SecretStr | str | None) -> str:
    """`ab...yz` for a long key, `set` for a short one: enough to tell keys apart, no more."""
    raw = secret.get_secret_value() if isinstance(secret, SecretStr) else (secret or "")
    if not raw:
        return "not set"
    if len(raw) >= 12:
        return f"set ({raw[:2]}...{raw[-2:]})"
    return "set"
