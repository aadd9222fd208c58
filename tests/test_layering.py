"""How the packages depend on each other, read from the source (every import, deferred ones included):
library code never imports the CLI, and model/ has no import cycle (a cycle is held together only by
imports deferred into functions, and breaks as soon as one of them moves to the top)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("stream", "model", "replay", "dashboard", "medm2t")
CLI = ("medm2t.cli", "medm2t.commands", "medm2t.__main__")


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _sources(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def test_library_code_never_imports_the_cli():
    offenders = []
    for package in LIBRARY:
        for path in _sources(package):
            name = _module(path)
            if name.startswith(CLI):
                continue
            offenders += [f"{name} imports {imp}" for imp in _imports(path) if imp.startswith(CLI)]
    assert offenders == []


def test_model_has_no_import_cycle():
    modules = {_module(p): p for p in _sources("model")}
    graph = {name: {imp for imp in _imports(path) if imp in modules and imp != name} for name, path in modules.items()}
    assert graph["model.train"] and graph["model.batches"], "the graph is empty: the test reads nothing"
    state: dict[str, str] = {}

    def cycle_from(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return trail + [node, nxt]
            if nxt not in state and (found := cycle_from(nxt, trail + [node])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = cycle_from(start, [])
            assert cycle is None, " -> ".join(cycle)


def test_model_imports_neither_the_stream_nor_the_dashboard():
    """model/ is the network and its inference; the worker's adapter (stream/scorers/medm2t.py) imports it,
    never the other way round."""
    offenders = [f"{_module(p)} imports {imp}" for p in _sources("model") for imp in _imports(p)
                 if imp.split(".")[0] in ("stream", "dashboard")]
    assert _sources("model") and offenders == []
