"""The particle finders and the --find run on the test photos of the photo-grouped split.

    .venv/bin/python data-preprocessing.py --input ../shared/datasets/mp100/MICRO --output /tmp/processed_mp100
    .venv/bin/python ml-baselines.py --data /tmp/processed_mp100 --results /tmp/results --models rf --augment none
    .venv/bin/python benchmarks/bench_finder.py --photos ../shared/datasets/mp100/MICRO \\
        --data /tmp/processed_mp100 --model /tmp/results/rf
    # and the trained detector beside the classical finder:
    .venv/bin/python find-detector.py --photos ../shared/datasets/mp100/MICRO --data /tmp/processed_mp100 \\
        --out /tmp/detector/detector.pt
    .venv/bin/python benchmarks/bench_finder.py ... --detector /tmp/detector/detector.pt

The test photos are those whose crops data-preprocessing.py put in the test split (grouped by
photo, so neither the classifier nor the detector saw them). For each, the finder runs on the
photo alone (timed, on the threads OpenCV and torch are given, 2 by default; wall clock and CPU
time), every particle found is classified by --model, and the found boxes are matched to the
annotated ones (detection.score_finder). Printed per finder: precision, recall and F1 at IoU >=
0.3 and 0.5, recall per class, the median per-photo count error, end to end macro-F1 (found and
rightly classified) and photos per second, each against its target; with --detector, a table of
both finders last.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from microplastics.core.images import read_rgb  # noqa: E402
from microplastics.data.annotations import read_annotations, records_by_photo  # noqa: E402
from microplastics.find import detection  # noqa: E402
from microplastics.find.finder import FinderSettings  # noqa: E402
from microplastics.find.sample_report import classify_columns, photo_finder, process_photo  # noqa: E402
from microplastics.predict.model_folder import default_margin  # noqa: E402
from microplastics.predict.predictor import load_predictor  # noqa: E402

TARGETS = {"recall": 0.90, "precision": 0.85, "count_error": 0.10, "macro_f1": 0.85, "photos_per_s": 5.0}


def run_finder(find, truth: dict, photos_dir: Path, predictor, margin: float, review_below: float) -> dict:
    """Scores of one finder on the test photos, its wall-clock and CPU seconds, and the certain-only scores."""
    photos, certain, seconds, cpu = {}, {}, 0.0, 0.0
    settings = FinderSettings()
    for name, records in sorted(truth.items()):
        image = read_rgb(photos_dir / "raw_img" / name)
        start, cpu_start = time.perf_counter(), time.process_time()
        found = find(image, None)
        seconds += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
        _, frame, probs, _ = process_photo(image, predictor, settings, None, margin, 64, found=found)
        frame = classify_columns(frame, probs, predictor.classes, review_below)
        boxes = list(zip(frame["minr"], frame["minc"], frame["maxr"], frame["maxc"]))
        gt = [(r.minr, r.minc, r.maxr, r.maxc) for r in records]
        gt_class = [r.label or "" for r in records]
        photos[name] = detection.PhotoBoxes(boxes, list(frame["class"]), gt, gt_class)
        keep = ~frame["uncertain"].to_numpy(bool)
        certain[name] = detection.PhotoBoxes([b for b, k in zip(boxes, keep) if k],
                                             [c for c, k in zip(frame["class"], keep) if k], gt, gt_class)
    return {"scores": detection.score_finder(photos, classes=predictor.classes), "seconds": seconds, "cpu": cpu,
            "certain": detection.score_finder(certain, classes=predictor.classes)["iou"]["0.3"], "n": len(photos)}


def report(label: str, result: dict, threads: int, review_below: float) -> None:
    scores, n = result["scores"], result["n"]
    print(f"== {label}: {n} test photos, {scores['n_truth']} annotated particles, {scores['n_found']} found")
    for t, s in scores["iou"].items():
        print(f"IoU>={t}: precision {s['precision']:.3f}  recall {s['recall']:.3f}  F1 {s['f1']:.3f}  "
              f"end-to-end macro-F1 {s['end_to_end']['macro_f1']:.3f}")
        print("    recall per class: " + ", ".join(f"{c} {v:.3f}" for c, v in s["recall_per_class"].items()))
    s3, c3 = scores["iou"]["0.3"], result["certain"]
    median = scores["count_error"]["median"]
    print(f"certain only (top probability >= {review_below}): precision {c3['precision']:.3f} "
          f"recall {c3['recall']:.3f} at IoU>=0.3")
    speed = n / result["seconds"]
    print("targets:")
    print(f"  recall@0.3     {s3['recall']:.3f} / {TARGETS['recall']} -> ratio {s3['recall'] / TARGETS['recall']:.2f}")
    print(f"  precision@0.3  {s3['precision']:.3f} / {TARGETS['precision']} -> ratio "
          f"{s3['precision'] / TARGETS['precision']:.2f}")
    print(f"  median count error {median:.3f} / <= {TARGETS['count_error']} -> "
          f"{'met' if median <= TARGETS['count_error'] else 'missed'}")
    print(f"  end-to-end macro-F1@0.3 {s3['end_to_end']['macro_f1']:.3f} / {TARGETS['macro_f1']} -> ratio "
          f"{s3['end_to_end']['macro_f1'] / TARGETS['macro_f1']:.2f}")
    print(f"  finder speed   {speed:.2f} photos/s wall clock on {threads} thread(s) / "
          f"{TARGETS['photos_per_s']} -> ratio {speed / TARGETS['photos_per_s']:.2f}")
    # on a shared machine the wall clock also counts other people's work; CPU seconds do not
    print(f"  finder CPU     {result['cpu'] / n * 1000:.0f} ms of CPU per photo = {n / result['cpu']:.2f} photos per "
          f"CPU-second (the wall-clock rate on one free core; two free cores do at least as well)")


def table(results: dict[str, dict]) -> None:
    """One row per finder: the benchmark's figures side by side (markdown)."""
    print("| finder | P@0.3 | R@0.3 | F1@0.3 | P@0.5 | R@0.5 | F1@0.5 | median count error | end-to-end macro-F1@0.3 "
          "| end-to-end macro-F1@0.5 | photos/s (wall) | photos per CPU-s |")
    print("|---" * 12 + "|")
    for label, r in results.items():
        s3, s5 = r["scores"]["iou"]["0.3"], r["scores"]["iou"]["0.5"]
        print(f"| {label} | {s3['precision']:.3f} | {s3['recall']:.3f} | {s3['f1']:.3f} | {s5['precision']:.3f} | "
              f"{s5['recall']:.3f} | {s5['f1']:.3f} | {r['scores']['count_error']['median']:.3f} | "
              f"{s3['end_to_end']['macro_f1']:.3f} | {s5['end_to_end']['macro_f1']:.3f} | "
              f"{r['n'] / r['seconds']:.2f} | {r['n'] / r['cpu']:.2f} |")
    for label, r in results.items():
        per_class = r["scores"]["iou"]["0.3"]["recall_per_class"]
        print(f"recall@0.3 per class, {label}: " + ", ".join(f"{c} {v:.3f}" for c, v in per_class.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default="../shared/datasets/mp100/MICRO", help="annotated MICRO folder")
    parser.add_argument("--data", required=True, help="processed folder whose manifest.csv names the test photos")
    parser.add_argument("--model", required=True, help="trained model folder (results/rf, results/resnet50...)")
    parser.add_argument("--detector", help="a find-detector.py checkpoint: scored beside the classical finder")
    parser.add_argument("--threads", type=int, default=2, help="OpenCV and torch threads (the 2-core target)")
    parser.add_argument("--review-below", type=float, default=0.6)
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    manifest = pd.read_csv(Path(args.data) / "manifest.csv")
    test = set(manifest.loc[manifest["split"] == "test", "source_image"].map(lambda p: Path(p).name))
    truth = {p.name: r for p, r in records_by_photo(read_annotations(args.photos).records).items() if p.name in test}
    predictor = load_predictor(args.model, "cpu")
    margin = default_margin(Path(args.model))
    print(f"classifier {predictor.name} ({args.model})")
    finders = {"classical": photo_finder("classical", FinderSettings())}
    if args.detector:
        finders[f"detector ({Path(args.detector).name})"] = photo_finder("detector", FinderSettings(), args.detector)
    results = {}
    for label, find in finders.items():
        results[label] = run_finder(find, truth, Path(args.photos), predictor, margin, args.review_below)
        report(label, results[label], args.threads, args.review_below)
    if len(results) > 1:
        table(results)


if __name__ == "__main__":
    main()
