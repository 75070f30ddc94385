"""Build the MCP Bundle (.mcpb) for Claude Desktop and check it is honest.

    python tools/build_mcpb.py                   # -> dist/jobrelay-<version>.mcpb
    python tools/build_mcpb.py --out my.mcpb

The bundle uses the MCPB manifest's `uv` server type (manifest_version 0.4): it carries
jobrelay's source and pyproject.toml but no dependencies, and the host installs them with uv
for the user's own platform and Python. So one bundle serves macOS, Windows and Linux and any
Python the pyproject allows, which is exactly what the manifest's `compatibility` claims.
(A `python` bundle would have to ship `server/lib/` with compiled wheels for one platform and
one Python version, and claim only those.)

Layout:
    manifest.json        manifests/mcpb/manifest.json
    pyproject.toml       the project's own (dependencies, requires-python)
    README.md, LICENSE
    mcp_server/          the package
    server/main.py       the entry point: `jobrelay serve` on stdio

Before writing, `check_bundle` compares the manifest with the package and the pyproject; any
mismatch stops the build (exit 1) with one line per problem.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "manifests" / "mcpb" / "manifest.json"
ENTRY = ROOT / "manifests" / "mcpb" / "server" / "main.py"
#: Fixed timestamp for every zip entry: the same sources give the same bundle bytes.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)


def bundle_files() -> dict[str, Path]:
    """Archive name -> source file, in a stable order."""
    files = {
        "manifest.json": MANIFEST,
        "pyproject.toml": ROOT / "pyproject.toml",
        "README.md": ROOT / "README.md",
        "LICENSE": ROOT / "LICENSE",
        "server/main.py": ENTRY,
    }
    package = ROOT / "mcp_server"
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in {".py", ".typed"}:
            files[path.relative_to(ROOT).as_posix()] = path
    return files


def check_bundle(
    names: Iterable[str], manifest: Mapping[str, Any], pyproject: Mapping[str, Any]
) -> list[str]:
    """Problems that would make the bundle claim something it is not; [] when consistent."""
    names = set(names)
    problems: list[str] = []
    project = pyproject.get("project", {})
    server = manifest.get("server", {})
    if manifest.get("manifest_version") != "0.4":
        problems.append("manifest_version must be 0.4 (the first with the uv server type)")
    if server.get("type") != "uv":
        problems.append('server.type must be "uv": dependencies are resolved on the user machine')
    entry = server.get("entry_point", "")
    if entry not in names:
        problems.append(f"server.entry_point {entry!r} is not in the bundle")
    args = server.get("mcp_config", {}).get("args", [])
    if entry and entry not in args:
        problems.append("server.mcp_config.args do not run server.entry_point")
    if "pyproject.toml" not in names:
        problems.append("a uv bundle needs pyproject.toml at its root")
    bundled_deps = [n for n in names if n.startswith(("server/lib/", "server/venv/"))]
    if bundled_deps:
        problems.append("a uv bundle must not ship server/lib/ or server/venv/")
    if any(n.endswith((".so", ".pyd", ".dylib", ".whl")) for n in names):
        problems.append("platform-specific binaries in a bundle that claims every platform")
    if manifest.get("version") != project.get("version"):
        problems.append(f"version {manifest.get('version')} != pyproject {project.get('version')}")
    runtimes = manifest.get("compatibility", {}).get("runtimes", {})
    if runtimes.get("python") != project.get("requires-python"):
        problems.append("compatibility.runtimes.python differs from requires-python")
    if not project.get("dependencies"):
        problems.append("pyproject.toml names no dependencies for uv to install")
    env = server.get("mcp_config", {}).get("env", {})
    user_config = manifest.get("user_config", {})
    for name, value in env.items():
        refs = re.findall(r"\$\{user_config\.(\w+)\}", value)
        problems += [
            f"env {name} uses unknown user_config.{r}" for r in refs if r not in user_config
        ]
    return problems


def build(out: Path) -> list[str]:
    """Write the bundle to `out` unless it would be inconsistent; the problems found."""
    files = bundle_files()
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    problems = check_bundle(files, manifest, pyproject)
    if problems:
        return problems
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, source in files.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, source.read_bytes())
    return []


def main(argv: list[str] | None = None) -> int:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    version = pyproject["project"]["version"]
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "dist" / f"jobrelay-{version}.mcpb",
        help="where to write the bundle (default dist/jobrelay-VERSION.mcpb)",
    )
    args = parser.parse_args(argv)
    problems = build(args.out)
    for problem in problems:
        print(f"build_mcpb: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"build_mcpb: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
