"""The packages form a one-way stack, read from the source: every `import` and `from ... import` that
ast.walk finds counts, deferred ones inside functions and TYPE_CHECKING ones included (a cycle held
together only by deferred imports breaks as soon as one of them moves to the top).

    core (medm2t/) <- replay/ <- model/ <- stream/ <- dashboard/ <- CLI (medm2t/cli/, medm2t/__main__.py)

A module imports only its own layer or those below it; dashboard/ never imports model/, not even
through stream/ (it reads what the worker wrote, and must start without torch); nothing outside the
CLI imports the CLI; and no modules of the five packages import each other in a circle.

`from pkg import name` counts as importing pkg.name when that is a module, else pkg. Importing a.b.c
also runs a/__init__.py and a/b/__init__.py; those implicit edges are left out of the graph (every
package would otherwise form a cycle with each submodule its __init__ imports) and the top-level
imports they run are covered by the subprocess test at the end, which imports the dashboard for real.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("medm2t", "replay", "model", "stream", "dashboard")
# Layer of each package, low to high; a dotted name ranks by its longest entry here.
RANKS = {
    "medm2t": 0,  # core: events, item catalogue, topics, settings, clients, cards, FHIR, schemas
    "replay": 1,
    "model": 2,
    "stream": 3,
    "dashboard": 4,
    "medm2t.cli": 5,
    "medm2t.__main__": 5,
}
CLI_RANK = 5


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


@cache
def _modules() -> dict[str, Path]:
    return {_module(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _rank(name: str) -> int:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        if (prefix := ".".join(parts[:n])) in RANKS:
            return RANKS[prefix]
    raise KeyError(name)


def _resolve(name: str) -> str | None:
    """The module of ours that `name` (a dotted import target) loads: its longest prefix that is one."""
    modules = _modules()
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


@cache
def _imports(name: str) -> tuple[tuple[str, int], ...]:
    """(imported module of ours, line) for every import in the module, deferred ones included."""
    path = _modules()[name]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {(target, node.lineno) for t in targets if (target := _resolve(t)) and target != name}
    return tuple(sorted(found))


def _graph() -> dict[str, set[str]]:
    return {name: {target for target, _ in _imports(name)} for name in _modules()}


def _line(importer: str, imported: str) -> int:
    return min(line for target, line in _imports(importer) if target == imported)


def test_the_scan_reads_every_package_and_sees_real_imports():
    """Guards the guards below: a scan that found nothing would pass them all."""
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}  # the test suite is a package too
    assert on_disk == set(PACKAGES), f"packages on disk {sorted(on_disk)} vs the table {PACKAGES}"
    assert {_rank(name) for name in _modules()} == set(RANKS.values())
    graph = _graph()
    assert "medm2t.events" in graph["replay.mimic"] and "model.batches" in graph["model.stages"]
    assert "stream.worker" in graph.get("medm2t.cli.worker", set())  # deferred into a function


def test_every_import_is_absolute():
    """The scan resolves absolute imports only; a relative one would slip past every rule here."""
    relative = [f"{name}:{node.lineno}" for name, path in _modules().items()
                for node in ast.walk(ast.parse(path.read_text(), str(path)))
                if isinstance(node, ast.ImportFrom) and node.level]
    assert relative == []


def test_each_layer_imports_only_its_own_layer_or_lower():
    offenders = [f"{name}:{line} imports {target} (layer {_rank(name)} imports layer {_rank(target)})"
                 for name in _modules() for target, line in _imports(name) if _rank(target) > _rank(name)]
    assert offenders == []


def test_library_code_never_imports_the_cli():
    offenders = [f"{name}:{line} imports {target}" for name in _modules() if _rank(name) != CLI_RANK
                 for target, line in _imports(name) if _rank(target) == CLI_RANK]
    assert offenders == []


def test_the_dashboard_never_imports_the_model():
    """Not directly, and not through any chain of imports (stream/'s scorers import model/, so the dashboard
    may use stream's read side only)."""
    graph = _graph()
    offenders = []
    for start in sorted(name for name in graph if name.split(".")[0] == "dashboard"):
        came_from: dict[str, str | None] = {start: None}
        todo = [start]
        while todo:
            node = todo.pop()
            for nxt in sorted(graph[node]):
                if nxt not in came_from:
                    came_from[nxt] = node
                    todo.append(nxt)
        reached = sorted(name for name in came_from if name.split(".")[0] == "model")
        if reached:
            chain = [reached[0]]
            while came_from[chain[-1]] is not None:
                chain.append(came_from[chain[-1]])
            chain.reverse()
            steps = [f"{a}:{_line(a, b)}" for a, b in zip(chain, chain[1:])]
            offenders.append(" -> ".join(steps + [chain[-1]]))
    assert offenders == []


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def _a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One shortest circle through the component's first module (breadth first, inside the component)."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start] + path[::-1][1:] + [start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle in {component}")


def test_no_import_cycles():
    graph = _graph()
    cycles = []
    for component in _strongly_connected(graph):
        cycle = _a_cycle(graph, component)
        steps = [f"{a}:{_line(a, b)}" for a, b in zip(cycle, cycle[1:])]
        cycles.append(" -> ".join(steps + [cycle[-1]]) + f" (all of {component})")
    assert cycles == []


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert _strongly_connected(graph) == [["a", "b", "c"]]
    assert _a_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def test_the_dashboard_starts_without_torch():
    """Importing every dashboard module (app.py renders its page in Streamlit's bare mode) loads neither
    torch nor any module of model/."""
    names = sorted(name for name in _modules() if name.split(".")[0] == "dashboard")
    script = ("import importlib, json, sys\n"
              f"for name in {names!r}:\n"
              "    importlib.import_module(name)\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'model'))))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "MEDM2T_REDIS_URL": "redis://127.0.0.1:1/0"}  # nothing listens on port 1: the page fails fast
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dashboard.app" in names
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


MAX_MODULE_LINES = 400   # in replay/, model/, stream/ and dashboard/ (the core's events.py is the schema's text)
MAX_FUNCTION_LINES = 60  # everywhere, the CLI included: a function fits in one reading


def test_modules_and_functions_fit_in_one_reading():
    long_modules = [f"{name}: {n} lines" for name, path in _modules().items()
                    if name.split(".")[0] in ("replay", "model", "stream", "dashboard")
                    and (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    long_functions = [f"{name}:{node.lineno} {node.name}: {n} lines" for name, path in _modules().items()
                      for node in ast.walk(ast.parse(path.read_text(), str(path)))
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES]
    assert long_modules == [] and long_functions == []
