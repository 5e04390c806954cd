"""Transfer-learning benchmark: what ImageNet weights, full fine-tuning and SMOTE buy EfficientNet-Lite0.

On the photo-grouped split of ../shared/datasets/mp100 (built with data-preprocessing.py under
--work, or --processed), efficientnet.py is trained in five settings that differ in one thing
each from the first:

- head mode (frozen backbone, cached embeddings), ImageNet weights, no rebalancing;
- the same with SMOTE on the pretrained embeddings;
- the same from random weights;
- full fine-tuning from ImageNet weights, and from random weights.

It prints one table: test macro-F1 with its 95 % bootstrap interval (microplastics.results.stats), the
backbone pass (head mode: once per view, cached and shared by the rows of one set of weights),
the training epochs and the total, and says whether ImageNet beat random initialisation by
more than the intervals (the figure this benchmark is judged by: pretrained head mode's
interval lies above random's).

    .venv/bin/python benchmarks/bench_transfer.py                          # 64 px, 5 full epochs
    .venv/bin/python benchmarks/bench_transfer.py --image-size 224 --full-epochs 3

Full fine-tuning on a CPU is slow (a train step costs three forward passes), so the default is
64 px (the mp100 crops are about 30 x 40 px) and few full epochs; both are printed with the table.
Trained folders are kept under --work and reused unless --retrain.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_robustness import LITE0_HEAD, MP100, PY, prepare, sh, slug  # noqa: E402  (this folder is sys.path[0])
from microplastics.results.metrics import load_metrics, read_predictions  # noqa: E402
from microplastics.results.stats import bootstrap_intervals  # noqa: E402

ARCH = "efficientnet_lite0"

# label, extra arguments of efficientnet.py
VARIANTS = [
    ("head, ImageNet, no rebalancing", ["--finetune", "head", "--weights", "imagenet", "--balance", "none"]),
    ("head, ImageNet, SMOTE", ["--finetune", "head", "--weights", "imagenet", "--balance", "smote"]),
    ("head, random init", ["--finetune", "head", "--weights", "none", "--balance", "none"]),
    ("full, ImageNet", ["--finetune", "full", "--weights", "imagenet", "--balance", "none"]),
    ("full, random init", ["--finetune", "full", "--weights", "none", "--balance", "none"]),
]


def run_variant(label: str, extra: list[str], data: Path, args: argparse.Namespace) -> dict:
    results = Path(args.work) / f"{args.image_size}px" / slug(label)
    model_dir = results / ARCH
    full = "full" in extra
    if args.retrain or not (model_dir / "metrics.json").is_file():
        epochs = ["--epochs", str(args.full_epochs), "--patience", str(args.full_epochs)] if full else []
        sh([PY, "efficientnet.py", "--data", str(data), "--results", str(results), "--seed", str(args.seed),
            *LITE0_HEAD, "--image-size", str(args.image_size), "--aug-views", "1", "--workers", str(args.workers),
            "--augment", "study", "--input-norm", "imagenet",  # fixed here, whatever the preset's defaults
            "--device", "cpu", "--cache-dir", str(Path(args.work) / ".embeddings"), *epochs, *extra])
    metrics = load_metrics(model_dir)
    pred = read_predictions(model_dir / "predictions.csv")
    classes = sorted(metrics["per_class"])
    ci = bootstrap_intervals(pred["true"], pred["pred"], classes, seed=args.seed)["macro_f1"]
    timing = metrics["timing"]
    return {"label": label, "macro_f1": metrics["macro_f1"], "ci": [ci.low, ci.high],
            "backbone_s": timing["embedding_seconds"], "cached": timing["embedding_cached"],
            "epochs_s": timing["epoch_seconds"], "total_s": metrics["train_seconds"],
            "epochs_run": metrics["epochs_run"], "weights": metrics["weights"]}


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"\nEfficientNet-Lite0 on mp100 (photo-grouped split), {args.image_size} px, head mode: 1 augmented view, "
          f"up to 100 epochs (patience 10); full: {args.full_epochs} epochs; Adam lr 1e-4, seed {args.seed}")
    head = f"{'setting':32} {'macro-F1':>8} {'95% CI':>16} {'backbone pass':>14} {'epochs':>12} {'total':>8}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        backbone = ("cached" if r["cached"] else f"{r['backbone_s']:.0f} s") if r["cached"] is not None else "-"
        ci = f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"
        print(f"{r['label']:32} {r['macro_f1']:8.3f} {ci:>16} {backbone:>14} "
              f"{r['epochs_run']:>3} in {r['epochs_s']:4.0f} s {r['total_s']:6.0f} s")
    by = {r["label"]: r for r in rows}
    for mode in ("head", "full"):
        pre, rnd = by.get(f"{mode}, ImageNet" + (", no rebalancing" if mode == "head" else "")), \
            by.get(f"{mode}, random init")
        if pre and rnd:
            verdict = "above" if pre["ci"][0] > rnd["ci"][1] else "not clearly above"
            print(f"{mode}: ImageNet {pre['macro_f1']:.3f} vs random {rnd['macro_f1']:.3f}: "
                  f"the pretrained interval lies {verdict} the random one "
                  f"(difference {pre['macro_f1'] - rnd['macro_f1']:+.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default=str(MP100), help="MICRO folder of the real photos")
    parser.add_argument("--processed", default="", help="an existing processed folder of those photos")
    parser.add_argument("--work", default="/tmp/bench_transfer", help="where trained models are kept")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--full-epochs", type=int, default=5, help="epochs of the full fine-tuning rows")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--variants", nargs="+", type=int, help="indices into the variant list (0-based)")
    parser.add_argument("--retrain", action="store_true", help="train again even if a model folder exists")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if not args.processed and not Path(args.photos).is_dir():
        sys.exit(f"photos not found at {args.photos}; pass --photos or --processed")
    data = prepare(args)
    rows = [run_variant(label, extra, data, args) for i, (label, extra) in enumerate(VARIANTS)
            if args.variants is None or i in args.variants]
    print_table(rows, args)
    out = Path(args.work) / f"transfer_{args.image_size}px.json"
    out.write_text(json.dumps(rows, indent=2, default=str))
    print(f"rows written to {out}")


if __name__ == "__main__":
    main()
