"""Do predictions survive a change of magnification? mp100 test photos at 0.5x and 2x.

    .venv/bin/python benchmarks/bench_scale.py --work /tmp/bench_scale

mp100 carries no calibration; it is given a plausible fixed one (``--um-per-px``, default 5 um/px:
a 640 px photo of a 3.2 mm field; an assumption, not a measurement). Its test photos are then
rescaled by each ``--scales`` factor (boxes rescaled with them, the scale adjusted to
um-per-px / factor: a photo taken at another magnification) and every annotated particle is
classified again. The figure is the share of particles whose predicted class is the one predicted
on the original photo, per model setting:

- ``plain``: trained on crops as cut, new crops as cut (no calibration used);
- ``scale-augment``: the same, trained with ``--scale-augment FACTOR`` (random magnifications);
- ``resampled``: the folder built with ``--um-per-px`` and ``--crop-um-per-px``, and new photos'
  crops resampled to that scale from their own um/px (``prediction.py --um-per-px``).

Models: the Random Forest of ml-baselines.py (its defaults, except ``--aug-copies``, and with
``--scale-augment 1 --swap-background 0`` before each setting's own options, as when it was measured), and with
``--lite0`` the EfficientNet-Lite0 head model of efficientnet.py. Target: >= 95% of predictions
unchanged at every scale from 0.5x to 2x for the resampled setting on calibrated photos.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_robustness import CLASSICAL_PLAIN_COPIES, LITE0_HEAD  # noqa: E402  (this folder is sys.path[0])
from microplastics.classical import baselines  # noqa: E402
from microplastics.core.cli import default_workers  # noqa: E402
from microplastics.core.images import read_rgb  # noqa: E402
from microplastics.data.dataset import load_manifest  # noqa: E402
from microplastics.data.preprocessing import preprocess  # noqa: E402
from microplastics.predict.predictor import classify_photos, load_predictor  # noqa: E402

TARGET = 0.95
MP100 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mp100"


def rescaled_photos(micro: Path, photos: list[str], factor: float, out: Path) -> Path:
    """The ``photos`` of a MICRO folder and their boxes, rescaled by ``factor``, as a MICRO folder ``out``."""
    (out / "raw_img").mkdir(parents=True, exist_ok=True)
    (out / "annotation").mkdir(parents=True, exist_ok=True)
    for name in photos:
        image = read_rgb(micro / "raw_img" / name)
        h, w = image.shape[:2]
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
        cv2.imwrite(str(out / "raw_img" / f"{Path(name).stem}.png"),
                    cv2.cvtColor(cv2.resize(image, size, interpolation=interp), cv2.COLOR_RGB2BGR))
        table = pd.read_csv(micro / "annotation" / f"{name}.tsv", sep="\t")
        for lo, hi, limit in (("minr", "maxr", size[1]), ("minc", "maxc", size[0])):
            table[lo] = np.clip(np.floor(table[lo] * factor), 0, limit - 1).astype(int)
            table[hi] = np.clip(np.ceil(table[hi] * factor), table[lo] + 1, limit).astype(int)
        table.to_csv(out / "annotation" / f"{Path(name).stem}.png.tsv", sep="\t", index=False)
    return out


def train_rf(data: Path, results: Path, workers: int, copies: int, *extra: str) -> Path:
    baselines.main(["--data", str(data), "--results", str(results), "--models", "rf", "--grid-size", "0",
                    "--workers", str(workers), "--aug-copies", str(copies), *CLASSICAL_PLAIN_COPIES, *extra])
    return results / "rf"


def train_lite0(data: Path, results: Path, image_size: int, *extra: str) -> Path:
    from microplastics.deep import stage

    stage.main(["--data", str(data), "--results", str(results), *LITE0_HEAD, "--epochs", "30", "--workers", "0",
                "--image-size", str(image_size), "--device", "cpu", *extra], preset="efficientnet_lite0")
    return results / "efficientnet_lite0"


def predictions(model_dir: Path, folders: dict[float, Path], um_per_px: float | None) -> dict[float, pd.DataFrame]:
    """classify_photos on every rescaled folder; the scale passed is um_per_px / factor (None: none)."""
    predictor = load_predictor(model_dir)
    return {f: classify_photos(predictor, folder, um_per_px=um_per_px / f if um_per_px else None)
            for f, folder in folders.items()}


def unchanged(frames: dict[float, pd.DataFrame], factor: float) -> tuple[float, float]:
    """(share of predictions as at 1x, accuracy at ``factor``)."""
    key = ["photo", "box_id"]
    base = frames[1.0].assign(photo=frames[1.0]["photo"].map(lambda p: Path(p).stem))
    other = frames[factor].assign(photo=frames[factor]["photo"].map(lambda p: Path(p).stem))
    merged = base[key + ["pred"]].merge(other[key + ["pred", "true"]], on=key, suffixes=("_1x", ""))
    return float((merged["pred"] == merged["pred_1x"]).mean()), float((merged["pred"] == merged["true"]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mp100", type=Path, default=MP100)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_scale"), help="folder for data and runs")
    parser.add_argument("--um-per-px", type=float, default=5.0, help="the scale assumed for mp100's photos")
    parser.add_argument("--crop-um-per-px", type=float, default=10.0,
                        help="the crops' scale: the coarsest photos' (0.5x: 10 um/px), so no crop is enlarged")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.5, 2.0])
    parser.add_argument("--scale-augment", type=float, default=2.0)
    parser.add_argument("--aug-copies", type=int, default=1, help="RF: augmented copies per training crop")
    parser.add_argument("--lite0", action="store_true", help="also the EfficientNet-Lite0 head model (slower)")
    parser.add_argument("--lite0-image-size", type=int, default=64, help="its input size (224: its default)")
    parser.add_argument("--skip-rf", action="store_true", help="only the Lite0 model")
    parser.add_argument("--workers", type=int, default=default_workers())
    args = parser.parse_args()
    micro, work = args.mp100 / "MICRO", args.work
    shutil.rmtree(work, ignore_errors=True)
    data = {"plain": work / "plain", "resampled": work / "resampled"}
    preprocess(micro, data["plain"], workers=args.workers)
    preprocess(micro, data["resampled"], workers=args.workers, um_per_px=str(args.um_per_px),
               crop_um_per_px=args.crop_um_per_px)
    manifest = load_manifest(data["plain"])
    test_photos = sorted(manifest.loc[manifest["split"] == "test", "source_image"].unique())
    folders = {f: rescaled_photos(micro, test_photos, f, work / f"photos_x{f:g}") for f in [1.0, *args.scales]}
    runs = {} if args.skip_rf else {  # setting -> (model folder, um/px handed to prediction)
        ("rf", "plain"): (train_rf(data["plain"], work / "rf_plain", args.workers, args.aug_copies), None),
        ("rf", "scale-augment"): (train_rf(data["plain"], work / "rf_scaleaug", args.workers, args.aug_copies,
                                           "--scale-augment", str(args.scale_augment)), None),
        ("rf", "resampled"): (train_rf(data["resampled"], work / "rf_resampled", args.workers, args.aug_copies),
                              args.um_per_px),
    }
    if args.lite0:
        size = args.lite0_image_size
        runs[("lite0", "plain")] = (train_lite0(data["plain"], work / "lite0_plain", size), None)
        runs[("lite0", "scale-augment")] = (train_lite0(data["plain"], work / "lite0_scaleaug", size,
                                                        "--scale-augment", str(args.scale_augment)), None)
        runs[("lite0", "resampled")] = (train_lite0(data["resampled"], work / "lite0_resampled", size),
                                        args.um_per_px)
    print(f"\nmp100 test split: {len(test_photos)} photos, calibration assumed {args.um_per_px:g} um/px, "
          f"crops resampled to {args.crop_um_per_px:g} um/px; runs in {work}\n")
    print("| model | setting | accuracy 1x | " + " | ".join(f"unchanged {f:g}x | accuracy {f:g}x"
                                                             for f in args.scales) + " |")
    print("|---|---|---:|" + "---:|---:|" * len(args.scales))
    worst = {}
    for (model, setting), (folder, um_per_px) in runs.items():
        frames = predictions(folder, folders, um_per_px)
        base_acc = float((frames[1.0]["pred"] == frames[1.0]["true"]).mean())
        cells = [unchanged(frames, f) for f in args.scales]
        worst[(model, setting)] = min(c[0] for c in cells)
        print(f"| {model} | {setting} | {base_acc:.4f} | " + " | ".join(f"{u:.1%} | {a:.4f}" for u, a in cells) + " |")
    print()
    for (model, setting), share in worst.items():
        if setting == "resampled":
            verdict = "met" if share >= TARGET else "MISSED"
            print(f"{model} resampled: worst share unchanged over {args.scales} = {share:.1%} "
                  f"(target >= {TARGET:.0%}: {verdict})")


if __name__ == "__main__":
    main()
