"""The field names `get_job_result(fields=[...])` accepts per workflow
(`jobrelay://fields/agentseo`), read from sample results of the embedded sandbox (the same
shapes as the API's results)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from mcp_server.projection import field_paths

__all__ = ["result_fields"]


@functools.cache
def result_fields() -> Mapping[str, Sequence[str]]:
    from mcp_server.sandbox import _seo_results as seo

    where = seo.Location(code=2840, name="United States")
    samples: dict[str, Any] = {
        "serp_analysis": seo.SerpParams(keyword="x", location=where),
        "keyword_metrics": seo.KeywordMetricsParams(keywords=("x",), location=where),
        "local_audit": seo.LocalAuditParams(domain="x.com", business_name="X", location=where),
    }
    return {
        name: field_paths(dict(seo.generate_result(0, params, as_of=0.0)))
        for name, params in samples.items()
    }
