"""`jobrelay serve`: the MCP server over stdio (default) or Streamable HTTP."""

from __future__ import annotations

import sys

from mcp_server.config import load_settings
from mcp_server.server import build_server


def serve(*, transport: str, host: str, port: int, sandbox: bool) -> int:
    del host, port  # used by the HTTP transport
    settings = load_settings()
    if sandbox:
        settings = settings.model_copy(update={"sandbox": "on"})
    if transport != "stdio":
        print("jobrelay serve: the HTTP transport is not available yet.", file=sys.stderr)
        return 3
    build_server(settings).run("stdio")
    return 0
