"""Write `manifests/tools.json`: the tool list exactly as an MCP client receives it.

    python tools/dump_tools.py          # regenerate the manifest
    python tools/dump_tools.py --check  # exit 1 (with a diff) if the manifest is stale

The tool names, arguments and annotations are public contract (DESIGN.md section 1); the
manifest is their reviewable snapshot, and `tests/test_manifest_tools.py` keeps it in sync. The
list is taken from the live server through the SDK's in-process client, so it is what
`tools/list` really returns (compact schemas included), never a hand-kept copy. A developer
script, not shipped: run it from a checkout.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "manifests" / "tools.json"

if str(ROOT) not in sys.path:  # a checkout runs its own mcp_server, even if another is installed
    sys.path.insert(0, str(ROOT))


def _settings(db: Path) -> Any:
    """Fixed settings (the sandbox, a throwaway ledger): the environment must not change the
    manifest, and no real API is contacted."""
    from mcp_server.config import load_settings

    return load_settings({"JOBRELAY_DB": str(db), "JOBRELAY_SANDBOX": "1"})


async def live_tools() -> list[dict[str, Any]]:
    """`tools/list` from a live in-process server, as wire JSON (camelCase, no nulls)."""
    from mcp import Client

    from mcp_server.server import build_server

    logging.getLogger("mcp_server.server").setLevel(logging.ERROR)  # the sandbox notice
    with tempfile.TemporaryDirectory(prefix="jobrelay-dump-") as tmp:
        async with Client(build_server(_settings(Path(tmp) / "jobs.sqlite3"))) as client:
            listed = await client.list_tools()
    return [tool.model_dump(by_alias=True, mode="json", exclude_none=True) for tool in listed.tools]


def render(tools: list[dict[str, Any]]) -> str:
    """Deterministic text: sorted keys, two-space indent, a trailing newline."""
    return json.dumps({"tools": tools}, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


async def build_manifest() -> str:
    """The manifest's full text, from the live tool list."""
    return render(await live_tools())


def _diff(old: str, new: str) -> str:
    lines = list(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile="manifests/tools.json (committed)",
            tofile="manifests/tools.json (live)",
        )
    )
    shown = "".join(lines[:60])
    more = f"... {len(lines) - 60} more diff lines\n" if len(lines) > 60 else ""
    return shown + more


def main(argv: list[str] | None = None) -> int:
    import anyio

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the manifest differs from the live list"
    )
    args = parser.parse_args(argv)
    text = anyio.run(build_manifest)
    current = MANIFEST.read_text(encoding="utf-8") if MANIFEST.exists() else ""
    if args.check:
        if current == text:
            print(f"{MANIFEST.relative_to(ROOT)} is up to date")
            return 0
        print(_diff(current, text), end="", file=sys.stderr)
        print(
            "manifests/tools.json is stale: run `python tools/dump_tools.py` and commit it.",
            file=sys.stderr,
        )
        return 1
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    MANIFEST.write_text(text, encoding="utf-8")
    tools = json.loads(text)["tools"]
    from mcp_server._bounds import tokens as estimate

    tokens = estimate(tools)
    print(f"wrote {MANIFEST.relative_to(ROOT)} ({len(tools)} tools, ~{tokens} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
