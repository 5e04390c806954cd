"""Print, as make variables, the source files each stage script depends on.

    python3 tools/stage_deps.py vgg16.py report.py ...  >  .cache/stage-deps.mk

gives ``DEPS_vgg16.py := vgg16.py microplastics/__init__.py microplastics/core/cli.py ...``: the
script and every module of the package it imports, directly or through other modules
(imports inside functions count too). The Makefile makes each stage's outputs depend on
these files, so a change to a module reruns only the stages that import it.
Standard library only: it runs before the virtual environment exists.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "microplastics"


def module_file(root: Path, dotted: str) -> Path | None:
    """microplastics.x.y -> microplastics/x/y.py or .../y/__init__.py, if it exists."""
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(root: Path, path: Path) -> set[str]:
    """Every absolute dotted name ``path`` imports anywhere (inside functions too): modules, and
    ``module.name`` for each name taken ``from`` a module (it may be a sub-module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    current = module_name(root, path) if path.parent != root else ""
    package = current if path.name == "__init__.py" else current.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # ``from pkg import module``
    return found


def imported_modules(root: Path, path: Path) -> set[str]:
    """Dotted names of the package's modules that ``path`` imports (and their parent packages)."""
    names = set()
    for name in imported_names(root, path):
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            parts = name.split(".")
            names.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return names


def dependencies(root: Path, script: Path) -> list[Path]:
    """The script and every package file reachable from it through imports."""
    seen: dict[Path, None] = {script: None}
    queue = [script]
    while queue:
        for name in sorted(imported_modules(root, queue.pop())):
            path = module_file(root, name)
            if path is not None and path not in seen:
                seen[path] = None
                queue.append(path)
    return [script, *sorted(p for p in seen if p != script)]


def main(argv: list[str]) -> int:
    root = Path.cwd()
    for name in argv:
        script = root / name
        files = dependencies(root, script) if script.is_file() else [script]
        print(f"DEPS_{name} := " + " ".join(str(p.relative_to(root)) for p in files))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
