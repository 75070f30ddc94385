"""The wheel: only `mcp_server` (and its metadata), and a working `jobrelay` once installed.

Building runs `pip wheel . --no-deps`, which fetches the build backend (hatchling) from the
package index into an isolated build environment: the test is skipped, saying why, when the
index cannot be reached. The install check uses a fresh venv that gets jobrelay from the wheel
and borrows the already-installed dependencies of this environment through a `.pth` line, so
it needs no network and still runs the console script pip generated from the wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

from mcp_server import __version__

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

pytestmark = pytest.mark.slow

_NETWORK_HINTS = (
    "Could not find a version that satisfies the requirement hatchling",
    "No matching distribution found for hatchling",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
)


def _run(*argv: str | Path, cwd: Path | None = None, timeout: float = 300) -> str:
    done = subprocess.run(  # noqa: S603  # fixed argument lists built here
        [str(a) for a in argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
    )
    if done.returncode != 0:
        raise AssertionError(f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    try:
        _run(sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", out, cwd=ROOT)
    except AssertionError as exc:
        if any(hint in str(exc) for hint in _NETWORK_HINTS):
            pytest.skip(f"cannot fetch the build backend (no package index reachable): {exc}")
        raise
    [built] = out.glob("*.whl")
    return built


def _source_files() -> set[str]:
    return {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "mcp_server").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_the_wheel_holds_only_the_package_and_its_metadata(wheel: Path) -> None:
    version = PYPROJECT["project"]["version"]
    assert wheel.name == f"jobrelay-{version}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"mcp_server", f"jobrelay-{version}.dist-info"}
    assert {n for n in names if n.startswith("mcp_server/")} == _source_files()
    assert "mcp_server/py.typed" in names
    assert not [n for n in names if n.endswith(".pyc") or "/tests/" in n]


def test_the_wheel_metadata_carries_the_readme_and_entry_point(wheel: Path) -> None:
    version = PYPROJECT["project"]["version"]
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(f"jobrelay-{version}.dist-info/METADATA").decode()
        entry_points = zf.read(f"jobrelay-{version}.dist-info/entry_points.txt").decode()
    headers = HeaderParser().parsestr(metadata)
    assert headers["Name"] == "jobrelay"
    assert headers["Version"] == version == __version__
    assert headers["Requires-Python"] == PYPROJECT["project"]["requires-python"]
    assert headers["Description-Content-Type"] == "text/markdown"
    # The PyPI page is the README, with the registry's ownership marker.
    assert "<!-- mcp-name: io.github.jobrelay/jobrelay -->" in metadata
    assert "[console_scripts]\njobrelay = mcp_server.cli:main" in entry_points


def test_jobrelay_installed_from_the_wheel_into_a_fresh_venv_works(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel)
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    # Dependencies only: a plain path line does not run this environment's .pth files, so the
    # editable jobrelay of the checkout stays out and the wheel's copy is the one imported.
    Path(site.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = python.with_name("jobrelay")

    assert _run(script, "--version", cwd=tmp_path) == f"jobrelay {__version__}\n"
    where = _run(python, "-c", "import mcp_server; print(mcp_server.__file__)", cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(venv)
    advice = _run(script, "explain", "429", "--provider", "seamless", cwd=tmp_path)
    assert advice.startswith("Rate limited by Seamless")
