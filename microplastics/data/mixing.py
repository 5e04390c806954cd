"""Synthetic training crops beside the real ones: the class map, the pool and the mixed train split.

Where the synthetic crops come from: ``data-preprocessing.py --mix-synthetic-photos N`` draws N
domain-randomised photos with the synthetic generator (seeded by ``--seed``), cuts their boxes,
renames their classes to the real data's through a class map, and files them as
``train/<class>/syn-<photo>-<box>.png``, marked ``synthetic = 1`` in manifest.csv. The real crops
are split first, exactly as without the option, so the real train/val/test crops and the test
fingerprint do not change; the synthetic ones are a pool beside the train split, never in val or
test, never scored.

A training stage's ``--mix-synthetic FRACTION`` then draws from the pool as many crops as make
FRACTION of its training crops (real train crops + synthetic ones), spread evenly over the mapped
classes; the pick depends on the seed only.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from microplastics.core.errors import InputError
from microplastics.data.annotations import BoxRecord, read_annotations
from microplastics.data.dataset import SYNTHETIC_COLUMN, split_frame, synthetic_frame
from microplastics.data.synthetic import CLASSES as GENERATOR_CLASSES
from microplastics.data.synthetic import write_synthetic_micro
from microplastics.core.seeds import pick_rows

PREFIX = "syn-"
# The generator's classes and the names other sets give the same kind of particle (mp100: fiber,
# fragment, pallet). 'auto' maps each generator class to the first of these the real data has.
ALIASES = {"line": ("line", "fiber", "fibre", "fibers", "fibres"),
           "hard": ("hard", "fragment", "fragments"),
           "pellet": ("pellet", "pallet", "pellets", "bead"),
           "foam": ("foam",)}
PHOTO_SIZE = (480, 640)
REBUILD = "rebuild the data folder with data-preprocessing.py --mix-synthetic-photos N"


def parse_class_map(text: str, real_classes: Sequence[str]) -> dict[str, str]:
    """``generator class -> real class`` from ``auto`` or ``line=fiber,hard=fragment,...``.

    Generator classes left out of the map give no crops; every target must be a real class.
    """
    real = set(real_classes)
    if text.strip().lower() == "auto":
        mapping = {}
        for source, names in ALIASES.items():
            target = next((n for n in names if n in real), None)
            if target is not None:
                mapping[source] = target
        if not mapping:
            raise InputError(f"--synthetic-class-map auto found none of the generator's classes ({', '.join(ALIASES)}) "
                            f"or their usual names among the real classes ({', '.join(sorted(real))}); "
                            "pass the map, e.g. --synthetic-class-map line=fiber,hard=fragment")
        return mapping
    mapping = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        source, sep, target = (v.strip() for v in item.partition("="))
        if not sep or not source or not target:
            raise InputError(f"--synthetic-class-map: {item!r} is not GENERATOR_CLASS=REAL_CLASS")
        if source not in GENERATOR_CLASSES:
            raise InputError(f"--synthetic-class-map: {source!r} is not a class of the generator "
                            f"({', '.join(GENERATOR_CLASSES)})")
        if target not in real:
            raise InputError(f"--synthetic-class-map: {target!r} is not a class of the real data "
                            f"({', '.join(sorted(real))})")
        mapping[source] = target
    if not mapping:
        raise InputError("--synthetic-class-map is empty; pass 'auto' or GENERATOR_CLASS=REAL_CLASS pairs")
    return mapping


def draw_synthetic_records(folder: Path, n_photos: int, seed: int,
                           class_map: dict[str, str]) -> tuple[list[BoxRecord], dict[str, Any]]:
    """Draw ``n_photos`` domain-randomised photos into ``folder``; their boxes with the classes mapped
    (boxes of unmapped classes dropped) and crop names that cannot meet a real one's."""
    drawn = write_synthetic_micro(folder, n_images=n_photos, seed=seed, image_size=PHOTO_SIZE, randomise=True,
                                  progress=True)
    records = []
    for rec in read_annotations(folder, "deepparticle").records:
        if rec.label in class_map:
            name = f"{PREFIX}{rec.photo.stem}-{rec.box_id}.png"
            records.append(replace(rec, label=class_map[rec.label], crop_name=name))
    if not records:
        raise InputError(f"the {n_photos} synthetic photo(s) hold no box of a mapped class "
                        f"({', '.join(class_map)}); draw more with --mix-synthetic-photos")
    return records, {"photos": n_photos, "seed": seed, "randomised": True, "image_size": list(PHOTO_SIZE),
                     "class_map": class_map, "boxes_drawn": drawn["boxes"]}


def check_fraction(fraction: float) -> float:
    if not (0.0 <= fraction < 1.0):
        raise InputError(f"--mix-synthetic must be a share of the training crops in [0, 1), got {fraction}")
    return float(fraction)


def mixed_train(manifest: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The training rows: the real train split, then the synthetic crops that make ``fraction`` of
    the whole; and what was mixed in, for config.json and the checkpoint."""
    fraction = check_fraction(fraction)
    real = split_frame(manifest, "train")
    record: dict[str, Any] = {"fraction": fraction, "real_crops": len(real), "synthetic_crops": 0}
    if fraction == 0:
        return real, record
    pool = synthetic_frame(manifest)
    wanted = round(fraction * len(real) / (1 - fraction))
    if pool.empty:
        raise InputError(f"--mix-synthetic {fraction:g}: the data folder holds no synthetic crops; {REBUILD}")
    if wanted > len(pool):
        raise InputError(f"--mix-synthetic {fraction:g} needs {wanted} synthetic crops beside the {len(real)} real "
                        f"training crops, but the data folder holds {len(pool)}; lower the fraction or {REBUILD} "
                        f"with a larger N")
    chosen = pool.iloc[pick_rows(pool["label"].tolist(), n=wanted, seed=seed)]  # the classes in turn
    record.update(synthetic_crops=wanted, achieved=round(wanted / (wanted + len(real)), 4),
                  synthetic_per_class={str(k): int(v) for k, v in chosen["label"].value_counts().sort_index().items()})
    rows = pd.concat([real, chosen], ignore_index=True)
    rows[SYNTHETIC_COLUMN] = [0] * len(real) + [1] * len(chosen)
    return rows, record
