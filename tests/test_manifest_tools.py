"""`manifests/tools.json` is the live tool list (DESIGN.md: names are a public contract).

The generator is `tools/dump_tools.py`; these tests run its own functions (loaded with runpy,
since `tools/` is not a package), so the check and the script can never disagree.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pytest
from conftest import CONTRACT_TOOLS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "dump_tools.py"
MANIFEST = ROOT / "manifests" / "tools.json"


@pytest.fixture(scope="module")
def dump() -> dict[str, Any]:
    return runpy.run_path(str(SCRIPT))


@pytest.mark.anyio
async def test_the_committed_manifest_is_the_live_tool_list(dump: dict[str, Any]) -> None:
    live = await dump["build_manifest"]()
    assert MANIFEST.read_text(encoding="utf-8") == live, (
        "manifests/tools.json is stale: run `python tools/dump_tools.py` and commit it"
    )


def test_the_manifest_names_the_nine_tools_of_the_contract() -> None:
    tools = json.loads(MANIFEST.read_text(encoding="utf-8"))["tools"]
    assert [t["name"] for t in tools] == list(CONTRACT_TOOLS)
    for tool in tools:
        assert set(tool) == {"annotations", "description", "inputSchema", "name"}


def test_check_mode_fails_on_a_stale_manifest_and_passes_once_regenerated(
    dump: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main = dump["main"]
    target = tmp_path / "tools.json"
    target.write_text('{"tools": []}\n', encoding="utf-8")
    main.__globals__["MANIFEST"] = target  # the script's own global, not a copy
    main.__globals__["ROOT"] = tmp_path
    try:
        assert main(["--check"]) == 1
        err = capsys.readouterr().err
        assert '-{"tools": []}' in err
        assert '+  "tools": [' in err
        assert "run `python tools/dump_tools.py`" in err
        assert main([]) == 0
        assert main(["--check"]) == 0
    finally:
        main.__globals__["MANIFEST"] = MANIFEST
        main.__globals__["ROOT"] = ROOT
    assert target.read_text(encoding="utf-8") == MANIFEST.read_text(encoding="utf-8")
    assert target.read_text(encoding="utf-8").endswith("}\n")
