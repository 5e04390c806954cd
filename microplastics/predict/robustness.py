"""Score trained models on the test split under the imaging-corruption suite.

For each model folder and each condition (clean, then every corruption at every severity) the
test crops are classified again and scored. When the test photos can be found, each photo is
corrupted whole, written with its test boxes as a small DeepParticle-layout folder, and scored
through ``predict.classify_photos``, the same path as ``prediction.py --photos``; otherwise the
stored crops are corrupted one by one. The output says which (column ``applied_to``).

Per model folder it writes ``robustness_predictions.csv`` (one row per crop and condition),
``robustness.csv`` (corruption, severity, accuracy, macro_f1, n, applied_to; computed from the
predictions file's rows only), ``robustness.json`` (the summary the report uses) and
``robustness.png`` (macro-F1 against severity, one line per corruption).

``--external NAME=DIR`` scores annotated photo sets the model has not seen (predict/external.py):
one row per set in ``external.csv``, the per-crop predictions in ``external/<set>/``. With
``--external`` alone the corruption suite is skipped (give ``--corruptions`` or ``--severities``
to run it too). ``--tta`` averages every prediction over the 8 flips and quarter turns.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from microplastics.core import fileio, layout, provenance
from microplastics.core.cli import ArgumentParser, UserError, add_device_argument, finite_float
from microplastics.core.images import ImageReadError, read_rgb
from microplastics.data import corruptions, dataset
from microplastics.predict import external
from microplastics.predict.model_folder import default_margin
from microplastics.predict.predictor import Predictor, classify_photos, load_predictor
from microplastics.predict.tta import tta_of, with_tta
from microplastics.results import external_sets
from microplastics.results.metrics import compute_metrics, load_metrics, model_classes
from microplastics.results.robustness_table import CLEAN, summarise, table_from_predictions

TABLE_NAME = layout.ROBUSTNESS_TABLE
PREDICTIONS_NAME = layout.ROBUSTNESS_PREDICTIONS
SUMMARY_NAME = layout.ROBUSTNESS_SUMMARY
PLOT_NAME = layout.ROBUSTNESS_PLOT
PHOTO_SUBDIRS = ("raw_img", "images", ".")


@dataclass(frozen=True)
class Setup:
    """What every model of one run is scored on."""

    data_dir: Path
    test: pd.DataFrame          # the test rows of the manifest
    classes: list[str]          # the data set's classes, sorted
    photo_dir: Path | None      # folder holding every test photo, or None (crop mode)
    margin: float
    conditions: list[tuple[str, int]]
    seed: int
    batch_size: int

    @property
    def applied_to(self) -> str:
        return "photo" if self.photo_dir is not None else "crop"


# ---------------------------------------------------------------- conditions and inputs

def conditions(names: Sequence[str], severities: Sequence[int]) -> list[tuple[str, int]]:
    """The clean condition first, then every (corruption, severity)."""
    return [(CLEAN, 0)] + [(n, s) for n in names for s in severities]


def locate_photos(candidates: Iterable[Path | None], photo_names: Iterable[str]) -> Path | None:
    """The first folder (or its raw_img/ or images/) that holds every named photo; None if none does."""
    names = sorted(set(photo_names))
    for root in candidates:
        if root is None:
            continue
        for sub in PHOTO_SUBDIRS:
            folder = (Path(root) / sub).resolve()
            if folder.is_dir() and names and all((folder / n).is_file() for n in names):
                return folder
    return None


def build_setup(args: argparse.Namespace) -> Setup:
    data_dir = Path(args.data)
    manifest = dataset.load_manifest(data_dir)
    test = dataset.split_frame(manifest, "test")
    if test.empty:
        raise UserError(f"the test split of {data_dir} is empty; rebuild it with data-preprocessing.py")
    names = corruptions.resolve_names(args.corruptions)
    severities = corruptions.resolve_severities(args.severities)
    recorded, margin = dataset.recorded_input(data_dir)
    photo_dir = None
    if args.apply_to != "crop":
        photo_dir = locate_photos([Path(args.photos) if args.photos else None, recorded], test["source_image"])
        if photo_dir is None and (args.apply_to == "photo" or args.photos):
            where = args.photos or recorded or "(none recorded in summary.json)"
            raise UserError(f"the test photos named in {data_dir}/manifest.csv are not all in {where}; "
                            "pass --photos with the raw photo folder, or --apply-to crop")
    if args.limit_photos:
        test = _sample_photos(test, args.limit_photos, args.seed)
    return Setup(data_dir=data_dir, test=test, classes=dataset.class_names(manifest), photo_dir=photo_dir,
                 margin=margin if args.margin is None else args.margin,
                 conditions=conditions(names, severities), seed=args.seed, batch_size=args.batch_size)


def _sample_photos(test: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """The test rows of ``limit`` photos drawn at random (seeded), for quick runs."""
    photos = sorted(test["source_image"].unique())
    if limit >= len(photos):
        return test
    keep = set(np.random.default_rng(seed).choice(photos, size=limit, replace=False))
    return test[test["source_image"].isin(keep)].reset_index(drop=True)


# ---------------------------------------------------------------- scoring one condition

def write_corrupted_photos(test: pd.DataFrame, photo_dir: Path, out_dir: Path, name: str, severity: int,
                           seed: int) -> Path:
    """Write ``out_dir`` as a DeepParticle folder: each test photo corrupted whole, with its test boxes.

    Photos are saved losslessly as ``<photo>.png``; the annotation of each lists the photo's
    test crops, box and label unchanged, with the crop's manifest row number as ID.
    """
    (out_dir / "raw_img").mkdir(parents=True, exist_ok=True)
    (out_dir / "annotation").mkdir(parents=True, exist_ok=True)
    for photo, rows in test.groupby("source_image", sort=True):
        image = corruptions.corrupt(_read(photo_dir / photo), name, severity, seed=seed, key=str(photo))
        cv2.imwrite(str(out_dir / "raw_img" / f"{photo}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_PNG_COMPRESSION, 1])
        tsv = pd.DataFrame({"ID": rows.index, "minr": rows["minr"], "minc": rows["minc"], "maxr": rows["maxr"],
                            "maxc": rows["maxc"], "class": [f"{lab}/{Path(p).name}" for lab, p in
                                                            zip(rows["label"], rows["path"])]})
        tsv.to_csv(out_dir / "annotation" / f"{photo}.png.tsv", sep="\t", index=False)
    return out_dir


def _read(path: Path) -> np.ndarray:
    try:
        return read_rgb(path)
    except ImageReadError as err:
        raise UserError(f"{err}; check the photo folder or rebuild the data") from err


def score_photos(predictor: Predictor, setup: Setup, name: str, severity: int) -> pd.DataFrame:
    """Classify the test crops cut from corrupted whole photos, through predict.classify_photos."""
    with tempfile.TemporaryDirectory(prefix="robustness_") as tmp:
        folder = write_corrupted_photos(setup.test, setup.photo_dir, Path(tmp) / "MICRO", name, severity, setup.seed)
        result = classify_photos(predictor, folder, margin=setup.margin, batch_size=setup.batch_size)
    return _match_photo_results(result, setup.test, predictor.classes)


def _match_photo_results(result: pd.DataFrame, test: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Put classify_photos' rows back in manifest order: each box's ID is its test row number."""
    skipped = result.attrs.get("skipped") or []
    rows = pd.to_numeric(result["box_id"], errors="coerce")
    if len(result) != len(test) or rows.isna().any() or sorted(rows.astype(int)) != list(range(len(test))):
        raise RuntimeError(f"prediction.py --photos classified {len(result)} of {len(test)} test crops"
                           + (f"; skipped: {skipped[:3]}" if skipped else ""))
    result = result.assign(_row=rows.astype(int).to_numpy()).sort_values("_row")
    return _rows(test, result["pred"].astype(str).tolist(), _prob_matrix(result, classes), classes)


def _prob_matrix(result: pd.DataFrame, classes: Sequence[str]) -> np.ndarray | None:
    cols = [f"prob_{c}" for c in classes]
    return result[cols].to_numpy(dtype=float) if all(c in result.columns for c in cols) else None


def score_crops(predictor: Predictor, setup: Setup, name: str, severity: int) -> pd.DataFrame:
    """Classify each stored test crop after corrupting it on its own (when no photos are at hand)."""
    probs = []
    paths = setup.test["path"].tolist()
    for start in range(0, len(paths), setup.batch_size):
        batch = [corruptions.corrupt(_read(setup.data_dir / p), name, severity, seed=setup.seed, key=p)
                 for p in paths[start:start + setup.batch_size]]
        probs.append(np.asarray(predictor.predict_proba(batch), dtype=float))
    probs_all = np.concatenate(probs) if probs else np.zeros((0, len(predictor.classes)))
    preds = [predictor.classes[i] for i in probs_all.argmax(axis=1)]
    return _rows(setup.test, preds, probs_all, predictor.classes)


def _rows(test: pd.DataFrame, preds: Sequence[str], probs: np.ndarray | None, classes: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame({"path": test["path"].tolist(), "source_image": test["source_image"].tolist(),
                          "true": test["label"].tolist(), "pred": list(preds)})
    if probs is not None:
        for j, c in enumerate(classes):
            frame[f"prob_{c}"] = probs[:, j]
    return frame


def score_model(predictor: Predictor, setup: Setup) -> pd.DataFrame:
    """Predictions of one model under every condition: corruption,severity,applied_to,path,...,pred,prob_*."""
    scorer = score_photos if setup.photo_dir is not None else score_crops
    parts = []
    for name, severity in tqdm(setup.conditions, desc=f"{predictor.name} conditions", unit="cond"):
        rows = scorer(predictor, setup, name, severity)
        rows.insert(0, "applied_to", setup.applied_to)
        rows.insert(0, "severity", severity)
        rows.insert(0, "corruption", name)
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------- tables, summary, plot

def plot_table(table: pd.DataFrame, path: Path, title: str) -> None:
    """Macro-F1 against severity, one line per corruption, each starting at the clean score."""
    from microplastics.core.plots import plt, save_figure

    clean = table.loc[table["corruption"] == CLEAN, "macro_f1"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, group in table[table["corruption"] != CLEAN].groupby("corruption", sort=False):
        x = [0, *group["severity"].tolist()] if len(clean) else group["severity"].tolist()
        y = [float(clean.iloc[0]), *group["macro_f1"].tolist()] if len(clean) else group["macro_f1"].tolist()
        ax.plot(x, y, marker="o", label=name)
    ax.set_xticks([0, *corruptions.SEVERITIES], ["clean", *map(str, corruptions.SEVERITIES)])
    ax.set_xlabel("severity")
    ax.set_ylabel("macro-F1 (test split)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title)
    save_figure(fig, path)


def write_outputs(model_dir: Path, model: str, predictions: pd.DataFrame, classes: Sequence[str],
                  extra: dict[str, Any]) -> dict[str, Any]:
    """Write the four robustness files of a model folder; return its summary."""
    with fileio.atomic_path(model_dir / PREDICTIONS_NAME) as tmp:
        predictions.to_csv(tmp, index=False, float_format="%.6f")
    table = table_from_predictions(predictions, classes)
    with fileio.atomic_path(model_dir / TABLE_NAME) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    summary = {"model": model, **summarise(table), **extra}
    fileio.write_json(model_dir / SUMMARY_NAME, summary)
    applied = extra.get("applied_to", "")
    plot_table(table, model_dir / PLOT_NAME, f"{model}: robustness (corruptions applied to each {applied})")
    return summary


# ---------------------------------------------------------------- command line

def evaluate_model(model_dir: Path, setup: Setup, predictor: Predictor,
                   run: dict[str, Any] | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score one model folder under every condition and write its robustness files; the summary and predictions."""
    check_model(model_dir, setup, predictor)
    started = time.perf_counter()
    predictions = score_model(predictor, setup)
    classes = sorted(set(setup.classes) | set(predictor.classes))
    extra = {"applied_to": setup.applied_to, "photos": str(setup.photo_dir) if setup.photo_dir else None,
             "margin": setup.margin, "seed": setup.seed, "data": str(setup.data_dir), "tta": tta_of(predictor),
             "n_test_crops": int(len(setup.test)), "n_test_photos": int(setup.test["source_image"].nunique()),
             "seconds": round(time.perf_counter() - started, 1), "suite": corruptions.describe_suite(),
             **({provenance.RUN_KEY: run} if run else {})}
    summary = write_outputs(model_dir, getattr(predictor, "name", model_dir.name), predictions, classes, extra)
    return summary, predictions


def check_model(model_dir: Path, setup: Setup, predictor: Predictor) -> None:
    """The model must have been tested on this test split and know all of its classes."""
    _check_fingerprint(model_dir, setup)
    missing = sorted(set(setup.test["label"]) - set(predictor.classes))
    if missing:
        raise UserError(f"{model_dir} was trained without class(es) {missing} of {setup.data_dir}; "
                        "score it on the data it was trained for")


def clean_reference(predictions: pd.DataFrame, classes: Sequence[str], tta: str) -> dict[str, Any]:
    """The test-split figures of this run's clean condition, the reference of the external sets' drops."""
    clean = predictions[predictions["corruption"] == CLEAN]
    scores = compute_metrics(clean["true"].tolist(), clean["pred"].tolist(), classes)
    return {"test_accuracy": scores["accuracy"], "test_macro_f1": scores["macro_f1"],
            "test_reference": f"test split scored in this run (tta {tta})"}


def _check_fingerprint(model_dir: Path, setup: Setup) -> None:
    recorded = fileio.read_json_dict(model_dir / layout.METRICS_NAME, "rerun that model").get("split_fingerprint")
    manifest = dataset.load_manifest(setup.data_dir)
    if recorded and recorded != dataset.split_fingerprint(manifest, "test"):
        raise UserError(f"{model_dir} was evaluated on another test split than {setup.data_dir} "
                        "(split fingerprints differ); pass the --data folder it was trained on")


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="robustness.py",
        description="Score trained models on the test split under imaging corruptions (defocus blur, darker and "
                    "brighter light, colour temperature, sensor noise, JPEG, low resolution, contrast loss), each "
                    "at three severities. Writes robustness.csv, robustness_predictions.csv, robustness.json and "
                    "robustness.png into each model folder.",
        epilog=f"corruptions: {', '.join(corruptions.corruption_names())}",
        examples=["python robustness.py --model rf --model vgg16 --photos MICRO",
                  "python robustness.py --corruptions defocus_blur darker --severities 1 3",
                  "python robustness.py --model results/resnet50 --limit-photos 20   # a quick look"])
    parser.add_argument("--data", default=layout.DATA_DIR, help="processed data folder (default: %(default)s)")
    parser.add_argument("--results", default=layout.RESULTS_DIR, help="folder of model folders (default: %(default)s)")
    parser.add_argument("--model", action="append", metavar="DIR",
                        help="model folder, or a name under --results; repeat for several (default: every "
                             "trained folder in --results)")
    parser.add_argument("--photos", metavar="DIR",
                        help="raw photo folder (MICRO/ or its raw_img/) holding the test photos; default: the "
                             "input recorded by data-preprocessing.py, if it still exists")
    parser.add_argument("--apply-to", choices=("auto", "photo", "crop"), default="auto",
                        help="corrupt whole photos before cropping (photo), the stored crops (crop), or photos "
                             "when they can be found (auto, default)")
    parser.add_argument("--margin", type=finite_float, default=None,
                        help="crop margin used when cutting boxes from photos (default: the one recorded in "
                             "summary.json, else 0)")
    parser.add_argument("--corruptions", nargs="+", metavar="NAME", help="subset of the suite (default: all)")
    parser.add_argument("--severities", nargs="+", type=int, metavar="S", help="subset of 1 2 3 (default: all)")
    parser.add_argument("--limit-photos", type=int, default=0, metavar="N",
                        help="score only N test photos drawn with --seed (quick runs; default: all)")
    parser.add_argument("--batch-size", type=int, default=32, help="crops per prediction batch (default: %(default)s)")
    add_device_argument(parser)
    parser.add_argument("--seed", type=int, default=42,
                        help="seed of the random corruptions and of the bootstrap resamples (default: %(default)s)")
    parser.add_argument("--external", action="append", metavar="NAME=DIR",
                        help="score an annotated photo set the model has not seen: a MICRO folder (raw_img/ + "
                             "annotation/) or a YOLO export; repeat for several. Writes MODEL/external.csv (one row "
                             "per set) and MODEL/external/NAME/ (predictions.csv, metrics.json, confusion matrix). "
                             "Alone, it skips the corruption suite; add --corruptions/--severities to run both")
    parser.add_argument("--class-map", action="append", nargs="+", metavar="NAME OLD=NEW",
                        help="rename the labels of the --external set NAME to the model's classes; OLD=- leaves "
                             "class OLD out; repeatable, e.g. --class-map synth line=fiber hard=fragment "
                             "pellet=pallet foam=- noise=- reference=-")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average each crop's probabilities over its 8 flips and "
                             "90-degree rotations (8x the time), in every condition and set; recorded as tta")
    parser.add_argument("--n-boot", type=int, default=1000,
                        help="bootstrap resamples of the --external sets' 95%% intervals (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.batch_size < 1 or args.limit_photos < 0 or args.n_boot < 1:
        raise UserError("--batch-size and --n-boot must be at least 1 and --limit-photos at least 0")
    if args.margin is not None and not args.margin >= 0:
        raise UserError(f"--margin must be a number >= 0 (a fraction of the box size), got {args.margin}")
    if args.class_map and not args.external:
        raise UserError("--class-map NAME OLD=NEW... renames the labels of an --external NAME=DIR set; give the set")
    corruptions.resolve_names(args.corruptions)  # a typo fails before anything loads
    corruptions.resolve_severities(args.severities)
    notes: list[str] = []
    model_dirs = layout.find_model_dirs(args.results, args.model, require=layout.TRAINED_MODEL, notes=notes,
                                        named_paths=True)
    layout.print_notes(notes)
    sets = external.parse_external(args.external, args.class_map)
    for model_dir in model_dirs:  # every set's classes against every model's, before any work
        external.check_classes(sets, model_dir.name, model_classes(load_metrics(model_dir), None))
    run_suite = not sets or args.corruptions is not None or args.severities is not None
    setup = build_setup(args) if run_suite or args.tta else None
    from microplastics.deep.engine import resolve_device  # torch loads only here, after the checks

    device = str(resolve_device(args.device))
    if run_suite:
        print(f"scoring {len(setup.test)} test crops of {setup.test['source_image'].nunique()} photos under "
              f"{len(setup.conditions)} conditions; corruptions applied to each {setup.applied_to}"
              + (f" (photos from {setup.photo_dir})" if setup.photo_dir else " (test photos not found)")
              + (" with test-time augmentation" if args.tta else ""))
    for model_dir in model_dirs:
        predictor = with_tta(load_predictor(model_dir, device=device), args.tta)
        reference = external_sets.own_test_figures(load_metrics(model_dir))
        if run_suite:
            summary, predictions = evaluate_model(model_dir, setup, predictor,
                                                  provenance.run_record("robustness.py", argv))
            reference = clean_reference(predictions, predictor.classes, tta_of(predictor))
            print(f"{summary['model']}: clean macro-F1 {summary['clean_macro_f1']:.3f}, mean under corruption "
                  f"{summary['mean_corrupted_macro_f1']:.3f} (relative drop {summary['relative_drop']:.1%}); "
                  f"worst {summary['worst_condition']} {summary['worst_macro_f1']:.3f} -> {model_dir / TABLE_NAME}")
        elif setup is not None:  # TTA changes the test split's figures too: score it clean, the same way
            check_model(model_dir, setup, predictor)
            clean = score_model(predictor, replace(setup, conditions=[(CLEAN, 0)]))
            reference = clean_reference(clean, predictor.classes, tta_of(predictor))
        if sets:
            margin = args.margin if args.margin is not None else default_margin(model_dir)
            table = external.score_sets(model_dir, predictor, sets, reference, margin=margin,
                                        batch_size=args.batch_size, n_boot=args.n_boot, seed=args.seed)
            print_external(predictor.name, table[table["tta"] == tta_of(predictor)], sets, model_dir)
    return 0


def print_external(model: str, table: pd.DataFrame, sets: Sequence[external.ExternalSet], model_dir: Path) -> None:
    for ext in sets:
        row = table[table["set"] == ext.name].iloc[0]
        recalls = ", ".join(f"{c[len('recall_'):]} {row[c]:.3f}" for c in table.columns
                            if c.startswith("recall_") and pd.notna(row[c]))
        print(f"{model} on {ext.name} (tta {row['tta']}, n={int(row['n'])}): accuracy {row['accuracy']:.3f} "
              f"[{row['accuracy_low']:.3f}, {row['accuracy_high']:.3f}], macro-F1 {row['macro_f1']:.3f} "
              f"[{row['macro_f1_low']:.3f}, {row['macro_f1_high']:.3f}], drop from test {row['drop_macro_f1']:+.3f}; "
              f"recall {recalls} -> {model_dir / external_sets.TABLE_NAME}")
