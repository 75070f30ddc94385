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
    from mcp_server.sandbox import sample_research_records

    return {kind: field_paths(record) for kind, record in sample_research_records().items()}
