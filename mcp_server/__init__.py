"""jobrelay: an MCP server for long-running Seamless.ai research and AgentSEO jobs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jobrelay")
except PackageNotFoundError:  # pragma: no cover - only when run from a bare source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
