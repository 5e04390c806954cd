"""Benchmark: does Grad-CAM point at the particle? Pretrained EfficientNet-Lite0 against its random-weight twin.

On ../shared/datasets/mp100, cut with context around each box (data-preprocessing.py --margin,
0.5 by default: the particle's box is then about the middle quarter of each crop), efficientnet.py
is trained twice in head mode, from the packaged ImageNet weights and from random
weights; grad-cam.py then explains --per-class seeded test crops of each class with each model
and measures localisation (localisation.json: the pointing game, the mass inside the box), once
with grad-cam.py's default 8-view smoothing (--aug-smooth on: each map the mean over the crop's
flips and quarter turns) and once without.

Judged: the pretrained model's pointing-game hit rate with grad-cam.py's defaults (target >= 0.9);
the random-weight twin is the comparison row, and the box's share of the crop is the level a map
spread evenly would reach.

    .venv/bin/python benchmarks/bench_localisation.py
    .venv/bin/python benchmarks/bench_localisation.py --per-class 1000     # every test crop
    .venv/bin/python benchmarks/bench_localisation.py --per-class 50 --methods gradcam gradcam++

Trained folders are kept under --work and reused unless --retrain.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_robustness import LITE0_HEAD, MP100, PY, sh  # noqa: E402  (this folder is sys.path[0])
from microplastics.core import fileio  # noqa: E402
from microplastics.explain import localisation  # noqa: E402
from microplastics.data.dataset import recorded_input  # noqa: E402
from microplastics.core.layout import model_file  # noqa: E402

ARCH = "efficientnet_lite0"
TARGET = 0.9
WEIGHTS = {"ImageNet (packaged)": "imagenet", "random weights": "none"}


def prepare(args: argparse.Namespace) -> Path:
    out = Path(args.work) / f"processed_margin{args.margin:g}"
    if not (out / "manifest.csv").is_file() or recorded_input(out)[1] != args.margin:
        sh([PY, "data-preprocessing.py", "--input", str(args.photos), "--output", str(out), "--margin",
            str(args.margin), "--seed", str(args.seed)])
    return out


def train(weights: str, data: Path, args: argparse.Namespace) -> Path:
    results = Path(args.work) / f"results_{weights}_{args.image_size}px"
    model_dir = results / ARCH
    if args.retrain or model_file(model_dir) is None:
        sh([PY, "efficientnet.py", "--data", str(data), "--results", str(results), "--weights", weights,
            *LITE0_HEAD, "--image-size", str(args.image_size), "--workers", "1", "--seed", str(args.seed)])
    return model_dir


def run_one(label: str, weights: str, model_dir: Path, smooth: str, data: Path, args: argparse.Namespace) -> dict:
    out = Path(args.work) / f"gradcam_{weights}_{args.image_size}px_smooth-{smooth}"
    sh([PY, "grad-cam.py", "--model", str(model_dir), "--data", str(data), "--per-class", str(args.per_class),
        "--method", *args.methods, "--aug-smooth", smooth, "--out", str(out), "--seed", str(args.seed),
        "--device", "cpu"])
    found = localisation.read_summary(out)
    if not found:
        raise SystemExit(f"error: grad-cam.py wrote no {localisation.JSON_NAME} in {out}")
    metrics = fileio.read_json(model_dir / "metrics.json")
    return {"label": label, "weights": weights, "macro_f1": metrics["macro_f1"], **found, "smoothing": smooth}


def print_table(rows: list[dict], margin: float) -> None:
    head = (f"{'Lite0 weights':22} {'8-view smoothing':16} {'method':10} {'test F1':>7} {'crops':>5} "
            f"{'pointing hit rate':>17} {'mass inside box':>15} {'box share':>9}")
    print(f"\nGrad-CAM localisation on mp100 (margin {margin:g})\n" + head + "\n" + "-" * len(head))
    for r in rows:
        for method, s in r["by_method"].items():
            print(f"{r['label']:22} {r['smoothing']:16} {method:10} {r['macro_f1']:7.4f} {s['n']:5d} "
                  f"{s['pointing_hit_rate']:17.3f} {s['mean_mass_inside']:15.3f} {s['mean_box_fraction']:9.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=MP100, help="MICRO folder of the photos")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_localisation"))
    parser.add_argument("--margin", type=float, default=0.5, help="context around each box (data-preprocessing.py)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--per-class", type=int, default=25, help="explained test crops of each class")
    parser.add_argument("--methods", nargs="+", default=["gradcam"], help="grad-cam.py --method")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args()
    if args.margin <= 0:
        raise SystemExit("error: --margin must be > 0: with margin 0 the box is the whole crop and every map hits")
    if not (args.photos / "raw_img").is_dir():
        raise SystemExit(f"error: {args.photos} holds no raw_img/; point --photos at mp100's MICRO folder")
    data = prepare(args)
    rows = []
    for label, weights in WEIGHTS.items():
        model_dir = train(weights, data, args)
        rows += [run_one(label, weights, model_dir, smooth, data, args) for smooth in ("on", "off")]
    print_table(rows, args.margin)
    pretrained, twin = rows[0], rows[2]  # grad-cam.py's default, --aug-smooth on
    ok = pretrained["pointing_hit_rate"] >= TARGET
    print(f"\npretrained Lite0 pointing-game hit rate ({pretrained['method']}): {pretrained['pointing_hit_rate']:.3f} "
          f"(target >= {TARGET}: {'met' if ok else 'MISSED'}); random-weight twin: {twin['pointing_hit_rate']:.3f}; "
          f"without smoothing {rows[1]['pointing_hit_rate']:.3f} and {rows[3]['pointing_hit_rate']:.3f}")
    print(json.dumps({f"{r['label']}, smoothing {r['smoothing']}": round(r["pointing_hit_rate"], 4) for r in rows}),
          "(pointing-game hit rates)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
