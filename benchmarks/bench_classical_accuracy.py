"""Test macro-F1 of the classical models with the 'original' and the 'full' feature sets.

    .venv/bin/python benchmarks/bench_classical_accuracy.py --data /tmp/processed_mp100

Trains RF and SVM (ml-baselines.py's defaults otherwise, with ``--scale-augment 1 --swap-background 0``
as when it was measured) per feature set and seed into
--results-root/<features>-seed<seed>/ (features are computed once, then come from the cache)
and prints, for the first seed: accuracy and macro-F1 on the test split with a 95% percentile
bootstrap interval over test crops (seeded, 1,000 resamples) and the validation macro-F1; then
the mean and range of test macro-F1 over all seeds, and McNemar's exact test of full against
original on the same test crops. On the mp100 photos every sound method scores near 0.99 (see
its README): a difference of a crop or two is noise, which the interval and the test show.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_robustness import CLASSICAL_PLAIN_COPIES  # noqa: E402  (this folder is sys.path[0])
from microplastics.classical import baselines  # noqa: E402
from microplastics.results import metrics, stats  # noqa: E402
from microplastics.core.cli import default_workers  # noqa: E402
from microplastics.classical.features import FEATURE_KINDS  # noqa: E402

COMPARED = ("original", "full")  # the study's set against the extended one


def run(data: str, out: Path, kind: str, seed: int, balance: str, workers: int) -> None:
    baselines.main(["--data", data, "--results", str(out), "--features", kind, "--balance", balance,
                    "--seed", str(seed), "--workers", str(workers), "--grid-size", "0", *CLASSICAL_PLAIN_COPIES])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="processed_MICRO", help="processed folder (manifest.csv)")
    parser.add_argument("--results-root", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--balance", default="smote", choices=baselines.BALANCE_CHOICES)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44, 45, 46],
                        help="training seeds; the first one gets the bootstrap interval")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--kinds", nargs="+", default=list(COMPARED), choices=FEATURE_KINDS,
                        help="feature sets to score; full and original are compared when both are there")
    args = parser.parse_args()
    root = Path(args.results_root or tempfile.mkdtemp(prefix="bench_classical_"))
    folder = {(k, s): root / f"{k}-seed{s}" for k in args.kinds for s in args.seeds}
    for (kind, seed), out in folder.items():
        run(args.data, out, kind, seed, args.balance, args.workers)
    first = args.seeds[0]
    print(f"\ndata: {args.data}, balance: {args.balance}, seeds {args.seeds}, runs in {root}\n")
    print(f"| features | model | test n | accuracy | macro-F1 (seed {first}) | 95% CI (bootstrap) | val macro-F1 "
          f"| macro-F1 mean over {len(args.seeds)} seeds [min, max] |")
    print("|---|---|---:|---:|---:|---|---:|---|")
    for kind in args.kinds:
        for model in baselines.MODEL_NAMES:
            m = metrics.load_metrics(folder[(kind, first)] / model)
            pred = metrics.read_predictions(folder[(kind, first)] / model / metrics.PREDICTIONS_NAME)
            ci = stats.bootstrap_intervals(pred["true"], pred["pred"], m["classes"], n_boot=args.n_boot,
                                           seed=first)["macro_f1"]
            f1s = np.array([metrics.load_metrics(folder[(kind, s)] / model)["macro_f1"] for s in args.seeds])
            print(f"| {kind} | {model} | {m['n']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
                  f"[{ci.low:.4f}, {ci.high:.4f}] | {m['val']['macro_f1']:.4f} | "
                  f"{f1s.mean():.4f} [{f1s.min():.4f}, {f1s.max():.4f}] |")
    print()
    if not set(COMPARED) <= set(args.kinds):
        return
    for model in baselines.MODEL_NAMES:
        a = metrics.read_predictions(folder[("full", first)] / model / metrics.PREDICTIONS_NAME)
        b = metrics.read_predictions(folder[("original", first)] / model / metrics.PREDICTIONS_NAME)
        test = stats.mcnemar_exact(*stats.paired_outcomes(a, b))
        print(f"{model} (seed {first}): full right where original wrong on {test.only_a} crops, the reverse on "
              f"{test.only_b}; McNemar exact p = {test.p_value:.3f}")


if __name__ == "__main__":
    main()
