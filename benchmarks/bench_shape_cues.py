"""Clean test macro-F1 of the classical models with and without the shape cues.

    .venv/bin/python benchmarks/bench_shape_cues.py --data /tmp/bench_scale/plain

Trains ml-baselines.py (its defaults otherwise, ``--aug-copies`` as given; augmented copies neither
rescaled nor put on other filters, ``--scale-augment 1 --swap-background 0``, as when it was measured)
with ``--shape-cues off`` and ``on`` on the same processed folder and prints accuracy and macro-F1 on the test split
with a 95% percentile bootstrap interval over test crops (seeded, 1,000 resamples), and
McNemar's exact test of on against off on the same crops. The cues are the default when, for
every model, macro-F1 with them lies inside the interval of the run without them (or above it).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_robustness import CLASSICAL_PLAIN_COPIES  # noqa: E402  (this folder is sys.path[0])
from microplastics.classical import baselines  # noqa: E402
from microplastics.core.cli import default_workers  # noqa: E402
from microplastics.results import metrics, stats  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="processed_MICRO", help="processed folder (manifest.csv)")
    parser.add_argument("--results-root", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--models", nargs="+", default=list(baselines.MODEL_NAMES), choices=baselines.MODEL_NAMES)
    parser.add_argument("--aug-copies", type=int, default=1)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=default_workers())
    args = parser.parse_args()
    root = Path(args.results_root or tempfile.mkdtemp(prefix="bench_shape_cues_"))
    for cues in ("off", "on"):
        baselines.main(["--data", args.data, "--results", str(root / cues), "--models", *args.models,
                        "--shape-cues", cues, "--aug-copies", str(args.aug_copies), "--seed", str(args.seed),
                        "--workers", str(args.workers), "--grid-size", "0", *CLASSICAL_PLAIN_COPIES])
    print(f"\ndata: {args.data}, seed {args.seed}, runs in {root}\n")
    print("| model | shape cues | test n | accuracy | macro-F1 | 95% CI (bootstrap) |")
    print("|---|---|---:|---:|---:|---|")
    verdicts = []
    for model in args.models:
        scores = {}
        for cues in ("off", "on"):
            m = metrics.load_metrics(root / cues / model)
            pred = metrics.read_predictions(root / cues / model / metrics.PREDICTIONS_NAME)
            ci = stats.bootstrap_intervals(pred["true"], pred["pred"], m["classes"], n_boot=args.n_boot,
                                           seed=args.seed)["macro_f1"]
            scores[cues] = (m["macro_f1"], ci, pred)
            print(f"| {model} | {cues} | {m['n']} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | "
                  f"[{ci.low:.4f}, {ci.high:.4f}] |")
        test = stats.mcnemar_exact(*stats.paired_outcomes(scores["on"][2], scores["off"][2]))
        inside = scores["on"][0] >= scores["off"][1].low
        verdicts.append(inside)
        verdicts_line = "inside or above" if inside else "BELOW"
        print(f"{model}: macro-F1 with cues {scores['on'][0]:.4f} is {verdicts_line} the interval without "
              f"[{scores['off'][1].low:.4f}, {scores['off'][1].high:.4f}]; right only with cues on {test.only_a} "
              f"crops, only without on {test.only_b}; McNemar exact p = {test.p_value:.3f}")
    print(f"\nshape cues as the default: {'yes' if all(verdicts) else 'no'} "
          f"(target: clean macro-F1 inside the interval of the run without them, for every model)")


if __name__ == "__main__":
    main()
