"""The MCP Bundle is built by tools/build_mcpb.py and claims only what it is (issue 14.11).

A `uv` bundle (MCPB manifest 0.4): jobrelay's source and pyproject.toml, no compiled
dependencies, so "every platform, any Python >= 3.11" is true; the host's uv installs the
dependencies on the user's machine.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from conftest import CONTRACT_TOOLS
from mcp import Client, StdioServerParameters

from mcp_server import __version__

ROOT = Path(__file__).resolve().parent.parent


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_mcpb", ROOT / "tools" / "build_mcpb.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mcpb") / "jobrelay.mcpb"
    assert _builder().main(["--out", str(out)]) == 0
    return out


def _read(bundle: Path) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
        pyproject = tomllib.loads(archive.read("pyproject.toml").decode())
    return names, manifest, pyproject


def test_the_bundle_is_a_uv_bundle_whose_manifest_matches_its_contents(bundle: Path) -> None:
    names, manifest, pyproject = _read(bundle)
    repo = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert manifest["manifest_version"] == "0.4"
    assert manifest["version"] == __version__ == pyproject["project"]["version"]
    server = manifest["server"]
    assert server["type"] == "uv"
    assert server["entry_point"] in names
    assert server["entry_point"] in server["mcp_config"]["args"]
    # Dependencies travel as requirements for uv, never as files for one platform.
    assert pyproject["project"]["dependencies"] == repo["project"]["dependencies"]
    assert not [n for n in names if n.startswith(("server/lib/", "server/venv/"))]
    assert not [n for n in names if n.endswith((".so", ".pyd", ".dylib", ".whl", ".pyc"))]
    assert manifest["compatibility"]["runtimes"]["python"] == repo["project"]["requires-python"]
    assert set(manifest["compatibility"]["platforms"]) == {"darwin", "win32", "linux"}
    # The whole package is inside, and nothing but it and the bundle's own files.
    package = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "mcp_server").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert package <= set(names)
    others = {n for n in names if not n.startswith("mcp_server/")}
    assert others == {"manifest.json", "pyproject.toml", "README.md", "LICENSE", "server/main.py"}


def test_the_builder_refuses_a_bundle_that_would_claim_too_much() -> None:
    builder = _builder()
    manifest = json.loads((ROOT / "manifests" / "mcpb" / "manifest.json").read_text())
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = list(builder.bundle_files())
    assert builder.check_bundle(names, manifest, pyproject) == []

    python_type = json.loads(json.dumps(manifest))
    python_type["server"]["type"] = "python"
    assert any("server.type" in p for p in builder.check_bundle(names, python_type, pyproject))
    with_wheels = [*names, "server/lib/pydantic_core/_pydantic_core.cpython-311-x86_64.so"]
    problems = builder.check_bundle(with_wheels, manifest, pyproject)
    assert any("server/lib" in p for p in problems)
    assert any("platform-specific" in p for p in problems)
    other_python = json.loads(json.dumps(manifest))
    other_python["compatibility"]["runtimes"]["python"] = ">=3.8"
    assert builder.check_bundle(names, other_python, pyproject) == [
        "compatibility.runtimes.python differs from requires-python"
    ]


def test_the_same_sources_build_the_same_bundle(bundle: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.mcpb"
    assert _builder().main(["--out", str(again)]) == 0
    assert again.read_bytes() == bundle.read_bytes()


@pytest.mark.anyio
async def test_the_unpacked_bundle_serves_the_tools_from_its_own_copy(
    bundle: Path, tmp_path: Path
) -> None:
    """What uv runs: server/main.py, importing the bundled `mcp_server` (the dependencies
    come from this test's environment, as uv would provide them)."""
    root = tmp_path / "unpacked"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(root)
    # Only the bundle's copy of the package leaves this mark when imported.
    mark = tmp_path / "imported-from-bundle"
    init = root / "mcp_server" / "__init__.py"
    init.write_text(init.read_text() + f"\nopen({str(mark)!r}, 'w').close()\n")
    _, manifest, _ = _read(bundle)
    env = {
        "JOBRELAY_DB": str(tmp_path / "jobs.sqlite3"),
        "PATH": "/usr/bin:/bin",
        "SEAMLESS_API_KEY": "",  # what a host sends for a cleared setting
        "SEAMLESS_ACCESS_TOKEN": "",
        "SEAMLESS_OAUTH_CLIENT_ID": "",
        "SEAMLESS_OAUTH_CLIENT_SECRET": "",
        "SEAMLESS_OAUTH_REFRESH_TOKEN": "",
        "SEAMLESS_OAUTH_REDIRECT_URI": "",
        "AGENTSEO_API_KEY": "",
        "AGENTSEO_PLAN": "",
        "JOBRELAY_CREDIT_BUDGET": "",
    }
    assert set(manifest["server"]["mcp_config"]["env"]) == set(env) - {"JOBRELAY_DB", "PATH"}
    params = StdioServerParameters(
        command=sys.executable, args=[str(root / "server" / "main.py")], env=env, cwd=root
    )
    with anyio.fail_after(30):
        async with Client(params) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            usage = await client.call_tool("get_usage", {})
    assert tools == list(CONTRACT_TOOLS)
    assert not usage.is_error
    assert mark.exists(), "the server imported an mcp_server other than the bundled one"
