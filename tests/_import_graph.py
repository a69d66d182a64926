"""The import graph of src/mailbridge, read from the source (no module is executed).

Every `import` and `from ... import` of a `mailbridge` module is an edge, kept in
one of three kinds:

* `module`: executed when the importing module is imported (the top level, also
  inside `try`/`if` at the top level). These must form a DAG.
* `deferred`: inside a function or method body; runs on first call, when every
  module-level import has finished, so it cannot deadlock an import. Listed, not
  required to be acyclic (deferring an import is how a layer reaches "up" once).
* `TYPE_CHECKING`: inside `if TYPE_CHECKING:`; never executed, so it does not count.

`from pkg import name` is an edge to `pkg.name` when that is a module, else to `pkg`,
and also to the module that provides `name` when `pkg` exports it lazily (PEP 562,
`mailbridge._lazy.exports`): the package's `__getattr__` imports that module then.
Importing `a.b.c` also runs the `__init__` of every package on the way (`a.b`)
that is not already being imported, so there is an edge to each such package that is
not an ancestor of the importing module. Run `python tests/_import_graph.py` to print
the graph and its cycles.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "mailbridge"

MODULE, DEFERRED, TYPE_CHECKING = "module", "deferred", "TYPE_CHECKING"


@dataclass(frozen=True)
class Graph:
    """Modules of the package and their import edges by kind."""

    modules: frozenset[str]
    packages: frozenset[str]
    edges: dict[str, dict[str, set[str]]] = field(default_factory=dict)

    def of_kind(self, kind: str) -> dict[str, set[str]]:
        return {module: set(self.edges[module][kind]) for module in sorted(self.modules)}


def module_names(root: Path = ROOT) -> tuple[frozenset[str], frozenset[str]]:
    """All modules and packages under `root/mailbridge`, by dotted name."""
    modules: set[str] = set()
    packages: set[str] = set()
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
            packages.add(".".join(parts))
        modules.add(".".join(parts))
    return frozenset(modules), frozenset(packages)


def lazy_exports(tree: ast.Module) -> dict[str, str]:
    """The names a package `__init__` exports through `exports()`, with their modules."""
    provided: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "exports":
            table = ast.literal_eval(node.args[1])
            for module, names in table.items():
                provided.update(dict.fromkeys(names, module.lstrip(".")))
    return provided


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterator[tuple[str, ast.Import | ast.ImportFrom]]:
    """Every import statement with its kind."""

    def walk(node: ast.AST, kind: str) -> Iterator[tuple[str, ast.Import | ast.ImportFrom]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield kind, child
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child, DEFERRED if kind == MODULE else kind)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    yield from walk(ast.Module(body=[statement], type_ignores=[]), TYPE_CHECKING)
                for statement in child.orelse:
                    yield from walk(ast.Module(body=[statement], type_ignores=[]), kind)
            else:
                yield from walk(child, kind)

    yield from walk(tree, MODULE)


def _targets(
    module: str,
    is_package: bool,
    node: ast.Import | ast.ImportFrom,
    modules: frozenset[str],
    lazy: dict[str, dict[str, str]],
) -> Iterator[str]:
    """The mailbridge modules an import statement names."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:
        base = module.split(".")
        if not is_package:
            base.pop()
        base = base[: len(base) - (node.level - 1)]
        source = ".".join([*base, *([node.module] if node.module else [])])
    else:
        source = node.module or ""
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        yield submodule if submodule in modules else source
        if alias.name in lazy.get(source, {}):
            yield f"{source}.{lazy[source][alias.name]}"


def build(root: Path = ROOT) -> Graph:
    """Parse every module under `root/mailbridge` and collect its imports of mailbridge."""
    modules, packages = module_names(root)
    graph = Graph(modules, packages)
    trees = {module: _parse(root, module, module in packages) for module in sorted(modules)}
    lazy = {package: lazy_exports(trees[package]) for package in packages}
    for module, tree in trees.items():
        is_package = module in packages
        edges: dict[str, set[str]] = {MODULE: set(), DEFERRED: set(), TYPE_CHECKING: set()}
        for kind, node in _imports(tree):
            for target in _targets(module, is_package, node, modules, lazy):
                if target.partition(".")[0] != PACKAGE:
                    continue
                parts = target.split(".")
                for depth in range(2, len(parts) + 1):
                    name = ".".join(parts[:depth])
                    is_ancestor = module == name or module.startswith(name + ".")
                    if name in modules and (name == target or not is_ancestor):
                        edges[kind].add(name)
        edges[MODULE].discard(module)
        graph.edges[module] = edges
    return graph


def _parse(root: Path, module: str, is_package: bool) -> ast.Module:
    path = root.joinpath(*module.split("."))
    path = path / "__init__.py" if is_package else path.with_suffix(".py")
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan).

    Each cycle is given as a path `[a, b, ..., a]`, rotated to start at its smallest
    module so that the same cycle always reads the same.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:
        # Depth is bounded by the number of modules (about a hundred).
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return sorted(_cycle_in(component, edges) for component in components)


def _cycle_in(component: set[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the smallest module of a strongly connected component."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for target in sorted(edges[node] & component):
                if target == start:
                    path, step = [], node
                    while step != start:
                        path.append(step)
                        step = previous[step]
                    return [start, *reversed(path), start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def main() -> int:
    graph = build()
    module_edges = graph.of_kind(MODULE)
    for module, targets in module_edges.items():
        deferred = sorted(graph.edges[module][DEFERRED] - targets)
        line = f"{module} -> {', '.join(sorted(targets)) or '(nothing)'}"
        print(line + (f"  [deferred: {', '.join(deferred)}]" if deferred else ""))
    cycles = find_cycles(module_edges)
    print(f"\n{len(cycles)} module-level cycle(s)")
    for cycle in cycles:
        print("  " + " -> ".join(cycle))
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
