"""Small processed_MICRO-style folders drawn directly, for model-stage tests.

The data stages have their own round-trip tests; model tests only need a folder that
honours the manifest contract, with classes a model can tell apart, built in a second.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import json

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from microplastics.data.dataset import manifest_digest

CLASSES = ("foam", "hard", "line", "pellet")


def draw_crop(label: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One crop whose class shows in shape and colour."""
    bg = int(rng.integers(150, 200))
    img = Image.new("RGB", (size, size), (bg, bg, bg - 10))
    d = ImageDraw.Draw(img)
    c = size / 2
    j = rng.uniform(-0.1, 0.1) * size
    if label == "line":
        d.line([(size * 0.1, c + j), (size * 0.9, c - j)], fill=(30, 30, 120), width=max(1, size // 16))
    elif label == "pellet":
        r = size * rng.uniform(0.25, 0.35)
        d.ellipse([c - r + j, c - r, c + r + j, c + r], fill=(40, 140, 60))
    elif label == "foam":
        r = size * rng.uniform(0.3, 0.4)
        d.ellipse([c - r, c - r * 0.8, c + r, c + r * 0.8], fill=(245, 245, 235))
        for _ in range(6):
            x, y = rng.uniform(c - r / 2, c + r / 2, 2)
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(200, 200, 190))
    else:  # hard: an angular dark fragment
        pts = [(c + size * 0.35 * np.cos(a) + j, c + size * 0.3 * np.sin(a))
               for a in np.sort(rng.uniform(0, 2 * np.pi, 5))]
        d.polygon(pts, fill=(90, 60, 40))
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-8, 9, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_processed(root: str | Path, per_class: int | Sequence[int] = 12, size: int = 48, seed: int = 0,
                   classes: Sequence[str] = CLASSES, photos_per_split: int = 2) -> Path:
    """Write ``root`` as a processed_MICRO folder: {split}/{class}/*.png, manifest.csv, summary.json.

    Each class gets ``per_class`` crops split 60/20/20, grouped into a few source photos per split.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts = [per_class] * len(classes) if isinstance(per_class, int) else list(per_class)
    rows = []
    for label, n in zip(classes, counts):
        n_train, n_val = int(round(n * 0.6)), int(round(n * 0.2))
        for k in range(n):
            split = "train" if k < n_train else "val" if k < n_train + n_val else "test"
            photo = f"{split}_photo{k % photos_per_split}.jpg"
            rel = f"{split}/{label}/{label}_{k:04d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            draw_crop(label, size, rng).save(root / rel)
            minr, minc = int(rng.integers(0, 500)), int(rng.integers(0, 500))
            rows.append({"path": rel, "label": label, "split": split, "source_image": photo,
                         "minr": minr, "minc": minc, "maxr": minr + size, "maxc": minc + size})
    manifest = pd.DataFrame(rows)
    manifest.to_csv(root / "manifest.csv", index=False)
    counts_by = manifest.groupby(["split", "label"]).size()
    # As data-preprocessing.py does, record the manifest's digest: every stage checks it.
    summary = {"counts": {s: {c: int(v) for c, v in counts_by[s].items()} for s in ("train", "val", "test")},
               "skipped": {}, "manifest_digest": manifest_digest(root)}
    (root / "summary.json").write_text(json.dumps(summary))
    return root


def train_tiny_models(data_dir: Path, out: Path) -> Path:
    """A deep model (resnet18, 32 px, one epoch) and a classical one (rf) trained into ``out`` by the real stages."""
    from microplastics.classical.baselines import main as baselines_main  # heavy: only for the tests that train
    from microplastics.deep.stage import main_for

    main_for("resnet50")(["--data", str(data_dir), "--results", str(out), "--arch", "resnet18",
                          "--epochs", "1", "--image-size", "32", "--weights", "none", "--workers", "0",
                          "--device", "cpu", "--aug-views", "0"])
    baselines_main(["--data", str(data_dir), "--results", str(out), "--models", "rf", "--workers", "1",
                    "--grid-size", "0", "--no-cache"])
    return out
