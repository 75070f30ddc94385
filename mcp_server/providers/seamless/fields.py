"""The field names `get_job_result(fields=[...])` accepts for research results
(`jobrelay://fields/seamless`), read from sample records of the embedded sandbox (the same
shapes as the API's records)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from mcp_server.projection import field_paths

__all__ = ["result_fields"]


@functools.cache
def result_fields() -> Mapping[str, Sequence[str]]:
    from mcp_server.sandbox import _records as rec

    contact = rec.contact_record(
        rec.build_contact(0, rec.ContactSpec(key="x")), request_id="r", created_at=0.0
    )
    company = rec.company_record(
        rec.build_company(0, rec.CompanySpec(key="x")), request_id="r", created_at=0.0
    )
    return {"contacts": field_paths(contact), "companies": field_paths(company)}
