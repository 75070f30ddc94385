"""Seamless research targets as normalised keys, for the "you researched this before" warning.

Provider knowledge (Seamless's descriptor fields), kept out of the ledger: the ledger stores and
matches opaque keys; this module decides what the keys of a contact or company are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal
from urllib.parse import unquote, urlsplit

__all__ = ["target_keys"]


def _text(item: Mapping[str, object], *names: str) -> str | None:
    for name in names:
        value = item.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _norm_name(value: str) -> str:
    # `|` separates person and organisation in contact keys, so it may not appear inside one.
    return " ".join(value.replace("|", " ").casefold().split())


def _norm_domain(value: str) -> str:
    text = value.strip().lower()
    host = urlsplit(text if "://" in text else "//" + text).hostname or ""
    return host.rstrip(".").removeprefix("www.")


def _norm_linkedin(value: str) -> str:
    text = value.strip()
    parts = urlsplit(text if "://" in text else "https://" + text)
    host = (parts.hostname or "").removeprefix("www.")
    if host.endswith(".linkedin.com"):  # uk.linkedin.com, m.linkedin.com: the same profile
        host = "linkedin.com"
    return (host + unquote(parts.path).rstrip("/")).casefold()


def target_keys(
    kind: Literal["contacts", "companies"],
    *,
    contacts: Sequence[Mapping[str, object]] = (),
    companies: Sequence[Mapping[str, object]] = (),
    search_result_ids: Sequence[str] = (),
) -> list[str]:
    """Normalised keys naming who or what a research job targets (for the rerun warning).

    Contacts give `li:<linkedin.com/in/slug>`, `email:<lower email>`,
    `name:<name>|<company>` and `name:<name>|<domain>`; companies give `domain:<domain>` and
    `name:<name>`; both give `sr:<searchResultId>`. Every key a descriptor yields is listed, so
    any one matching an earlier job is enough to warn. Descriptors use the tool's field names
    (`name`, `company`, `domain`, `email`, `linkedin_url`) or Seamless's (`contactName`,
    `companyName`, `liProfileUrl`). Pure; duplicates removed, order kept.
    """
    if kind == "contacts" and companies:
        raise ValueError("company descriptors cannot be researched as contacts")
    if kind == "companies" and contacts:
        raise ValueError("contact descriptors cannot be researched as companies")
    keys = [f"sr:{sid.strip()}" for sid in search_result_ids if sid.strip()]
    for contact in contacts:
        if url := _text(contact, "linkedin_url", "liProfileUrl"):
            keys.append(f"li:{_norm_linkedin(url)}")
        if email := _text(contact, "email"):
            keys.append(f"email:{email.lower()}")
        if name := _text(contact, "name", "contactName"):
            if org := _text(contact, "company", "companyName"):
                keys.append(f"name:{_norm_name(name)}|{_norm_name(org)}")
            if (domain := _text(contact, "domain")) and (host := _norm_domain(domain)):
                keys.append(f"name:{_norm_name(name)}|{host}")
    for company in companies:
        if (domain := _text(company, "domain")) and (host := _norm_domain(domain)):
            keys.append(f"domain:{host}")
        if name := _text(company, "name", "companyName"):
            keys.append(f"name:{_norm_name(name)}")
    return list(dict.fromkeys(keys))
