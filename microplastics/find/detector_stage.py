"""``find-detector.py``: train the particle detector on the annotated boxes of the train photos.

The photos are a MICRO folder or a YOLO export (``--photos``); which photo trains and which
validates comes from the photo-grouped split that data-preprocessing.py wrote (``--data``'s
manifest.csv), so the test photos stay unseen, the same ones the benchmarks score. After
training, the score threshold that gives the best F1 at IoU >= 0.3 on the validation photos is
stored in the checkpoint's config. The checkpoint is rewritten (atomically) after every epoch.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from microplastics.core import fileio
from microplastics.core.cli import ArgumentParser, UserError
from microplastics.core.images import read_rgb
from microplastics.data.annotations import detect_format, read_annotations, records_by_photo, relative_name
from microplastics.deep.engine import seed_everything
from microplastics.find import detection, detector
from microplastics.find.detector import DetectorConfig

DEFAULT_OUT = "results/detector/detector.pt"
THRESHOLDS = np.round(np.arange(0.1, 0.81, 0.05), 2)


def get_args_parser() -> argparse.ArgumentParser:
    d = DetectorConfig()
    parser = ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        examples=["python find-detector.py --photos MICRO --data processed_MICRO",
                  "python find-detector.py --photos MICRO --data processed_MICRO --epochs 2 --max-photos 20 "
                  "--out /tmp/detector.pt"])
    a = parser.add_argument
    a("--photos", required=True, help="annotated photos: a MICRO folder (raw_img/ + annotation/) or a YOLO export")
    a("--data", required=True, help="processed folder (data-preprocessing.py) whose manifest.csv says which "
                                    "photos are train, val and test")
    a("--out", default=DEFAULT_OUT, help="the checkpoint file written")
    a("--epochs", type=int, default=d.epochs)
    a("--batch-size", type=int, default=d.batch_size)
    a("--crop", type=int, default=d.crop, help="training window side, px")
    a("--crops-per-photo", type=int, default=d.crops_per_photo, help="windows per photo and epoch")
    a("--image-side", type=int, default=d.image_side, help="photos resized so the longer side is this")
    a("--lr", type=float, default=d.lr)
    a("--fpn-channels", type=int, default=d.fpn_channels)
    a("--head-convs", type=int, default=d.head_convs)
    a("--frozen-blocks", type=int, default=d.frozen_blocks, help="backbone stages (after the stem) not trained")
    a("--weights", choices=["imagenet", "none"], default="imagenet", help="backbone start")
    a("--bf16", action="store_true", help="bf16 autocast (slower than fp32 for training on most CPUs)")
    a("--threads", type=int, default=1, help="torch threads (on a busy machine one is often fastest)")
    a("--max-photos", type=int, help="use at most this many train and val photos (quick runs)")
    a("--seed", type=int, default=d.seed)
    return parser


def split_photos(photos_dir: Path, data_dir: Path, max_photos: int | None
                 ) -> tuple[Path, dict[str, list[tuple[str, list]]]]:
    """(photo root, {"train": [(name, records)], "val": [...]}) from the manifest's photo split."""
    manifest_path = data_dir / "manifest.csv"
    if not manifest_path.is_file():
        raise UserError(f"--data {data_dir}: no manifest.csv; run data-preprocessing.py first")
    manifest = pd.read_csv(manifest_path)
    if not {"split", "source_image"} <= set(manifest.columns):
        raise UserError(f"{manifest_path} has no split/source_image columns; run data-preprocessing.py again")
    fmt = detect_format(photos_dir)
    found = read_annotations(photos_dir, fmt)
    by_photo = records_by_photo(found.records)
    split_of = dict(zip(manifest["source_image"].map(lambda p: Path(p).name), manifest["split"]))
    out: dict[str, list] = {"train": [], "val": []}
    for path, records in sorted(by_photo.items()):
        split = split_of.get(path.name)
        if split in out and (max_photos is None or len(out[split]) < max_photos):
            out[split].append((path, records))
    if not out["train"]:
        raise UserError(f"no photo of {photos_dir} is in the train split of {manifest_path}")
    return photos_dir / ("raw_img" if fmt == "deepparticle" else "images"), out


def load_photos(items: Sequence[tuple[Path, list]], side: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(resized photo, xyxy boxes in its pixels) per photo."""
    out = []
    for path, records in items:
        image, scale = detector.prepare_image(read_rgb(path), side)
        out.append((image, detector.to_xyxy([(r.minr, r.minc, r.maxr, r.maxc) for r in records], scale)))
    return out


def choose_threshold(model: torch.nn.Module, config: DetectorConfig, items: Sequence[tuple[Path, list]]
                     ) -> tuple[float, dict[str, float]]:
    """The score threshold with the best F1 at IoU >= 0.3 on ``items`` and F1 per threshold."""
    predicted = []
    for path, records in tqdm(items, desc="validation photos", unit="photo", leave=False):
        boxes, scores = detector.predict_boxes(model, read_rgb(path), config, score_threshold=float(THRESHOLDS[0]))
        predicted.append((boxes, np.asarray(scores), [(r.minr, r.minc, r.maxr, r.maxc) for r in records]))
    f1 = {}
    for t in THRESHOLDS:
        photos = {}
        for i, (boxes, scores, truth) in enumerate(predicted):
            kept = [b for b, s in zip(boxes, scores) if s >= t]
            photos[str(i)] = detection.PhotoBoxes(kept, [""] * len(kept), truth, [""] * len(truth))
        f1[f"{t:g}"] = detection.score_finder(photos, thresholds=(0.3,), classes=[])["iou"]["0.3"]["f1"]
    best = max(f1, key=f1.get)
    return float(best), f1


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    for flag in ("epochs", "batch_size", "crop", "crops_per_photo", "image_side", "fpn_channels", "threads"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.fpn_channels % 32:
        raise UserError(f"--fpn-channels must be a multiple of 32 (the head's group norm), got {args.fpn_channels}")
    out = Path(args.out)
    fileio.check_output_file(out, "--out")
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    config = DetectorConfig(image_side=args.image_side, crop=args.crop, fpn_channels=args.fpn_channels,
                            head_convs=args.head_convs, pretrained=args.weights == "imagenet",
                            frozen_blocks=args.frozen_blocks, epochs=args.epochs, batch_size=args.batch_size,
                            crops_per_photo=args.crops_per_photo, lr=args.lr, seed=args.seed, bf16=args.bf16)
    root, split = split_photos(Path(args.photos), Path(args.data), args.max_photos)
    train = load_photos(split["train"], config.image_side)
    print(f"{len(train)} train photos ({sum(len(b) for _, b in train)} boxes), {len(split['val'])} validation "
          f"photos; {config.epochs} epochs of {len(train) * config.crops_per_photo} {config.crop} px windows")
    model = detector.build_detector(config).to(memory_format=torch.channels_last)
    steps_per_epoch = -(-len(train) * config.crops_per_photo // config.batch_size)
    optimizer, scheduler = detector.make_optimizer(model, config, steps_per_epoch * config.epochs)
    rng = np.random.default_rng(config.seed)
    history, start = [], time.perf_counter()
    names = {"train": [relative_name(p, root) for p, _ in split["train"]],
             "val": [relative_name(p, root) for p, _ in split["val"]]}
    for epoch in range(config.epochs):
        with tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch") as bar:
            loss = detector.train_one_epoch(model, optimizer, scheduler, detector.training_batches(train, config, rng),
                                            config.bf16, bar)
        history.append({"epoch": epoch + 1, "loss": loss, "seconds": time.perf_counter() - start})
        detector.save_detector(model, config, out, {"history": history, "photos": names})
    train_seconds = time.perf_counter() - start
    f1 = {}
    if split["val"]:
        threshold, f1 = choose_threshold(model, config, split["val"])
        config = replace(config, score_threshold=threshold)
    detector.save_detector(model, config, out, {"history": history, "photos": names, "val_f1_at_0.3": f1,
                                                "train_seconds": train_seconds})
    best = f"; validation F1@0.3 {f1[f'{config.score_threshold:g}']:.3f}" if f1 else ""
    print(f"trained in {train_seconds / 60:.1f} min, last loss {history[-1]['loss']:.3f}; score threshold "
          f"{config.score_threshold:g}{best} -> {out}")
    print("config: " + ", ".join(f"{k}={v}" for k, v in asdict(config).items()))
    return 0
