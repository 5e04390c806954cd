"""prediction.py: the stage's command line and its three modes, over the predictor library.

- grid (``--models vgg16 rf ...``): seeded test crops of each model folder, classified again from
  their files, drawn with true and predicted labels into ``<model>/predictions_grid.png``;
- crops (``--model DIR --input PATH...``): one CSV row per crop image, ``path,pred,prob_<class>...``;
- photos (``--model DIR --photos DIR``): every annotated particle of a MICRO-style folder or a YOLO
  export is cut out and classified (``predictor.classify_photos``); with labels, the set is scored
  and written like a test split (metrics.json, confusion matrix); with ``--find`` the particles are
  found instead of read (``find.sample_report``, docs/find.md).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from microplastics.core import fileio, layout
from microplastics.core.cli import ArgumentParser, UserError, add_device_argument, finite_float
from microplastics.core.images import IMAGE_EXTENSIONS, is_image_file
from microplastics.deep.precision import PRECISIONS
from microplastics.predict.model_folder import default_margin, read_crop, recorded_predictions, resolve_data_dir
from microplastics.predict.external import EXTERNAL_DIR, parse_class_map, write_external
from microplastics.predict.predictor import (CROPS_CSV, Predictor, classify_files, classify_photos, load_predictor,
                                             predict_in_batches, with_probabilities)
from microplastics.predict.tta import tta_of, with_tta
from microplastics.core.seeds import pick_rows


# ----------------------------------------------------------------------------- grid mode

@dataclass
class GridResult:
    name: str
    n: int
    right: int
    disagreements: int
    path: Path


def write_prediction_grid(model_dir: str | Path, predictor: Predictor, data_dir: Path, size: int = 32,
                          seed: int = 42, batch_size: int = 32) -> GridResult:
    """Classify seeded test crops from their files and draw them; check against predictions.csv."""
    from microplastics.results.grids import save_prediction_grid

    model_dir = Path(model_dir)
    recorded = recorded_predictions(model_dir)
    rows = recorded.iloc[pick_rows(recorded["true"].tolist(), n=size, seed=seed)].reset_index(drop=True)
    images = [read_crop(data_dir, p) for p in rows["path"]]
    probs = predict_in_batches(predictor, images, batch_size)
    table = with_probabilities(rows[["path", "true"]], probs, predictor.classes)
    table.insert(3, "recorded_pred", rows["pred"].tolist())
    with fileio.atomic_path(model_dir / layout.GRID_TABLE) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    right = int((table["pred"] == table["true"]).sum())
    differ = int((table["pred"] != table["recorded_pred"]).sum())
    save_prediction_grid(images, table["true"].tolist(), table["pred"].tolist(), model_dir / layout.GRID_IMAGE,
                         title=f"{predictor.name}: {len(table)} test crops, {right} right (✗ and red: wrong)")
    if differ:
        print(f"warning: {predictor.name}: {differ} of {len(table)} grid predictions differ from "
              f"{model_dir / layout.PREDICTIONS_NAME}; was the model retrained or the data rebuilt since?",
              file=sys.stderr)
    return GridResult(predictor.name, len(table), right, differ, model_dir / layout.GRID_IMAGE)


# ----------------------------------------------------------------------------- crops mode

def collect_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders expanded to their image files (recursively, sorted)."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not files:
                raise UserError(f"{path} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            found.extend(files)
        elif path.is_file():
            found.append(path)
        else:
            raise UserError(f"--input {path}: no such file or folder")
    if not found:
        raise UserError("--input named no images")
    return found


# ----------------------------------------------------------------------------- command line

def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="prediction.py",
        description="Classify microplastic crops with a trained model (deep best.pt or classical model.skops). "
                    "Grid mode (--models): a grid of seeded test crops per model, true and predicted labels, "
                    "wrong ones in red, into RESULTS/<model>/predictions_grid.png. Crops mode (--model, --input): "
                    "a CSV path,pred,prob_<class>... Photos mode (--model, --photos): every annotated particle of "
                    "a MICRO folder (raw_img/ + annotation/) or a YOLO export, classified; labelled sets are "
                    "scored into metrics.json and confusion_matrix.png.",
        examples=["python prediction.py --models rf svm vgg16   # grids of test crops",
                  "python prediction.py --model results/vgg16 --input new_crops/",
                  "python prediction.py --model results/rf --photos other_lab/MICRO   # scored when annotated"])
    grid = parser.add_argument_group("grid mode (--models): prediction grids of model folders")
    grid.add_argument("--models", nargs="+", metavar="NAME",
                      help="model folder names under --results, e.g. vgg16 resnet50 vit_b_16 rf svm")
    grid.add_argument("--results", default=layout.RESULTS_DIR, help="folder holding one sub-folder per model")
    grid.add_argument("--data", help="processed folder of the test crops (default: the one in the model's "
                                     "config.json)")
    grid.add_argument("--grid-size", type=int, default=32, help="test crops per grid")
    grid.add_argument("--seed", type=int, default=42, help="seed of the crops drawn for the grid")
    crops = parser.add_argument_group("crops mode (--model DIR --input PATH...): classify crop images")
    crops.add_argument("--model", metavar="DIR", help="crops and photos mode: a model folder (results/vgg16, "
                                                      "results/rf...)")
    crops.add_argument("--input", nargs="+", metavar="PATH", help="crop images or folders of them to classify")
    photos = parser.add_argument_group("photos mode (--model DIR --photos DIR): classify annotated particles")
    photos.add_argument("--photos", metavar="DIR",
                        help="a MICRO-style folder or a YOLO export whose annotated particles to classify")
    photos.add_argument("--format", choices=("auto", "deepparticle", "yolo"), default="auto",
                        help="layout of --photos")
    photos.add_argument("--margin", type=finite_float, default=None,
                        help="widen each box by this fraction of its size (default: the margin recorded for the "
                             "model's training data, else 0)")
    photos.add_argument("--class-map", nargs="+", metavar="OLD=NEW",
                        help="rename annotation labels before scoring, e.g. pallet=pellet fiber=line")
    common = parser.add_argument_group("every mode")
    common.add_argument("--out", metavar="DIR", help="output folder (default: MODEL/classified for --input, "
                                                     "MODEL/external for --photos)")
    common.add_argument("--csv", metavar="FILE",
                        help="write the per-crop CSV here instead of OUT/classified.csv or OUT/particles.csv")
    common.add_argument("--batch-size", type=int, default=32, help="crops per forward pass")
    add_device_argument(common)
    common.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="deep models' arithmetic. auto: bf16 autocast on a CPU with native bf16 (AVX512-BF16, "
                             "AMX; about 2x faster), CUDA's mixed precision on a GPU, else fp32; fp32: full "
                             "precision; bf16: bf16 autocast")
    parser.add_argument("--tta", action="store_true",
                        help="crops/photos mode: test-time augmentation, the mean probability over the 8 flips and "
                             "90-degree rotations of each crop (8x the time); recorded as tta in metrics.json "
                             "(crops mode: a column of its CSV)")
    from microplastics.find.sample_report import add_find_arguments

    add_find_arguments(parser)
    return parser


def _check_args(args: argparse.Namespace) -> str:
    modes = [m for m, v in (("grid", args.models), ("input", args.input), ("photos", args.photos)) if v]
    if len(modes) != 1:
        raise UserError("choose one mode: --models NAME... (grids), --model DIR --input PATH... (crops) "
                        "or --model DIR --photos DIR (annotated photos)")
    if modes[0] != "grid" and not args.model:
        raise UserError(f"--{modes[0]} needs --model DIR, the folder of a trained model")
    if args.batch_size < 1 or args.grid_size < 1:
        raise UserError("--batch-size and --grid-size must be at least 1")
    if args.margin is not None and not args.margin >= 0:
        raise UserError(f"--margin must be 0 or more, got {args.margin}")
    if args.out:
        fileio.check_output_dir(args.out, "--out")
    if args.csv:
        fileio.check_output_file(args.csv, "--csv")
    return modes[0]


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    mode = _check_args(args)
    if args.find and mode != "photos":
        raise UserError("--find works on photos: --model DIR --photos DIR --find")
    if args.tta and (mode == "grid" or args.find):
        raise UserError("--tta works in crops mode (--input) and photos mode (--photos without --find)")
    from microplastics.deep.engine import resolve_device  # torch loads only here, after the checks

    device = str(resolve_device(args.device))
    if mode == "grid":
        return run_grids(args, device)
    if mode == "input":
        return run_crops(args, device)
    if args.find:
        from microplastics.find.sample_report import run_find

        return run_find(args, device)
    return run_photos(args, device)


def run_grids(args: argparse.Namespace, device: str) -> int:
    dirs = [Path(args.results) / name for name in dict.fromkeys(args.models)]
    for folder in dirs:  # every folder checked before any work
        layout.trained_model_file(folder)
    for folder in dirs:
        predictor = load_predictor(folder, device, args.precision)
        result = write_prediction_grid(folder, predictor, resolve_data_dir(folder, args.data), args.grid_size,
                                       args.seed, args.batch_size)
        print(f"{result.name}: {result.right}/{result.n} right, "
              f"{result.n - result.disagreements}/{result.n} as in predictions.csv -> {result.path}")
    return 0


def run_crops(args: argparse.Namespace, device: str) -> int:
    paths = collect_inputs(args.input)
    predictor = with_tta(load_predictor(args.model, device, args.precision), args.tta)
    frame, unreadable = classify_files(predictor, paths, args.batch_size)
    for path, why in unreadable:
        print(f"warning: skipped unreadable {path}: {why}", file=sys.stderr)
    if frame.empty:
        raise UserError(f"none of the {len(paths)} input file(s) could be read as an image")
    frame["tta"] = tta_of(predictor)  # this mode writes no metrics.json: the table itself says how it was scored
    out = Path(args.csv) if args.csv else Path(args.out or Path(args.model) / "classified") / CROPS_CSV
    with fileio.atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
    counts = frame["pred"].value_counts().to_dict()
    print(f"{predictor.name}: {len(frame)} crop(s) classified ({counts}), {len(unreadable)} unreadable -> {out}")
    return 0


def photos_scale(args: argparse.Namespace, predictor: Predictor) -> float | dict[str, float] | None:
    """Photos mode's ``--um-per-px``, with a warning where it and the model's training scale do not meet."""
    from microplastics.data.scale import predictor_scale
    from microplastics.find.measure import parse_scale

    if args.reference_size_um is not None:
        raise UserError("--reference-size-um works with --find; for annotated photos give --um-per-px X|CSV")
    scale, trained = parse_scale(args.um_per_px), predictor_scale(predictor)
    if trained and scale is None:
        print(f"warning: {predictor.name} was trained on crops resampled to {trained:g} um/px, but --um-per-px was "
              "not given, so the crops are used at the photos' own scale", file=sys.stderr)
    return scale


def run_photos(args: argparse.Namespace, device: str) -> int:
    class_map = parse_class_map(args.class_map)
    predictor = with_tta(load_predictor(args.model, device, args.precision), args.tta)
    margin = args.margin if args.margin is not None else default_margin(Path(args.model))
    frame = classify_photos(predictor, args.photos, margin, fmt=args.format, batch_size=args.batch_size,
                            um_per_px=photos_scale(args, predictor))
    skipped = frame.attrs.get("skipped", [])
    for item, why in skipped[:20]:
        print(f"warning: skipped {item}: {why}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"warning: ... and {len(skipped) - 20} more skipped (listed in metrics.json)", file=sys.stderr)
    if frame.empty:
        raise UserError(f"no annotated particle in {args.photos} could be classified "
                        f"({len(skipped)} item(s) skipped); check its annotation files")
    out_dir = Path(args.out or Path(args.model) / EXTERNAL_DIR)
    score = write_external(out_dir, frame, predictor, source=args.photos, csv_path=args.csv, class_map=class_map)
    line = f"{predictor.name}: {len(frame)} particle(s) in {frame['photo'].nunique()} photo(s) classified"
    if score.metrics is not None:
        line += f"; {int(score.scored.sum())} scored: accuracy {score.metrics['accuracy']:.4f}, " \
                f"macro F1 {score.metrics['macro_f1']:.4f}"
    print(f"{line} -> {out_dir}")
    return 0
