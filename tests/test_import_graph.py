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


def test_e2espk_has_no_import_cycle_between_packages_or_modules() -> None:
    for level in ("packages", "modules"):
        assert import_graph.cycles(import_graph.graph(level)) == [], level


def test_the_layers_point_one_way() -> None:
    """cli -> (search -> cluster -> training) / pipelines -> inference -> models, losses,
    scoring, data."""
    edges = import_graph.graph("packages")
    above = {
        "e2espk.inference": {"e2espk.training", "e2espk.pipelines", "e2espk.search", "e2espk.cli"},
        "e2espk.pipelines": {"e2espk.training", "e2espk.search", "e2espk.cli"},
        "e2espk.training": {"e2espk.pipelines", "e2espk.search", "e2espk.cli"},
    }
    below = {"e2espk.models", "e2espk.losses", "e2espk.scoring", "e2espk.data"}
    for package in below:
        above[package] = {"e2espk.inference", *above["e2espk.inference"]}
    # extraction writes corpora: beside pipelines, above data (which never imports it)
    above["e2espk.extract"] = {"e2espk.training", "e2espk.pipelines", "e2espk.search", "e2espk.cli"}
    for package in below:
        above[package].add("e2espk.extract")
    # distributed plumbing: beside data, below everything that trains or loads models
    above["e2espk.distributed"] = {
        "e2espk.models", "e2espk.losses", "e2espk.scoring", *above["e2espk.data"]
    }  # fmt: skip
    # cluster jobs (submitit): above training, beside search, which uses it
    for package in above:
        above[package].add("e2espk.cluster")
    above["e2espk.cluster"] = {"e2espk.search", "e2espk.cli"}
    for package, forbidden in above.items():
        assert not edges[package] & forbidden, package
    assert (
        "e2espk.cluster" in edges["e2espk.search"] and "e2espk.training" in edges["e2espk.cluster"]
    )


def test_the_script_fails_on_a_cycle(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(import_graph, "graph", lambda level: {"a": {"b"}, "b": {"a"}})
    assert import_graph.main([]) == 1
    assert "CYCLE: a <-> b" in capsys.readouterr().out
    monkeypatch.setattr(import_graph, "graph", lambda level: {"a": {"b"}, "b": set()})
    assert import_graph.main(["--modules"]) == 0
