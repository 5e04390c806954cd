"""Self-describing checkpoints: save them atomically, load them with ``weights_only=True``.

best.pt holds everything a later stage needs (architecture, classes in index order, input
size, normalisation, starting weights, the resolved config, the whole state_dict), so
``load_classifier(model_dir)`` needs only the folder. last.pt adds the training state
(optimizer, scheduler, early stopping, history, RNG) for ``--resume``; in head mode it holds
only the head, because the frozen backbone never changes and can weigh half a gigabyte.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from microplastics.core import fileio
from microplastics.core.cli import one_line
from microplastics.core.errors import InputError
from microplastics.deep.models import ArchSpec, get_spec, load_weights_only
from microplastics.deep.precision import autocast_for, memory_format_for, resolve_precision
from microplastics.deep.transforms import EvalPreset, batch_tensor

FORMAT = "microplastics-classifier/1"
BEST_NAME = "best.pt"
LAST_NAME = "last.pt"
# what load_classifier reads from best.pt, with the type each must have
BEST_KEYS = {"arch": str, "classes": list, "image_size": int, "mean": (list, tuple), "std": (list, tuple),
             "weights": str, "config": dict, "state_dict": dict}


def save(obj: dict[str, Any], path: str | Path) -> None:
    """torch.save through a temporary file and a rename: a crash never leaves half a checkpoint."""
    with fileio.atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path: str | Path) -> dict[str, Any]:
    """A checkpoint of this project, read with ``weights_only=True``; anything else is one InputError line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} not found; train the model first (vgg16.py, resnet50.py or vits.py)")
    obj = load_weights_only(path, "train the model again")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise InputError(f"{path} is not a checkpoint of this project (format {FORMAT})")
    return obj


def check_keys(ckpt: dict[str, Any], path: str | Path, keys: dict[str, type | tuple[type, ...]]) -> None:
    """Every key of ``keys`` present with a value of its type; else one line naming the first that is not."""
    for key, kind in keys.items():
        if not isinstance(ckpt.get(key), kind):
            found = "missing" if key not in ckpt else f"a {type(ckpt[key]).__name__}"
            raise InputError(f"{path} has the format tag of this project but its {key!r} is {found}; "
                            "it was not written by this version of the training scripts, train the model again")


def describe(spec: ArchSpec, classes: Sequence[str], image_size: int, mean: Sequence[float],
             std: Sequence[float], weights: str, config: dict[str, Any],
             input_norm: str = "imagenet", shape_cues: bool = False) -> dict[str, Any]:
    """The self-description shared by best.pt and last.pt."""
    return {"format": FORMAT, "arch": spec.name, "classes": list(classes), "image_size": int(image_size),
            "mean": [float(m) for m in mean], "std": [float(s) for s in std], "input_norm": input_norm,
            "shape_cues": bool(shape_cues),
            "weights": weights,
            # through JSON: the config becomes plain str/int/float/list/dict, which weights_only accepts
            "config": json.loads(json.dumps(config, default=str))}


@dataclass
class LoadedClassifier:
    """A trained model ready for inference: ``predict_proba`` takes RGB uint8 arrays."""

    model: nn.Module
    arch: str
    spec: ArchSpec
    classes: list[str]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights: str
    config: dict[str, Any]
    device: str = "cpu"
    input_norm: str = "imagenet"
    amp_dtype: torch.dtype | None = None  # autocast of the forward pass (None: fp32), see ``precision``
    shape_cues: bool = False  # the preset appends the shape-cue channels the model takes
    preset: EvalPreset = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.preset = EvalPreset(self.image_size, self.mean, self.std, input_norm=self.input_norm,
                                 shape_cues=self.shape_cues)

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The eval preset applied to RGB uint8 arrays: a (B, C, S, S) tensor on the model's device."""
        return batch_tensor(images, self.preset).to(self.device)

    @torch.no_grad()
    def probabilities(self, batch: torch.Tensor, batch_size: int = 32) -> np.ndarray:
        """Softmax probabilities of an already preprocessed (B, C, S, S) batch, ``batch_size`` at a time."""
        out = [torch.softmax(self.logits(batch[i:i + batch_size]), dim=1).cpu()
               for i in range(0, len(batch), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), dtype=np.float32)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """fp32 logits; only the backbone runs under ``amp_dtype``, the small head in fp32 as in training."""
        with autocast_for(torch.device(self.device), self.amp_dtype):
            embedding = self.model.embed(batch)
        return self.model.head(embedding.float()).float()

    def predict_proba(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Softmax probabilities, one row per image, columns in ``classes`` order."""
        parts = [self.probabilities(self.preprocess(images[i:i + batch_size]), batch_size)
                 for i in range(0, len(images), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.classes)), dtype=np.float32)


def build_from_state(spec: ArchSpec, num_classes: int, image_size: int, state: dict[str, torch.Tensor],
                     shape_cues: bool = False) -> nn.Module:
    """Build on the meta device and adopt the saved tensors: no slow random initialisation."""
    with torch.device("meta"):
        model = spec.build(num_classes, "none", image_size, shape_cues=shape_cues)
    model.load_state_dict(state, assign=True)
    return model


def load_classifier(model_dir: str | Path, device: str = "cpu", precision: str | None = None) -> LoadedClassifier:
    """Load ``<model_dir>/best.pt`` (or a .pt file given directly) in eval mode on ``device``.

    ``precision`` (auto, fp32, bf16) sets the autocast of the backbone in ``probabilities``; by
    default the one the training run's frozen pass used, so its test predictions reproduce.
    """
    path = Path(model_dir)
    path = path if path.suffix == ".pt" else path / BEST_NAME
    ckpt = load(path)
    check_keys(ckpt, path, BEST_KEYS)
    if not ckpt["classes"] or not all(isinstance(c, str) for c in ckpt["classes"]):
        raise InputError(f"{path}: 'classes' must be a non-empty list of class names; train the model again")
    spec = get_spec(ckpt["arch"])
    shape_cues = ckpt.get("shape_cues", False)  # checkpoints from before --shape-cues have none
    if not isinstance(shape_cues, bool):
        raise InputError(f"{path}: 'shape_cues' must be true or false, not {shape_cues!r}; train the model again")
    try:
        model = build_from_state(spec, len(ckpt["classes"]), ckpt["image_size"], ckpt["state_dict"],
                                 shape_cues=shape_cues)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:  # e.g. a class count its weights do not have
        raise InputError(f"{path}: its weights do not fit a {spec.name} with {len(ckpt['classes'])} classes at "
                        f"{ckpt['image_size']} px ({one_line(err)[:200]}); train the model again") from None
    model.to(device, memory_format=memory_format_for(spec.family)).eval()
    return LoadedClassifier(model=model, arch=ckpt["arch"], spec=spec, classes=list(ckpt["classes"]),
                            image_size=int(ckpt["image_size"]), mean=tuple(ckpt["mean"]), std=tuple(ckpt["std"]),
                            weights=ckpt["weights"], config=dict(ckpt["config"]), device=str(device),
                            # checkpoints written before --input-norm existed used ImageNet's
                            input_norm=str(ckpt.get("input_norm", "imagenet")),
                            amp_dtype=_amp_dtype(precision, ckpt["config"], torch.device(device)),
                            shape_cues=shape_cues)


def _amp_dtype(precision: str | None, config: dict[str, Any], device: torch.device) -> torch.dtype | None:
    if precision is not None:
        return resolve_precision(precision, device, frozen=True)
    recorded = config.get("precision_used", "fp32")  # checkpoints from before --precision ran in fp32
    if recorded == "fp32":
        return None
    if recorded == "bf16" and device.type == "cpu":
        return torch.bfloat16
    return resolve_precision("auto", device, frozen=True)  # a GPU's own mixed precision; fp32 on others
