import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MP100 = ROOT.parent / "shared" / "datasets" / "mp100"

from datagen import make_processed  # noqa: E402


@pytest.fixture(scope="session")
def processed_dir(tmp_path_factory) -> Path:
    """A small processed_MICRO folder (4 classes, 48 px crops), shared read-only by tests."""
    return make_processed(tmp_path_factory.mktemp("processed"), per_class=12, size=48, seed=0)


@pytest.fixture(scope="session")
def mp100() -> Path:
    if not (MP100 / "MICRO").is_dir():
        pytest.skip(f"real photos not present at {MP100}")
    return MP100
