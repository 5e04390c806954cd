"""tools/stage_deps.py: the package files each stage script depends on, for the Makefile."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write(root: Path, rel: str, text: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def test_dependencies_follow_every_kind_of_import(tmp_path):
    write(tmp_path, "microplastics/__init__.py", "")
    write(tmp_path, "microplastics/a.py", "from . import b\n")
    write(tmp_path, "microplastics/b.py", "from .c import thing\n")
    write(tmp_path, "microplastics/c.py", "thing = 1\n")
    write(tmp_path, "microplastics/d.py", "def late():\n    import microplastics.e\n")
    write(tmp_path, "microplastics/e.py", "")
    write(tmp_path, "microplastics/unused.py", "")
    write(tmp_path, "stage-one.py", "import os\nfrom microplastics.a import x\nfrom microplastics import d\n")
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "stage_deps.py"), "stage-one.py", "missing.py"],
                         cwd=tmp_path, capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == ("DEPS_stage-one.py := stage-one.py microplastics/__init__.py microplastics/a.py "
                      "microplastics/b.py microplastics/c.py microplastics/d.py microplastics/e.py")
    assert out[1] == "DEPS_missing.py := missing.py"
