"""The classical finder and the --find run on the test photos of the photo-grouped split.

    .venv/bin/python data-preprocessing.py --input ../shared/datasets/mp100/MICRO --output /tmp/processed_mp100
    .venv/bin/python ml-baselines.py --data /tmp/processed_mp100 --results /tmp/results --models rf --augment none
    .venv/bin/python benchmarks/bench_finder.py --photos ../shared/datasets/mp100/MICRO \\
        --data /tmp/processed_mp100 --model /tmp/results/rf

The test photos are those whose crops data-preprocessing.py put in the test split (grouped by
photo, so the model never saw them). For each, the finder runs on the photo alone (timed, on
the threads OpenCV is given, 2 by default; wall clock and CPU time), every particle found is classified by --model, and
the found boxes are matched to the annotated ones (detection.score_finder). Printed: precision,
recall and F1 at IoU >= 0.3 and 0.5, recall per class, the median per-photo count error, end to
end macro-F1 (found and rightly classified) and photos per second, each against its target.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from microplastics import detection  # noqa: E402
from microplastics.data.annotations import read_annotations, records_by_photo  # noqa: E402
from microplastics.find.finder import FinderSettings, find_particles  # noqa: E402
from microplastics.core.images import read_rgb  # noqa: E402
from microplastics.predict.model_folder import default_margin  # noqa: E402
from microplastics.predict.predictor import load_predictor  # noqa: E402
from microplastics.find.sample_report import classify_columns, process_photo  # noqa: E402

TARGETS = {"recall": 0.90, "precision": 0.85, "count_error": 0.10, "macro_f1": 0.85, "photos_per_s": 5.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default="../shared/datasets/mp100/MICRO", help="annotated MICRO folder")
    parser.add_argument("--data", required=True, help="processed folder whose manifest.csv names the test photos")
    parser.add_argument("--model", required=True, help="trained model folder (results/rf, results/resnet50...)")
    parser.add_argument("--threads", type=int, default=2, help="OpenCV threads (the 2-core target)")
    parser.add_argument("--review-below", type=float, default=0.6)
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    manifest = pd.read_csv(Path(args.data) / "manifest.csv")
    test = set(manifest.loc[manifest["split"] == "test", "source_image"].map(lambda p: Path(p).name))
    truth = {p.name: r for p, r in records_by_photo(read_annotations(args.photos).records).items() if p.name in test}
    predictor = load_predictor(args.model, "cpu")
    margin = default_margin(Path(args.model))
    settings = FinderSettings()
    photos, finder_seconds, finder_cpu, certain = {}, 0.0, 0.0, {}
    for name, records in sorted(truth.items()):
        image = read_rgb(Path(args.photos) / "raw_img" / name)
        start, cpu_start = time.perf_counter(), time.process_time()
        found = find_particles(image, settings)
        finder_seconds += time.perf_counter() - start
        finder_cpu += time.process_time() - cpu_start
        _, frame, probs, _ = process_photo(image, predictor, settings, None, margin, 64, found=found)
        frame = classify_columns(frame, probs, predictor.classes, args.review_below)
        boxes = list(zip(frame["minr"], frame["minc"], frame["maxr"], frame["maxc"]))
        gt = [(r.minr, r.minc, r.maxr, r.maxc) for r in records]
        photos[name] = detection.PhotoBoxes(boxes, list(frame["class"]), gt, [r.label or "" for r in records])
        keep = ~frame["uncertain"].to_numpy(bool)
        certain[name] = detection.PhotoBoxes([b for b, k in zip(boxes, keep) if k],
                                             [c for c, k in zip(frame["class"], keep) if k], gt,
                                             [r.label or "" for r in records])
    scores = detection.score_finder(photos, classes=predictor.classes)
    speed = len(photos) / finder_seconds
    print(f"{len(photos)} test photos, {scores['n_truth']} annotated particles, {scores['n_found']} found; "
          f"model {predictor.name}")
    for t, s in scores["iou"].items():
        print(f"IoU>={t}: precision {s['precision']:.3f}  recall {s['recall']:.3f}  F1 {s['f1']:.3f}  "
              f"end-to-end macro-F1 {s['end_to_end']['macro_f1']:.3f}")
        print("    recall per class: " + ", ".join(f"{c} {v:.3f}" for c, v in s["recall_per_class"].items()))
    s3 = scores["iou"]["0.3"]
    median = scores["count_error"]["median"]
    c3 = detection.score_finder(certain, classes=predictor.classes)["iou"]["0.3"]
    print(f"certain only (top probability >= {args.review_below}): precision {c3['precision']:.3f} "
          f"recall {c3['recall']:.3f} at IoU>=0.3")
    print("targets:")
    print(f"  recall@0.3     {s3['recall']:.3f} / {TARGETS['recall']} -> ratio {s3['recall'] / TARGETS['recall']:.2f}")
    print(f"  precision@0.3  {s3['precision']:.3f} / {TARGETS['precision']} -> ratio "
          f"{s3['precision'] / TARGETS['precision']:.2f}")
    print(f"  median count error {median:.3f} / <= {TARGETS['count_error']} -> "
          f"{'met' if median <= TARGETS['count_error'] else 'missed'}")
    print(f"  end-to-end macro-F1@0.3 {s3['end_to_end']['macro_f1']:.3f} / {TARGETS['macro_f1']} -> ratio "
          f"{s3['end_to_end']['macro_f1'] / TARGETS['macro_f1']:.2f}")
    print(f"  finder speed   {speed:.2f} photos/s wall clock on {args.threads} OpenCV thread(s) / "
          f"{TARGETS['photos_per_s']} -> ratio {speed / TARGETS['photos_per_s']:.2f}")
    # on a shared machine the wall clock also counts other people's work; CPU seconds do not
    cpu_rate = len(photos) / finder_cpu
    print(f"  finder CPU     {finder_cpu / len(photos) * 1000:.0f} ms of CPU per photo = {cpu_rate:.2f} photos per "
          f"CPU-second (the wall-clock rate on one free core; two free cores do at least as well)")


if __name__ == "__main__":
    main()
