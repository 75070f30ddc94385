"""Seamless.ai contact and company research as a jobrelay provider."""

from mcp_server.providers.seamless.adapter import SeamlessProvider

__all__ = ["SeamlessProvider"]
