"""One redaction set (`mcp_server.redact`), used by the sender and by advice (issue 15).

The two copies it replaces are kept here, verbatim, as the oracle: whatever either of them
hid must still be hidden by the shared one, whichever marker the caller uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from hypothesis import given
from hypothesis import strategies as st

from mcp_server.advice.clean import clean_text
from mcp_server.redact import redact
from mcp_server.upstream import _failures

# ---- the two sets as they were before issue 15 ------------------------------------------------

_OLD_HTTP_FIELD = re.compile(
    r"(?i)\b(token|x-api-key|api[_-]?key|apikey|authorization|secret|password)"
    r"(\"?\s*[:=]\s*\"?)(bearer\s+)?[^\s\"',;&}]+"
)
_OLD_HTTP_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")
_OLD_ADVICE_FIELD = re.compile(
    r"(?i)\b(token|x-api-key|api[_-]?key|apikey|authorization|secret|password)"
    r"(\"?\s*[:=]\s*\"?)(bearer\s+)?[^\s\"',;&)]+"
)
_OLD_ADVICE_BEARER = re.compile(r"(?i)\bbearer\s+\S+")


def _old_http(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _OLD_HTTP_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    return _OLD_HTTP_BEARER.sub("Bearer ***", text)


def _old_advice(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    text = _OLD_ADVICE_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
    return _OLD_ADVICE_BEARER.sub("Bearer [redacted]", text)


def _new_http(text: str, secrets: Iterable[str]) -> str:
    return _failures._sanitise(text, tuple(secrets), 10_000)


def _new_advice(text: str, secrets: Iterable[str]) -> str:
    return clean_text(text, tuple(secrets), 10_000) or ""


# ---- the union is still hidden ----------------------------------------------------------------

NAMES = ["token", "Token", "x-api-key", "api_key", "apiKey", "authorization", "secret", "password"]
SEPARATORS = ["=", ": ", '": "', ":", " = "]
CHUNK = st.text(alphabet="QWXZ0123456789", min_size=4, max_size=8)
PUNCT = st.sampled_from([")", "}", "]", ">", "!", "-", ".", "~", "+", "/", "=", "#", "%"])
#: A value is chunks joined by punctuation: each chunk is checked on its own, so a value that is
#: hidden only in part (a leak of its tail) is caught.
VALUE = st.tuples(st.lists(st.tuples(CHUNK, PUNCT), max_size=3), CHUNK)


def _value(parts: tuple[list[tuple[str, str]], str]) -> tuple[str, list[str]]:
    head, last = parts
    return "".join(c + p for c, p in head) + last, [c for c, _ in head] + [last]


def _check(text: str, chunks: list[str]) -> None:
    for chunk in chunks:
        if chunk in text.replace(chunk, "", 1):
            continue  # the chunk occurs twice: it cannot tell where it came from
        if chunk not in _old_http(text, ()) or chunk not in _old_advice(text, ()):
            assert chunk not in _new_http(text, ()), (text, chunk)
            assert chunk not in _new_advice(text, ()), (text, chunk)


@given(
    name=st.sampled_from(NAMES),
    sep=st.sampled_from(SEPARATORS),
    parts=VALUE,
    after=st.sampled_from(["", " and more", ")", "}", '"}', ", next", "; x"]),
)
def test_a_credential_field_either_set_hid_stays_hidden(
    name: str, sep: str, parts: tuple[list[tuple[str, str]], str], after: str
) -> None:
    value, chunks = _value(parts)
    _check(f"upstream said {name}{sep}{value}{after}", chunks)


@given(
    parts=VALUE,
    before=st.sampled_from(["Bearer ", "bearer  ", "Authorization: Bearer "]),
    quote=st.sampled_from(["", '"', "'", "(", "<"]),
)
def test_a_bearer_token_either_set_hid_stays_hidden(
    parts: tuple[list[tuple[str, str]], str], before: str, quote: str
) -> None:
    value, chunks = _value(parts)
    head, _ = parts
    if head:  # a quote inside the token: the old sender's pattern stopped there
        first = head[0][0] + quote
        value = first + value[len(head[0][0]) :]
    _check(f"header was {before}{value} (rejected)", chunks)


@given(secret=st.text(alphabet="abcdefghijk0123456789-", min_size=1, max_size=20))
def test_a_known_secret_is_hidden_as_each_caller_hid_it(secret: str) -> None:
    text = f"the key {secret} was refused"
    if secret not in _old_http(text, (secret,)):
        assert secret not in _new_http(text, (secret,))
    if secret not in _old_advice(text, (secret,)):
        assert secret not in _new_advice(text, (secret,))


def test_where_the_two_sets_disagreed_the_shared_one_hides_both() -> None:
    # advice stopped a field value at ")", the sender at "}": each leaked what the other hid.
    assert "def" not in redact("token=abc)def")
    assert "def" not in redact("token=abc}def")
    # the sender's bearer pattern stopped at a quote or bracket; advice's did not.
    assert 'x"y' not in redact('Bearer sk_x"y', marker="***")
    # and the markers each caller shows are unchanged.
    assert redact("password=hunter2") == "password=[redacted]"
    assert redact("password=hunter2", marker="***") == "password=***"
    assert redact("key k3y!", ["k3y!"], marker="***", min_length=4) == "key ***"
    assert redact("key abc", ["abc"], marker="***", min_length=4) == "key abc"
