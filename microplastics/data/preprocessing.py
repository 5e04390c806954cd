"""data-preprocessing.py: MICRO/ (or a YOLO export) -> processed_MICRO/.

Cuts every annotated box out of its photo, splits the crops into train/val/test
(whole photos per split by default) and writes the ImageFolder tree, manifest.csv and
summary.json. The output folder is built aside and swapped in at the end, so it is
always either the previous complete result or the new complete one.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from microplastics.data import scale
from microplastics.data.annotations import (FORMATS, AnnotationSet, BoxRecord, count_reasons, crop_box,
                                            photo_root, read_annotations, records_by_photo, relative_name)
from microplastics.core.cli import ArgumentParser, UserError, add_workers_argument, finite_float
from microplastics.data.dataset import (MANIFEST_COLUMNS, MANIFEST_NAME, SPLITS, SUMMARY_NAME, SYNTHETIC_COLUMN,
                                        crop_path, manifest_digest, split_fingerprint)
from microplastics.core.fileio import check_output_dir, read_json, staged_dir, write_json
from microplastics.core.images import ImageReadError, read_rgb
from microplastics.data.mixing import draw_synthetic_records, parse_class_map
from microplastics.data.origin import read_origin
from microplastics.core import provenance
from microplastics.data.splits import (GROUP_BY, achieved_fractions, check_fractions, crop_split, crop_split_minimum,
                                       group_key, group_split, small_classes)
from microplastics.find import measure

EXTRA_COLUMNS = ("box_id", "group")
_CROPS = ".crops"  # staging sub-folder where crops wait until their split is known
_SYNTHETIC = ".synthetic"  # staging sub-folder of the synthetic photos, removed once cut


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="data-preprocessing.py",
        description="Cut the annotated particles out of the photos of a MICRO folder (DeepParticle "
                    "layout: raw_img/ + annotation/<photo>.tsv) or of a YOLO export (images/ + labels/ + "
                    "data.yaml), split them into train/val/test and write an ImageFolder tree with "
                    "manifest.csv and summary.json. The output folder is replaced as a whole.",
        examples=["python data-preprocessing.py --input MICRO --output processed_MICRO",
                  ("python data-preprocessing.py --input ../shared/datasets/mp100/yolo --format yolo "
                   "--output mp100/processed_MICRO"),
                  "python data-preprocessing.py --group-by none --margin 0.1   # the study's crop-level split"],
    )
    parser.add_argument("--input", default="MICRO", help="folder with the annotated photos")
    parser.add_argument("--output", default="processed_MICRO", help="folder to (re)build")
    parser.add_argument("--format", default="auto", choices=FORMATS,
                        help="input layout; auto detects raw_img/+annotation/ or images/+labels/")
    parser.add_argument("--margin", type=finite_float, default=0.0,
                        help="context around each box, as a fraction of the box size on each side")
    parser.add_argument("--val-fraction", type=finite_float, default=0.15, help="share of crops for validation")
    parser.add_argument("--test-fraction", type=finite_float, default=0.15, help="share of crops for testing")
    parser.add_argument("--group-by", default="photo", choices=GROUP_BY,
                        help="keep the crops of one photo (or one photo series: the name before the "
                             "first '_') in one split; 'none' is the original study's crop-level split")
    parser.add_argument("--min-class-crops", type=int, default=5,
                        help="classes with fewer crops (or, grouped, found in fewer than 3 groups) are "
                             "left out with a warning; --group-by none needs at least 7 at 70/15/15")
    parser.add_argument("--seed", type=int, default=42, help="random seed of the split (and of the synthetic photos)")
    parser.add_argument("--mix-synthetic-photos", type=int, default=0, metavar="N",
                        help="also draw N domain-randomised synthetic photos and file their crops as a pool of "
                             "training crops marked synthetic in manifest.csv (never in val or test; the real "
                             "split is unchanged); training stages draw from it with --mix-synthetic FRACTION")
    parser.add_argument("--synthetic-class-map", default="auto", metavar="MAP",
                        help="how the generator's classes become the real data's: GEN=REAL pairs, e.g. "
                             "line=fiber,hard=fragment,pellet=pallet; auto maps line, hard, pellet and foam to the "
                             "real class of the same or a usual name (fiber/fibre, fragment, pallet/pellet)")
    add_workers_argument(parser, "processes that cut crops (one photo at a time each)")
    g = parser.add_argument_group("calibration (the photos' micrometres per pixel; docs/scale.md)")
    measure.add_scale_arguments(g)
    g.add_argument("--crop-um-per-px", type=finite_float, default=None, metavar="UM",
                   help="with a calibration: resample every crop to this many micrometres per pixel, so a model "
                        "sees particles at one physical scale whatever the magnification; recorded in summary.json "
                        "and in every model trained on the folder, which applies it to new photos too")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    summary = preprocess(args.input, args.output, fmt=args.format, margin=args.margin,
                         val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                         group_by=args.group_by, min_class_crops=args.min_class_crops, seed=args.seed,
                         workers=args.workers, um_per_px=args.um_per_px, reference_size_um=args.reference_size_um,
                         reference_class=args.reference_class, crop_um_per_px=args.crop_um_per_px,
                         synthetic_photos=args.mix_synthetic_photos, synthetic_class_map=args.synthetic_class_map,
                         run=provenance.run_record(parser.prog, argv))
    print(counts_table(summary))
    if "synthetic" in summary:
        print(f"synthetic training pool: {summary['synthetic']['crops']} crops {summary['synthetic']['per_class']} "
              f"from {summary['synthetic']['photos']} photos (class map {summary['synthetic']['class_map']})")
    print(f"wrote {summary['totals']['total']} crops to {args.output} "
          f"({summary['skipped']['count']} item(s) skipped, see {SUMMARY_NAME})")
    return 0


def preprocess(input_dir: str | Path, output_dir: str | Path, *, fmt: str = "auto", margin: float = 0.0,
               val_fraction: float = 0.15, test_fraction: float = 0.15, group_by: str = "photo",
               min_class_crops: int = 5, seed: int = 42, workers: int = 1, um_per_px: str | None = None,
               reference_size_um: float | None = None, reference_class: str = "reference",
               crop_um_per_px: float | None = None, synthetic_photos: int = 0,
               synthetic_class_map: str = "auto", run: dict | None = None) -> dict:
    """Build ``output_dir`` from ``input_dir``; returns the summary that is written as summary.json.

    ``um_per_px`` (a number or a CSV, as ``--um-per-px``) or ``reference_size_um`` calibrate the
    photos; ``crop_um_per_px`` then resamples every crop to that scale. ``synthetic_photos`` > 0 adds
    a pool of synthetic training crops (see microplastics.data.mixing).
    ``run`` (provenance.run_record) is stored with it, and so is the run record of the stage that
    wrote ``input_dir`` (data-extraction.py's, in its config.json) when there is one."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    fractions = _check_settings(input_dir, output_dir, margin, val_fraction, test_fraction, group_by,
                                min_class_crops, workers)
    measure.check_scale_args(um_per_px, reference_size_um)
    scale.check_crop_scale(crop_um_per_px, um_per_px is not None or reference_size_um is not None)
    calibration = Calibration(measure.parse_scale(um_per_px), reference_size_um, reference_class, crop_um_per_px)
    if synthetic_photos < 0:
        raise UserError(f"--mix-synthetic-photos must be 0 or more, got {synthetic_photos}")
    if synthetic_photos and crop_um_per_px:
        # the generator's photos have no physical scale, so their crops could not be resampled like the real ones
        raise UserError("--mix-synthetic-photos and --crop-um-per-px cannot be combined: synthetic photos "
                        "have no calibration")
    synthetic = (synthetic_photos, synthetic_class_map)
    annotations = read_annotations(input_dir, fmt)
    if not annotations.records:
        raise UserError(f"no usable boxes in {input_dir}: {_reasons_line(annotations.skipped)}")
    with staged_dir(output_dir) as staging:
        # origin: what the raw folder says it is (synthetic, downloaded...), None when it does not say
        summary = {"input": str(input_dir.resolve()), "origin": read_origin(input_dir),
                   **_build(annotations, staging, fractions, margin, group_by, min_class_crops, seed, workers,
                            calibration, input_dir, synthetic)}
        summary.update({k: v for k, v in (("run", run), ("input_run", input_run(input_dir))) if v})
        write_json(staging / SUMMARY_NAME, summary)
    return summary


def input_run(input_dir: Path) -> dict | None:
    """The run record data-extraction.py left in the raw folder (its config.json), if any."""
    path = input_dir / provenance.CONFIG_NAME
    try:
        return provenance.read_run(read_json(path)) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _check_settings(input_dir: Path, output_dir: Path, margin: float, val_fraction: float,
                    test_fraction: float, group_by: str, min_class_crops: int,
                    workers: int) -> tuple[float, float, float]:
    if not (math.isfinite(margin) and margin >= 0):
        raise UserError(f"--margin must be a number >= 0 (a fraction of the box size), got {margin}")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if min_class_crops < 1:
        raise UserError(f"--min-class-crops must be at least 1, got {min_class_crops}")
    if group_by not in GROUP_BY:
        raise UserError(f"--group-by must be one of {', '.join(GROUP_BY)}, got {group_by!r}")
    fractions = check_fractions(val_fraction, test_fraction)
    if input_dir.exists() and not input_dir.is_dir():
        raise UserError(f"--input {input_dir} is a file, not a folder; pass the folder that holds raw_img/ and "
                        "annotation/ (or images/ and labels/), e.g. the --out of data-extraction.py")
    if not input_dir.is_dir():
        raise UserError(f"input folder {input_dir} does not exist; run data-extraction.py first, or pass "
                        "--input with a MICRO folder (raw_img/ + annotation/) or a YOLO export (images/ + labels/)")
    _check_output(input_dir.resolve(), output_dir.resolve())
    return fractions


def _check_output(input_dir: Path, output_dir: Path) -> None:
    """Refuse outputs whose replacement would delete the input or an unrelated folder."""
    check_output_dir(output_dir, "--output")
    if output_dir == input_dir or output_dir in input_dir.parents or input_dir in output_dir.parents:
        raise UserError(f"--output {output_dir} overlaps --input {input_dir}; the output folder is "
                        "deleted and rebuilt, so choose a folder outside the input")
    if output_dir.exists():
        ours = (output_dir / MANIFEST_NAME).is_file() or (output_dir / SUMMARY_NAME).is_file()
        if not ours and any(output_dir.iterdir()):
            raise UserError(f"--output {output_dir} is a non-empty folder that data-preprocessing.py did "
                            "not write (no manifest.csv); it would be replaced, so choose another folder")


@dataclass(frozen=True)
class Calibration:
    """The photos' scale as asked for (``--um-per-px`` parsed, or the reference objects) and the crops' target."""

    um_per_px: float | dict[str, float] | None = None
    reference_size_um: float | None = None
    reference_class: str = "reference"
    crop_um_per_px: float | None = None


def calibrate_crops(records: list[BoxRecord], crops_dir: Path, photo_root: Path,
                    calibration: Calibration) -> tuple[dict[Path, float] | None, dict]:
    """Each photo's um/px (None without a calibration), and the summary's ``calibration`` entry.

    With a target scale, every crop file in ``crops_dir`` is resampled to it in place."""
    names = {r.photo: relative_name(r.photo, photo_root) for r in records}
    refs = None
    if calibration.reference_size_um is not None:
        files: dict[str, list[Path]] = {}
        for r in records:
            if r.label == calibration.reference_class:
                files.setdefault(names[r.photo], []).append(crops_dir / r.crop_name)
        refs = scale.reference_ferets(files)
    scales = measure.photo_scales(sorted(set(names.values())), calibration.um_per_px, reference_feret=refs,
                                  reference_size_um=calibration.reference_size_um,
                                  reference_class=calibration.reference_class, seen_as="annotated as")
    if scales is None:
        return None, {"unit": "px", "crop_um_per_px": None, "note": "no scale given: crops keep the photos' pixels"}
    values, source = scales
    per_photo = {photo: values[name] for photo, name in names.items()}
    if calibration.crop_um_per_px:
        scale.resample_files([(crops_dir / r.crop_name, per_photo[r.photo]) for r in records],
                             calibration.crop_um_per_px)
    spread = np.array(list(values.values()))
    return per_photo, {"unit": "um", "crop_um_per_px": calibration.crop_um_per_px,
                       "source": sorted(set(source.values())), "reference_size_um": calibration.reference_size_um,
                       "photo_um_per_px": {"min": float(spread.min()), "median": float(np.median(spread)),
                                           "max": float(spread.max())}}


def _build(annotations: AnnotationSet, staging: Path, fractions: tuple[float, float, float], margin: float,
           group_by: str, min_class_crops: int, seed: int, workers: int, calibration: Calibration,
           input_dir: Path, synthetic: tuple[int, str] = (0, "auto")) -> dict:
    records, failed = cut_crops(annotations.records, staging / _CROPS, margin, workers)
    per_photo, scale_summary = calibrate_crops(records, staging / _CROPS, photo_root(input_dir, annotations.format),
                                               calibration)
    skipped = list(annotations.skipped) + failed
    if group_by == "none":  # below this, scikit-learn's stratified split fails outright
        min_class_crops = max(min_class_crops, crop_split_minimum(fractions))
    records, left_out = _drop_small_classes(records, group_by, min_class_crops, skipped)
    groups = [group_key(r.photo.name, group_by) for r in records]
    labels = [r.label for r in records]
    if group_by == "none":
        splits = crop_split(labels, fractions, seed)
    else:
        splits = group_split(labels, groups, fractions, seed)
    manifest = _place_crops(records, groups, splits, staging, per_photo)
    summary = _summary(annotations, manifest, skipped, left_out, fractions, margin, group_by, min_class_crops, seed)
    summary["settings"]["crop_um_per_px"] = calibration.crop_um_per_px
    if synthetic[0] > 0:  # after the real split, which is therefore the same with or without them
        pool, summary["synthetic"] = _synthetic_pool(staging, synthetic, sorted(set(manifest["label"])), margin,
                                                     seed, workers)
        manifest = pd.concat([manifest.assign(**{SYNTHETIC_COLUMN: 0}), pool], ignore_index=True)
        manifest = manifest.sort_values("path", kind="stable").reset_index(drop=True)
    shutil.rmtree(staging / _CROPS)
    manifest.to_csv(staging / MANIFEST_NAME, index=False, lineterminator="\n")
    # Every later stage compares the manifest with this digest and refuses one edited afterwards.
    return {**summary, "calibration": scale_summary, "manifest_digest": manifest_digest(staging)}


def _synthetic_pool(staging: Path, synthetic: tuple[int, str], real_classes: list[str], margin: float, seed: int,
                    workers: int) -> tuple[pd.DataFrame, dict]:
    """Draw the synthetic photos, cut their crops into train/<class>/ and return their manifest rows
    (marked synthetic) and what summary.json records of them."""
    n_photos, map_text = synthetic
    class_map = parse_class_map(map_text, real_classes)
    records, info = draw_synthetic_records(staging / _SYNTHETIC, n_photos, seed, class_map)
    clash = next((r for r in records if (staging / "train" / r.label / r.crop_name).exists()), None)
    if clash is not None:
        raise UserError(f"a real crop is named {clash.crop_name!r}, the name of a synthetic crop; rename the photo "
                        "or leave out --mix-synthetic-photos")
    records, failed = cut_crops(records, staging / _CROPS, margin, workers)
    groups = [f"synthetic/{r.photo.name}" for r in records]
    pool = _place_crops(records, groups, ["train"] * len(records), staging).assign(**{SYNTHETIC_COLUMN: 1})
    shutil.rmtree(staging / _SYNTHETIC)
    per_class = {str(k): int(v) for k, v in pool["label"].value_counts().sort_index().items()}
    return pool, {**info, "crops": len(pool), "per_class": per_class, "skipped": len(failed)}


def _drop_small_classes(records: list[BoxRecord], group_by: str, min_class_crops: int,
                        skipped: list[tuple[str, str]]) -> tuple[list[BoxRecord], dict[str, str]]:
    """Leave out classes too small to reach every split; warn, and add their crops to ``skipped``."""
    groups = None if group_by == "none" else [group_key(r.photo.name, group_by) for r in records]
    left_out = small_classes([r.label for r in records], groups, min_class_crops)
    for label, reason in left_out.items():
        print(f"warning: class {label!r} left out: {reason}", file=sys.stderr)
        skipped += [(f"{r.photo.name} box {r.box_id}", f"class too small to split: {label}")
                    for r in records if r.label == label]
    kept = [r for r in records if r.label not in left_out]
    if not kept:
        raise UserError("no class has enough crops to split; lower --min-class-crops or add data")
    return kept, left_out


def cut_crops(records: list[BoxRecord], out_dir: Path, margin: float,
              workers: int) -> tuple[list[BoxRecord], list[tuple[str, str]]]:
    """Write every record's crop as ``out_dir/<crop_name>``; returns (written records, skips).

    Work goes photo by photo, so each photo is decoded once however many boxes it has.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(photo, recs, margin, out_dir) for photo, recs in records_by_photo(records).items()]
    failed_photos: dict[Path, str] = {}
    with tqdm(total=len(jobs), unit="photo", desc="cropping", file=sys.stderr) as bar:
        for photo, error in _run_jobs(jobs, workers):
            if error:
                failed_photos[photo] = error
            bar.update(1)
    written = [r for r in records if r.photo not in failed_photos]
    skips = [(f"{photo.parent.name}/{photo.name}", f"unreadable image: {error}")
             for photo, error in sorted(failed_photos.items())]
    return written, skips


def _run_jobs(jobs: list, workers: int):
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_cut_photo, jobs)
        return
    with Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap_unordered(_cut_photo, jobs, chunksize=4)


def _cut_photo(job: tuple[Path, list[BoxRecord], float, Path]) -> tuple[Path, str | None]:
    """Read one photo and write all its crops; an unreadable photo is returned with the error."""
    photo, recs, margin, out_dir = job
    try:
        image = read_rgb(photo)
    except ImageReadError as err:
        return photo, err.reason
    for rec in recs:
        Image.fromarray(crop_box(image, rec, margin)).save(out_dir / rec.crop_name, format="PNG")
    return photo, None


def _place_crops(records: list[BoxRecord], groups: list[str], splits: Sequence[str], staging: Path,
                 per_photo: dict[Path, float] | None = None) -> pd.DataFrame:
    """Move each crop into ``<split>/<label>/`` and return the manifest, sorted by path (with the
    photo's ``um_per_px`` when the photos are calibrated)."""
    rows = []
    for rec, group, split in zip(records, groups, splits):
        rel = crop_path(split, rec.label, rec.crop_name)  # refuses any part that is not one plain name
        (staging / split / rec.label).mkdir(parents=True, exist_ok=True)
        os.replace(staging / _CROPS / rec.crop_name, staging / rel)
        rows.append((rel, rec.label, split, rec.photo.name, rec.minr, rec.minc, rec.maxr, rec.maxc,
                     rec.box_id, group))
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS + EXTRA_COLUMNS))
    if per_photo is not None:
        frame["um_per_px"] = [per_photo[r.photo] for r in records]
    return frame.sort_values("path", kind="stable").reset_index(drop=True)


def _summary(annotations: AnnotationSet, manifest: pd.DataFrame, skipped: list[tuple[str, str]],
             left_out: dict[str, str], fractions: tuple[float, float, float], margin: float, group_by: str,
             min_class_crops: int, seed: int) -> dict:
    table = pd.crosstab(manifest["label"], manifest["split"]).reindex(columns=list(SPLITS), fill_value=0)
    counts = {str(label): {**{s: int(row[s]) for s in SPLITS}, "total": int(row.sum())}
              for label, row in table.iterrows()}
    photos = manifest.groupby("split")["source_image"].nunique().reindex(list(SPLITS), fill_value=0)
    return {
        "format": annotations.format,
        "settings": {"margin": margin, "val_fraction": fractions[1], "test_fraction": fractions[2],
                     "group_by": group_by, "min_class_crops": min_class_crops, "seed": seed},
        "classes": sorted(counts),
        "counts": counts,
        "totals": {**{s: int(table[s].sum()) for s in SPLITS}, "total": len(manifest)},
        "photos": {**{s: int(photos[s]) for s in SPLITS}, "total": int(manifest["source_image"].nunique())},
        "fractions": {
            "requested": dict(zip(SPLITS, fractions)),
            "overall": achieved_fractions(["all"] * len(manifest), manifest["split"])["all"],
            "per_class": achieved_fractions(manifest["label"], manifest["split"]),
        },
        "left_out_classes": left_out,
        "clamped_boxes": len(annotations.clamped),
        "skipped": {"count": len(skipped), "by_reason": count_reasons(skipped),
                    "items": [{"item": item, "reason": reason} for item, reason in skipped]},
        "split_fingerprints": {s: split_fingerprint(manifest, s) for s in SPLITS},
    }


def counts_table(summary: dict) -> str:
    """The crops per class and split as a plain text table, with totals."""
    rows = {label: summary["counts"][label] for label in summary["classes"]}
    rows["total"] = summary["totals"]
    return pd.DataFrame.from_dict(rows, orient="index")[list(SPLITS) + ["total"]].to_string()


def _reasons_line(skipped: list[tuple[str, str]]) -> str:
    if not skipped:
        return "no photos with annotations found"
    reasons = ", ".join(f"{n} x {kind}" for kind, n in count_reasons(skipped).items())
    return f"{len(skipped)} item(s) skipped ({reasons}); see the folder layout in docs/data-preprocessing.md"
