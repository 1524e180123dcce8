#!/usr/bin/env python
"""Print e2espk's package-to-package imports and fail (status 1) on an import cycle.

    python scripts/import_graph.py            # packages (e2espk.training -> e2espk.scoring ...)
    python scripts/import_graph.py --modules  # the same between modules

Reads the source with ``ast`` (nothing is imported), so it also sees imports inside functions,
which are cycles all the same, only deferred. Relative imports are resolved.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "e2espk"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports (``from a import b, c`` counts ``a.b``
    and ``a.c`` where those are modules, else ``a``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:  # each imported name: its own module, else the nearest above
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph(level: str) -> dict[str, set[str]]:
    files = sorted((ROOT / PACKAGE).rglob("*.py"))
    known = {module_name(path) for path in files}
    edges: dict[str, set[str]] = {}
    for path in files:
        source = group(module_name(path), level)
        for target in imported_modules(path, known):
            target = group(target, level)
            if target != source:
                edges.setdefault(source, set()).add(target)
        edges.setdefault(source, set())
    return edges


def group(module: str, level: str) -> str:
    """A module, or the package it belongs to (``e2espk.training.trainer`` -> ``e2espk.training``;
    top-level modules such as ``e2espk.config`` stand for themselves)."""
    if level == "modules":
        return module
    parts = module.split(".")
    return ".".join(parts[:2])


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def render(edges: dict[str, set[str]]) -> Iterable[str]:
    for source in sorted(edges):
        targets = sorted(edges[source])
        yield f"{source} -> {', '.join(targets) if targets else '(nothing)'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modules", action="store_true", help="module level instead of packages")
    args = parser.parse_args(argv)
    edges = graph("modules" if args.modules else "packages")
    for line in render(edges):
        print(line)
    found = cycles(edges)
    for component in found:
        print(f"CYCLE: {' <-> '.join(component)}")
    print(f"{len(edges)} nodes, {sum(map(len, edges.values()))} edges, {len(found)} cycle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
