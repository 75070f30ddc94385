"""What `jobrelay serve` imports: modules only some paths need are loaded by those paths, so a
server that never uses them does not carry them (scale RSS, BENCHMARKS.md "Scale peak RSS")."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
from mcp_server import cli
cli._skip_httpx_cli()
import mcp_server.server, mcp_server.transport
import httpx
assert httpx.AsyncClient is not None
print(sorted(m for m in ("pygments", "platformdirs", "difflib", "mcp_server.sandbox")
             if m in sys.modules))
"""


def test_serving_does_not_import_what_only_other_paths_need() -> None:
    done = subprocess.run(  # noqa: S603  # our interpreter, a fixed probe
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_lazy_imports_still_work_where_they_are_needed() -> None:
    from mcp_server.config import default_db_path

    path = default_db_path()
    assert path.name == "jobs.sqlite3"
    assert "jobrelay" in str(path)
