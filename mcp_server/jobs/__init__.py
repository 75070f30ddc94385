"""The job use cases behind the tools (`JobService`), apart from their rendering
(`render`) and plumbing (`context`). See `service.py`."""

from mcp_server.jobs.listing import RESULT_READ
from mcp_server.jobs.render import RENDER_CACHE_SIZE
from mcp_server.jobs.service import JobService
from mcp_server.providers import Caller, Outcome, ProgressFn

__all__ = ["RENDER_CACHE_SIZE", "RESULT_READ", "Caller", "JobService", "Outcome", "ProgressFn"]
