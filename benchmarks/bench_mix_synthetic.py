"""Does mixing domain-randomised synthetic crops into training help on other filters?

Builds mp100's photo-grouped split with a pool of synthetic crops (data-preprocessing.py
--mix-synthetic-photos), trains the Random Forest (ml-baselines.py --models rf, with --scale-augment 1
--swap-background 0 as when it was measured) without and with --mix-synthetic FRACTION, and scores both
on mp100's own test split and on the same test photos with their filter recoloured (white, pale blue,
grey, pink: the filter pixels are shifted to the new colour, texture kept; particles, which differ from
the filter, keep theirs). Prints test macro-F1 with
its 95 % bootstrap interval per set, and whether the mixed model's clean macro-F1 stays inside the
plain model's interval (the condition for keeping it).

    .venv/bin/python benchmarks/bench_mix_synthetic.py                   # 200 synthetic photos, 0.3
    .venv/bin/python benchmarks/bench_mix_synthetic.py --fraction 0.2 --work /tmp/mix

Folders under --work are reused on a second run unless --retrain.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_robustness import CLASSICAL_PLAIN_COPIES  # noqa: E402  (this folder is sys.path[0])
from microplastics.classical.baselines import load_model  # noqa: E402
from microplastics.core.images import read_rgb  # noqa: E402
from microplastics.data import dataset  # noqa: E402
from microplastics.data.preprocessing import preprocess  # noqa: E402
from microplastics.results.metrics import compute_metrics  # noqa: E402
from microplastics.results.stats import bootstrap_intervals  # noqa: E402

MP100 = ROOT.parent / "shared" / "datasets" / "mp100" / "MICRO"
FILTERS = {"white": (232, 232, 228), "pale blue": (165, 190, 215), "grey": (135, 135, 138), "pink": (215, 180, 185)}


def recolour_filter(image: np.ndarray, boxes: list[tuple[int, int, int, int]],
                    target: tuple[int, int, int]) -> np.ndarray:
    """The photo with its filter shifted to ``target``: pixels near the filter's median colour (measured
    outside the boxes and the dark field stop) move by the difference, fading out towards particle colours."""
    img = image.astype(np.float32)
    free = np.ones(img.shape[:2], bool)
    for r0, c0, r1, c1 in boxes:
        free[r0:r1, c0:c1] = False
    lit = img.mean(axis=-1) > 45
    reference = np.median(img[free & lit], axis=0)
    distance = np.linalg.norm(img - reference, axis=-1)
    weight = np.clip((90 - distance) / 45, 0, 1) * lit
    weight = cv2.GaussianBlur(weight.astype(np.float32), (0, 0), 1.5)
    shifted = img + weight[..., None] * (np.array(target, np.float32) - reference)
    return np.clip(np.round(shifted), 0, 255).astype(np.uint8)


def shifted_sets(manifest, raw: Path) -> dict[str, tuple[list[np.ndarray], list[str]]]:
    """The test crops of every recoloured filter (and of the photos as they are), with their labels."""
    test = dataset.split_frame(manifest, "test")
    sets: dict[str, tuple[list[np.ndarray], list[str]]] = {name: ([], []) for name in ("as is", *FILTERS)}
    for photo, rows in test.groupby("source_image", sort=True):
        image = read_rgb(raw / "raw_img" / photo)
        boxes = list(zip(rows["minr"], rows["minc"], rows["maxr"], rows["maxc"]))
        for name in sets:
            view = image if name == "as is" else recolour_filter(image, boxes, FILTERS[name])
            sets[name][0].extend(view[r0:r1, c0:c1] for r0, c0, r1, c1 in boxes)
            sets[name][1].extend(rows["label"])
    return sets


def train(data: Path, results: Path, fraction: float, workers: int, retrain: bool) -> Path:
    if retrain or not (results / "rf" / "metrics.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "ml-baselines.py"), "--data", str(data), "--results", str(results),
                        "--models", "rf", "--grid-size", "0", "--workers", str(workers),
                        "--mix-synthetic", str(fraction), *CLASSICAL_PLAIN_COPIES], check=True)
    return results / "rf"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, default=MP100, help="mp100's MICRO folder")
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench_mix_synthetic")
    parser.add_argument("--photos", type=int, default=200, help="synthetic photos in the pool")
    parser.add_argument("--fraction", type=float, default=0.3, help="--mix-synthetic of the mixed model")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args()
    data = args.work / "processed"
    if args.retrain or not (data / dataset.MANIFEST_NAME).is_file():
        preprocess(args.raw, data, synthetic_photos=args.photos, workers=args.workers)
    manifest = dataset.load_manifest(data)
    sets = shifted_sets(manifest, args.raw)
    models = {"real only": train(data, args.work / "real", 0.0, args.workers, args.retrain),
              f"mix {args.fraction:g}": train(data, args.work / "mix", args.fraction, args.workers, args.retrain)}
    print(f"\nRandom Forest, mp100 test split ({len(sets['as is'][1])} crops), macro-F1 [95% interval]")
    print(f"{'set':<12}" + "".join(f"{name:>28}" for name in models))
    scores: dict[str, dict[str, tuple[float, float, float]]] = {name: {} for name in models}
    recalls: dict[str, dict[str, dict[str, float]]] = {name: {} for name in models}
    loaded = {name: load_model(folder) for name, folder in models.items()}
    first = next(iter(loaded.values()))
    assert all(m.settings == first.settings for m in loaded.values())  # one feature pass serves both
    features = {set_name: first.features(crops) for set_name, (crops, _labels) in sets.items()}
    for name, model in loaded.items():
        for set_name, (_crops, labels) in sets.items():
            pred = model.labels(model.predict_proba_features(features[set_name]))
            computed = compute_metrics(labels, pred, model.classes)
            f1 = computed["macro_f1"]
            recalls[name][set_name] = {c: v["recall"] for c, v in computed["per_class"].items()}
            ci = bootstrap_intervals(labels, pred, model.classes, n_boot=500)["macro_f1"]
            scores[name][set_name] = (f1, ci.low, ci.high)
    for set_name in sets:
        print(f"{set_name:<12}" + "".join(f"{s[set_name][0]:>12.4f} [{s[set_name][1]:.3f}, {s[set_name][2]:.3f}]"
                                          for s in scores.values()))
    print("\nper-class recall")
    for set_name in sets:
        print(f"{set_name:<12}" + "".join(
            f"{'  '.join(f'{c} {r:.3f}' for c, r in recalls[name][set_name].items()):>60}" for name in models))
    plain, mixed = scores.values()
    mean = {name: float(np.mean([s[k][0] for k in FILTERS])) for name, s in scores.items()}
    print("mean over recoloured filters: " + ", ".join(f"{k} {v:.4f}" for k, v in mean.items()))
    inside = plain["as is"][1] <= mixed["as is"][0] <= plain["as is"][2]
    print(f"mixed model's clean macro-F1 {mixed['as is'][0]:.4f} inside the plain model's interval "
          f"[{plain['as is'][1]:.4f}, {plain['as is'][2]:.4f}]: {'yes' if inside else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
