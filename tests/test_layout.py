"""The test tree mirrors the packages, and test modules share code only through tests/helpers/ and fixtures.

- every test_*.py sits directly in a folder named after what it tests: tests/medm2t/ (core), tests/cli/
  (medm2t/cli/), tests/replay/, tests/model/, tests/stream/, tests/dashboard/, tests/tools/; only the checks
  of the whole tree (this file and test_layering.py) sit at the top;
- no module under tests/ imports a test_* module or a conftest (every `import` and `from ... import` that
  ast.walk finds counts, deferred ones inside functions included): a helper two test modules need lives in
  tests/helpers/<topic>.py, a shared fixture in a conftest.py;
- every folder under tests/ is a package (has __init__.py), so its modules import as tests.<folder>.<module>:
  two folders may hold same-named modules, and tests/stream/ never shadows stream/.
"""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
# Test folder -> the code it tests.
FOLDERS = {
    "medm2t": "medm2t",
    "cli": "medm2t/cli",
    "replay": "replay",
    "model": "model",
    "stream": "stream",
    "dashboard": "dashboard",
    "tools": "tools",
}
TOP_LEVEL = {"test_layering.py", "test_layout.py"}  # they check the whole tree, no one package


def _modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _forbidden(source: str, filename: str = "<test>") -> list[tuple[int, str]]:
    """(line, imported name) for each import of a test_* module or a conftest in the source."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            # `from pkg import name` may import the module pkg.name: check each name as well as pkg itself.
            names = [base] + [base + alias.name if base.endswith(".") else f"{base}.{alias.name}"
                              for alias in node.names]
        else:
            continue
        bad = [name for name in names if any(part.startswith("test_") or part == "conftest"
                                             for part in name.split("."))]
        if bad:
            found.append((node.lineno, bad[0]))
    return found


def test_the_scan_sees_the_tree_and_the_folders_name_real_code():
    """Guards the guards below: a scan that found no files or no imports would pass them all."""
    tests = [p for p in _modules() if p.name.startswith("test_")]
    assert len(tests) > 40 and {p.parent.name for p in tests} >= {"medm2t", "cli", "model", "stream"}
    for folder, code in FOLDERS.items():
        assert (ROOT / code).is_dir(), f"tests/{folder}/ is named after {code}/, which is gone"
    source = (TESTS / "stream" / "test_pipeline_integration.py").read_text()
    assert "tests.helpers.pipeline" in {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}


def test_every_test_module_sits_in_the_folder_of_what_it_tests():
    misplaced = []
    for path in _modules():
        if not path.name.startswith("test_"):
            continue
        where = path.relative_to(TESTS).parts
        if where == (path.name,) and path.name in TOP_LEVEL:
            continue
        if len(where) != 2 or where[0] not in FOLDERS:
            misplaced.append(str(path.relative_to(ROOT)))
    assert misplaced == [], f"test modules belong in tests/<{'|'.join(FOLDERS)}>/: {misplaced}"


def test_no_module_imports_a_test_module_or_a_conftest():
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                 for path in _modules() for line, name in _forbidden(path.read_text(), str(path))]
    assert offenders == [], "move shared code to tests/helpers/<topic>.py or a fixture:\n" + "\n".join(offenders)


def test_the_import_scan_finds_planted_imports():
    planted = """
import test_model_architecture
from test_model_architecture import make_stay
from conftest import MEDM2T
from tests.stream.test_pipeline_integration import _wait
from tests.model import test_model_architecture
from . import test_news2
from .test_news2 import VERSION


def deferred():
    import tests.cli.test_stack_cli
"""
    assert [line for line, _ in _forbidden(planted)] == [2, 3, 4, 5, 6, 7, 8, 12]
    fine = "import stream.quality\nfrom tests.helpers.stays import make_stay\nfrom tests.helpers import paths\n"
    assert _forbidden(fine) == []


def test_every_test_folder_is_a_package():
    folders = {p.parent for p in _modules()}
    missing = sorted(str(d.relative_to(ROOT)) for d in folders if not (d / "__init__.py").exists())
    assert missing == [], f"without __init__.py a folder's modules could shadow the package it is named after: {missing}"
