"""The field names `get_job_result(fields=[...])` accepts per workflow
(`jobrelay://fields/agentseo`), read from sample results of the embedded sandbox (the same
shapes as the API's results)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from mcp_server.projection import field_paths

__all__ = ["result_fields"]


@functools.cache
def result_fields() -> Mapping[str, Sequence[str]]:
    from mcp_server.sandbox import sample_seo_results

    return {name: field_paths(result) for name, result in sample_seo_results().items()}
