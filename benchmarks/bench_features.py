"""Feature extraction speed: crops per second with 1 worker and with all workers.

    .venv/bin/python benchmarks/bench_features.py --data processed_MICRO [--kind full] [--limit 0]

Reads every crop of the manifest (or the first --limit), computes the features without the
cache, and prints a table. The target: all 3,759 mp100 crops in under 60 s on 2 cores.
Timings depend on what else the machine runs; the load average is printed with them, and
for one worker the CPU seconds too (crops per CPU second hardly depend on the load, and
n / (workers x that rate) is the wall time an otherwise idle machine would need).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from microplastics.data import dataset  # noqa: E402
from microplastics.core.cli import default_workers  # noqa: E402
from microplastics.classical.features import FEATURE_KINDS, FeatureSettings, extract_from_files  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="processed_MICRO", help="processed folder (manifest.csv)")
    parser.add_argument("--kind", default="full", choices=FEATURE_KINDS)
    parser.add_argument("--limit", type=int, default=0, help="crops to use (0: all)")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="worker counts to time (default: 1 and all CPUs)")
    args = parser.parse_args()
    manifest = dataset.load_manifest(args.data)
    paths = [Path(args.data) / p for p in manifest["path"]]
    if args.limit:
        paths = paths[: args.limit]
    counts = args.workers or sorted({1, default_workers()})
    settings = FeatureSettings(kind=args.kind)
    print(f"{len(paths)} crops, '{args.kind}' features, {os.cpu_count()} CPUs, "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print("| workers | seconds | crops/s | crops per CPU second |\n|---:|---:|---:|---:|")
    for workers in counts:
        start, cpu = time.perf_counter(), time.process_time()
        extract_from_files(paths, settings, workers=workers, progress=False)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        # Worker processes' CPU time is not this process's: only the serial run has a CPU rate.
        rate = f"{len(paths) / cpu:.0f}" if workers == 1 else "–"
        print(f"| {workers} | {seconds:.1f} | {len(paths) / seconds:.0f} | {rate} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
