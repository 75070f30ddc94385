"""Properties of the ledger's pure helpers: target keys, fingerprints, stored time order,
stored JSON text."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_server.ledger import params_fingerprint
from mcp_server.ledger._codec import dumps as _dumps
from mcp_server.ledger._sqlite_rows import _iso
from mcp_server.providers.seamless.targets import target_keys

# Derandomised and without an example database: the same examples on every run and machine.
deterministic = settings(derandomize=True, database=None, max_examples=60)

slugs = st.from_regex(r"[a-z0-9][a-z0-9-]{2,30}", fullmatch=True)


@st.composite
def linkedin_spellings(draw: st.DrawFn) -> tuple[str, str]:
    """(a way people write a profile URL, the profile's slug)."""
    slug = draw(slugs)
    scheme = draw(st.sampled_from(["", "http://", "https://"]))
    host = draw(st.sampled_from(["linkedin.com", "www.linkedin.com", "uk.linkedin.com"]))
    shown = slug.upper() if draw(st.booleans()) else slug
    tail = draw(st.sampled_from(["", "/", "?trk=abc", "/#about"]))
    return f"{scheme}{host}/in/{shown}{tail}", slug


@deterministic
@given(spelling=linkedin_spellings())
def test_every_spelling_of_a_linkedin_profile_gives_the_same_key(
    spelling: tuple[str, str],
) -> None:
    url, slug = spelling
    assert target_keys("contacts", contacts=[{"linkedin_url": url}]) == [
        f"li:linkedin.com/in/{slug}"
    ]


@deterministic
@given(local=st.from_regex(r"[A-Za-z0-9._]{1,20}", fullmatch=True), domain=slugs)
def test_email_keys_ignore_case(local: str, domain: str) -> None:
    lower = target_keys("contacts", contacts=[{"email": f"{local}@{domain}.com".lower()}])
    mixed = target_keys("contacts", contacts=[{"email": f"{local}@{domain.upper()}.COM"}])
    assert lower == mixed == [f"email:{local.lower()}@{domain}.com"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)


@deterministic
@given(data=st.data(), params=st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_the_fingerprint_depends_on_content_not_key_order(
    data: st.DataObject, params: dict[str, object]
) -> None:
    items = data.draw(st.permutations(list(params.items())))
    assert params_fingerprint(dict(items)) == params_fingerprint(params)
    changed = {**params, "__extra__": 1}
    assert params_fingerprint(changed) != params_fingerprint(params)


moments = st.datetimes(
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive by design
    max_value=datetime(9000, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@deterministic
@given(a=moments, b=moments, offset_minutes=st.integers(-14 * 60, 14 * 60))
def test_stored_timestamps_sort_as_text_in_time_order(
    a: datetime, b: datetime, offset_minutes: int
) -> None:
    shown = b.astimezone(timezone(timedelta(minutes=offset_minutes)))
    text_a, text_b = _iso(a), _iso(shown)
    assert text_a is not None
    assert text_b is not None
    assert len(text_a) == len(text_b) == 27
    assert (text_a < text_b) == (a < b)
    assert datetime.fromisoformat(text_b) == b


stored_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8),  # any code point: the text is stored with UTF-8 kept
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        | st.dictionaries(st.integers() | st.booleans() | st.none(), inner, max_size=3)
    ),
    max_leaves=20,
)


@deterministic
@given(value=stored_values.filter(lambda v: v is not None))  # None is stored as SQL NULL
def test_stored_json_is_exactly_what_json_dumps_writes(value: object) -> None:
    # Encoded member by member at the outer levels (to bound memory): same text, byte for byte.
    assert _dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def test_stored_json_refuses_what_json_refuses() -> None:
    loop: dict[str, object] = {}
    loop["inner"] = {"back": loop}
    with pytest.raises(ValueError, match="Circular reference"):
        _dumps(loop)
    with pytest.raises(TypeError, match="not JSON serializable"):
        _dumps({"records": {"a": {1, 2}}})
    assert _dumps(None) is None
