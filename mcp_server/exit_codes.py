"""Process exit codes of the `jobrelay` command, shared by the CLI and the transports."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
