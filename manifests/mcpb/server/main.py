"""MCP Bundle entry point: jobrelay's stdio MCP server (`jobrelay serve`).

The host runs this file with uv (manifest `server.type` "uv"), which installs the dependencies
named in the bundle's pyproject.toml for the user's own platform and Python. The bundle root
goes first on `sys.path`, so the bundled `mcp_server` is the one imported.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcp_server.cli import main  # after the path fix above, on purpose

raise SystemExit(main(["serve"]))
