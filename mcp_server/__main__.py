"""`python -m mcp_server` is the `jobrelay` command."""

from mcp_server.cli import main

raise SystemExit(main())
