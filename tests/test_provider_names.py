"""The core names no provider (issue 15 item 1): what a provider is lives in its package.

The core (use cases, the MCP layer, the backends, the shared settings and models) reaches
providers only through the registry and what they declare there (`JobProvider`: rate limits,
settings, advice, ...). This test reads the core's source with `ast` and fails on a built-in
provider's name ("seamless", "agentseo", any case) in code: a string literal, an identifier
(name, attribute, argument, keyword, function or class name) or an imported module. Docstrings
(bare string statements) and comments are prose and not read.

What must stay is listed in `ALLOWED`, each with its reason; an entry that no longer matches
anything fails the test, so the list only shrinks. `test_the_rule_can_fail` plants violations
in a made-up module and checks each is reported (and the prose is not).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mcp_server"

NAMES = re.compile(r"seamless|agentseo", re.IGNORECASE)

#: The core: use cases, the MCP layer, the entry points that build the server, the backends
#: and the shared vocabulary (ARCHITECTURE.md). Packages include everything in them.
CORE: tuple[str, ...] = (
    "jobs",
    "limits",
    "ledger",
    "watch.py",
    "tools.py",
    "server.py",
    "resources.py",
    "usage.py",
    "tasks.py",
    "tool_results.py",
    "bus.py",
    "config.py",
    "cli.py",
    "transport.py",
    "models.py",
)

_AGENT_TEXT = "agent-facing text of a built-in provider's tool or server, fixed by golden tests"

#: (path under mcp_server/, regular expression a whole finding must match) -> why it stays.
ALLOWED: Mapping[tuple[str, str], str] = {
    ("tools.py", r"Redo recent Seamless research \(paid\)"): _AGENT_TEXT,
    ("server.py", r"jobrelay starts and watches long-running Seamless\.ai research .*"): (
        _AGENT_TEXT
    ),
    ("cli.py", r"MCP server for long-running Seamless\.ai research and AgentSEO jobs.*"): (
        "the CLI's description of the product (jobrelay --help)"
    ),
    ("cli.py", r"serve the simulated Seamless and AgentSEO APIs"): (
        "the sandbox command's help: the sandbox simulates exactly the built-in APIs"
    ),
}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are statements of their own (docstrings, prose)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _texts(node: ast.AST) -> Iterator[str]:
    """The names and string values a node puts in code."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Attribute):
        yield node.attr
    elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        yield node.name
    elif isinstance(node, ast.arg | ast.keyword) and node.arg is not None:
        yield node.arg
    elif isinstance(node, ast.alias):
        yield node.name
        if node.asname:
            yield node.asname
    elif isinstance(node, ast.ImportFrom) and node.module:
        yield node.module


def findings(source: str) -> list[tuple[int, str]]:
    """(line, text) of every provider name in `source`'s code, prose excluded."""
    tree = ast.parse(source)
    prose = _docstrings(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in prose:
            continue
        for text in _texts(node):
            if NAMES.search(text):
                found.append((getattr(node, "lineno", 0), text))
    return sorted(found)


def _core_files() -> Iterator[Path]:
    for entry in CORE:
        path = PACKAGE / entry
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def _allowed(relative: str, text: str) -> tuple[str, str] | None:
    for key in ALLOWED:
        where, pattern = key
        if where == relative and re.fullmatch(pattern, text, re.DOTALL):
            return key
    return None


def violations() -> tuple[list[str], set[tuple[str, str]]]:
    """Findings no `ALLOWED` entry covers, and the entries that covered something."""
    bad: list[str] = []
    used: set[tuple[str, str]] = set()
    for path in _core_files():
        relative = path.relative_to(PACKAGE).as_posix()
        for line, text in findings(path.read_text(encoding="utf-8")):
            key = _allowed(relative, text)
            if key is None:
                bad.append(f"mcp_server/{relative}:{line}: {text[:80]!r}")
            else:
                used.add(key)
    return bad, used


def test_the_core_names_no_provider() -> None:
    bad, used = violations()
    assert bad == [], (
        "the core names a provider; move the knowledge into the provider's declaration "
        "(JobProvider, registered through providers.registry):\n  " + "\n  ".join(bad)
    )
    stale = sorted(set(ALLOWED) - used)
    assert stale == [], f"ALLOWED entries no longer needed: remove them: {stale}"


def test_every_core_entry_exists() -> None:
    for entry in CORE:
        assert (PACKAGE / entry).exists(), entry
    assert sum(1 for _ in _core_files()) > 30


PLANTED = '''
"""A module whose docstring may say Seamless and AgentSEO freely."""
from mcp_server.providers.seamless import adapter  # a comment may say agentseo too

def bucket(provider: str, seamless_plan: int) -> str:
    """Prose about Seamless is fine here."""
    if provider == "seamless":
        return seamless_bucket(provider)
    return call(plan=settings.agentseo_plan, AgentSEO=1)

class SeamlessThing:
    pass
'''


def test_the_rule_can_fail() -> None:
    found = findings(PLANTED)
    texts = [text for _, text in found]
    assert sorted(texts) == sorted(
        [
            "mcp_server.providers.seamless",  # the imported module
            "seamless_plan",  # an argument
            "seamless",  # a string literal in code
            "seamless_bucket",  # a called name
            "agentseo_plan",  # an attribute
            "AgentSEO",  # a keyword
            "SeamlessThing",  # a class
        ]
    ), found
    assert all("Prose" not in t and "docstring" not in t for t in texts)
    # and an allowlist entry covers only its own module and whole matches
    paid = "Redo recent Seamless research (paid)"
    assert _allowed("tools.py", paid) is not None
    assert _allowed("jobs/service.py", paid) is None
    assert _allowed("tools.py", "seamless") is None
