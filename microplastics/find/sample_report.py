"""``prediction.py --model DIR --photos DIR --find``: from photos nobody annotated to a sample report.

Every photo is searched by the classical finder (``finder``), each particle found is cut out and
classified by the trained model, measured (``measure``) and counted per sample and size class
(``samples``). The output folder (``--out``, default ``MODEL/found``) is rebuilt whole:

- ``particles.csv``: one row a particle; ``photo``, ``particle``, the box (``minr minc maxr maxc``,
  max exclusive), ``sample``, the measures with their unit in the column name, ``colour``,
  ``class``, ``prob_<class>``, ``uncertain`` (top probability below ``--review-below``),
  ``size_class``, ``um_per_px`` and ``scale_source``;
- ``samples.csv``: counts per class and size class per sample;
- ``overlays/<photo>.png``, ``size_distribution.png``, ``review_sheet.png``, ``report.html``;
- ``metrics.json``: the settings, the calibration, skipped photos and, where the photos carry
  annotations (used only for this), the finder's scores against them.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from microplastics.data.scale import model_scale, predictor_scale
from microplastics.find import detection, measure, samples
from microplastics.core import fileio
from microplastics.data.annotations import (BoxRecord, crop_box, detect_format, read_annotations, records_by_photo,
                                            relative_name)
from microplastics.core.errors import InputError
from microplastics.find.finder import FinderSettings, find_particles
from microplastics.core.images import IMAGE_EXTENSIONS, ImageReadError, is_image_file, read_rgb
from microplastics.predict.model_folder import default_margin
from microplastics.predict.external import parse_class_map
from microplastics.predict.predictor import Predictor, load_predictor, predict_in_batches, with_probabilities

FOUND_DIR = "found"
SAMPLES_CSV = "samples.csv"
REVIEW_LIMIT = 96  # crops on the review sheet; particles.csv flags every uncertain one
FINDERS = ("classical", "detector")
PhotoFinder = Callable[[np.ndarray, "float | None"], tuple[np.ndarray, list]]


def add_find_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--find`` options of prediction.py."""
    g = parser.add_argument_group("finding particles in photos without annotations (--find)")
    a = g.add_argument
    a("--find", action="store_true", help="with --photos: find the particles with the classical finder instead "
                                          "of reading annotated boxes; annotations, where present, only score it")
    a("--finder", choices=FINDERS, default="classical", help="classical (no training) or detector (a trained "
                                                             "detector, find-detector.py; needs --detector)")
    a("--detector", metavar="PATH", help="with --finder detector: the checkpoint find-detector.py wrote")
    measure.add_scale_arguments(g)
    a("--review-below", type=float, default=0.6, help="particles whose top class probability is below this are "
                                                      "flagged uncertain and put on the review sheet")
    a("--sample-pattern", metavar="REGEX", help="sample of a photo from its name (first group, else the match); "
                                                "default: the photo's sub-folder")
    a("--size-bins", type=float, nargs="+", metavar="EDGE", default=list(samples.DEFAULT_SIZE_EDGES),
      help="size class edges by Feret max, in um (in px for an uncalibrated run)")
    a("--min-diameter-um", type=float, default=20.0, help="with a scale: smaller particles are ignored")
    a("--overlays", type=int, default=12, metavar="N", help="photos with overlays shown in report.html "
                                                            "(overlays/ holds every photo)")


def check_find_args(args: argparse.Namespace) -> None:
    if not args.photos:
        raise InputError("--find needs --photos DIR, the folder of photos to search")
    if (args.finder == "detector") != (args.detector is not None):
        raise InputError("--finder detector and --detector PATH go together (train a detector with find-detector.py)")
    if not 0 <= args.review_below <= 1:
        raise InputError(f"--review-below must be between 0 and 1, got {args.review_below}")
    measure.check_scale_args(args.um_per_px, args.reference_size_um)
    if not args.min_diameter_um >= 0:
        raise InputError(f"--min-diameter-um must be 0 or more, got {args.min_diameter_um}")
    samples.check_edges(args.size_bins)


# ----------------------------------------------------------------------------- the photos

def list_photos(root: Path, out_dir: Path | None = None) -> tuple[Path, list[Path], dict[str, list[BoxRecord]] | None]:
    """(the folder photo names are relative to, the photos, annotated boxes by photo name or None).

    A MICRO folder (raw_img/ + annotation/) or a YOLO export gives its photos and boxes; any
    other folder is searched recursively for images (the output folder left out)."""
    if not root.is_dir():
        raise InputError(f"--photos {root} is not a folder")
    try:
        fmt = detect_format(root)
    except InputError:
        fmt = None
    if fmt is not None:
        photo_root = root / ("raw_img" if fmt == "deepparticle" else "images")
        found = read_annotations(root, fmt, require_label=False)
        boxes = {relative_name(p, photo_root): r for p, r in records_by_photo(found.records).items()}
    else:
        photo_root, boxes = root, None
    out = out_dir.resolve() if out_dir else None
    photos = sorted(p for p in photo_root.rglob("*") if p.is_file() and is_image_file(p)
                    and not (out and out in p.resolve().parents) and not any(x.startswith(".") for x in
                                                                              p.relative_to(photo_root).parts))
    if not photos:
        raise InputError(f"{photo_root} holds no photos ({', '.join(IMAGE_EXTENSIONS)})")
    return photo_root, photos, boxes


# ----------------------------------------------------------------------------- one photo

def photo_finder(finder: str, settings: FinderSettings, detector_path: str | None = None) -> PhotoFinder:
    """``(image, um_per_px) -> (labels, found)`` of the classical finder or of a trained detector."""
    if finder == "classical":
        return lambda image, um_per_px: find_particles(image, settings, um_per_px)
    from microplastics.find import detector  # torch and timm: only when asked for

    model, config = detector.load_detector(detector_path)
    return lambda image, um_per_px: detector.find_particles(image, model, config, settings, um_per_px)


def process_photo(image: np.ndarray, predictor: Predictor, settings: FinderSettings, um_per_px: float | None,
                  margin: float, batch_size: int, found: tuple[np.ndarray, list] | None = None
                  ) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, list[np.ndarray]]:
    """(labels, one row per particle with its box and measures in pixels, probabilities, crops).

    ``found`` is ``find_particles``' result when the caller already has it (the benchmark times it)."""
    labels, found = found if found is not None else find_particles(image, settings, um_per_px)
    boxes = [(f.label, f.minr, f.minc, f.maxr, f.maxc) for f in found]
    crops = [crop_box(image, BoxRecord(Path(), str(f.label), f.minr, f.minc, f.maxr, f.maxc, None, ""), margin)
             for f in found]
    # a model trained on resampled crops sees them at its own scale; the crops kept for the page stay as cut
    probs = predict_in_batches(predictor, model_scale(crops, um_per_px, predictor_scale(predictor)), batch_size)
    frame = pd.DataFrame(boxes, columns=["particle", "minr", "minc", "maxr", "maxc"])
    measures = measure.measure_particles(labels, image, boxes, None)
    return labels, pd.concat([frame, measures], axis=1), probs, crops


def classify_columns(frame: pd.DataFrame, probs: np.ndarray, classes: Sequence[str],
                     review_below: float) -> pd.DataFrame:
    """``frame`` plus ``class``, one ``prob_<class>`` column per class and ``uncertain``."""
    frame = with_probabilities(frame, probs, classes).rename(columns={"pred": "class"})
    frame["uncertain"] = probs.max(axis=1) < review_below if len(probs) else []
    return frame


# ----------------------------------------------------------------------------- the run

def run_find(args: argparse.Namespace, device: str) -> int:
    check_find_args(args)
    scale = measure.parse_scale(args.um_per_px)
    pattern = samples.compile_pattern(args.sample_pattern)
    class_map = parse_class_map(args.class_map)
    out_dir = Path(args.out or Path(args.model) / FOUND_DIR)
    root = Path(args.photos)
    photo_root, photos, truth = list_photos(root, out_dir)
    names = [relative_name(p, photo_root) for p in photos]
    if isinstance(scale, dict):
        missing = [n for n in names if measure.scale_for(n, scale) is None]
        if missing:
            raise InputError(f"--um-per-px {args.um_per_px} has no value for {len(missing)} photo(s), "
                             f"e.g. {missing[0]}")
    predictor = load_predictor(args.model, device, args.precision)
    if args.reference_size_um is not None and args.reference_class not in predictor.classes:
        raise InputError(f"the model knows no class {args.reference_class!r} for --reference-size-um; its classes: "
                        f"{', '.join(predictor.classes)} (see --reference-class)")
    settings = FinderSettings(min_diameter_um=args.min_diameter_um or None)
    margin = args.margin if args.margin is not None else default_margin(Path(args.model))
    find = photo_finder(args.finder, settings, args.detector)

    from microplastics.find.sample_page import draw_overlay, write_figures_and_page

    with fileio.staged_dir(out_dir) as staging:
        parts, skipped, review, photo_rows = [], [], [], []
        for path, name in tqdm(list(zip(photos, names)), desc="finding particles", unit="photo",
                               disable=len(photos) < 5):
            try:
                image = read_rgb(path)
            except ImageReadError as err:
                skipped.append((name, f"unreadable image: {err.reason}"))
                print(f"warning: skipped {name}: unreadable image ({err.reason})", file=sys.stderr)
                continue
            um_per_px = measure.scale_for(name, scale)
            labels, frame, probs, crops = process_photo(image, predictor, settings, um_per_px, margin, args.batch_size,
                                                        found=find(image, um_per_px))
            frame = classify_columns(frame, probs, predictor.classes, args.review_below)
            frame.insert(0, "photo", name)
            parts.append(frame)
            photo_rows.append({"photo": name, "sample": samples.sample_of(name, root.name, pattern),
                               "height": image.shape[0], "width": image.shape[1]})
            draw_overlay(image, labels, frame, predictor.classes, staging / "overlays" / f"{name}.png")
            if len(review) < REVIEW_LIMIT:  # the sheet shows the first ones; particles.csv flags them all
                review.extend((crop, row) for crop, (_, row) in zip(crops, frame.iterrows()) if row["uncertain"])
        if not parts:
            raise InputError(f"none of the {len(photos)} photo(s) in {photo_root} could be read")
        photo_table = pd.DataFrame(photo_rows)
        particles = pd.concat(parts, ignore_index=True)
        particles, calibration = calibrate(particles, photo_table, scale, args)
        unit = calibration["unit"]
        particles = particles.merge(photo_table[["photo", "sample"]], on="photo", how="left")
        particles["size_class"] = samples.size_class(particles[f"feret_max_{unit}"], args.size_bins, unit)
        particles = order_columns(particles, predictor.classes)
        table = samples.samples_table(particles, photo_table, predictor.classes, args.size_bins, unit)
        scores = score_against(truth, particles, photo_table, class_map, predictor.classes)
        write_tables(staging, particles, table, metrics={
            "model": predictor.name, "weights": predictor.weights, "classes": predictor.classes,
            "photos_dir": str(root), "n_photos": len(photo_table), "n_particles": len(particles),
            "n_uncertain": int(particles["uncertain"].sum()), "review_below": args.review_below,
            "margin": margin, "size_bins": list(args.size_bins), "calibration": calibration,
            "finder": args.finder, "detector": args.detector, "finder_settings": asdict(settings),
            "class_map": class_map,
            "skipped": [{"item": i, "reason": r} for i, r in skipped], "finder_scores": scores})
        write_figures_and_page(staging, particles, table, predictor.classes, review[:REVIEW_LIMIT],
                               scores=scores, calibration=calibration, skipped=skipped,
                               title=f"{root.name}: {len(particles)} particles in {len(photo_table)} photos",
                               n_overlays=args.overlays)
    print(summary_line(predictor.name, particles, photo_table, table, scores, unit, out_dir))
    return 0


def calibrate(particles: pd.DataFrame, photo_table: pd.DataFrame, scale: float | dict | None,
              args: argparse.Namespace) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Measures in um with a scale (--um-per-px, or the reference objects), else left in pixels."""
    refs = particles[particles["class"] == args.reference_class] if args.reference_size_um is not None else None
    scales = measure.photo_scales(
        list(photo_table["photo"]), scale, reference_size_um=args.reference_size_um,
        reference_feret=None if refs is None else refs.groupby("photo")["feret_max_px"].apply(list).to_dict(),
        reference_class=args.reference_class)
    if scales is None:
        particles = particles.assign(um_per_px=np.nan, scale_source="none: sizes in pixels")
        return particles, {"unit": "px", "note": "no scale given: every size is in pixels"}
    values, source = scales
    per_row = particles["photo"].map(values).to_numpy(float)
    particles = measure.to_micrometres(particles, per_row)
    particles = particles.assign(um_per_px=per_row, scale_source=particles["photo"].map(source))
    return particles, {"unit": "um", "um_per_px": {p: float(v) for p, v in values.items()},
                       "source": sorted(set(source.values()))}


def order_columns(particles: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    first = ["photo", "particle", "minr", "minc", "maxr", "maxc", "sample"]
    last = ["colour", "class", *[f"prob_{c}" for c in classes], "uncertain", "size_class", "um_per_px", "scale_source"]
    middle = [c for c in particles.columns if c not in first + last]
    return particles[first + middle + last]


def score_against(truth: dict[str, list[BoxRecord]] | None, particles: pd.DataFrame, photo_table: pd.DataFrame,
                  class_map: dict[str, str], classes: Sequence[str]) -> dict[str, Any] | None:
    """The finder's scores on the photos that carry annotations (None when none does)."""
    if not truth:
        return None
    by_photo = {}
    for name in photo_table["photo"]:
        if name not in truth:
            continue
        rows = particles[particles["photo"] == name]
        records = truth[name]
        by_photo[name] = detection.PhotoBoxes(
            found=list(zip(rows["minr"], rows["minc"], rows["maxr"], rows["maxc"])), found_class=list(rows["class"]),
            truth=[(r.minr, r.minc, r.maxr, r.maxc) for r in records],
            truth_class=[class_map.get(r.label or "", r.label or "") for r in records])
    return detection.score_finder(by_photo, classes=classes) if by_photo else None


def write_tables(out: Path, particles: pd.DataFrame, table: pd.DataFrame, metrics: dict[str, Any]) -> None:
    with fileio.atomic_path(out / "particles.csv") as tmp:
        particles.to_csv(tmp, index=False, float_format="%.6g")
    with fileio.atomic_path(out / SAMPLES_CSV) as tmp:
        table.to_csv(tmp, index=False)
    fileio.write_json(out / "metrics.json", metrics)


def summary_line(model: str, particles: pd.DataFrame, photos: pd.DataFrame, table: pd.DataFrame,
                 scores: dict[str, Any] | None, unit: str, out_dir: Path) -> str:
    counts = particles["class"].value_counts().to_dict()
    line = (f"{model}: {len(particles)} particle(s) found in {len(photos)} photo(s), {len(table)} sample(s) "
            f"({counts}), {int(particles['uncertain'].sum())} uncertain; sizes in {unit}")
    if scores:
        s = scores["iou"]["0.3"]
        line += (f"; finder vs annotations at IoU>=0.3: precision {s['precision']:.3f}, recall {s['recall']:.3f}, "
                 f"end-to-end macro-F1 {s['end_to_end']['macro_f1']:.3f}")
    return f"{line} -> {out_dir}"
