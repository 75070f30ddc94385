"""The import rules that keep the layers visible (ARCHITECTURE.md; issue 15 item 5).

The graph is read from the source with `ast`, nothing is imported. An edge is any `import` of a
`mcp_server` module, at module level or inside a function (a lazy import still couples the two),
except inside an `if TYPE_CHECKING:` block (no run-time dependency). Importing `a.b.c` counts
as an edge to `a.b.c` only, not to the packages above it.

Each rule is a function over that graph; `test_each_rule_can_fail` plants one violation per rule
in a copy of the real graph and checks the rule reports it.

Sizes (issue 15 item 2), read from the source too: no module over `MAX_MODULE_LINES` lines and no
class with more than `MAX_METHODS` methods, except the entries of `LONG_MODULES` / `BIG_CLASSES`,
each with its reason (a stale entry fails). A class's methods are the functions defined in its
body and in its base classes defined in jobrelay (followed through imports), dunders
(`__init__`, `__getattr__`, ...) not counted; properties, class and static methods are.

`Any` at seams (issue 15 item 2): a name one package imports from another (followed through
re-exports; `ANY_NOT_AUDITED` would name groups not audited yet: none now) has no `Any` in its
public signature: a function's parameters and return, a class's public methods, `__init__` and
public annotated fields, an alias's value, and module-level aliases those use
(`JsonDict = dict[str, Any]` would hide one). JSON values are `json_types.JSON`, the one allowed
alias; `ANY_ALLOWED` lists the rest, each with its reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "mcp_server"

#: The MCP layer: modules (and packages, with everything in them) that speak MCP or run tool
#: use cases. Nothing below it imports them.
MCP_LAYER = frozenset(
    {
        f"{PACKAGE}.{name}"
        for name in (
            "server",
            "bus",
            "tools",
            "transport",
            "jobs",
            "tasks",
            "resources",
            "usage",
            "tool_results",
            "_jsonrpc_guard",
            "_http_app",
            "_operations",
            "cli",
        )
    }
)
#: Packages that must not know about the MCP layer (nor import the MCP SDK).
BELOW_MCP = (f"{PACKAGE}.upstream", f"{PACKAGE}.sandbox", f"{PACKAGE}.providers")
#: The provider extension point: the only provider modules the rest of jobrelay may import
#: (issue 15 item 1); each provider's own package is reached through the registry.
PROVIDERS = f"{PACKAGE}.providers"
PROVIDER_FACADE = frozenset({PROVIDERS, f"{PROVIDERS}.base", f"{PROVIDERS}.registry"})

#: Cross-package imports of private modules that stay for now: (importer, imported) -> reason.
#: Keep it short; remove an entry as soon as its import goes (a stale entry fails the test).
PRIVATE_ALLOWED: Mapping[tuple[str, str], str] = {}


#: Modules allowed over `MAX_MODULE_LINES`: data tables and the sandbox (issue 15 item 2).
LONG_MODULES: Mapping[str, str] = {
    f"{PACKAGE}.sandbox.seamless": "the sandbox: the fake Seamless API, one handler per endpoint",
    f"{PACKAGE}.sandbox.agentseo": "the sandbox: the fake AgentSEO API, one handler per endpoint",
    f"{PACKAGE}.sandbox._records": "data table: the sandbox's sample Seamless records",
    f"{PACKAGE}.sandbox._seo_results": "data table: the sandbox's sample AgentSEO results",
}
#: Classes allowed over `MAX_METHODS`, by module and name.
BIG_CLASSES: Mapping[str, str] = {
    f"{PACKAGE}.sandbox.seamless._SeamlessSandbox": "the sandbox: one method per fake endpoint",
    f"{PACKAGE}.sandbox.agentseo._AgentSeo": "the sandbox: one method per fake endpoint",
}
MAX_MODULE_LINES = 600
MAX_METHODS = 15

#: Packages and modules whose cross-package names still carry `Any`, not yet audited, and why:
#: the seam rule skips them (a group that no longer needs skipping fails the test).
ANY_NOT_AUDITED: Mapping[str, str] = {}
#: The one sanctioned way to say "any JSON value" (an alias of `Any`, defined once).
JSON_ALIAS_MODULE = f"{PACKAGE}.json_types"
_SDK_CONTEXT = "the MCP SDK's own generic types (`ServerRequestContext[Any, Any]`, middleware)"
_WIRE = (
    "mcptasks imports nothing from jobrelay (enforced), so not `JSON`: the tasks wire dicts "
    "as the SDK serialises them"
)
#: `module.Name` -> why `Any` stays in its signature.
ANY_ALLOWED: Mapping[str, str] = {
    f"{PACKAGE}.mcptasks._client.TasksClient": _SDK_CONTEXT + " (`ResultClaim[Any]`)",
    f"{PACKAGE}.mcptasks._engine.TaskCall": _SDK_CONTEXT + "; " + _WIRE,
    f"{PACKAGE}.mcptasks._engine.TaskEngine": _SDK_CONTEXT,
    f"{PACKAGE}.mcptasks._extension.TasksExtension": _SDK_CONTEXT,
    f"{PACKAGE}.mcptasks._extension.direct_tool_calls": _SDK_CONTEXT + " (`MCPServer[Any]`)",
    f"{PACKAGE}.mcptasks._store.TaskRecord": _WIRE,
    f"{PACKAGE}.mcptasks._store.TaskUpdate": _WIRE,
    f"{PACKAGE}.mcptasks._wire.TaskState": _WIRE,
    f"{PACKAGE}.tasks.JobTasks": _SDK_CONTEXT + " (`owner(ctx)`, the engine's `OwnerOf`)",
    f"{PACKAGE}.tools.caller_for": _SDK_CONTEXT + " (`Context[Any, Any]`)",
    f"{PACKAGE}.tools.register_tools": _SDK_CONTEXT + " (`MCPServer[Any]`)",
    f"{PACKAGE}.resources.register_resources": _SDK_CONTEXT + " (`MCPServer[Any]`)",
    f"{PACKAGE}.server.JobRelayServer": _SDK_CONTEXT
    + " (`Context[Runtime, Any]` in its `call_tool` override; `__init__` passes `MCPServer`'s "
    "own arguments through)",
    f"{PACKAGE}._http_app.create_http_app": _SDK_CONTEXT + " (`MCPServer[Any]`: any SDK server)",
}


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    line: int
    type_only: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, type_only
        elif isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), True)
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), type_only)
        else:
            yield from _imports(node, type_only)


def _targets(node: ast.stmt, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        assert isinstance(node, ast.ImportFrom)
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, *([node.module] if node.module else [])])
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    for name in names:
        target = name
        while target and target not in known and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in known:
            yield target


def import_graph() -> list[Edge]:
    modules = _modules()
    known = set(modules)
    edges: set[Edge] = set()
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, type_only in _imports(tree):
            for target in _targets(node, module, path.name == "__init__.py", known):
                if target != module:
                    edges.add(Edge(module, target, node.lineno, type_only))
    return sorted(edges, key=lambda e: (e.source, e.target, e.line))


def _third_party(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node, type_only in _imports(tree):
        if type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


# ---- the rules ---------------------------------------------------------------------------------


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module (run-time edges only)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        if not e.type_only:
            graph.setdefault(e.source, set()).add(e.target)
            graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def errors_imports(edges: list[Edge]) -> list[str]:
    """What `errors.py` imports from jobrelay: nothing at run time; `models` for types only."""
    errors = f"{PACKAGE}.errors"
    return [
        f"{e.target} (line {e.line})"
        for e in edges
        if e.source == errors and not (e.type_only and e.target == f"{PACKAGE}.models")
    ]


def _in(module: str, names: frozenset[str]) -> bool:
    """`module` is one of `names` or inside one of them (a package's submodules)."""
    return any(module == n or module.startswith(n + ".") for n in names)


def below_mcp_imports(edges: list[Edge]) -> list[str]:
    return [
        f"{e.source} -> {e.target} (line {e.line})"
        for e in edges
        if e.source.startswith(BELOW_MCP) and _in(e.target, MCP_LAYER) and not e.type_only
    ]


def provider_reach(edges: list[Edge]) -> list[str]:
    """Imports of one provider's own package from outside `providers/`: the core knows the
    protocol and the registry only, never a provider by name."""
    return [
        f"{e.source} -> {e.target} (line {e.line})"
        for e in edges
        if e.target.startswith(PROVIDERS + ".")
        and e.target not in PROVIDER_FACADE
        and not e.source.startswith(PROVIDERS)
    ]


ADVICE = f"{PACKAGE}.advice"


def advice_imports(edges: list[Edge]) -> list[str]:
    """What the advice package imports from `providers`: nothing. Providers use advice (their
    tables are `advice.table` data, their job advice `advice.advise_job`) and register their
    tables with themselves, so advice names no provider and the two stay acyclic."""
    return [
        f"{e.source} -> {e.target} (line {e.line})"
        for e in edges
        if e.source.startswith(ADVICE) and e.target.startswith(PROVIDERS)
    ]


MCPTASKS = f"{PACKAGE}.mcptasks"


def mcptasks_imports(edges: list[Edge]) -> list[str]:
    """What the tasks engine imports from jobrelay outside itself: nothing, not even for
    types (issue 16: it could become a library of its own; jobrelay plugs in through its
    `TaskStore` protocol and callbacks, in `mcp_server.tasks`)."""
    return [
        f"{e.source} -> {e.target} (line {e.line})"
        for e in edges
        if e.source.startswith(MCPTASKS) and not e.target.startswith(MCPTASKS)
    ]


def _private_owner(module: str) -> str | None:
    """The package a private module belongs to (`a.b._c` -> `a.b`), or None if public."""
    parts = module.split(".")
    if any(p.startswith("_") and not p.startswith("__") for p in parts[-1:]):
        return ".".join(parts[:-1])
    return None


def private_imports(edges: list[Edge]) -> list[tuple[str, str]]:
    """(importer, private module) pairs where the importer is outside the module's package
    (a module in `a.b` or below may use `a.b._c`; anything else may not)."""
    bad: set[tuple[str, str]] = set()
    for e in edges:
        owner = _private_owner(e.target)
        if owner is None:
            continue
        if e.source == owner or e.source.startswith(owner + "."):
            continue
        bad.add((e.source, e.target))
    return sorted(bad)


# ---- sizes -------------------------------------------------------------------------------------


def module_lines() -> dict[str, int]:
    return {
        module: len(path.read_text(encoding="utf-8").splitlines())
        for module, path in _modules().items()
    }


def long_modules(lines: Mapping[str, int], allowed: Mapping[str, str]) -> list[str]:
    return sorted(
        f"{module}: {n} lines"
        for module, n in lines.items()
        if n > MAX_MODULE_LINES and module not in allowed
    )


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


@dataclass(frozen=True, slots=True)
class _ModuleClasses:
    classes: dict[str, ast.ClassDef]
    imported: dict[str, tuple[str, str]]  # local name -> (module, name) inside jobrelay


def _module_classes(module: str, path: Path, known: set[str]) -> _ModuleClasses:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    classes = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    imported: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = (
                    module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                )
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            if base in known:
                for alias in node.names:
                    imported[alias.asname or alias.name] = (base, alias.name)
    return _ModuleClasses(classes, imported)


def class_methods() -> dict[str, set[str]]:
    """`module.Class` -> the names of its methods, its jobrelay base classes' included."""
    modules = _modules()
    known = set(modules)
    parsed = {m: _module_classes(m, p, known) for m, p in modules.items()}

    def resolve(module: str, name: str, depth: int = 0) -> tuple[str, ast.ClassDef] | None:
        info = parsed[module]
        if name in info.classes:
            return module, info.classes[name]
        if name in info.imported and depth < 5:
            return resolve(*info.imported[name], depth + 1)
        return None

    def methods(module: str, node: ast.ClassDef, seen: frozenset[str]) -> set[str]:
        found = {
            n.name
            for n in node.body
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and not _is_dunder(n.name)
        }
        for base in node.bases:
            target = base.value if isinstance(base, ast.Subscript) else base
            if isinstance(target, ast.Name) and (hit := resolve(module, target.id)) is not None:
                key = f"{hit[0]}.{hit[1].name}"
                if key not in seen:
                    found |= methods(hit[0], hit[1], seen | {key})
        return found

    return {
        f"{module}.{name}": methods(module, node, frozenset({f"{module}.{name}"}))
        for module, info in parsed.items()
        for name, node in info.classes.items()
    }


def big_classes(found: Mapping[str, set[str]], allowed: Mapping[str, str]) -> list[str]:
    return sorted(
        f"{name}: {len(names)} methods"
        for name, names in found.items()
        if len(names) > MAX_METHODS and name not in allowed
    )


# ---- Any at seams -------------------------------------------------------------------------------


def _group(module: str) -> str:
    """`mcp_server.jobs.service` -> `jobs`; a top-level module is its own group."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _sources() -> dict[str, tuple[ast.Module, bool]]:
    return {
        module: (ast.parse(path.read_text(encoding="utf-8")), path.name == "__init__.py")
        for module, path in _modules().items()
    }


Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Assign | ast.AnnAssign


def any_at_seams(sources: Mapping[str, tuple[ast.Module, bool]]) -> dict[str, list[str]]:
    """`module.Name` -> where `Any` appears in its public signature, for every name a module
    imports from another group (package, or top-level module)."""
    defined: dict[str, dict[str, Definition]] = {}
    imported: dict[str, dict[str, tuple[str, str]]] = {}
    for module, (tree, is_package) in sources.items():
        found: dict[str, Definition] = {}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found[node.name] = node
            elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                found[node.targets[0].id] = node
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                found[node.target.id] = node
        defined[module] = found
        names: dict[str, tuple[str, str]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = module.split(".")
                    package = parts if is_package else parts[:-1]
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join([*package, *([node.module] if node.module else [])])
                for alias in node.names:
                    names[alias.asname or alias.name] = (base, alias.name)
        imported[module] = names

    def resolve(module: str, name: str, depth: int = 0) -> tuple[str, Definition] | None:
        if module not in defined:
            return None
        if name in defined[module]:
            return module, defined[module][name]
        if name in imported[module] and depth < 6:
            return resolve(*imported[module][name], depth + 1)
        return None

    def has_any(module: str, node: ast.AST | None, depth: int = 0) -> bool:
        if node is None:
            return False
        for part in ast.walk(node):
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                try:  # a quoted annotation
                    inner: ast.AST = ast.parse(part.value, mode="eval")
                except SyntaxError:
                    continue
                if has_any(module, inner, depth):
                    return True
            name = part.id if isinstance(part, ast.Name) else None
            if isinstance(part, ast.Attribute):
                name = part.attr
            if name == "Any":
                return True
            if name is None or depth > 4:
                continue
            hit = resolve(module, name)
            if hit is not None and hit[0] != JSON_ALIAS_MODULE:
                where, target = hit
                if isinstance(target, ast.Assign) and has_any(where, target.value, depth + 1):
                    return True  # an alias hiding Any
        return False

    def signature(module: str, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
        a = fn.args
        every = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, [a.vararg, a.kwarg])]
        bad = [arg.arg for arg in every if has_any(module, arg.annotation)]
        return [*bad, *(["return"] if has_any(module, fn.returns) else [])]

    report: dict[str, list[str]] = {}
    for module in sources:
        for source, name in imported[module].values():
            if not source.startswith(PACKAGE + ".") or _group(source) == _group(module):
                continue
            hit = resolve(source, name)
            if hit is None:
                continue
            where, node = hit
            issues: list[str] = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if bad := signature(where, node):
                    issues.append(f"({', '.join(bad)})")
            elif isinstance(node, ast.ClassDef):
                for member in node.body:
                    if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
                        public = not member.name.startswith("_") or member.name == "__init__"
                        if public and (bad := signature(where, member)):
                            issues.append(f"{member.name}({', '.join(bad)})")
                    elif (
                        isinstance(member, ast.AnnAssign)
                        and isinstance(member.target, ast.Name)
                        and not member.target.id.startswith("_")
                        and has_any(where, member.annotation)
                    ):
                        issues.append(member.target.id)
            elif where != JSON_ALIAS_MODULE:
                value = node.value if isinstance(node, ast.Assign) else node.annotation
                if has_any(where, value):
                    issues.append("its value")
            if issues:
                report[f"{where}.{name if not isinstance(node, ast.ClassDef) else node.name}"] = (
                    issues
                )
    return report


# ---- the tests ---------------------------------------------------------------------------------


def test_the_graph_is_read() -> None:
    edges = import_graph()
    pairs = {(e.source, e.target) for e in edges}
    assert (f"{PACKAGE}.server", f"{PACKAGE}.jobs") in pairs
    assert (f"{PACKAGE}.cli", f"{PACKAGE}.transport") in pairs  # a lazy import counts
    assert len(_modules()) > 40


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_errors_is_a_leaf() -> None:
    assert errors_imports(import_graph()) == []


def test_upstream_and_sandbox_do_not_know_the_mcp_layer() -> None:
    assert below_mcp_imports(import_graph()) == []
    for package in BELOW_MCP:
        folder = ROOT / package.replace(".", "/")
        for path in folder.rglob("*.py"):
            assert "mcp" not in _third_party(path), f"{path} imports the MCP SDK"


def test_advice_knows_no_provider() -> None:
    assert advice_imports(import_graph()) == []


def test_the_tasks_engine_knows_nothing_of_jobrelay() -> None:
    assert mcptasks_imports(import_graph()) == []


def test_the_core_reaches_providers_only_through_the_registry() -> None:
    assert provider_reach(import_graph()) == []
    registry = f"{PROVIDERS}.registry"
    # the one place that names the built-in providers
    named = {e.target for e in import_graph() if e.source == registry}
    assert {f"{PROVIDERS}.seamless", f"{PROVIDERS}.agentseo"} <= named


def test_private_modules_stay_in_their_package() -> None:
    found = private_imports(import_graph())
    assert [pair for pair in found if pair not in PRIVATE_ALLOWED] == []
    stale = sorted(set(PRIVATE_ALLOWED) - set(found))
    assert stale == [], "allowlist entries no longer needed: remove them"


def test_each_rule_can_fail() -> None:
    real = import_graph()

    def plant(source: str, target: str) -> list[Edge]:
        return [*real, Edge(f"{PACKAGE}.{source}", f"{PACKAGE}.{target}", 1, False)]

    assert cycles(plant("errors", "jobs"))  # jobs imports errors: a cycle
    assert errors_imports(plant("errors", "models"))  # a run-time import of models
    assert below_mcp_imports(plant("upstream._http", "server"))
    assert below_mcp_imports(plant("sandbox.app", "tools"))
    assert mcptasks_imports(plant("mcptasks._store", "ledger"))
    assert advice_imports(plant("advice.registry", "providers.seamless.advice"))
    assert advice_imports(plant("advice.explain", "providers.registry"))
    assert below_mcp_imports(plant("providers.seamless.adapter", "jobs.service"))
    assert below_mcp_imports(plant("providers.base", "server"))
    assert provider_reach(plant("jobs.service", "providers.seamless.adapter"))
    assert provider_reach(plant("server", "providers.agentseo"))
    assert not provider_reach(plant("server", "providers.registry"))
    assert (f"{PACKAGE}.jobs", f"{PACKAGE}.upstream._http") in private_imports(
        plant("jobs", "upstream._http")
    )
    # and what the rules allow is not reported
    inside = (f"{PACKAGE}.upstream.seamless", f"{PACKAGE}.upstream._http")
    assert inside in {(e.source, e.target) for e in real}
    assert inside not in private_imports(real)
    assert not errors_imports([*real, Edge(f"{PACKAGE}.errors", f"{PACKAGE}.models", 1, True)])


def test_no_module_is_too_long() -> None:
    lines = module_lines()
    assert long_modules(lines, LONG_MODULES) == []
    stale = sorted(m for m in LONG_MODULES if lines.get(m, 0) <= MAX_MODULE_LINES)
    assert stale == [], "LONG_MODULES entries no longer needed: remove them"


def test_no_class_has_too_many_methods() -> None:
    found = class_methods()
    assert big_classes(found, BIG_CLASSES) == []
    stale = sorted(c for c in BIG_CLASSES if len(found.get(c, ())) <= MAX_METHODS)
    assert stale == [], "BIG_CLASSES entries no longer needed: remove them"


def test_the_size_rules_can_fail() -> None:
    lines = module_lines()
    assert long_modules({**lines, f"{PACKAGE}.planted": MAX_MODULE_LINES + 1}, LONG_MODULES)
    assert not long_modules({**lines, f"{PACKAGE}.planted": MAX_MODULE_LINES}, LONG_MODULES)
    found = class_methods()
    planted = {f"m{i}" for i in range(MAX_METHODS + 1)}
    assert big_classes({**found, f"{PACKAGE}.planted.Big": planted}, BIG_CLASSES)
    assert not big_classes({**found, f"{PACKAGE}.planted.Big": planted - {"m0"}}, BIG_CLASSES)
    # what is measured: inherited jobrelay methods count (the ledger backends share RowLedger),
    # dunders do not
    sqlite = found[f"{PACKAGE}.ledger.sqlite.SqliteLedger"]
    assert {"open", "record_intent", "complete_submit", "recent_targets"} <= sqlite
    assert not any(_is_dunder(name) for names in found.values() for name in names)
    # and the real sizes are read: the sandbox's fakes are over both bars
    assert lines[f"{PACKAGE}.sandbox.seamless"] > MAX_MODULE_LINES
    assert len(found[f"{PACKAGE}.sandbox.seamless._SeamlessSandbox"]) > MAX_METHODS


def test_no_any_at_the_seams_between_packages() -> None:
    found = any_at_seams(_sources())
    audited = {name: where for name, where in found.items() if _group(name) not in ANY_NOT_AUDITED}
    assert {name: where for name, where in audited.items() if name not in ANY_ALLOWED} == {}
    stale = sorted(set(ANY_ALLOWED) - set(found))
    assert stale == [], "ANY_ALLOWED entries no longer needed: remove them"
    still = {_group(name) for name in found}
    assert sorted(set(ANY_NOT_AUDITED) - still) == [], "ANY_NOT_AUDITED: audited now, remove"


def test_the_any_rule_can_fail() -> None:
    real = _sources()

    def plant(seam: str, user: str = f"{PACKAGE}.jobs.planted_user") -> set[str]:
        planted = {
            f"{PACKAGE}.ledger.planted": (ast.parse(seam), False),
            user: (ast.parse("from mcp_server.ledger.planted import f"), False),
        }
        return set(any_at_seams({**real, **planted}))

    f = f"{PACKAGE}.ledger.planted.f"
    assert f in plant("from typing import Any\ndef f(x: Any) -> None: ...")
    assert f in plant("import typing\ndef f() -> 'dict[str, typing.Any]': ...")
    assert f in plant("from typing import Any\nHidden = dict[str, Any]\ndef f(x: Hidden): ...")
    assert f in plant("from typing import Any\nclass f:\n    x: Any\n    def m(self): ...")
    assert f in plant("from typing import Any\nclass f:\n    def m(self, x: Any): ...")
    # what the rule allows is not reported: JSON (also behind an alias of it), private
    # members, and imports inside one package
    assert f not in plant("from mcp_server.json_types import JSON\ndef f(x: JSON) -> JSON: ...")
    assert f not in plant("from mcp_server.ledger.base import JsonDict as J\ndef f(x: J): ...")
    assert f not in plant("from typing import Any\nclass f:\n    def _m(self, x: Any): ...")
    assert f not in plant(
        "from typing import Any\ndef f(x: Any): ...", user=f"{PACKAGE}.ledger.planted_user"
    )
