"""report.py: the command line of the comparison (results.comparison) and its page (results.html_report).

Reads every results/<model>/, scores it again from its predictions, and writes results/summary.csv,
results/summary.md and results/report.html.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from microplastics.core import layout, provenance
from microplastics.core.cli import ArgumentParser, UserError
from microplastics.data import dataset
from microplastics.results import figures, html_report
from microplastics.results.comparison import Report, build_report, write_summary


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="report.py",
        description="Compare every model in the results folder: writes summary.csv and summary.md (the study's "
                    "table with 95% bootstrap intervals and pairwise McNemar tests), summary.txt (the ranking, "
                    "for a terminal), validation_curves.png and report.html (data summary, table, confusion "
                    "matrices, curves, IoU, per-model classification reports, prediction grids, Grad-CAM, how to "
                    "reproduce).",
        examples=["python report.py   # results/ and processed_MICRO/",
                  "python report.py --results demo/results --data demo/processed_MICRO",
                  "python report.py --models rf vgg16 --n-boot 5000"])
    parser.add_argument("--results", type=Path, default=Path(layout.RESULTS_DIR),
                        help="folder holding one <model>/ folder per model (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=Path(layout.DATA_DIR),
                        help="processed data folder, for the crops per class and split (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the bootstrap resamples (default: %(default)s)")
    parser.add_argument("--n-boot", type=int, default=1000,
                        help="bootstrap resamples for the 95%% intervals (default: %(default)s)")
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="only these model folders (default: every folder with a metrics.json)")
    args = parser.parse_args(argv)
    if args.n_boot < 1:
        raise UserError(f"--n-boot must be at least 1, got {args.n_boot}")
    if args.data.exists() and not args.data.is_dir():  # without --data there is no data section; a file is a mistake
        dataset.check_data_dir(args.data, "--data")
    return args


def write_validation_curves(report: Report) -> Path | None:
    """results/validation_curves.png: the deep models' validation curves in one figure (an older one
    is removed when fewer than two deep models are left to compare)."""
    histories = {m.name: h for m in report.models if m.is_deep and (h := figures.read_history(m.folder)) is not None}
    best = {m.name: m.metrics.get("best_epoch") for m in report.models}
    path = report.results_dir / layout.VALIDATION_CURVES
    if figures.save_validation_curves(histories, best, path) is None:
        path.unlink(missing_ok=True)
        return None
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = build_report(args.results, args.data, args.n_boot, args.seed, args.models,
                          provenance.run_record("report.py", argv))
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    written = write_summary(report)
    written.append(write_validation_curves(report))
    written.append(html_report.write_html(report, args.results / "report.html"))
    for path in written:
        if path is not None:
            print(path)
    return 0
