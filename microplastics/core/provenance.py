"""How a stage ran, so that a reader can run it again: its command line, the package versions,
the commit of the code and the date. Each stage stores this record under ``run`` in the file that
describes its output (config.json of a model folder, summary.json of a processed data folder...);
report.py gathers them into its "how to reproduce" block.
"""
from __future__ import annotations

import datetime
import platform
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

RUN_KEY = "run"
CONFIG_NAME = "config.json"  # where a stage that writes a folder of its own keeps the record
ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements.txt"
# the packages whose versions decide the numbers, when requirements.txt is not beside the package
CORE_PACKAGES = ("torch", "torchvision", "numpy", "pandas", "scipy", "scikit-learn", "scikit-image",
                 "imbalanced-learn", "opencv-python-headless", "albumentations", "timm", "grad-cam")


def run_record(prog: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The record of this run of ``prog`` (a stage script's name) with ``argv`` (sys.argv's when None)."""
    args = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    return {"command": shlex.join(["python", prog, *args]), "argv": [prog, *args],
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": code_commit(), "python": platform.python_version(), "versions": package_versions()}


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Installed version of every package requirements.txt pins (or of the core ones); absent ones left out."""
    names = pinned_names(REQUIREMENTS) if REQUIREMENTS.is_file() else list(CORE_PACKAGES)
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def pinned_names(path: Path) -> list[str]:
    """The package names of a requirements file, in its order."""
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", line.split("#", 1)[0])
        if match:
            names.append(match.group(1))
    return names


@lru_cache(maxsize=1)
def code_commit() -> str | None:
    """The git commit of the code, with ``+modified`` when tracked files differ from it; None outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+modified" if dirty else commit


def with_run(record: dict[str, Any], prog: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``record`` with this run's record added under ``run``."""
    return {**record, RUN_KEY: run_record(prog, argv)}


def read_run(record: Any, key: str = RUN_KEY) -> dict[str, Any] | None:
    """The run record stored under ``key`` in a stage's json, or None when it has none (written before
    stages kept one)."""
    run = record.get(key) if isinstance(record, dict) else None
    return run if isinstance(run, dict) and isinstance(run.get("command"), str) else None
