"""scripts/import_graph.py: the import graph it prints and the cycles it finds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py"
spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
assert spec is not None and spec.loader is not None
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)


def test_cycles_are_the_strongly_connected_components() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(import_graph.cycles(edges)) == [["a", "b", "c"], ["d", "e"]]
    assert import_graph.cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_graph_sees_imports_inside_functions() -> None:
    edges = import_graph.graph("packages")
    assert "e2espk.models" in edges["e2espk.training"]
    # cli/train.py imports training lazily or not: either way cli reaches training
    assert "e2espk.training" in edges["e2espk.cli"]
    assert "e2espk.cli" not in {t for targets in edges.values() for t in targets}
