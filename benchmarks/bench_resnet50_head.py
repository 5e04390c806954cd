"""Benchmark: resnet50.py in head mode (cached embeddings) against the backbone-every-epoch recipe.

Runs ``resnet50.py --finetune head`` on a processed_MICRO folder for a fixed number of epochs
(early stopping off, so all epochs run) with a fresh embedding cache, and reports

- total wall time / the time of the one backbone pass over all cached views (target <= 1.5),
- the original recipe's time / total wall time (target >= 10): the original ran the frozen
  backbone over the train and val crops in every epoch; that cost is measured over ONE such
  epoch here (same backbone, loader, batch size and workers) and multiplied by the epochs,
- the peak resident memory of the run's process tree (target < 4 GiB),
- the backbone's share of the embedding pass's wall time (target >= 0.8: loading keeps up).

Usage: python benchmarks/bench_resnet50_head.py --data /tmp/processed_mp100 [--aug-views 1]
ImageNet weights change nothing about speed; --weights none keeps it offline.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


class PeakMemory(threading.Thread):
    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.done = pid, every, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, tree_rss_bytes(self.pid))
            self.done.wait(self.every)


def run_head_mode(args: argparse.Namespace, results: Path, cache: Path) -> tuple[float, int, dict]:
    cmd = [sys.executable, str(ROOT / "resnet50.py"), "--data", args.data, "--results", str(results),
           "--weights", "none", "--epochs", str(args.epochs), "--patience", str(args.epochs + 1),
           "--aug-views", str(args.aug_views), "--workers", str(args.workers), "--image-size", str(args.image_size),
           "--cache-dir", str(cache), "--device", args.device]
    print("running:", " ".join(cmd), flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    sampler = PeakMemory(proc.pid)
    sampler.start()
    code = proc.wait()
    wall = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    if code != 0:
        sys.exit(f"resnet50.py failed with status {code}")
    metrics = json.loads((results / "resnet50" / "metrics.json").read_text())
    return wall, sampler.peak, metrics


def one_original_epoch(args: argparse.Namespace) -> tuple[float, int]:
    """The original recipe's per-epoch backbone work: train crops (augmented) + val crops (clean)."""
    import numpy as np

    from microplastics.deep import engine
    from microplastics.data.dataset import load_manifest, split_frame
    from microplastics.deep.embeddings import CropDataset, compute_embeddings
    from microplastics.deep.models import get_spec
    from microplastics.deep.precision import amp_dtype_for
    from microplastics.deep.transforms import EvalPreset, TrainPreset

    device = engine.resolve_device(args.device)
    manifest = load_manifest(args.data)
    model = get_spec("resnet50").build(4, "none", args.image_size)
    size = args.image_size
    train, val = split_frame(manifest, "train"), split_frame(manifest, "val")
    sets = [CropDataset(args.data, train["path"], np.zeros(len(train)), TrainPreset(size), seed=1, stream=1),
            CropDataset(args.data, val["path"], np.zeros(len(val)), EvalPreset(size))]
    start = time.perf_counter()
    for ds in sets:
        compute_embeddings(model.backbone.to(device), ds, batch_size=32, device=device, workers=args.workers,
                           amp_dtype=amp_dtype_for(device), desc="original epoch", progress=False)
    return time.perf_counter() - start, len(train) + len(val)


def make_subset(data: str, fraction: float, dest: Path, seed: int = 0) -> str:
    """A processed_MICRO folder holding a stratified ``fraction`` of each split (crops linked, not copied)."""
    import pandas as pd

    from microplastics.data.dataset import load_manifest

    manifest = load_manifest(data)
    keep = [i for _, g in manifest.groupby(["split", "label"])
            for i in g.sample(min(len(g), max(2, round(len(g) * fraction))), random_state=seed).index]
    part = manifest.loc[keep]
    dest.mkdir(parents=True)
    for split in ("train", "val", "test"):
        (dest / split).symlink_to(Path(data).resolve() / split)
    part.sort_index().to_csv(dest / "manifest.csv", index=False)
    (dest / "summary.json").write_text(json.dumps({"subset_of": str(Path(data).resolve()), "fraction": fraction}))
    print(f"subset: {len(part)} of {len(manifest)} crops ({pd.Series(part['split']).value_counts().to_dict()})")
    return str(dest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", required=True, help="processed_MICRO folder (e.g. the mp100 crops)")
    parser.add_argument("--work", default="/tmp/bench_resnet50_head", help="scratch folder (emptied first)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--aug-views", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--subset", type=float, default=1.0,
                        help="use this stratified fraction of every split (for a busy or slow machine)")
    parser.add_argument("--skip-original", action="store_true",
                        help="estimate the original epoch from the run's own embedding throughput "
                             "instead of timing one epoch (same backbone and loader, images scaled)")
    args = parser.parse_args()

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if args.subset < 1.0:
        args.data = make_subset(args.data, args.subset, work / "data")
    load0 = os.getloadavg()[0]
    wall, peak, metrics = run_head_mode(args, work / "results", work / "cache")
    timing = metrics["timing"]
    embed_wall, embed_fwd, images = (timing["embedding_seconds"], timing["embedding_forward_seconds"],
                                     timing["embedding_images"])
    load1 = os.getloadavg()[0]
    if args.skip_original:
        from microplastics.data.dataset import load_manifest

        manifest = load_manifest(args.data)
        n_epoch = int((manifest["split"] != "test").sum())
        epoch_seconds, how = embed_wall / images * n_epoch, "estimated from the run's embedding throughput"
    else:
        epoch_seconds, n_epoch = one_original_epoch(args)
        how = "measured over 1 epoch"
    load2 = os.getloadavg()[0]
    original = epoch_seconds * args.epochs
    report = {
        "data": args.data, "subset": args.subset,
        "command": f"resnet50.py --weights none --epochs {args.epochs} --aug-views {args.aug_views} "
                   f"--workers {args.workers} --image-size {args.image_size} (head mode, fresh cache)",
        "total_wall_seconds": wall, "embedding_images": images, "embedding_wall_seconds": embed_wall,
        "embedding_forward_seconds": embed_fwd, "head_epochs_seconds": timing["epoch_seconds"],
        "epochs_run": metrics["epochs_run"], "test_accuracy": metrics["accuracy"],
        "ratio_total_to_one_backbone_pass": wall / embed_wall,
        "forward_share_of_embedding_wall": embed_fwd / embed_wall,
        "original_epoch_images": n_epoch, "original_epoch_seconds": epoch_seconds,
        "original_seconds": original, "original_how": f"{how}, times {args.epochs}",
        "speedup_vs_original": original / wall, "peak_rss_gib": peak / 2**30,
        "load_average": [load0, load1, load2], "cpu_count": os.cpu_count(),
    }
    (work / "bench.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"\ntotal {wall:.1f}s = {report['ratio_total_to_one_backbone_pass']:.2f}x one backbone pass over "
          f"{images} views ({embed_wall:.1f}s; target <= 1.5)")
    print(f"original recipe ({how}: {epoch_seconds:.1f}s x {args.epochs}) = {original:.0f}s: "
          f"{report['speedup_vs_original']:.1f}x slower than head mode (target >= 10)")
    print(f"peak memory {report['peak_rss_gib']:.2f} GiB (target < 4); backbone forward "
          f"{100 * report['forward_share_of_embedding_wall']:.0f}% of the embedding wall time (target >= 80%)")


if __name__ == "__main__":
    main()
