"""Benchmark: the frozen-backbone embedding pass in bf16 (autocast, channels_last) against fp32 on a CPU.

For each architecture of --archs, in one process:

1. Speed. The backbone's forward time (``embeddings.compute_embeddings``, the code path of
   head-mode training) over the same --timing-crops test crops at --image-size, in
   ``--precision fp32`` and ``--precision bf16``, interleaved --repeats times with the order
   alternating, so load from other processes on the machine falls on both alike; the median of
   each. Judged: fp32 median / bf16 median (target >= 1.8). Also shown: the fp32 pass in the
   layout used before CNNs ran channels_last.
2. Agreement. The whole head-mode training run (``stage.main``, each with a fresh embedding
   cache, so each runs its own embedding pass over every crop), once with --precision fp32 and
   once with bf16: the share of identical predicted test labels (target >= 0.99), and whether the
   bf16 run's test macro-F1 lies inside the fp32 run's 95 % bootstrap interval. On a busy 2-core
   machine --train-per-class and --val-per-class train both on a seeded subset (every test crop
   is still scored).

The speed target is judged against the fp32 pass as it ran before CNNs ran channels_last
(what --precision bf16 replaces); the ratio against fp32 in channels_last (--precision fp32
now) is printed beside it.

Usage:
  python data-preprocessing.py --input ../shared/datasets/mp100/MICRO --output /tmp/processed_mp100
  python benchmarks/bench_precision.py --data /tmp/processed_mp100 --archs resnet50 efficientnet_lite0

--weights imagenet falls back to random weights, with a note, where the ImageNet file cannot be
had offline (torchvision's ResNet50): speed does not depend on the weights, and the two runs
still compare one head recipe on the same features.
"""
from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from microplastics.core import fileio  # noqa: E402
from microplastics.deep import precision, stage  # noqa: E402
from microplastics.core.cli import UserError  # noqa: E402
from microplastics.data.dataset import (MANIFEST_NAME, SUMMARY_NAME, class_names, load_manifest,  # noqa: E402
                                   manifest_digest, split_frame)
from microplastics.deep.embeddings import CropDataset, compute_embeddings  # noqa: E402
from microplastics.results.metrics import read_predictions  # noqa: E402
from microplastics.deep.models import get_spec  # noqa: E402
from microplastics.results.stats import bootstrap_intervals  # noqa: E402
from microplastics.deep.transforms import EvalPreset  # noqa: E402

SPEED_TARGET, LABELS_TARGET = 1.8, 0.99


def subset_folder(data: Path, work: Path, per_class: dict[str, int], seed: int) -> Path:
    """A processed folder with at most ``per_class[split]`` seeded crops of each class (0: all).

    The chosen crops are copied (the stages refuse crops reached through links), and summary.json
    gets the new manifest's digest, as data-preprocessing.py would have written it.
    """
    if not any(per_class.values()):
        return data
    manifest = load_manifest(data)
    parts = []
    for (split, _), rows in manifest.groupby(["split", "label"], sort=True):
        n = per_class.get(split, 0)
        parts.append(rows.sample(n=n, random_state=seed) if 0 < n < len(rows) else rows)
    out = work / "data"
    manifest_subset = manifest.loc[sorted(i for p in parts for i in p.index)]
    for rel in manifest_subset["path"]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data / rel, out / rel)
    manifest_subset.to_csv(out / MANIFEST_NAME, index=False, lineterminator="\n")
    summary = fileio.read_json(data / SUMMARY_NAME) if (data / SUMMARY_NAME).is_file() else {}
    if "manifest_digest" in summary:
        summary["manifest_digest"] = manifest_digest(out)
    fileio.write_json(out / SUMMARY_NAME, summary)
    counts = manifest_subset["split"].value_counts().to_dict()
    print(f"training on a subset of {data}: {counts}", flush=True)
    return out


def backbone_with_weights(arch: str, n_classes: int, weights: str, image_size: int) -> tuple[torch.nn.Module, str]:
    spec = get_spec(arch)
    try:
        return spec.build(n_classes, weights, image_size).backbone, weights
    except UserError as err:
        if weights == "none":
            raise
        print(f"note: {arch}: {weights} weights unavailable ({str(err)[:120]}...); using random weights", flush=True)
        return spec.build(n_classes, "none", image_size).backbone, "none"


def time_forward(backbone: torch.nn.Module, dataset, batch_size: int, amp: torch.dtype | None,
                 layout: torch.memory_format) -> float:
    _, stats = compute_embeddings(backbone, dataset, batch_size=batch_size, device=torch.device("cpu"),
                                  amp_dtype=amp, progress=False, memory_format=layout)
    return stats["forward_seconds"]


def measure_speed(arch: str, args: argparse.Namespace, classes: list[str], test) -> dict:
    """Median forward seconds per variant over interleaved repeats."""
    backbone, weights = backbone_with_weights(arch, len(classes), args.weights, args.image_size)
    spec = get_spec(arch)
    layout = precision.memory_format_for(spec.family)
    paths = test["path"].tolist()[:args.timing_crops]
    dataset = CropDataset(args.data, paths, np.zeros(len(paths)), EvalPreset(args.image_size))
    variants = {"fp32": (None, layout), "bf16": (torch.bfloat16, layout)}
    models = {"fp32": backbone, "bf16": backbone}
    if layout != torch.contiguous_format:
        variants["fp32 (contiguous)"] = (None, torch.contiguous_format)
        models["fp32 (contiguous)"] = copy.deepcopy(backbone)
        backbone.to(memory_format=layout)
    warm = CropDataset(args.data, paths[:args.batch_size], np.zeros(min(len(paths), args.batch_size)),
                       EvalPreset(args.image_size))
    with torch.no_grad():
        for name, (amp, fmt) in variants.items():  # first calls build oneDNN kernels: not timed
            time_forward(models[name], warm, args.batch_size, amp, fmt)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.repeats):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            amp, fmt = variants[name]
            seconds[name].append(time_forward(models[name], dataset, args.batch_size, amp, fmt))
        print(f"  {arch} repeat {r + 1}/{args.repeats}: " +
              ", ".join(f"{n} {seconds[n][-1]:.2f}s" for n in variants), flush=True)
    median = {name: statistics.median(v) for name, v in seconds.items()}
    before = median.get("fp32 (contiguous)", median["fp32"])  # the fp32 pass as it ran before channels_last
    return {"weights": weights, "crops": len(paths), "repeats": args.repeats, "seconds": seconds,
            "median_seconds": median, "ratio": before / median["bf16"],
            "ratio_vs_fp32_now": median["fp32"] / median["bf16"]}


def training_run(arch: str, prec: str, weights: str, args: argparse.Namespace, work: Path) -> Path:
    results = work / f"{arch}-{prec}"
    stage.main(["--data", str(args.data), "--results", str(results), "--arch", arch, "--weights", weights,
                "--image-size", str(args.image_size), "--precision", prec, "--aug-views", "0",
                "--epochs", str(args.epochs), "--patience", str(args.patience), "--workers", str(args.workers),
                "--cache-dir", str(results / ".embeddings"), "--embed-batch-size", str(args.batch_size),
                "--device", "cpu", "--seed", str(args.seed)])
    return results / arch


def measure_agreement(arch: str, weights: str, args: argparse.Namespace, work: Path) -> dict:
    runs = {prec: training_run(arch, prec, weights, args, work) for prec in ("fp32", "bf16")}
    preds = {prec: read_predictions(folder / "predictions.csv") for prec, folder in runs.items()}
    metrics = {prec: fileio.read_json(folder / "metrics.json") for prec, folder in runs.items()}
    a, b = preds["fp32"], preds["bf16"]
    if a["path"].tolist() != b["path"].tolist():
        raise SystemExit("error: the two runs scored different test crops")
    same = int((a["pred"] == b["pred"]).sum())
    classes = list(metrics["fp32"]["per_class"])
    interval = bootstrap_intervals(a["true"], a["pred"], classes, seed=args.seed)["macro_f1"]
    return {"n": len(a), "identical": same, "identical_share": same / len(a),
            "macro_f1": {p: metrics[p]["macro_f1"] for p in runs},
            "fp32_interval": [interval.low, interval.high],
            "bf16_inside": interval.contains(metrics["bf16"]["macro_f1"]),
            "precision_recorded": {p: metrics[p]["precision"] for p in runs},
            "full_pass_forward_seconds": {p: metrics[p]["timing"]["embedding_forward_seconds"] for p in runs}}


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def speed_line(arch: str, speed: dict) -> str:
    med = speed["median_seconds"]
    before = med.get("fp32 (contiguous)", med["fp32"])
    return (f"{arch} (weights {speed['weights']}): embedding forward over {speed['crops']} crops, median of "
            f"{speed['repeats']}: fp32 as before {before:.2f}s, bf16 + channels_last {med['bf16']:.2f}s -> ratio "
            f"{speed['ratio']:.2f} (target >= {SPEED_TARGET}: {verdict(speed['ratio'] >= SPEED_TARGET)}); "
            f"fp32 + channels_last {med['fp32']:.2f}s, bf16 ratio to it {speed['ratio_vs_fp32_now']:.2f}")


def report(arch: str, speed: dict, agree: dict) -> list[bool]:
    print(speed_line(arch, speed))
    full = agree["full_pass_forward_seconds"]
    print(f"{arch}: whole embedding pass of each run (not interleaved): fp32 {full['fp32']:.1f}s, "
          f"bf16 {full['bf16']:.1f}s, ratio {full['fp32'] / full['bf16']:.2f}")
    low, high = agree["fp32_interval"]
    f1 = agree["macro_f1"]
    print(f"{arch}: identical test labels {agree['identical']}/{agree['n']} = {agree['identical_share']:.4f} "
          f"(target >= {LABELS_TARGET}: {verdict(agree['identical_share'] >= LABELS_TARGET)}); test macro F1 "
          f"fp32 {f1['fp32']:.4f} [{low:.4f}, {high:.4f}], bf16 {f1['bf16']:.4f} "
          f"(inside the fp32 interval: {verdict(agree['bf16_inside'])})")
    return [speed["ratio"] >= SPEED_TARGET, agree["identical_share"] >= LABELS_TARGET, agree["bf16_inside"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="processed_MICRO folder (data-preprocessing.py)")
    parser.add_argument("--archs", nargs="+", default=["resnet50", "efficientnet_lite0"])
    parser.add_argument("--weights", default="imagenet", help="imagenet (random where unavailable) or none")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--timing-crops", type=int, default=96, help="test crops per timed pass")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved fp32/bf16 timings per architecture")
    parser.add_argument("--batch-size", type=int, default=32, help="embedding batch size (the scripts' default)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--train-per-class", type=int, default=0, help="agreement runs: train crops per class (0: all)")
    parser.add_argument("--val-per-class", type=int, default=0, help="agreement runs: val crops per class (0: all)")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--skip-training", action="store_true", help="speed only")
    args = parser.parse_args()
    if not precision.cpu_supports_bf16():
        print("note: this CPU has no native bf16 (AVX512-BF16/AMX); --precision auto keeps fp32 here", flush=True)
    manifest = load_manifest(args.data)
    classes, test = class_names(manifest), split_frame(manifest, "test")
    checks, figures = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_precision_") as tmp:
        args.data = subset_folder(args.data, Path(tmp), {"train": args.train_per_class,
                                                         "val": args.val_per_class}, args.seed)
        for arch in args.archs:
            start = time.perf_counter()
            speed = measure_speed(arch, args, classes, test)
            agree = None if args.skip_training else measure_agreement(arch, speed["weights"], args, Path(tmp))
            figures[arch] = {"speed": speed, "agreement": agree, "seconds": time.perf_counter() - start}
            if agree is None:
                print(speed_line(arch, speed))
                checks.append(speed["ratio"] >= SPEED_TARGET)
            else:
                checks += report(arch, speed, agree)
    if args.out:
        fileio.write_json(args.out, figures)
    print(json.dumps({a: round(f["speed"]["ratio"], 3) for a, f in figures.items()}),
          "(embedding pass speed-up: fp32 as before / bf16, medians)")
    print("all targets met" if all(checks) else "some targets MISSED")
    return 0 if all(checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
