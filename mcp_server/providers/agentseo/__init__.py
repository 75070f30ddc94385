"""AgentSEO workflows as a jobrelay provider."""

from mcp_server.providers.agentseo.adapter import AgentSEOProvider

__all__ = ["AgentSEOProvider"]
