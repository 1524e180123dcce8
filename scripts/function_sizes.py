#!/usr/bin/env python
"""Print the longest functions and the widest signatures of a source tree (STYLE.md: functions
under ~60 lines, at most ~6 parameters; more wants a config object).

    python scripts/function_sizes.py            # e2espk/, top 10 of each
    python scripts/function_sizes.py DIR --top 20

Lines count from ``def`` to the function's last line (decorators and docstring included);
parameters leave out ``self`` and ``cls``. Reads the source with ``ast``; nothing is imported.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def functions(root: Path) -> list[tuple[str, int, int]]:
    """``(path:line name, lines, parameters)`` of every function and method under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                names = [a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]]
                names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
                width = len([name for name in names if name not in ("self", "cls")])
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                where = f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"
                found.append((where, lines, width))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", nargs="?", default=str(ROOT / "e2espk"))
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    found = functions(Path(args.root).resolve())
    print("longest functions (lines):")
    for where, lines, _ in sorted(found, key=lambda f: (-f[1], f[0]))[: args.top]:
        print(f"  {lines:4d}  {where}")
    print("widest signatures (parameters):")
    for where, _, width in sorted(found, key=lambda f: (-f[2], f[0]))[: args.top]:
        print(f"  {width:4d}  {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
