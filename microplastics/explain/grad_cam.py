"""grad-cam.py: heat maps of a trained deep model on chosen test crops.

Crops come from the model folder's predictions.csv (paths relative to the processed data folder
recorded in its config, or ``--data``), chosen by ``--n`` / ``--per-class`` / ``--misclassified``
with ``--seed``. Each crop gets a panel (the crop, then one heat-map overlay per method) titled
with its true and predicted class; all panels also go into one overview figure. The folder
``<model>/gradcam/`` is rebuilt whole on every run, so no panel of an older run survives; a folder
that holds anything else (not an earlier output of the same model, see ``check_out_dir``) is refused.
Each map is then measured against the particle's box inside its crop (``localisation``).
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import torch

from microplastics.explain import cam as explain, localisation
from microplastics.core import fileio, provenance
from microplastics.core.cli import ArgumentParser, UserError, add_device_argument, finite_float
from microplastics.core.plots import plt, save_figure
from microplastics.core.layout import BEST_NAME, GRADCAM_DIR, GRADCAM_OWNER, trained_model_file
from microplastics.deep.engine import resolve_device
from microplastics.predict.model_folder import read_crop, recorded_predictions, resolve_data_dir
from microplastics.core.seeds import pick_rows

if TYPE_CHECKING:
    from microplastics.deep.checkpoint import LoadedClassifier

OUT_NAME = GRADCAM_DIR
OVERVIEW_NAME = "overview.png"
SELECTION_NAME = "selection.csv"
OVERVIEW_MAX_ROWS = 32  # crops in the overview
OVERVIEW_COLUMNS = 8  # images a row: crops and their overlays
OWNER_NAME = GRADCAM_OWNER
LEGACY_OUTPUT = re.compile(r"\d{3}_.*\.png|overview\.png|selection\.csv")  # what older versions wrote


@dataclass
class Selection:
    """The chosen test crops, their images, and what the model says of them now."""

    rows: pd.DataFrame          # path, true, recorded pred (predictions.csv)
    images: list[np.ndarray]    # RGB uint8 crops as stored
    pred: list[str]             # the model's prediction on this run
    confidence: np.ndarray      # probability of that prediction


def select_crops(predictions: pd.DataFrame, n: int | None, per_class: int | None, misclassified: bool,
                 seed: int) -> pd.DataFrame:
    """Seeded test rows: ``per_class`` of each true class, or ``n`` in all; only wrong ones if asked."""
    pool = predictions[predictions["true"] != predictions["pred"]] if misclassified else predictions
    if pool.empty:
        raise UserError("no misclassified test crop in predictions.csv; drop --misclassified"
                        if misclassified else "predictions.csv has no rows")
    picked = pick_rows(pool["true"].tolist(), n=n, per_class=per_class, seed=seed)
    return pool.iloc[picked].reset_index(drop=True)


def load_deep(model_dir: Path, device: str) -> LoadedClassifier:
    """The checkpoint of a deep model folder; a classical folder is a clear error."""
    from microplastics.deep.checkpoint import load_classifier

    found = trained_model_file(model_dir)
    if found.name != BEST_NAME:
        raise UserError(f"{model_dir} holds a classical model ({found.name}); Grad-CAM needs a deep model "
                        "folder such as results/vgg16, results/resnet50 or results/vit_b_16")
    return load_classifier(found, device=device)


def resolve_methods(requested: Sequence[str], spec: explain.ExplainSpec) -> list[str]:
    """``all`` -> every method of the family; anything that does not apply is a UserError."""
    methods = explain.methods_for(spec.family) if "all" in requested else list(dict.fromkeys(requested))
    for method in methods:
        try:
            explain.check_method(method, spec)
        except ValueError as err:
            raise UserError(f"--method: {err}") from None
    return methods


def compute_maps(loaded: LoadedClassifier, batch: torch.Tensor, methods: Sequence[str], targets: Sequence[int],
                 batch_size: int, aug_smooth: bool = False) -> dict[str, np.ndarray]:
    """Heat maps (N, S, S) per method, computed ``batch_size`` crops at a time."""
    maps = {}
    for method in methods:
        parts = [explain.explain(loaded.model, loaded.spec, batch[i:i + batch_size], method,
                                 targets[i:i + batch_size], aug_smooth) for i in range(0, len(batch), batch_size)]
        maps[method] = np.concatenate(parts)
        blank = int(sum(float(m.max() - m.min()) == 0.0 for m in maps[method]))
        if blank:
            print(f"warning: {method}: {blank} of {len(batch)} maps are constant; the target layer's grid may be "
                  f"1x1 at --image-size {loaded.image_size}", file=sys.stderr)
    return maps


# ----------------------------------------------------------------------------- figures

def _title(true: str, pred: str, confidence: float) -> tuple[str, str]:
    right = true == pred
    return f"{'✓' if right else '✗'} true: {true}\npred: {pred} ({confidence:.2f})", "green" if right else "red"


def draw_row(axes: Sequence[plt.Axes], image: np.ndarray, heat: dict[str, np.ndarray], true: str, pred: str,
             confidence: float, alpha: float, label_methods: bool = True) -> None:
    """The crop, then one overlay per method, on a row of axes."""
    text, colour = _title(true, pred, confidence)
    axes[0].imshow(image)
    axes[0].set_title(text, fontsize=9, color=colour)
    for ax, (method, m) in zip(axes[1:], heat.items()):
        ax.imshow(explain.overlay(image, m, alpha))
        if label_methods:
            ax.set_title(method, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])


def save_panel(path: Path, image: np.ndarray, heat: dict[str, np.ndarray], true: str, pred: str,
               confidence: float, alpha: float, name: str) -> None:
    fig, axes = plt.subplots(1, 1 + len(heat), figsize=(2.4 * (1 + len(heat)) + 0.8, 3.2), squeeze=False,
                             layout="constrained")
    draw_row(axes[0], image, heat, true, pred, confidence, alpha)
    add_colour_bar(fig, axes)
    fig.suptitle(name, fontsize=9)
    save_figure(fig, path)


def save_overview(path: Path, sel: Selection, maps: dict[str, np.ndarray], alpha: float, title: str) -> None:
    """The crops in a grid, each followed by its overlays (one per method), and one colour bar."""
    n = min(len(sel.images), OVERVIEW_MAX_ROWS)
    per_crop = 1 + len(maps)
    crops_per_row = max(1, min(n, OVERVIEW_COLUMNS // per_crop))
    nrows = -(-n // crops_per_row)
    ncols = crops_per_row * per_crop
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols + 0.9, 2.3 * nrows + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        row, first = divmod(i, crops_per_row)
        cells = axes[row, first * per_crop:(first + 1) * per_crop]
        for ax in cells:
            ax.axis("on")
        heat = {m: v[i] for m, v in maps.items()}
        draw_row(cells, sel.images[i], heat, sel.rows["true"][i], sel.pred[i], float(sel.confidence[i]), alpha)
    add_colour_bar(fig, axes)
    fig.suptitle(title + (f" (first {n} of {len(sel.images)})" if n < len(sel.images) else ""), fontsize=12)
    save_figure(fig, path)


def add_colour_bar(fig: plt.Figure, axes: np.ndarray) -> None:
    """What the overlay's colours mean: the jet scale of the normalised map, low to high."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), "jet"), ax=axes, shrink=0.6, aspect=30, pad=0.01)
    bar.set_label("heat map (normalised): 0 no evidence, 1 most", fontsize=9)


def panel_name(k: int, true: str, pred: str, rel: str) -> str:
    from microplastics.data.annotations import safe_name

    return f"{k:03d}_{safe_name(true)}_as_{safe_name(pred)}_{safe_name(Path(rel).stem)}.png"


def check_out_dir(out_dir: Path, model_dir: Path) -> None:
    """Refuse, before any work, an output folder whose files this run would replace but did not write.

    The folder is rebuilt whole, so it must be new, empty, or an earlier Grad-CAM output of the
    same model holding nothing else: its OWNER_NAME names the model and every file it wrote.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; Grad-CAM writes a folder, pass a new or empty one")
    fileio.check_output_dir(out_dir, "--out")
    present = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if not present:
        return
    owner = fileio.read_json_dict(out_dir / OWNER_NAME, "pass a new or empty --out folder")
    if owner.get("model") == str(model_dir.resolve()) and set(present) <= {*owner.get("files", []), OWNER_NAME}:
        return
    if out_dir.resolve() == (model_dir / OUT_NAME).resolve() and OWNER_NAME not in present \
            and all(LEGACY_OUTPUT.fullmatch(name) for name in present):
        return  # the model's own gradcam/ from a version that wrote no OWNER_NAME
    raise UserError(f"--out {out_dir} holds files that are not an earlier Grad-CAM output of {model_dir} "
                    f"(e.g. {present[0]}), and this run would replace the folder; pass a new or empty one")


def write_owner(staging: Path, model_dir: Path, arch: str, run: dict[str, Any] | None = None) -> None:
    """OWNER_NAME, last: which model the folder's maps are of, every file of the folder, and how it ran."""
    files = sorted(p.name for p in staging.iterdir())
    fileio.write_json(staging / OWNER_NAME, {"model": str(model_dir.resolve()), "arch": arch, "files": files,
                                             **({provenance.RUN_KEY: run} if run else {})})


def write_outputs(out_dir: Path, sel: Selection, maps: dict[str, np.ndarray], alpha: float, title: str,
                  model_dir: Path, arch: str, localised: tuple[pd.DataFrame, dict] | None = None,
                  run: dict[str, Any] | None = None) -> list[str]:
    """Panels, overview, selection.csv (and the localisation files) into a staging folder that then
    replaces ``out_dir``."""
    with fileio.staged_dir(out_dir) as staging:
        names = []
        for k, (image, true, rel) in enumerate(zip(sel.images, sel.rows["true"], sel.rows["path"])):
            name = panel_name(k, true, sel.pred[k], rel)
            save_panel(staging / name, image, {m: v[k] for m, v in maps.items()}, true, sel.pred[k],
                       float(sel.confidence[k]), alpha, rel)
            names.append(name)
        save_overview(staging / OVERVIEW_NAME, sel, maps, alpha, title)
        table = sel.rows.rename(columns={"pred": "recorded_pred"})[["path", "true", "recorded_pred"]].assign(
            pred=sel.pred, confidence=sel.confidence, panel=names)
        table.to_csv(staging / SELECTION_NAME, index=False, float_format="%.6f")
        if localised is not None:
            localisation.write(staging, *localised)
        write_owner(staging, model_dir, arch, run)
    return names


# ----------------------------------------------------------------------------- command line

def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="grad-cam.py",
        description="Heat maps of a trained deep model (CNN or ViT) on test crops chosen from its predictions.csv: "
                    "one panel per crop (the crop and a heat-map overlay per method, titled with true and predicted "
                    "class) and an overview figure, into MODEL/gradcam/ (rebuilt whole). Grad-CAM reads VGG's last "
                    "convolution, ResNet's last bottleneck block and a ViT's last encoder block (patch tokens on "
                    "their grid); 'rollout' is the ViT's attention rollout. "
                    "Each map is also checked against the particle's box (the crop less the margin recorded by "
                    "data-preprocessing.py): localisation.csv and localisation.json give the share of the map's mass "
                    "inside it and whether its peak falls inside (the pointing game).",
        examples=["python grad-cam.py --model results/vgg16",
                  "python grad-cam.py --model results/resnet50 --method all --per-class 4",
                  "python grad-cam.py --model results/vit_b_16 --method rollout --misclassified --n 8"])
    a = parser.add_argument
    a("--model", required=True, metavar="DIR", help="a deep model folder, e.g. results/vgg16")
    a("--data", help="processed folder of the test crops (default: the one recorded in the model's config)")
    a("--method", nargs="+", default=["gradcam"], choices=[*explain.METHODS, "all"],
      help="one or more maps per crop; rollout only for ViTs; all: every method that applies")
    a("--n", type=int, default=16, help="crops in all, drawn in turn from each true class")
    a("--per-class", type=int, default=None, metavar="N", help="instead of --n: N crops of each true class")
    a("--misclassified", action="store_true", help="choose only crops the model got wrong")
    a("--target", choices=("pred", "true"), default="pred", help="class whose evidence the CAM methods show")
    a("--aug-smooth", choices=("on", "off"), default="on",
      help="on: each CAM map is the mean over the crop's 8 flips and quarter turns, each turned back onto the "
           "crop (8x the time; on mp100 it lifted the pretrained Lite0's pointing game from 0.88 to 0.92); "
           "off: one pass")
    a("--alpha", type=finite_float, default=0.5, help="opacity of the heat map over the crop")
    a("--out", metavar="DIR", help="output folder (default: MODEL/gradcam)")
    a("--batch-size", type=int, default=8, help="crops per forward/backward pass")
    a("--seed", type=int, default=42, help="seed of the crop selection")
    add_device_argument(parser)
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.n < 1 or (args.per_class is not None and args.per_class < 1) or args.batch_size < 1:
        raise UserError("--n, --per-class and --batch-size must be at least 1")
    if not 0 <= args.alpha <= 1:
        raise UserError(f"--alpha must lie in [0, 1], got {args.alpha}")


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    _check_args(args)
    model_dir = Path(args.model)
    if not model_dir.is_dir():
        raise UserError(f"--model {model_dir}: no such folder; train a model first")
    out_dir = Path(args.out) if args.out else model_dir / OUT_NAME
    check_out_dir(out_dir, model_dir)
    loaded = load_deep(model_dir, str(resolve_device(args.device)))
    methods = resolve_methods(args.method, loaded.spec)
    data_dir = resolve_data_dir(model_dir, args.data, loaded.config.get("data"))
    rows = select_crops(recorded_predictions(model_dir), args.n, args.per_class, args.misclassified, args.seed)
    images = [read_crop(data_dir, p) for p in rows["path"]]
    batch = loaded.preprocess(images)
    probs = loaded.probabilities(batch, args.batch_size)
    pred_idx = probs.argmax(axis=1)
    targets = pred_idx if args.target == "pred" else [_class_index(loaded.classes, t) for t in rows["true"]]
    aug_smooth = args.aug_smooth == "on"
    maps = compute_maps(loaded, batch, methods, [int(t) for t in targets], args.batch_size, aug_smooth)
    sel = Selection(rows=rows, images=images, pred=[loaded.classes[i] for i in pred_idx],
                    confidence=probs[np.arange(len(probs)), pred_idx])
    smoothing = ", mean of 8 flips/turns" if aug_smooth else ""
    title = f"{loaded.arch}: {', '.join(methods)} (target: {args.target} class{smoothing})"
    localised = localisation.measure_crops(data_dir, rows["path"].tolist(), rows["true"].tolist(), sel.pred, images,
                                           maps, args.target, aug_smooth)
    write_outputs(out_dir, sel, maps, args.alpha, title, model_dir, loaded.arch, localised,
                  provenance.run_record("grad-cam.py", argv))
    right = sum(t == p for t, p in zip(rows["true"], sel.pred))
    print(f"{loaded.arch}: {len(rows)} crop(s), {right} right, methods {', '.join(methods)} -> {out_dir}")
    if localised is not None:
        print(f"{loaded.arch}: {localisation.summary_line(localised[1])} -> {out_dir / localisation.CSV_NAME}")
    return 0


def _class_index(classes: Sequence[str], label: str) -> int:
    if label not in classes:
        raise UserError(f"true class {label!r} is not a class of the model ({', '.join(classes)})")
    return list(classes).index(label)
